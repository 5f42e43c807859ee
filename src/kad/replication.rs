//! Replication planning (paper section 2.5): which held records one lookup can replicate.
//!
//! The paper replicates each record on its own: one node lookup for its key, then STOREs to
//! the k closest nodes found. A node holding a million records would run a million lookups an
//! hour. But keys that lie much closer to each other than nodes do have the same k closest
//! nodes, so one lookup serves them all: records due for replication are grouped by the high
//! bits of their key ([`group_of`]), with the group's width set well below the spacing of
//! nodes around this node ([`group_bits`]), and each group costs one lookup. The STOREs are
//! still per record, each to the k closest of the nodes the lookup found, ranked for that
//! record's own key.
//!
//! Implementation notes (departures from the paper):
//! - Holders of a record wait past the interval before replicating it, the closer to the key
//!   the shorter ([`stagger`]), so that the first one's STOREs spare the others the work: the
//!   paper's optimisation assumes the holders' timers are already apart, but copies stored by
//!   one write all start their interval together.
//! - A holder that replicates a record and finds that it is not among the key's k closest
//!   (by the nodes its lookup found, itself included) hands the record over: once `quorum`
//!   of its STOREs found the record held at those nodes, its own copy becomes a cached one
//!   (`RecordStore::demote`: it expires within `cache_ttl`, and is never replicated or handed
//!   off again). The paper keeps such copies until they expire (24 hours without a republish
//!   by their publisher); records here need not expire, and copies placed while the network
//!   was young (a holder's partial table judged a newcomer to be among the k closest, a
//!   lookup in a half-built network) stayed for good and were handed on from there: 8
//!   holders of a key that 32 more nodes joined left it on 26-34 of the 40 nodes
//!   (`sim::tests::keys_put_in_a_young_network_end_up_on_their_k_closest_and_no_further`).
//!   Only STOREs that were answered count. A hostile peer can answer that it stored a record
//!   it dropped, as it can to a put; that costs the copy of a node outside the k closest
//!   only, never one of theirs.
//! - The grouping above. A group that straddles the midpoint between two nodes sends some of
//!   its records to a set one node off their true k closest; the next replication by another
//!   holder, and the hand-off to newcomers, correct that.

use super::id::{ID_BITS, ID_BYTES, NodeId};
use super::routing::RoutingTable;

/// How many times narrower than the spacing of nodes a group of keys is (as a power of two):
/// 2^4 = 16 times.
pub const GROUP_MARGIN_BITS: usize = 4;
/// Holders of a record replicate it over the first half of the interval after it is due
/// ([`stagger`]).
pub const STAGGER_DIVISOR: u64 = 2;

/// How long after the replicate interval `node` replicates a record of `key` that no STORE
/// refreshed: the share of `spread_ms` that its distance to the key is of the radius
/// of this node's k closest contacts (2^`reach_bits`, [`reach_bits`]). The holders of a
/// record are the k nodes closest to its key, so they wait in order of closeness: the
/// closest replicates first, and its STOREs refresh the other holders' copies (the paper's
/// optimisation in section 2.5) before their turn comes. Without it, the k holders of a
/// record, all stored by one write at the same moment, would all replicate it at the same
/// moment every interval: k times the STOREs.
pub fn stagger(node: &NodeId, key: &NodeId, reach_bits: usize, spread_ms: u64) -> u64 {
    let d = node.distance(key);
    let distance = d.0.iter().fold(0f64, |acc, b| acc * 256.0 + f64::from(*b));
    let reach = 2f64.powi(reach_bits.min(ID_BITS) as i32);
    ((distance / reach).min(1.0) * spread_ms as f64) as u64
}

/// The radius of this node's neighbourhood, as a power of two: its k closest contacts lie
/// within distance 2^`reach_bits`; every id when it knows fewer than k.
pub fn reach_bits(routing: &RoutingTable) -> usize {
    let k = routing.k();
    let local = routing.local_id();
    let closest = routing.closest(&local, k);
    match closest.get(k - 1).and_then(|c| local.bucket_index(&c.id)) {
        Some(b) if closest.len() >= k => b + 1,
        _ => ID_BITS,
    }
}

