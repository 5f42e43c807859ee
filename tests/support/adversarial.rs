//! Lookups through a network with adversarial nodes, run on the real lookup state machine
//! (`kad::lookup::Lookup`) in one thread, with answers given at once, a round at a time.
//!
//! Every node knows the network as a well-formed Kademlia table would (each node offered
//! every other, in random order, to its k-buckets). A value is stored under each target at
//! its k closest nodes; the honest ones among them keep it. Honest nodes answer a FIND_VALUE
//! with the value if they hold it, else with the k closest contacts of their table.
//! Adversarial nodes collude to eclipse the target (the attack of S/Kademlia section 4.4):
//! each answers with every other adversary (up to k) under a made-up id right next to the
//! target, closer than any honest node, and never with the value; queried under such an
//! id, an adversary plays along. Ids are not bound to keys here (plaintext peers), so
//! nothing stops them but the lookup's own rule that one address counts once. A lookup
//! succeeds when it gets the value.
//!
//! Shared by `tests/sim_disjoint.rs` (which checks what disjoint paths buy) and
//! `examples/disjoint_paths.rs` (which prints the figures).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kademlia::NodeId;
use kademlia::kad::lookup::{Lookup, Mode, Poll};
use kademlia::kad::routing::RoutingTable;
use kademlia::kad::store::NEVER;
use kademlia::kad::{Contact, Record};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A network of honest and adversarial nodes.
pub struct Network {
    ids: Vec<NodeId>,
    tables: Vec<RoutingTable>,
    adversarial: Vec<bool>,
    k: usize,
}

/// What a batch of lookups found.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Lookups that got the value, in percent.
    pub success_pct: f64,
    /// RPCs per lookup, on average.
    pub messages_per_lookup: f64,
}

fn contact(ids: &[NodeId], i: usize) -> Contact {
    Contact::new(ids[i], format!("node-{i}:1"))
}

impl Network {
    /// `n` nodes, a `fraction` of them adversarial, k-buckets of `k`.
    pub fn new(n: usize, fraction: f64, k: usize, seed: u64) -> Network {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..n).map(|_| NodeId::random(&mut rng)).collect();
        let bad = (n as f64 * fraction).round() as usize;
        let mut adversarial = vec![false; n];
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for &i in order.iter().take(bad) {
            adversarial[i] = true;
        }
        // Each node's table holds up to k random nodes of every bucket's range, as a table
        // that saw every node in random order would (the ranges are intervals of the ids in
        // order, so each is a slice of them).
        let now = Instant::now();
        let mut sorted: Vec<(NodeId, usize)> = ids.iter().copied().zip(0..).collect();
        sorted.sort();
        let tables = (0..n)
            .map(|i| {
                let mut t = RoutingTable::new(ids[i], k, now);
                for b in 0..kademlia::kad::id::ID_BITS {
                    let (lo, hi) = ids[i].bucket_range(b);
                    let from = sorted.partition_point(|(id, _)| *id < lo);
                    let to = sorted.partition_point(|(id, _)| *id <= hi);
                    let picks = rand::seq::index::sample(&mut rng, to - from, k.min(to - from));
                    for p in picks {
                        let _ = t.insert(contact(&ids, sorted[from + p].1), now);
                    }
                }
                t
            })
            .collect();
        Network {
            ids,
            tables,
            adversarial,
            k,
        }
    }

    fn index_of(&self, c: &Contact) -> usize {
        c.addr
            .strip_prefix("node-")
            .and_then(|s| s.strip_suffix(":1"))
            .and_then(|s| s.parse().ok())
            .expect("a contact of this network")
    }

    /// A made-up id for adversary `j` next to `target`: it differs from the target only in
    /// its last 32 bits, closer than any honest node of a network of fewer than 2^100 nodes.
    fn next_to(target: &NodeId, j: usize) -> NodeId {
        let mut id = *target;
        let tail = (j as u32).wrapping_mul(0x9e37_79b9) | 1;
        for (b, x) in id.0[16..].iter_mut().zip(tail.to_be_bytes()) {
            *b ^= x;
        }
        id
    }

    /// What node `i` answers to a FIND_VALUE for `target` from `from`: contacts, and the
    /// value if it holds one.
    fn answer(
        &self,
        i: usize,
        target: &NodeId,
        from: usize,
        holders: &HashSet<usize>,
    ) -> (Vec<Contact>, bool) {
        if self.adversarial[i] {
            let bad = (0..self.ids.len())
                .filter(|&j| self.adversarial[j] && j != i)
                .take(self.k)
                .map(|j| Contact::new(Self::next_to(target, j), format!("node-{j}:1")))
                .collect();
            (bad, false)
        } else if holders.contains(&i) {
            (Vec::new(), true)
        } else {
            let mut v = self.tables[i].closest(target, self.k + 1);
            v.retain(|c| c.id != self.ids[from]);
            v.truncate(self.k);
            (v, false)
        }
    }

    /// `lookups` FIND_VALUE lookups from random honest nodes to random targets, along `paths`
    /// disjoint paths, `alpha` requests in flight per path.
    pub fn lookups(&self, lookups: usize, paths: usize, alpha: usize, seed: u64) -> Figures {
        let mut rng = StdRng::seed_from_u64(seed);
        let honest: Vec<usize> = (0..self.ids.len())
            .filter(|&i| !self.adversarial[i])
            .collect();
        let (mut ok, mut messages) = (0, 0u64);
        let now = Instant::now();
        for _ in 0..lookups {
            let from = honest[rng.random_range(0..honest.len())];
            let target = NodeId::random(&mut rng);
            // The value lives at the target's k closest nodes: the honest ones keep it.
            let mut by_distance: Vec<usize> = (0..self.ids.len()).collect();
            by_distance.sort_by_key(|&i| self.ids[i].distance(&target));
            let holders: HashSet<usize> = by_distance
                .into_iter()
                .take(self.k)
                .filter(|&i| !self.adversarial[i] && i != from)
                .collect();
            let record = Record {
                key: target,
                value: b"v".to_vec(),
                version: 1,
                expires_at_ms: NEVER,
                tombstone: false,
                publisher: target,
                user_key: String::new(),
            };
            let seeds = self.tables[from].closest(&target, self.k);
            let mut lookup = Lookup::new(
                self.ids[from],
                target,
                seeds,
                self.k,
                alpha,
                Duration::from_secs(1),
                Mode::FindValue,
            )
            .with_disjoint_paths(paths);
            loop {
                // One round: every query the lookup wants now, then every answer.
                let mut round = Vec::new();
                let done = loop {
                    match lookup.poll(now) {
                        Poll::Query(c) => round.push(c),
                        Poll::Wait(_) => break false,
                        Poll::Done => break true,
                    }
                };
                if done {
                    break;
                }
                assert!(!round.is_empty(), "a lookup waiting on nothing");
                for c in round {
                    let (closer, has) = self.answer(self.index_of(&c), &target, from, &holders);
                    lookup.on_success(&c.id, closer, has.then(|| record.clone()));
                }
            }
            let outcome = lookup.finish();
            messages += u64::from(outcome.queried);
            ok += usize::from(outcome.found.is_some());
        }
        Figures {
            success_pct: 100.0 * ok as f64 / lookups as f64,
            messages_per_lookup: messages as f64 / lookups as f64,
        }
    }
}
