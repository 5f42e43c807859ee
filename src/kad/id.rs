//! 160-bit identifiers and the XOR metric (paper section 2.1).
//!
//! Node ids and keys live in the same 160-bit space. The distance between two ids is their
//! bitwise XOR read as an unsigned integer; it is symmetric, zero only for equal ids and obeys
//! the triangle inequality, which is what lets lookups converge.

use std::fmt;

use rand::Rng;
use sha1::{Digest, Sha1};

/// Bits in an id: SHA-1 output size (paper section 2.1: "160-bit node identifiers").
pub const ID_BITS: usize = 160;
/// Bytes in an id.
pub const ID_BYTES: usize = ID_BITS / 8;

/// A 160-bit node id or key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; ID_BYTES]);

/// Keys share the id space with nodes.
pub type Key = NodeId;

/// XOR distance between two ids, ordered as a 160-bit big-endian unsigned integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Distance(pub [u8; ID_BYTES]);

impl Ord for Distance {
    /// As the bytes compare, but as two integers (the first 16 bytes, then the last 4): the
    /// derived comparison calls `memcmp`, and lookups and routing tables compare distances
    /// more than they do anything else.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let split = |d: &[u8; ID_BYTES]| {
            let (high, low) = d.split_at(16);
            let high = u128::from_be_bytes(high.try_into().expect("16 bytes"));
            let low = u32::from_be_bytes(low.try_into().expect("4 bytes"));
            (high, low)
        };
        split(&self.0).cmp(&split(&other.0))
    }
}

