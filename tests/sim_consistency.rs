//! Writes and reads you can trust, over the in-memory transport:
//! - deletes that stick: a holder that was cut off while its key was deleted comes back, and
//!   no node ever answers the old value again, however long it was away relative to the
//!   tombstone grace, because a tombstone lives as long as the copies it deletes;
//! - honest quorums: nodes that do not answer do not lower a write's quorum.

use crate::common;

use std::time::Duration;

use common::SimNet;
use kademlia::DhtError;

async fn missed_delete(seed: u64, ttl: Option<Duration>) {
    let sim = SimNet::build_with(seed, 4, 4, |cfg| {
        cfg.quorum = 3;
        cfg.tombstone_grace = Duration::from_secs(1);
        cfg.replicate_interval = Duration::from_millis(500);
        cfg.refresh_interval = Duration::from_secs(3);
        cfg.cache_ttl = Duration::ZERO;
    })
    .await;
    let key = "doomed".to_string();
    sim.nodes[0]
        .handle
        .put(key.clone(), b"old".to_vec(), ttl)
        .await
        .unwrap();
    // Every node holds it (k = 20 > 4).
    for n in &sim.nodes {
        assert_eq!(n.handle.get(key.clone()).await.unwrap().value, b"old");
    }
    // Node 3 is cut off (paused, partitioned) while the key is deleted through node 1.
    let away = sim.nodes[3].addr.clone();
    for other in sim.nodes.iter().filter(|n| n.addr != away) {
        sim.net.cut(&away, &other.addr);
        sim.net.cut(&other.addr, &away);
    }
    sim.nodes[1].handle.delete(key.clone()).await.unwrap();
    // Away for longer than the tombstone grace (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for other in sim.nodes.iter().filter(|n| n.addr != away) {
        sim.net.heal(&away, &other.addr);
        sim.net.heal(&other.addr, &away);
    }
    // From now on no node may answer the old value; node 3 answers UNAVAILABLE until it has
    // reached its peers again, then NOT_FOUND like everyone else.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut settled = vec![false; 4];
    while settled.iter().any(|s| !s) {
        for (i, n) in sim.nodes.iter().enumerate() {
            match n.handle.get(key.clone()).await {
                Err(DhtError::NotFound(_)) => settled[i] = true,
                Err(DhtError::Unavailable(_)) if i == 3 => {}
                other => panic!("node {i} answered {other:?} after the delete"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: {settled:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Replication rounds go by: node 3 replicates its old copy, learns of the tombstone and
    // keeps it; the value never comes back anywhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(
            n.handle.get(key.clone()).await.unwrap_err(),
            DhtError::NotFound(key.clone()),
            "node {i}"
        );
    }
    let (_, located) = sim.nodes[3].handle.locate(key.clone()).await.unwrap();
    assert!(
        located.iter().all(|l| !l.has_value),
        "a node still holds the value: {located:?}"
    );
    assert!(
        located.iter().filter(|l| l.tombstone).count() >= 3,
        "{located:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_missed_a_delete_of_a_key_with_a_ttl_never_brings_it_back() {
    missed_delete(41, Some(Duration::from_secs(3600))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_missed_a_delete_of_a_key_without_ttl_never_brings_it_back() {
    missed_delete(42, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_reaches_fewer_nodes_than_its_quorum_fails_and_says_so() {
    let sim = SimNet::build_with(43, 4, 4, |cfg| {
        cfg.quorum = 3;
        cfg.cache_ttl = Duration::ZERO;
    })
    .await;
    let writer = sim.nodes[0].handle.clone();
    writer.put("k".into(), b"v1".to_vec(), None).await.unwrap();
    // Two of the four nodes stop answering the writer: it reaches itself and one other.
    for other in &sim.nodes[2..] {
        sim.net.cut(&sim.nodes[0].addr, &other.addr);
        sim.net.cut(&other.addr, &sim.nodes[0].addr);
    }
    for r in [
        writer.put("k".into(), b"v2".to_vec(), None).await,
        writer.delete("k".into()).await,
    ] {
        match r {
            Err(DhtError::Unavailable(msg)) => assert!(
                msg.contains("fewer than the quorum of 3") && msg.contains("partially applied"),
                "{msg}"
            ),
            other => panic!("a write stored on 2 of 4 nodes with quorum 3 answered {other:?}"),
        }
    }
    // A node that reaches everyone writes fine.
    sim.nodes[1]
        .handle
        .put("k".into(), b"v3".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        sim.nodes[3].handle.get("k".into()).await.unwrap().value,
        b"v3"
    );
    sim.shutdown().await;
}
