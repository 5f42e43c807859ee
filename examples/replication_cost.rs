//! What replication costs: builds an in-memory network, puts RECORDS records (no TTL)
//! through one node, then counts the FIND_NODE and STORE requests the whole network sends
//! during the following replicate intervals (everything else is quiet: refresh is an hour).
//! Run: `cargo run --release --example replication_cost -- [RECORDS] [NODES] [INTERVAL_SECS]`
//! (defaults 100000, 50, 10). Replication is the paper's hourly job; here an "hour" is
//! INTERVAL_SECS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kademlia::NodeId;
use kademlia::net::memory::MemoryNetwork;
use kademlia::node::{NodeConfig, PendingNode};
use rand::{Rng, SeedableRng};

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let records = args.first().copied().unwrap_or(100_000) as usize;
    let nodes = args.get(1).copied().unwrap_or(50) as usize;
    let interval = Duration::from_secs(args.get(2).copied().unwrap_or(10));
    if let Ok(filter) = std::env::var("RUST_LOG") {
        kademlia::telemetry::init(&filter, kademlia::telemetry::LogFormat::Text);
    }
    let net = MemoryNetwork::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut handles = Vec::new();
    for i in 0..nodes {
        let addr = format!("node-{i}:50051");
        let mut cfg = NodeConfig::new(NodeId::random(&mut rng), addr.clone());
        cfg.remote_host = (i > 0).then(|| format!("node-{}:50051", rng.random_range(0..i)));
        cfg.replicate_interval = interval;
        cfg.refresh_interval = Duration::from_secs(3600);
        cfg.cache_ttl = Duration::ZERO;
        cfg.max_records = records * 2;
        let pending = PendingNode::new(cfg, Arc::new(net.transport()));
        net.attach(&addr, pending.inbound.clone());
        let handle = pending.handle.clone();
        // The network lives as long as the process.
        drop(pending.start(std::future::pending()));
        assert!(handle.wait_joined().await);
        handles.push(handle);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writer = handles[0].clone();
    let t = Instant::now();
    let puts = futures::stream::iter(0..records)
        .map(|i| {
            let w = writer.clone();
            async move { w.put(format!("record-{i}"), vec![0; 16], None).await }
        })
        .buffer_unordered(64)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    let held: usize = {
        let mut total = 0;
        for h in &handles {
            total += h.info().await.unwrap().records;
        }
        total
    };
    println!(
        "{records} records put in {:.1} s ({puts} failed), {nodes} nodes holding {held} copies ({:.1} per node)",
        t.elapsed().as_secs_f64(),
        held as f64 / nodes as f64
    );
    // Skip the first interval after the puts (every copy was just stored), then count three.
    tokio::time::sleep(interval).await;
    let before = net.stats();
    let rounds = 3;
    tokio::time::sleep(interval * rounds).await;
    let after = net.stats();
    let per = |a: u64, b: u64| (b - a) as f64 / f64::from(rounds);
    let find_node = per(before.find_node, after.find_node);
    let store = per(before.store, after.store);
    let all = per(before.sent, after.sent);
    println!(
        "per replicate interval, whole network: {find_node:.0} FIND_NODE, {store:.0} STORE, {all:.0} requests in all"
    );
    println!(
        "per record per interval: {:.3} FIND_NODE, {:.2} STORE; per node holding 1,000,000 records: {:.0} requests per interval",
        find_node / records as f64,
        store / records as f64,
        all / held as f64 * 1_000_000.0
    );
}