/// The number of low-order key bits a replication group spans: keys that agree on every
/// higher bit form one group. `reach` is this node's neighbourhood ([`reach_bits`]), where
/// the records it holds lie; with fewer than k contacts every node is among the k closest of
/// every key, and all keys form one group.
pub fn group_bits(reach: usize, k: usize) -> usize {
    if reach >= ID_BITS {
        return ID_BITS;
    }
    // k nodes within distance 2^reach: about 2^reach / k apart.
    let spacing_bits = reach.saturating_sub(k.max(1).ilog2() as usize);
    spacing_bits.saturating_sub(GROUP_MARGIN_BITS)
}

/// The group of `key`: the key with its low `bits` bits cleared.
pub fn group_of(key: &NodeId, bits: usize) -> NodeId {
    let mut g = key.0;
    let bits = bits.min(ID_BITS);
    for (i, byte) in g.iter_mut().enumerate() {
        // Bits of this byte counted from the least significant end of the id.
        let low = (ID_BYTES - 1 - i) * 8;
        if low + 8 <= bits {
            *byte = 0;
        } else if low < bits {
            *byte &= 0xffu8 << (bits - low);
        }
    }
    NodeId(g)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::kad::Contact;

    #[test]
    fn holders_closer_to_a_key_replicate_it_sooner() {
        let key = NodeId([0; 20]);
        let near = NodeId::from_hex(&format!("{:040x}", 1u128 << 100)).unwrap();
        let far = NodeId::from_hex(&format!("{:040x}", 3u128 << 110)).unwrap();
        let (a, b) = (
            stagger(&near, &key, 112, 1000),
            stagger(&far, &key, 112, 1000),
        );
        assert!(a < b, "{a} {b}");
        assert_eq!(b, 750);
        // Beyond the neighbourhood: the whole spread.
        assert_eq!(stagger(&NodeId([0xff; 20]), &key, 112, 1000), 1000);
        assert_eq!(stagger(&key, &key, 112, 1000), 0);
    }

    #[test]
    fn groups_clear_the_low_bits() {
        let key = NodeId([0xff; 20]);
        assert_eq!(group_of(&key, 0), key);
        let mut half = [0xff; 20];
        half[19] = 0xf0;
        assert_eq!(group_of(&key, 4), NodeId(half));
        let mut two = [0xff; 20];
        two[18] = 0;
        two[19] = 0;
        assert_eq!(group_of(&key, 16), NodeId(two));
        assert_eq!(group_of(&key, 160), NodeId([0; 20]));
        assert_eq!(group_of(&key, 500), NodeId([0; 20]));
    }

    #[test]
    fn a_small_network_is_one_group_a_dense_one_narrow_groups() {
        let now = Instant::now();
        let local = NodeId([0; 20]);
        let mut t = RoutingTable::new(local, 20, now);
        for i in 1..=10u8 {
            let mut id = [0u8; 20];
            id[0] = i;
            let _ = t.insert(Contact::new(NodeId(id), format!("n{i}")), now);
        }
        assert_eq!(reach_bits(&t), ID_BITS, "fewer than k contacts");
        assert_eq!(group_bits(reach_bits(&t), 20), ID_BITS);
        // 20 contacts within distance 2^125 of this node (the farthest is 20 << 120): about
        // 2^121 apart.
        for i in 1..=20u8 {
            let mut id = [0u8; 20];
            id[4] = i;
            let _ = t.insert(Contact::new(NodeId(id), format!("m{i}")), now);
        }
        assert_eq!(reach_bits(&t), 125);
        let bits = group_bits(reach_bits(&t), 20);
        assert_eq!(bits, 125 - 4 - GROUP_MARGIN_BITS);
        // Two keys in one group share their k closest; keys a node apart do not group.
        let a = NodeId([7; 20]);
        let mut b = a;
        b.0[19] ^= 0x55;
        assert_eq!(group_of(&a, bits), group_of(&b, bits));
        let mut c = a;
        c.0[4] ^= 1;
        assert_ne!(group_of(&a, bits), group_of(&c, bits));
    }
}
