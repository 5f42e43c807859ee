//! Record storage behind the [`RecordStore`] trait, with an in-memory default.
//!
//! Records carry a version (last writer wins) and a wall-clock expiry, so that replication,
//! caching and catching up never bring back an older value over a newer one, nor a deleted
//! key: a delete is a tombstone record that lives until it expires.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::{Key, NodeId};

/// A value with its replication metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub value: Vec<u8>,
    /// Last-writer-wins version: the coordinating node's hybrid logical clock, in microseconds
    /// since the Unix epoch (its wall clock, moved past every version of the key it saw).
    pub version: u64,
    /// Wall-clock expiry in milliseconds since the Unix epoch; [`NEVER`]: until deleted.
    pub expires_at_ms: u64,
    pub tombstone: bool,
    pub publisher: NodeId,
    /// The key as the user wrote it (informational; the DHT key is its SHA-1).
    pub user_key: String,
}

impl Record {
    /// Whether the record has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at_ms <= unix_ms(now)
    }

    /// Total order used to settle conflicts: higher version wins; at equal versions a tombstone
    /// wins, then the larger value, so every replica settles on the same record.
    fn precedence(&self) -> (u64, bool, &[u8]) {
        (self.version, self.tombstone, &self.value)
    }

    /// Whether this record wins over `other` (the order every replica settles conflicts by).
    pub fn supersedes(&self, other: &Record) -> bool {
        self.precedence() > other.precedence()
    }

    /// Whether two records are the same write (possibly with different expiry).
    fn same_write(&self, other: &Record) -> bool {
        self.precedence() == other.precedence()
    }
}

/// `Record::expires_at_ms` of a record that lives until it is deleted.
pub const NEVER: u64 = u64::MAX;

/// When a tombstone written at `now_ms` may expire: after `grace_ms`, and not before any copy
/// it deletes (`copies`: the expiry of every copy the delete saw) could expire; [`NEVER`] when
/// one of them never does. A holder the delete missed then finds the tombstone in place
/// whenever its copy would come back.
pub fn tombstone_expiry(now_ms: u64, grace_ms: u64, copies: impl IntoIterator<Item = u64>) -> u64 {
    copies
        .into_iter()
        .fold(now_ms.saturating_add(grace_ms), u64::max)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Microseconds since the Unix epoch.
pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

/// A stored record plus local bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub record: Record,
    /// A cache copy placed by a lookup (paper section 2.5): expires early, never replicated.
    pub cached: bool,
    /// When this node last received or sent a STORE for this record (wall clock, ms), used to
    /// skip replicating records a peer has just replicated to us (paper section 2.5).
    pub refreshed_at_ms: u64,
}

/// Outcome of [`RecordStore::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The record was stored (new, newer, or the same write with a later expiry).
    Stored,
    /// A newer version is held; the record was not stored.
    Stale { current_version: u64 },
}

/// Why the store refused a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("value is {size} bytes, the maximum is {max}")]
    ValueTooLarge { size: usize, max: usize },
    #[error("store is full: {max} records")]
    Full { max: usize },
    #[error("store is full: {max} bytes of records (max_store_bytes)")]
    FullBytes { max: usize },
    #[error("key is {size} bytes, the maximum is {max}")]
    KeyTooLong { size: usize, max: usize },
    #[error("record already expired")]
    Expired,
    /// The durable store could not write the record (it was not stored).
    #[error("cannot write to the data dir: {0}")]
    Io(String),
}

/// Where records live. Implementations must apply the version rules of [`Record`].
pub trait RecordStore: Send {
    fn get(&self, key: &Key, now: SystemTime) -> Option<&Stored>;
    fn put(
        &mut self,
        record: Record,
        cached: bool,
        now: SystemTime,
    ) -> Result<PutOutcome, StoreError>;
    /// Marks a record as refreshed (a STORE for it was just sent or received).
    fn touch(&mut self, key: &Key, now: SystemTime);
    /// Makes the records (not cached copies) whose key `pick` selects due for replication
    /// now, as if never refreshed; returns how many.
    fn mark_due(&mut self, pick: &dyn Fn(&Key) -> bool) -> usize;
    /// Drops expired records; returns how many.
    fn expire(&mut self, now: SystemTime) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every stored record, borrowed (replication and hand-off pick a few and clone those).
    fn iter(&self) -> Box<dyn Iterator<Item = &Stored> + '_>;
    /// Whether puts since the last [`flush`](Self::flush) still have to be made durable (a
    /// store that commits in batches). Their acknowledgements must wait for the flush.
    fn unflushed(&self) -> bool {
        false
    }
    /// Makes every put since the last flush durable, or undoes them all and says why.
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Limits of the in-memory store.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub max_value_bytes: usize,
    pub max_records: usize,
    /// Memory the records may take ([`record_bytes`] each) at most.
    pub max_bytes: usize,
}

