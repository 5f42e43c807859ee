//! Scenario tests of whole networks over the in-memory transport (every message still goes
//! through protobuf encoding and validation).

use crate::common;

use std::time::Duration;

use common::SimNet;
use futures::StreamExt;
use kademlia::DhtError;
use rand::Rng;
use rand::seq::SliceRandom;

/// Runs `ops` with at most `concurrency` in flight.
async fn bounded<F, T>(ops: Vec<F>, concurrency: usize) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    futures::stream::iter(ops)
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_nodes_thousand_puts_and_gets() {
    let started = std::time::Instant::now();
    let mut sim = SimNet::build(1, 1000, 100).await;
    eprintln!("1000 nodes joined in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let mut puts = Vec::new();
    for i in 0..1000 {
        let h = sim.random_live();
        puts.push(async move {
            (
                i,
                h.put(format!("key-{i}"), format!("value-{i}").into_bytes(), None)
                    .await,
            )
        });
    }
    for (i, r) in bounded(puts, 32).await {
        let r = r.unwrap_or_else(|e| panic!("put key-{i} failed: {e}"));
        assert!(
            r.stored_at.len() >= 3,
            "key-{i} stored on {} nodes",
            r.stored_at.len()
        );
    }
    eprintln!("1000 puts in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let mut gets = Vec::new();
    for i in 0..1000 {
        let h = sim.random_live();
        gets.push(async move { (i, h.get(format!("key-{i}")).await) });
    }
    let mut remote = 0;
    for (i, r) in bounded(gets, 32).await {
        let r = r.unwrap_or_else(|e| panic!("get key-{i} failed: {e}"));
        assert_eq!(r.value, format!("value-{i}").into_bytes(), "key-{i}");
        remote += usize::from(!r.local);
    }
    eprintln!("1000 gets in {:?}", started.elapsed());
    // Most keys are not on the node asked (k = 20 of 1,000 nodes hold each key).
    assert!(remote > 900, "only {remote} of 1000 gets needed a lookup");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_thirty_percent_of_nodes_killed() {
    let mut sim = SimNet::build(2, 200, 50).await;
    let mut puts = Vec::new();
    for i in 0..300 {
        let h = sim.random_live();
        puts.push(async move {
            (
                i,
                h.put(format!("k{i}"), format!("v{i}").into_bytes(), None)
                    .await,
            )
        });
    }
    for (i, r) in bounded(puts, 32).await {
        r.unwrap_or_else(|e| panic!("put k{i} failed: {e}"));
    }
    let mut victims: Vec<usize> = (0..200).collect();
    victims.shuffle(&mut sim.rng);
    for &i in &victims[..60] {
        sim.kill(i).await;
    }
    let mut gets = Vec::new();
    for i in 0..300 {
        let h = sim.random_live();
        gets.push(async move { (i, h.get(format!("k{i}")).await) });
    }
    for (i, r) in bounded(gets, 16).await {
        let r = r.unwrap_or_else(|e| panic!("k{i} unreadable after killing 30%: {e}"));
        assert_eq!(r.value, format!("v{i}").into_bytes());
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_get_is_not_found_and_old_versions_never_return() {
    let mut sim = SimNet::build(3, 60, 30).await;
    let a = sim.random_live();
    let b = sim.random_live();
    a.put("doomed".into(), b"v1".to_vec(), None).await.unwrap();
    common::reads_eventually(&b, "doomed", Some(b"v1"), &[None]).await;
    b.put("doomed".into(), b"v2".to_vec(), None).await.unwrap();
    let c = sim.random_live();
    c.delete("doomed".into()).await.unwrap();
    // The delete answered at its quorum; once its other STOREs landed (a moment), every node
    // answers NOT_FOUND, and from then on no read brings an old version back.
    for n in &sim.nodes {
        common::reads_eventually(&n.handle, "doomed", None, &[Some(b"v2")]).await;
    }
    for _ in 0..20 {
        let h = sim.random_live();
        assert_eq!(
            h.get("doomed".into()).await.unwrap_err(),
            DhtError::NotFound("doomed".into())
        );
    }
    // A put after the delete brings the key back with the new value only.
    a.put("doomed".into(), b"v3".to_vec(), None).await.unwrap();
    for n in &sim.nodes {
        common::reads_eventually(&n.handle, "doomed", Some(b"v3"), &[None]).await;
    }
    for _ in 0..10 {
        let h = sim.random_live();
        assert_eq!(h.get("doomed".into()).await.unwrap().value, b"v3");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_marks_the_holders() {
    let mut sim = SimNet::build(4, 40, 20).await;
    let h = sim.random_live();
    let put = h.put("where".into(), b"here".to_vec(), None).await.unwrap();
    assert!(put.stored_at.len() >= 3, "{:?}", put.stored_at);
    // The put answered at its quorum; its other STOREs land a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let l = sim.random_live();
    loop {
        let (key, nodes) = l.locate("where".into()).await.unwrap();
        assert_eq!(key, kademlia::NodeId::hash(b"where"));
        assert_eq!(nodes.len(), 20);
        assert!(
            nodes
                .windows(2)
                .all(|w| w[0].contact.id.distance(&key) < w[1].contact.id.distance(&key))
        );
        let holders = nodes.iter().filter(|n| n.has_value).count();
        if holders >= 18 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {holders} of the 20 closest hold the value 10 s after the put"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_network_puts_with_quorum_clamped() {
    // Three nodes with the default quorum of 3: every node must store.
    let sim = SimNet::build(5, 3, 2).await;
    let r = sim.nodes[1]
        .handle
        .put("tiny".into(), b"net".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(r.stored_at.len(), 3);
    // A lone node (quorum clamped to 1).
    let lone = SimNet::build(6, 1, 1).await;
    let r = lone.nodes[0]
        .handle
        .put("alone".into(), b"1".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(r.stored_at.len(), 1);
    assert_eq!(
        lone.nodes[0]
            .handle
            .get("alone".into())
            .await
            .unwrap()
            .value,
        b"1"
    );
    sim.shutdown().await;
    lone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_input_gets_clear_errors() {
    let sim = SimNet::build(7, 3, 2).await;
    let h = sim.nodes[0].handle.clone();
    let e = h.put(String::new(), b"x".to_vec(), None).await.unwrap_err();
    assert_eq!(e, DhtError::InvalidArgument("key must not be empty".into()));
    let e = h
        .put("big".into(), vec![0; 65_537], None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DhtError::InvalidArgument("value is 65537 bytes, the maximum is 65536".into())
    );
    let e = h.get("x".repeat(1025)).await.unwrap_err();
    assert!(matches!(e, DhtError::InvalidArgument(m) if m.contains("maximum is 1024")));
    // The node still serves.
    h.put("fine".into(), b"ok".to_vec(), None).await.unwrap();
    assert_eq!(h.get("fine".into()).await.unwrap().value, b"ok");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_retries_until_bootstrap_host_appears() {
    let mut sim = common::SimNet::new(8);
    // Node 1 joins through a name nobody answers yet.
    let mut cfg = common::sim_config(
        kademlia::NodeId::random(&mut sim.rng),
        "late-joiner:50051",
        Some("seed:50051".into()),
    );
    cfg.bootstrap_backoff_max = Duration::from_millis(300);
    let j = sim.add_with(cfg);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!sim.nodes[j].handle.is_joined());
    // The seed appears under that name; the joiner gets in on its own.
    let seed = common::sim_config(kademlia::NodeId::random(&mut sim.rng), "seed:50051", None);
    sim.add_with(seed);
    tokio::time::timeout(Duration::from_secs(5), sim.nodes[j].handle.wait_joined())
        .await
        .expect("joined after the seed appeared");
    assert_eq!(sim.nodes[j].handle.info().await.unwrap().peers, 1);
    let _ = sim.rng.random::<u8>();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_all_at_once_can_all_find_every_region() {
    // 150 nodes join through one seed at the same moment. Early joiners refresh their buckets
    // before later nodes exist; a follow-up refresh must fill those gaps, or lookups from some
    // nodes never reach parts of the id space.
    let mut sim = SimNet::new(21);
    sim.add(None);
    assert!(sim.nodes[0].handle.wait_joined().await);
    let seed = sim.nodes[0].addr.clone();
    for _ in 1..150 {
        sim.add(Some(seed.clone()));
    }
    for n in &sim.nodes {
        assert!(n.handle.wait_joined().await);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ids: Vec<kademlia::NodeId> = sim.nodes.iter().map(|n| n.handle.id()).collect();
    let mut misses = Vec::new();
    for k in 0..12 {
        let key = format!("region-{k}");
        let target = kademlia::NodeId::hash(key.as_bytes());
        let closest = *ids.iter().min_by_key(|i| i.distance(&target)).unwrap();
        for n in sim.nodes.iter().step_by(5) {
            let (_, located) = n.handle.locate(key.clone()).await.unwrap();
            if located.first().map(|l| l.contact.id) != Some(closest) {
                misses.push(format!("{} looking up {key}", n.addr));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "{} lookups missed the closest node: {:?}",
        misses.len(),
        &misses[..misses.len().min(5)]
    );
    sim.shutdown().await;
}
