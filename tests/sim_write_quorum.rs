//! A put answers once its quorum has stored the record; the other replicas' STOREs finish
//! after it (issue 12: writes need not wait for the slowest of k replicas).
//!
//! The network runs on tokio's paused clock, so the slow replicas' delay costs no real time
//! and the order of events is what the test checks, not a measured latency.

mod common;

use std::time::Duration;

use common::SimNet;

/// How much later STOREs reach the slow replicas (under the 2 s RPC timeout).
const SLOW: Duration = Duration::from_millis(1500);

async fn holds(sim: &SimNet, i: usize, key: &kademlia::kad::Key) -> bool {
    let snap = sim.nodes[i].handle.snapshot().await.expect("snapshot");
    snap.keys.contains(key)
}

#[tokio::test(start_paused = true)]
async fn a_put_answers_at_its_quorum_while_the_slower_stores_still_complete() {
    let sim = SimNet::build(12, 30, 30).await;
    let writer = 0;
    let key = "quorum-key".to_string();
    let (key_id, replicas) = sim.nodes[writer]
        .handle
        .locate(key.clone())
        .await
        .expect("locate");
    assert_eq!(replicas.len(), kademlia::K, "the replica set is k nodes");
    let index_of = |addr: &str| sim.nodes.iter().position(|n| n.addr == addr).unwrap();
    // Three remote replicas answer at once (the quorum, 3 by default); every other replica
    // gets its STORE SLOW later.
    let remote: Vec<usize> = replicas
        .iter()
        .map(|l| index_of(&l.contact.addr))
        .filter(|i| *i != writer)
        .collect();
    let (fast, slow) = remote.split_at(3);
    for &i in slow {
        sim.net.delay_stores(&sim.nodes[i].addr, SLOW);
    }
    let started = tokio::time::Instant::now();
    let put = sim.nodes[writer]
        .handle
        .put(key.clone(), b"v".to_vec(), None)
        .await
        .expect("put acknowledged");
    let answered_after = started.elapsed();
    assert!(
        put.stored_at.len() >= 3,
        "acknowledged by {:?}",
        put.stored_at
    );
    assert!(
        answered_after < SLOW,
        "the put waited for the slow replicas: answered after {answered_after:?}"
    );
    for &i in fast {
        assert!(holds(&sim, i, &key_id).await, "fast replica {i} has it");
    }
    for &i in slow {
        assert!(
            !holds(&sim, i, &key_id).await,
            "slow replica {i} already had it when the put answered"
        );
    }
    // The slower STOREs go on after the answer, and land.
    tokio::time::sleep(SLOW + Duration::from_millis(200)).await;
    for &i in slow {
        assert!(
            holds(&sim, i, &key_id).await,
            "slow replica {i} got the record"
        );
    }
    let text = sim.nodes[writer]
        .handle
        .metrics()
        .render(&Default::default());
    let background_ok = text
        .lines()
        .find(|l| {
            l.starts_with("kademlia_write_stores_total")
                && l.contains("phase=\"background\"")
                && l.contains("outcome=\"ok\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        background_ok >= slow.len() as f64,
        "{background_ok} background STOREs counted, {} expected:\n{text}",
        slow.len()
    );
    sim.shutdown().await;
}
