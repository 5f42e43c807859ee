//! Measures what a record costs in memory beyond its value and user key, to check
//! `kad::store::RECORD_OVERHEAD_BYTES` (the figure `max_store_bytes` counts with).
//!
//! `cargo run --release --example store_overhead -- [records] [value bytes]`
//! (default 1,000,000 records of 100 bytes); reads the resident set size from /proc.

use std::time::SystemTime;

use kademlia::NodeId;
use kademlia::kad::store::{NEVER, RECORD_OVERHEAD_BYTES, record_bytes};
use kademlia::kad::{MemoryStore, Record, RecordStore, StoreLimits};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("records"));
    let v: usize = args.next().map_or(100, |a| a.parse().expect("value bytes"));
    let mut store = MemoryStore::new(StoreLimits {
        max_value_bytes: v.max(1),
        max_records: usize::MAX,
        max_bytes: usize::MAX,
    });
    let now = SystemTime::now();
    let before = rss_bytes();
    for i in 0..n {
        let user_key = format!("key-{i:08}");
        let record = Record {
            key: NodeId::hash(user_key.as_bytes()),
            value: vec![7; v],
            version: 1,
            expires_at_ms: NEVER,
            tombstone: false,
            publisher: NodeId([1; 20]),
            user_key,
        };
        store.put(record, false, now).expect("stored");
    }
    let after = rss_bytes();
    let payload =
        store.iter().map(|s| record_bytes(&s.record)).sum::<usize>() - n * RECORD_OVERHEAD_BYTES;
    let per_record = (after - before) as f64 / n as f64;
    let overhead = per_record - payload as f64 / n as f64;
    println!(
        "{n} records of {v}-byte values: RSS grew {:.1} MB, {per_record:.0} bytes per record, \
         {overhead:.0} beyond value and key (RECORD_OVERHEAD_BYTES = {RECORD_OVERHEAD_BYTES}); \
         counted {:.1} MB",
        (after - before) as f64 / 1e6,
        store.bytes() as f64 / 1e6
    );
}
