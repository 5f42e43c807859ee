//! The on-disk encoding of records and contacts: fixed little-endian fields, then
//! length-prefixed strings and bytes. Decoding checks every length, so a damaged entry is
//! reported (with the key it belongs to) instead of being misread.
//!
//! Record layout (format version 1): version u64, expires_at_ms u64, flags u8 (bit 0
//! tombstone, bit 1 cached), publisher [u8; 20], user_key (u32 length + UTF-8), value (u32
//! length + bytes). Contact layout: incarnation u64, addr (u32 length + UTF-8).

use crate::kad::store::Stored;
use crate::kad::{Contact, NodeId, Record};

const TOMBSTONE: u8 = 1;
const CACHED: u8 = 2;

/// Why an entry could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(String);

/// Encodes a stored record (its key is the table key, not repeated here).
pub fn encode_record(s: &Stored) -> Vec<u8> {
    let r = &s.record;
    let mut out = Vec::with_capacity(45 + r.user_key.len() + 8 + r.value.len());
    out.extend_from_slice(&r.version.to_le_bytes());
    out.extend_from_slice(&r.expires_at_ms.to_le_bytes());
    let flags = if r.tombstone { TOMBSTONE } else { 0 } | if s.cached { CACHED } else { 0 };
    out.push(flags);
    out.extend_from_slice(&r.publisher.0);
    put_bytes(&mut out, r.user_key.as_bytes());
    put_bytes(&mut out, &r.value);
    out
}

/// Decodes a record stored under `key`; `refreshed_at_ms` is local bookkeeping, not stored.
pub fn decode_record(
    key: NodeId,
    bytes: &[u8],
    refreshed_at_ms: u64,
) -> Result<Stored, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.u64("version")?;
    let expires_at_ms = r.u64("expiry")?;
    let flags = r.take(1, "flags")?[0];
    if flags & !(TOMBSTONE | CACHED) != 0 {
        return Err(DecodeError(format!("unknown flags {flags:#04x}")));
    }
    let publisher = NodeId(r.take(20, "publisher")?.try_into().expect("20 bytes"));
    let user_key = String::from_utf8(r.bytes("user key")?.to_vec())
        .map_err(|_| DecodeError("user key is not UTF-8".into()))?;
    let value = r.bytes("value")?.to_vec();
    r.end()?;
    Ok(Stored {
        record: Record {
            key,
            value,
            version,
            expires_at_ms,
            tombstone: flags & TOMBSTONE != 0,
            publisher,
            user_key,
        },
        cached: flags & CACHED != 0,
        refreshed_at_ms,
        // Who brought a record is not kept across restarts: it then counts against nobody.
        owner: None,
    })
}

/// Encodes a contact (its id is the table key).
pub fn encode_contact(c: &Contact) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + c.addr.len());
    out.extend_from_slice(&c.incarnation.to_le_bytes());
    put_bytes(&mut out, c.addr.as_bytes());
    out
}

/// Decodes a contact stored under `id`.
pub fn decode_contact(id: NodeId, bytes: &[u8]) -> Result<Contact, DecodeError> {
    let mut r = Reader(bytes);
    let incarnation = r.u64("incarnation")?;
    let addr = String::from_utf8(r.bytes("address")?.to_vec())
        .map_err(|_| DecodeError("address is not UTF-8".into()))?;
    r.end()?;
    Ok(Contact::new(id, addr).with_incarnation(incarnation))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!(
                "truncated at the {what}: {} bytes left, {n} needed",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let len = u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes"));
        self.take(len as usize, what)
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(DecodeError(format!("{n} unexpected bytes at the end"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            record: Record {
                key: NodeId([9; 20]),
                value: b"value \x00\xff".to_vec(),
                version: 1_700_000_000_000_001,
                expires_at_ms: u64::MAX,
                tombstone: false,
                publisher: NodeId([3; 20]),
                user_key: "clé".into(),
            },
            cached: true,
            refreshed_at_ms: 42,
            owner: None,
        }
    }

    #[test]
    fn records_and_contacts_round_trip() {
        let s = stored();
        let bytes = encode_record(&s);
        assert_eq!(decode_record(s.record.key, &bytes, 42), Ok(s.clone()));
        let mut t = s;
        t.record.tombstone = true;
        t.record.value.clear();
        t.cached = false;
        assert_eq!(decode_record(t.record.key, &encode_record(&t), 42), Ok(t));
        let c = Contact::new(NodeId([1; 20]), "node-1:50051").with_incarnation(77);
        assert_eq!(decode_contact(c.id, &encode_contact(&c)), Ok(c));
    }

    #[test]
    fn damaged_entries_are_errors_not_misreads() {
        let bytes = encode_record(&stored());
        for cut in [0, 7, 16, 17, 40, bytes.len() - 1] {
            let err = decode_record(NodeId([9; 20]), &bytes[..cut], 0).unwrap_err();
            assert!(err.0.contains("truncated"), "{cut}: {err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode_record(NodeId([9; 20]), &longer, 0)
                .unwrap_err()
                .0
                .contains("unexpected")
        );
        let mut flags = bytes;
        flags[16] = 0x80;
        assert!(
            decode_record(NodeId([9; 20]), &flags, 0)
                .unwrap_err()
                .0
                .contains("flags")
        );
    }
}