/// Longest user key, in bytes (a client's, and one a peer's STORE carries).
pub const MAX_KEY_BYTES: usize = 1024;

/// What a record costs in memory beyond its value and user key: the record's fixed fields,
/// two heap allocations, its map entry and the map's spare capacity. Measured with
/// `cargo run --release --example store_overhead`: 341 to 353 bytes per record (1,000,000
/// records of 0 and 100 bytes, x86-64, glibc).
pub const RECORD_OVERHEAD_BYTES: usize = 352;

/// The memory a stored record is counted as taking.
pub fn record_bytes(r: &Record) -> usize {
    r.value.len() + r.user_key.len() + RECORD_OVERHEAD_BYTES
}

/// The default store: a hash map bounded in value size, record count and bytes.
pub struct MemoryStore {
    records: HashMap<Key, Stored>,
    limits: StoreLimits,
    /// [`record_bytes`] of every record held.
    bytes: usize,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore {
            records: HashMap::new(),
            limits,
            bytes: 0,
        }
    }

    /// The bytes the records are counted as taking ([`record_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the store has room for `record` (which replaces any entry for its key): a new
    /// key needs a free record slot, and a write that grows the store needs room in bytes.
    pub fn room_for(&self, record: &Record) -> Result<(), StoreError> {
        let existing = self.records.get(&record.key);
        if existing.is_none() && self.records.len() >= self.limits.max_records {
            return Err(StoreError::Full {
                max: self.limits.max_records,
            });
        }
        let freed = existing.map_or(0, |s| record_bytes(&s.record));
        let needed = record_bytes(record);
        if needed > freed && self.bytes - freed + needed > self.limits.max_bytes {
            return Err(StoreError::FullBytes {
                max: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Inserts or replaces the entry for `key`, keeping the byte count.
    fn set(&mut self, key: Key, entry: Option<Stored>) {
        self.bytes += entry.as_ref().map_or(0, |s| record_bytes(&s.record));
        let old = match entry {
            Some(s) => self.records.insert(key, s),
            None => self.records.remove(&key),
        };
        self.bytes -= old.map_or(0, |s| record_bytes(&s.record));
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The entry for `key`, expired or not (for stores layered on this one).
    pub fn entry(&self, key: &Key) -> Option<&Stored> {
        self.records.get(key)
    }

    /// Puts back an entry as it was before a put that could not be persisted.
    pub fn restore(&mut self, key: Key, entry: Option<Stored>) {
        self.set(key, entry);
    }

    /// Inserts a record read back from disk, bypassing the limits (records already held are
    /// never dropped because a limit was lowered; new keys are refused while over it).
    pub fn insert_loaded(&mut self, s: Stored) {
        self.set(s.record.key, Some(s));
    }

    /// Drops expired records and returns their keys.
    pub fn drain_expired(&mut self, now: SystemTime) -> Vec<Key> {
        let expired: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, s)| s.record.expired(now))
            .map(|(k, _)| *k)
            .collect();
        for k in &expired {
            self.set(*k, None);
        }
        expired
    }
}

impl RecordStore for MemoryStore {
    fn get(&self, key: &Key, now: SystemTime) -> Option<&Stored> {
        self.records.get(key).filter(|s| !s.record.expired(now))
    }

    fn put(
        &mut self,
        record: Record,
        cached: bool,
        now: SystemTime,
    ) -> Result<PutOutcome, StoreError> {
        if record.value.len() > self.limits.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                size: record.value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        if record.expired(now) {
            return Err(StoreError::Expired);
        }
        if record.user_key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLong {
                size: record.user_key.len(),
                max: MAX_KEY_BYTES,
            });
        }
        let now_ms = unix_ms(now);
        let existing = self.records.get(&record.key);
        let live = existing.filter(|s| !s.record.expired(now));
        if let Some(current) = live {
            if current.record.same_write(&record) {
                let current = self.records.get_mut(&record.key).expect("present");
                current.record.expires_at_ms =
                    current.record.expires_at_ms.max(record.expires_at_ms);
                current.cached &= cached;
                current.refreshed_at_ms = now_ms;
                return Ok(PutOutcome::Stored);
            }
            if record.precedence() <= current.record.precedence() {
                return Ok(PutOutcome::Stale {
                    current_version: current.record.version,
                });
            }
        }
        // Expired records are dropped to make room when there is none.
        if self.room_for(&record).is_err() {
            self.expire(now);
            self.room_for(&record)?;
        }
        let key = record.key;
        self.set(
            key,
            Some(Stored {
                record,
                cached,
                refreshed_at_ms: now_ms,
            }),
        );
        Ok(PutOutcome::Stored)
    }

    fn touch(&mut self, key: &Key, now: SystemTime) {
        if let Some(s) = self.records.get_mut(key) {
            s.refreshed_at_ms = unix_ms(now);
        }
    }

    fn mark_due(&mut self, pick: &dyn Fn(&Key) -> bool) -> usize {
        let mut marked = 0;
        for (key, s) in &mut self.records {
            if !s.cached && pick(key) {
                s.refreshed_at_ms = 0;
                marked += 1;
            }
        }
        marked
    }

    fn expire(&mut self, now: SystemTime) -> usize {
        self.drain_expired(now).len()
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Stored> + '_> {
        Box::new(self.records.values())
    }
}

