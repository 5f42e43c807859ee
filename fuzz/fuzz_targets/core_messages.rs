//! Fuzz target: one node's core handling whatever its peers send, and one lookup fed whatever
//! they answer.
//!
//! The input is a script of steps. Requests and replies come as protobuf bytes and go through
//! the same validation as on the wire (`net::grpc::convert`) before they reach the core, as
//! they do in a node. After every step the core's invariants must hold: no bucket holds more
//! than k contacts, nor this node, nor two contacts at one address; the store stays within its
//! limits; no reply carries more than k contacts. The lookup must stay within its query cap
//! and end when its peers stop answering.

#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use kademlia::kad::diversity::DiversityLimits;
use kademlia::kad::lookup::{Lookup, Mode, Poll};
use kademlia::kad::routing::NEIGHBOURHOOD_BUCKET_FACTOR;
use kademlia::kad::{Contact, Core, MemoryStore, NodeId, Params, Response, StoreLimits};
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

const K: usize = 4;
const MAX_RECORDS: usize = 16;
const QUERY_CAP: u32 = 24;

/// Reads the script: a step is a kind byte, then (for messages) a length byte and that many
/// bytes of protobuf.
struct Script<'a>(&'a [u8]);

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (chunk, rest) = self.0.split_at(n);
        self.0 = rest;
        chunk
    }
}

fn check(core: &Core) {
    let me = core.id();
    let mut addrs = HashSet::new();
    for bucket in core.routing().buckets() {
        assert!(
            bucket.entries.len() <= K * NEIGHBOURHOOD_BUCKET_FACTOR,
            "a bucket over 2k"
        );
        assert!(bucket.replacements.len() <= K, "a replacement cache over k");
        for e in &bucket.entries {
            assert_ne!(e.contact.id, me, "this node in its own table");
            assert!(
                addrs.insert(e.contact.addr.clone()),
                "two contacts at one address"
            );
        }
    }
    assert!(
        core.store().len() <= MAX_RECORDS,
        "store over its record limit"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script(data);
    let me = Contact::new(NodeId([0x55; 20]), "10.0.0.1:50051");
    let params = Params {
        k: K,
        alpha: 3,
        rpc_timeout: Duration::from_secs(1),
        max_clock_skew: Duration::from_secs(60),
        max_ttl: Duration::from_secs(3600),
        diversity: DiversityLimits {
            per_bucket: 2,
            per_table: 10,
        },
    };
    // A per-peer quota of half the store, so that the fuzzer meets it too.
    let store = MemoryStore::new(StoreLimits::new(64, MAX_RECORDS, MAX_RECORDS * 500, 50));
    let mut now = Instant::now();
    let mut wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut core = Core::new(me, "net".into(), params, Box::new(store), now);
    let mut lookup: Option<(Lookup, Option<Contact>)> = None;
    while let Some(kind) = script.byte() {
        match kind % 12 {
            // A request, from a source IP the script picks (or none).
            k @ 0..=3 => {
                let bytes = script.chunk();
                let env = common::request(k, bytes);
                let source = script
                    .byte()
                    .filter(|b| b % 2 == 0)
                    .map(|b| IpAddr::V4(Ipv4Addr::new(10, 0, 0, b / 2)));
                if let Some(Ok(env)) = env {
                    let (answer, _effects) = core.handle_from(env, source, now, wall);
                    if let Ok(reply) = answer {
                        match reply.body {
                            Response::Nodes { closer } | Response::Value { closer, .. } => {
                                assert!(closer.len() <= K, "a reply over k contacts")
                            }
                            _ => {}
                        }
                    }
                }
            }
            // A reply to an RPC this node sent to an address the script picks.
            k @ 4..=7 => {
                let bytes = script.chunk();
                let dialed = format!("10.0.0.{}:50051", script.byte().unwrap_or(2));
                if let Some(Ok(reply)) = common::reply(k, bytes) {
                    let _ = core.on_reply(reply.responder, &dialed, now, wall);
                }
            }
            // Time passes (wall clock and monotonic).
            8 => {
                let secs = u64::from(script.byte().unwrap_or(1));
                now += Duration::from_secs(secs);
                wall += Duration::from_secs(secs * 60);
                core.store_mut().expire(wall);
            }
            // An RPC to a known contact failed.
            9 => {
                let target = script.byte().unwrap_or(0) as usize;
                let ids: Vec<NodeId> = core
                    .routing()
                    .buckets()
                    .iter()
                    .flat_map(|b| &b.entries)
                    .map(|e| e.contact.id)
                    .collect();
                if let Some(id) = ids.get(target % ids.len().max(1)) {
                    core.on_failure(id);
                }
            }
            // A lookup from the routing table, or its next step with a fuzzed answer.
            _ => match lookup.take() {
                None => {
                    let target = NodeId([script.byte().unwrap_or(0); 20]);
                    let seeds = core.routing().closest(&target, K);
                    let l = Lookup::new(
                        core.id(),
                        target,
                        seeds,
                        K,
                        3,
                        Duration::from_secs(1),
                        Mode::FindValue,
                    )
                    .with_query_cap(QUERY_CAP);
                    lookup = Some((l, None));
                }
                Some((mut l, asked)) => {
                    if let Some(peer) = asked {
                        let bytes = script.chunk();
                        match common::reply(2 + script.byte().unwrap_or(0) % 2, bytes)
                            .and_then(Result::ok)
                        {
                            Some(reply) => match reply.body {
                                Response::Nodes { closer } => l.on_success(&peer.id, closer, None),
                                Response::Value { closer, record } => {
                                    l.on_success(&peer.id, closer, record)
                                }
                                _ => l.on_failure(&peer.id),
                            },
                            None => l.on_failure(&peer.id),
                        }
                    }
                    match l.poll(now) {
                        Poll::Query(c) => lookup = Some((l, Some(c))),
                        Poll::Wait(_) => lookup = Some((l, None)),
                        Poll::Done => {
                            let outcome = l.finish();
                            assert!(outcome.queried <= QUERY_CAP, "lookup over its query cap");
                            assert!(outcome.closest.len() <= K);
                        }
                    }
                }
            },
        }
        check(&core);
    }
    // Once nobody answers any more, the lookup ends within its cap.
    if let Some((mut l, asked)) = lookup {
        if let Some(peer) = asked {
            l.on_failure(&peer.id);
        }
        let mut steps = 0;
        loop {
            match l.poll(now) {
                Poll::Query(c) => l.on_failure(&c.id),
                Poll::Wait(_) => now += Duration::from_secs(2),
                Poll::Done => break,
            }
            steps += 1;
            assert!(
                steps < 4 * QUERY_CAP as usize + 16,
                "a lookup that does not end"
            );
        }
        assert!(l.finish().queried <= QUERY_CAP);
    }
});