impl PartialOrd for Distance {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Error for byte strings that are not exactly [`ID_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an id must be exactly {ID_BYTES} bytes, got {0}")]
pub struct BadIdLength(pub usize);

impl NodeId {
    /// The SHA-1 of arbitrary bytes: how user keys become DHT keys.
    pub fn hash(data: &[u8]) -> Self {
        let digest = Sha1::digest(data);
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&digest);
        NodeId(id)
    }

    /// A uniformly random id.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; ID_BYTES];
        rng.fill(&mut id[..]);
        NodeId(id)
    }

    /// Parses exactly [`ID_BYTES`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BadIdLength> {
        let arr: [u8; ID_BYTES] = bytes.try_into().map_err(|_| BadIdLength(bytes.len()))?;
        Ok(NodeId(arr))
    }

    /// Parses 40 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != ID_BYTES * 2 || !s.is_ascii() {
            return None;
        }
        let mut id = [0u8; ID_BYTES];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(NodeId(id))
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; ID_BYTES];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// Index of the k-bucket `other` belongs in, seen from `self`: i such that
    /// 2^i <= distance < 2^(i+1). `None` for `other == self` (a node never stores itself).
    pub fn bucket_index(&self, other: &NodeId) -> Option<usize> {
        self.distance(other).bucket_index()
    }

    /// A random id whose distance from `self` falls in bucket `index` (used by bucket refresh,
    /// paper section 2.3: "picks a random ID in the bucket's range and performs a node search").
    pub fn random_in_bucket<R: Rng + ?Sized>(&self, index: usize, rng: &mut R) -> NodeId {
        assert!(index < ID_BITS, "bucket index out of range");
        let mut d = [0u8; ID_BYTES];
        rng.fill(&mut d[..]);
        // Bit `index` (counting from the least significant) is the highest set bit.
        let byte = ID_BYTES - 1 - index / 8;
        let bit = index % 8;
        for b in d.iter_mut().take(byte) {
            *b = 0;
        }
        let keep = ((1u16 << bit) - 1) as u8;
        d[byte] = (d[byte] & keep) | (1 << bit);
        let mut id = [0u8; ID_BYTES];
        for (i, b) in id.iter_mut().enumerate() {
            *b = self.0[i] ^ d[i];
        }
        NodeId(id)
    }

    /// The ids that agree with `self` on every bit from position `bits` up (counting from the
    /// least significant), that is those at a distance below 2^`bits`: an interval in id
    /// order, given as its first and last id.
    pub fn prefix_range(&self, bits: usize) -> (NodeId, NodeId) {
        let (mut lo, mut hi) = (*self, *self);
        for bit in 0..bits.min(ID_BITS) {
            let (byte, mask) = bit_position(bit);
            lo.0[byte] &= !mask;
            hi.0[byte] |= mask;
        }
        (lo, hi)
    }

    /// The ids in bucket `index` seen from `self` (distance from 2^index to 2^(index+1) - 1):
    /// an interval in id order, given as its first and last id.
    pub fn bucket_range(&self, index: usize) -> (NodeId, NodeId) {
        assert!(index < ID_BITS, "bucket index out of range");
        let mut flipped = *self;
        let (byte, mask) = bit_position(index);
        flipped.0[byte] ^= mask;
        flipped.prefix_range(index)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }
}

impl Distance {
    /// Position of the highest set bit, or `None` for a zero distance.
    pub fn bucket_index(&self) -> Option<usize> {
        for (i, b) in self.0.iter().enumerate() {
            if *b != 0 {
                return Some((ID_BYTES - 1 - i) * 8 + (7 - b.leading_zeros() as usize));
            }
        }
        None
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// The byte and the mask of bit `bit` (counting from the least significant) of an id.
pub(crate) fn bit_position(bit: usize) -> (usize, u8) {
    (ID_BYTES - 1 - bit / 8, 1 << (bit % 8))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = NodeId> {
        any::<[u8; ID_BYTES]>().prop_map(NodeId)
    }

    fn add(a: &Distance, b: &Distance) -> (bool, [u8; ID_BYTES]) {
        let mut out = [0u8; ID_BYTES];
        let mut carry = 0u16;
        for i in (0..ID_BYTES).rev() {
            let s = a.0[i] as u16 + b.0[i] as u16 + carry;
            out[i] = s as u8;
            carry = s >> 8;
        }
        (carry != 0, out)
    }

    fn seeded(b: NodeId) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        rand::rngs::StdRng::seed_from_u64(u64::from_le_bytes(b.0[..8].try_into().unwrap()))
    }

    proptest! {
        #[test]
        fn distances_order_as_their_bytes(a in id(), b in id(), prefix in 0usize..=ID_BYTES) {
            // Ids that share a prefix of any length, so that every byte decides some cases.
            let mut b = b;
            b.0[..prefix].copy_from_slice(&a.0[..prefix]);
            let (da, db) = (Distance(a.0), Distance(b.0));
            prop_assert_eq!(da.cmp(&db), a.0.cmp(&b.0));
            prop_assert_eq!(da.partial_cmp(&db), Some(a.0.cmp(&b.0)));
        }

        #[test]
        fn distance_to_self_is_zero_and_only_self(a in id(), b in id()) {
            prop_assert_eq!(a.distance(&a), Distance([0; ID_BYTES]));
            prop_assert_eq!(a.distance(&b) == Distance([0; ID_BYTES]), a == b);
        }

        #[test]
        fn distance_is_symmetric(a in id(), b in id()) {
            prop_assert_eq!(a.distance(&b), b.distance(&a));
        }

        #[test]
        fn triangle_inequality(a in id(), b in id(), c in id()) {
            let (overflow, sum) = add(&a.distance(&b), &b.distance(&c));
            prop_assert!(overflow || a.distance(&c).0 <= sum);
        }

        #[test]
        fn unidirectional(a in id(), b in id(), c in id()) {
            // For a fixed point and distance there is exactly one id: d(a,b)=d(a,c) => b=c.
            prop_assert_eq!(a.distance(&b) == a.distance(&c), b == c);
        }

        #[test]
        fn bucket_index_bounds_distance(a in id(), b in id()) {
            prop_assume!(a != b);
            let i = a.bucket_index(&b).unwrap();
            let d = a.distance(&b);
            // The highest set bit of d is bit i.
            let byte = ID_BYTES - 1 - i / 8;
            prop_assert!(d.0[byte] & (1 << (i % 8)) != 0);
            prop_assert!(d.0[..byte].iter().all(|x| *x == 0));
            prop_assert!(u16::from(d.0[byte]) < (1u16 << (i % 8 + 1)));
        }

        #[test]
        fn random_in_bucket_lands_in_bucket(a in id(), i in 0usize..ID_BITS, seed in any::<u64>()) {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let t = a.random_in_bucket(i, &mut rng);
            prop_assert_eq!(a.bucket_index(&t), Some(i));
        }

        #[test]
        fn a_bucket_is_an_interval_of_ids(a in id(), b in id(), i in 0usize..ID_BITS) {
            let (lo, hi) = a.bucket_range(i);
            prop_assert_eq!(a.bucket_index(&lo), Some(i));
            prop_assert_eq!(a.bucket_index(&hi), Some(i));
            prop_assert_eq!(lo <= b && b <= hi, a.bucket_index(&b) == Some(i));
            let inside = a.random_in_bucket(i, &mut seeded(b));
            prop_assert!(lo <= inside && inside <= hi);
        }

        #[test]
        fn a_prefix_is_an_interval_of_ids(a in id(), b in id(), bits in 0usize..=ID_BITS) {
            let (lo, hi) = a.prefix_range(bits);
            let near = a.bucket_index(&b).is_none_or(|i| i < bits);
            prop_assert_eq!(lo <= b && b <= hi, near);
            prop_assert!(lo <= a && a <= hi);
            // a's bits from `bits` up and b's below them.
            let mixed = NodeId(std::array::from_fn(|k| {
                let low = (0..8).filter(|j| (ID_BYTES - 1 - k) * 8 + j < bits).fold(0u8, |m, j| m | 1 << j);
                (a.0[k] & !low) | (b.0[k] & low)
            }));
            prop_assert!(lo <= mixed && mixed <= hi);
        }

        #[test]
        fn hex_round_trips(a in id()) {
            prop_assert_eq!(NodeId::from_hex(&a.to_hex()), Some(a));
        }
    }

    #[test]
    fn sha1_of_known_input() {
        assert_eq!(
            NodeId::hash(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn from_slice_rejects_wrong_lengths() {
        assert_eq!(NodeId::from_slice(&[0; 19]), Err(BadIdLength(19)));
        assert_eq!(NodeId::from_slice(&[0; 21]), Err(BadIdLength(21)));
        assert!(NodeId::from_slice(&[7; 20]).is_ok());
    }

    #[test]
    fn bucket_index_extremes() {
        let zero = NodeId([0; ID_BYTES]);
        let mut one = [0; ID_BYTES];
        one[ID_BYTES - 1] = 1;
        assert_eq!(zero.bucket_index(&NodeId(one)), Some(0));
        let mut top = [0; ID_BYTES];
        top[0] = 0x80;
        assert_eq!(zero.bucket_index(&NodeId(top)), Some(159));
        assert_eq!(zero.bucket_index(&zero), None);
    }
}