/// The test suite every [`RecordStore`] must pass (run against the memory store here and
/// against the durable store in `crate::storage`).
#[cfg(test)]
pub(crate) mod suite {
    use super::*;

    /// The limits every store under test is built with.
    pub const LIMITS: StoreLimits = StoreLimits {
        max_value_bytes: 16,
        max_records: 2,
        // Two records of up to 10 bytes each (a user key is empty here).
        max_bytes: 2 * (RECORD_OVERHEAD_BYTES + 10),
    };

    /// Runs every case against fresh stores from `make` (built with [`LIMITS`]).
    pub fn run_all(make: &mut dyn FnMut() -> Box<dyn RecordStore>) {
        newer_version_wins_older_is_refused(&mut *make());
        tombstone_blocks_older_values(&mut *make());
        same_write_extends_expiry(&mut *make());
        limits_are_enforced_with_clear_errors(&mut *make());
        bytes_are_bounded_and_a_delete_always_fits(&mut *make());
        expiry_is_wall_clock(&mut *make());
        touch_and_mark_due(&mut *make());
    }

    pub fn rec(key: u8, value: &[u8], version: u64, tombstone: bool, now: SystemTime) -> Record {
        Record {
            key: NodeId([key; 20]),
            value: value.to_vec(),
            version,
            expires_at_ms: unix_ms(now) + 60_000,
            tombstone,
            publisher: NodeId([0; 20]),
            user_key: String::new(),
        }
    }

