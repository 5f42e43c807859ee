//! Measures what a record costs in memory beyond its value and user key, to check
//! `kad::store::RECORD_OVERHEAD_BYTES` (the figure `max_store_bytes` counts with).
//!
//! `cargo run --release --example store_overhead -- [records] [value bytes] [ttl seconds]`
//! (default 1,000,000 records of 100 bytes that never expire; with a TTL, records also take
//! an entry in the expiry index, `EXPIRY_INDEX_BYTES`); reads the resident set size from /proc.

use std::time::SystemTime;

use kademlia::NodeId;
use kademlia::kad::store::{
    EXPIRY_INDEX_BYTES, NEVER, RECORD_OVERHEAD_BYTES, record_bytes, unix_ms,
};
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
    let ttl_secs: u64 = args.next().map_or(0, |a| a.parse().expect("ttl seconds"));
    let mut store = MemoryStore::new(StoreLimits::new(v.max(1), usize::MAX, usize::MAX, 100));
    let now = SystemTime::now();
    let before = rss_bytes();
    for i in 0..n {
        let user_key = format!("key-{i:08}");
        let record = Record {
            key: NodeId::hash(user_key.as_bytes()),
            value: vec![7; v],
            version: 1,
            expires_at_ms: match ttl_secs {
                0 => NEVER,
                t => unix_ms(now) + t * 1000,
            },
            tombstone: false,
            publisher: NodeId([1; 20]),
            user_key,
        };
        store.put(record, false, now).expect("stored");
    }
    let after = rss_bytes();
    let payload: usize = store
        .iter()
        .map(|s| s.record.value.len() + s.record.user_key.len())
        .sum();
    let counted_overhead =
        record_bytes(&store.iter().next().expect("a record").record) - v - "key-00000000".len();
    let per_record = (after - before) as f64 / n as f64;
    let overhead = per_record - payload as f64 / n as f64;
    println!(
        "{n} records of {v}-byte values: RSS grew {:.1} MB, {per_record:.0} bytes per record, \
         {overhead:.0} beyond value and key (counted: {counted_overhead} = \
         RECORD_OVERHEAD_BYTES {RECORD_OVERHEAD_BYTES} + EXPIRY_INDEX_BYTES {EXPIRY_INDEX_BYTES} \
         if it expires); counted {:.1} MB",
        (after - before) as f64 / 1e6,
        store.bytes() as f64 / 1e6
    );
}