    fn newer_version_wins_older_is_refused(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        assert_eq!(
            s.put(rec(1, b"v2", 2, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(
            s.put(rec(1, b"v1", 1, false, now), false, now),
            Ok(PutOutcome::Stale { current_version: 2 })
        );
        assert_eq!(s.get(&NodeId([1; 20]), now).unwrap().record.value, b"v2");
        assert_eq!(
            s.put(rec(1, b"v3", 3, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(s.get(&NodeId([1; 20]), now).unwrap().record.value, b"v3");
    }

    fn tombstone_blocks_older_values(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, b"v1", 1, false, now), false, now).unwrap();
        s.put(rec(1, b"", 2, true, now), false, now).unwrap();
        assert_eq!(
            s.put(rec(1, b"v1", 1, false, now), false, now),
            Ok(PutOutcome::Stale { current_version: 2 })
        );
        assert!(s.get(&NodeId([1; 20]), now).unwrap().record.tombstone);
        // At equal versions the tombstone wins too.
        assert_eq!(
            s.put(rec(1, b"zz", 2, false, now), false, now),
            Ok(PutOutcome::Stale { current_version: 2 })
        );
    }

    fn same_write_extends_expiry(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        let mut r = rec(1, b"v", 5, false, now);
        s.put(r.clone(), false, now).unwrap();
        r.expires_at_ms += 1000;
        assert_eq!(s.put(r.clone(), false, now), Ok(PutOutcome::Stored));
        assert_eq!(
            s.get(&r.key, now).unwrap().record.expires_at_ms,
            r.expires_at_ms
        );
    }

    fn limits_are_enforced_with_clear_errors(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        assert_eq!(
            s.put(rec(1, &[0; 17], 1, false, now), false, now),
            Err(StoreError::ValueTooLarge { size: 17, max: 16 })
        );
        s.put(rec(1, b"a", 1, false, now), false, now).unwrap();
        s.put(rec(2, b"b", 1, false, now), false, now).unwrap();
        assert_eq!(
            s.put(rec(3, b"c", 1, false, now), false, now),
            Err(StoreError::Full { max: 2 })
        );
        // Updating an existing key is still allowed when full.
        assert_eq!(
            s.put(rec(2, b"bb", 2, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
    }

    fn bytes_are_bounded_and_a_delete_always_fits(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, &[1; 10], 1, false, now), false, now).unwrap();
        // A second record that would take the store past max_bytes is refused.
        assert_eq!(
            s.put(rec(2, &[2; 11], 1, false, now), false, now),
            Err(StoreError::FullBytes {
                max: LIMITS.max_bytes
            })
        );
        s.put(rec(2, &[2; 10], 1, false, now), false, now).unwrap();
        // So is an update that grows a record past it...
        assert_eq!(
            s.put(rec(1, &[1; 12], 2, false, now), false, now),
            Err(StoreError::FullBytes {
                max: LIMITS.max_bytes
            })
        );
        assert_eq!(s.get(&NodeId([1; 20]), now).unwrap().record.value, [1; 10]);
        // ...but a tombstone, which shrinks it, is always taken, and frees room.
        assert_eq!(
            s.put(rec(1, b"", 3, true, now), false, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(
            s.put(rec(2, &[2; 16], 2, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
        // Keys longer than a client may send are refused from peers too.
        let mut long = rec(3, b"", 1, false, now);
        long.user_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            s.put(long, false, now),
            Err(StoreError::KeyTooLong {
                size: MAX_KEY_BYTES + 1,
                max: MAX_KEY_BYTES
            })
        );
    }

    fn expiry_is_wall_clock(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, b"a", 1, false, now), false, now).unwrap();
        let later = now + Duration::from_secs(61);
        assert!(s.get(&NodeId([1; 20]), later).is_none());
        assert_eq!(s.expire(later), 1);
        assert!(s.is_empty());
        assert_eq!(
            s.put(rec(1, b"a", 1, false, now), false, later),
            Err(StoreError::Expired)
        );
    }

    fn touch_and_mark_due(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, b"a", 1, false, now), false, now).unwrap();
        s.put(rec(2, b"b", 1, false, now), true, now).unwrap();
        let key = NodeId([1; 20]);
        assert_eq!(s.get(&key, now).unwrap().refreshed_at_ms, unix_ms(now));
        // Cached copies are never due for replication.
        assert_eq!(s.mark_due(&|_| true), 1);
        assert_eq!(s.get(&key, now).unwrap().refreshed_at_ms, 0);
        s.touch(&key, now);
        assert_eq!(s.get(&key, now).unwrap().refreshed_at_ms, unix_ms(now));
        assert_eq!(s.iter().count(), 2);
        assert_eq!(s.len(), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_outlives_every_copy_it_deletes_and_the_grace() {
        assert_eq!(tombstone_expiry(1_000, 500, []), 1_500);
        assert_eq!(tombstone_expiry(1_000, 500, [1_200, 9_000]), 9_000);
        assert_eq!(tombstone_expiry(1_000, 500, [1_200, NEVER]), NEVER);
        assert_eq!(tombstone_expiry(u64::MAX - 1, 500, []), NEVER);
    }

    #[test]
    fn a_record_that_never_expires_does_not() {
        let now = SystemTime::now();
        let mut s = MemoryStore::new(suite::LIMITS);
        let mut r = suite::rec(1, b"a", 1, false, now);
        r.expires_at_ms = NEVER;
        s.put(r, false, now).unwrap();
        let far = now + Duration::from_secs(100 * 365 * 86_400);
        assert_eq!(s.expire(far), 0);
        assert!(s.get(&NodeId([1; 20]), far).is_some());
    }

    #[test]
    fn the_memory_store_passes_the_store_suite() {
        suite::run_all(&mut || Box::new(MemoryStore::new(suite::LIMITS)));
    }
}
