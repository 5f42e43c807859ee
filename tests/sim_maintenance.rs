//! Maintenance over the in-memory transport, with intervals shortened to seconds: expiry,
//! records that outlive their writer, replication to nodes that join later, bucket refresh,
//! and lookups that route around cut links.

use crate::common;

use std::time::Duration;

use common::{SimNet, sim_config};
use kademlia::{DhtError, NodeId};
use rand::Rng;

fn quick(cfg: &mut kademlia::NodeConfig) {
    cfg.replicate_interval = Duration::from_secs(1);
    cfg.refresh_interval = Duration::from_secs(1);
    cfg.cache_ttl = Duration::ZERO;
}

async fn build_quick(seed: u64, n: usize) -> SimNet {
    let mut sim = SimNet::new(seed);
    for i in 0..n {
        let id = NodeId::random(&mut sim.rng);
        let remote = (i > 0).then(|| sim.nodes[0].addr.clone());
        let mut cfg = sim_config(id, &format!("m{i}:1"), remote);
        quick(&mut cfg);
        sim.add_with(cfg);
        assert!(sim.nodes[i].handle.wait_joined().await);
    }
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_at_their_ttl() {
    let sim = SimNet::build(11, 10, 10).await;
    let h = sim.nodes[3].handle.clone();
    h.put(
        "short".into(),
        b"lived".to_vec(),
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert_eq!(
        sim.nodes[7].handle.get("short".into()).await.unwrap().value,
        b"lived"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for n in &sim.nodes {
        assert_eq!(
            n.handle.get("short".into()).await.unwrap_err(),
            DhtError::NotFound("short".into())
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_ttl_outlive_their_writer_and_48_simulated_hours() {
    // One replicate interval (the paper's hour) is 250 ms here: 12 s are 48 hours of
    // maintenance.
    let hour = Duration::from_millis(250);
    let config = |id, addr: &str, remote| {
        let mut cfg = sim_config(id, addr, remote);
        cfg.replicate_interval = hour;
        cfg.refresh_interval = hour;
        cfg.cache_ttl = Duration::ZERO;
        cfg
    };
    let mut sim = SimNet::new(12);
    for i in 0..10 {
        let id = NodeId::random(&mut sim.rng);
        let remote = (i > 0).then(|| sim.nodes[0].addr.clone());
        sim.add_with(config(id, &format!("life{i}:1"), remote));
        assert!(sim.nodes[i].handle.wait_joined().await);
    }
    let writer = sim.nodes[2].handle.clone();
    for i in 0..20 {
        writer
            .put(format!("kept-{i}"), b"alive".to_vec(), None)
            .await
            .unwrap();
    }
    // A TTL the writer gave holds on every replica.
    writer
        .put("short".into(), b"x".to_vec(), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    // The writer goes away for good, then every other node restarts in turn (same id and
    // address, empty store): no record depends on the node that accepted it.
    sim.kill(2).await;
    for i in (0..10).filter(|i| *i != 2) {
        let id = sim.nodes[i].handle.id();
        let addr = sim.nodes[i].addr.clone();
        sim.kill(i).await;
        let via = sim.nodes[(i + 1) % 10].addr.clone();
        let via = if (i + 1) % 10 == 2 {
            sim.nodes[3].addr.clone()
        } else {
            via
        };
        let n = sim.add_with(config(id, &addr, Some(via)));
        assert!(sim.nodes[n].handle.wait_joined().await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while sim.nodes[n].handle.info().await.unwrap().records < 20 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {i} got its records back only partly"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(hour * 48).await;
    let live: Vec<usize> = (0..sim.nodes.len()).filter(|i| sim.is_live(*i)).collect();
    assert_eq!(live.len(), 9);
    for &n in &live {
        let h = sim.nodes[n].handle.clone();
        for i in 0..20 {
            assert_eq!(h.get(format!("kept-{i}")).await.unwrap().value, b"alive");
        }
        assert_eq!(
            h.get("short".into()).await.unwrap_err(),
            DhtError::NotFound("short".into())
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_next_to_a_key_receives_it() {
    let mut sim = SimNet::build(13, 30, 30).await;
    sim.nodes[0]
        .handle
        .put("target".into(), b"moved".to_vec(), None)
        .await
        .unwrap();
    // A newcomer whose id is the key itself: closest of all to it.
    let key = NodeId::hash(b"target");
    let cfg = sim_config(key, "newcomer:1", Some(sim.nodes[5].addr.clone()));
    let j = sim.add_with(cfg);
    assert!(sim.nodes[j].handle.wait_joined().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, located) = sim.nodes[j].handle.locate("target".into()).await.unwrap();
        let me = located
            .iter()
            .find(|l| l.contact.id == key)
            .expect("newcomer is among the closest");
        if me.has_value {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the newcomer never received the record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = sim.nodes[j].handle.get("target".into()).await.unwrap();
    assert!(got.local, "answered from the newcomer's own store");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_replication_keep_running() {
    let mut sim = build_quick(14, 12).await;
    sim.nodes[1]
        .handle
        .put("r".into(), b"1".to_vec(), None)
        .await
        .unwrap();
    // Kill half the nodes; replication re-stores at the live k closest, refresh drops the dead.
    let mut killed = 0;
    for i in (2..12).step_by(2) {
        sim.kill(i).await;
        killed += 1;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live: Vec<usize> = (0..12).filter(|i| sim.is_live(*i)).collect();
    assert_eq!(live.len(), 12 - killed);
    for &i in &live {
        let info = sim.nodes[i].handle.info().await.unwrap();
        // Dead contacts were probed by refresh lookups and dropped from the table.
        assert!(
            info.peers < live.len(),
            "node {i} still lists {} peers",
            info.peers
        );
        assert_eq!(
            sim.nodes[i].handle.get("r".into()).await.unwrap().value,
            b"1"
        );
    }
    let _ = sim.rng.random::<u8>();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_route_around_cut_links() {
    let sim = SimNet::build(15, 40, 40).await;
    sim.nodes[0]
        .handle
        .put("island".into(), b"reachable".to_vec(), None)
        .await
        .unwrap();
    // A node that does not hold the key can no longer talk to half of the others.
    let (_, replicas) = sim.nodes[0].handle.locate("island".into()).await.unwrap();
    let x = (0..40)
        .find(|i| {
            replicas
                .iter()
                .all(|r| r.contact.id != sim.nodes[*i].handle.id())
        })
        .unwrap();
    let from = sim.nodes[x].addr.clone();
    for i in (0..40).filter(|i| i % 2 == 0 && *i != x) {
        sim.net.cut(&from, &sim.nodes[i].addr.clone());
    }
    let got = sim.nodes[x].handle.get("island".into()).await.unwrap();
    assert_eq!(got.value, b"reachable");
    assert!(!got.local, "answered by a lookup, not from the local store");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_name_for_every_node_forms_one_network() {
    // Like a compose service: every node joins through one name that resolves to all of them.
    let mut sim = SimNet::new(16);
    let addrs: Vec<String> = (0..12).map(|i| format!("svc-{i}:50051")).collect();
    sim.net.register_name("svc", addrs.clone());
    for a in &addrs {
        let id = NodeId::random(&mut sim.rng);
        sim.add_with(sim_config(id, a, Some("svc".into())));
    }
    for n in &sim.nodes {
        let joined = tokio::time::timeout(Duration::from_secs(10), n.handle.wait_joined()).await;
        assert!(joined.is_ok(), "{} did not join", n.addr);
    }
    for n in &sim.nodes {
        assert_eq!(
            n.handle.info().await.unwrap().peers,
            11,
            "{} does not know everyone",
            n.addr
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_networks_merge_when_the_name_finds_them() {
    let mut sim = SimNet::new(17);
    // Two nodes each see only themselves behind their name: each creates a network.
    for i in 0..2 {
        let addr = format!("lone-{i}:50051");
        sim.net
            .register_name(&format!("name-{i}"), vec![addr.clone()]);
        let mut cfg = sim_config(
            NodeId::random(&mut sim.rng),
            &addr,
            Some(format!("name-{i}")),
        );
        cfg.rebootstrap_interval = Duration::from_millis(500);
        cfg.refresh_interval = Duration::from_millis(500);
        sim.add_with(cfg);
    }
    for n in &sim.nodes {
        tokio::time::timeout(Duration::from_secs(5), n.handle.wait_joined())
            .await
            .expect("created");
        assert_eq!(n.handle.info().await.unwrap().peers, 0);
    }
    sim.nodes[0]
        .handle
        .put("before".into(), b"merge".to_vec(), None)
        .await
        .unwrap();
    // Now node 0's name also finds node 1: the re-bootstrap merges the two networks.
    sim.net
        .register_name("name-0", vec!["lone-0:50051".into(), "lone-1:50051".into()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sim.nodes[1].handle.info().await.unwrap().peers == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "networks never merged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.nodes[1]
            .handle
            .get("before".into())
            .await
            .unwrap()
            .value,
        b"merge"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_bootstrap_names_survives_dead_and_unknown_entries() {
    let mut sim = SimNet::build(18, 5, 5).await;
    // The four nodes that joined through node 0 at once learn each other from its answers, a
    // PING after they heard of each other: node 3 must know the others before node 0 dies, or
    // it has nobody to name (a CI run under load once killed node 0 first).
    assert_eq!(common::peers_once(&sim.nodes[3].handle, 4).await, 4);
    sim.kill(0).await;
    // The first name is dead, the second does not resolve, the third is alive.
    let remote = format!("{},no-such-name,{}", sim.nodes[0].addr, sim.nodes[3].addr);
    let id = NodeId::random(&mut sim.rng);
    let j = sim.add_with(sim_config(id, "listed:1", Some(remote)));
    tokio::time::timeout(Duration::from_secs(5), sim.nodes[j].handle.wait_joined())
        .await
        .expect("joined through the live name");
    // The nodes it reached are learned by it, and it by them, a PING round trip after they
    // first heard of each other (see `Core::heard_from`): within the post-join refresh.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.nodes[j].handle.info().await.unwrap().peers < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "it knows fewer than 3 peers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_advertising_a_dns_name_recognises_itself_behind_the_service_name() {
    // Like a StatefulSet pod: it advertises "pod-N.peers:50051" while the headless service
    // name resolves to raw addresses ("10.0.0.N:50051"), its own among them.
    let mut sim = SimNet::new(19);
    let mut ips = Vec::new();
    for i in 0..4 {
        let mut cfg = sim_config(
            NodeId::random(&mut sim.rng),
            &format!("pod-{i}.peers:50051"),
            Some("peers".into()),
        );
        cfg.bootstrap_backoff_max = Duration::from_millis(300);
        let n = sim.add_with(cfg);
        let ip = format!("10.0.0.{i}:50051");
        sim.net.attach(&ip, sim.nodes[n].inbound.clone());
        ips.push(ip);
        if i == 0 {
            // Alone behind the name: pod-0 must see that the only answer is its own and create.
            sim.net.register_name("peers", ips.clone());
            tokio::time::timeout(Duration::from_secs(5), sim.nodes[0].handle.wait_joined())
                .await
                .expect("pod-0 created the network");
        }
    }
    sim.net.register_name("peers", ips.clone());
    for n in &sim.nodes {
        tokio::time::timeout(Duration::from_secs(5), n.handle.wait_joined())
            .await
            .expect("joined");
    }
    for n in &sim.nodes {
        let peers = common::peers_once(&n.handle, 3).await;
        assert_eq!(peers, 3, "{} knows {peers} peers", n.addr);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_keeps_every_value() {
    // Like a StatefulSet rollout: each node in turn restarts with its stable id and address
    // and an empty store. Peers see its higher incarnation and hand its records back.
    let mut sim = SimNet::build(20, 12, 12).await;
    for i in 0..40 {
        let h = sim.nodes[i % 12].handle.clone();
        h.put(format!("roll-{i}"), format!("v{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 0..12 {
        let id = sim.nodes[i].handle.id();
        let addr = sim.nodes[i].addr.clone();
        sim.kill(i).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let via = sim.nodes[(i + 1) % 12].addr.clone();
        let n = sim.add_with(sim_config(id, &addr, Some(via)));
        assert!(sim.nodes[n].handle.wait_joined().await);
        // Wait until the restarted node holds its share again before restarting the next.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while sim.nodes[n].handle.info().await.unwrap().records < 40 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {i} got its records back only partly"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Only the restarted incarnations are left, and they hold everything.
    let live: Vec<usize> = (0..sim.nodes.len()).filter(|i| sim.is_live(*i)).collect();
    assert_eq!(live.len(), 12);
    for i in 0..40 {
        let h = sim.nodes[live[i % 12]].handle.clone();
        assert_eq!(
            h.get(format!("roll-{i}")).await.unwrap().value,
            format!("v{i}").into_bytes()
        );
    }
    sim.shutdown().await;
}

/// The replication backlog (`NodeLoad::replication`): records due for replication whose
/// STOREs were not sent yet. While every peer answers slowly (each request costs its receiver
/// 20 ms, one at a time) the holders of 200 records fall behind: the backlog holds many of
/// them and the oldest is late. Once the network is fast again the backlog empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_backlog_grows_on_a_slow_network_and_empties_when_it_recovers() {
    let sim = build_quick(31, 4).await;
    let writer = sim.nodes[0].handle.clone();
    for i in 0..200 {
        writer
            .put(format!("due-{i}"), b"v".to_vec(), None)
            .await
            .unwrap();
    }
    // Fewer than k nodes: every node holds every record, once the STOREs beyond each put's
    // quorum (answered before them) have landed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for n in &sim.nodes {
        loop {
            let records = n.handle.info().await.unwrap().records;
            if records == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a node holds {records} of the 200 records"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let backlogs = || async {
        let mut all = Vec::new();
        for n in &sim.nodes {
            all.push(n.handle.info().await.unwrap().load.replication);
        }
        all
    };
    sim.net.set_service_time(Duration::from_millis(20));
    let (mut most, mut latest) = (0, Duration::ZERO);
    let slow_until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < slow_until {
        for b in backlogs().await {
            most = most.max(b.records);
            latest = latest.max(b.lag);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most >= 50, "a backlog of {most} records at most");
    assert!(
        latest >= Duration::from_millis(500),
        "lag {latest:?} at most"
    );

    sim.net.set_service_time(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = backlogs().await;
        if now.iter().all(|b| b.records == 0 && b.lag.is_zero()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not empty: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.shutdown().await;
}

/// Which of `sim`'s nodes hold `key` (by their snapshots).
async fn holding(sim: &SimNet, key: &NodeId) -> Vec<NodeId> {
    let mut ids = Vec::new();
    for n in &sim.nodes {
        if n.handle.snapshot().await.unwrap().keys.contains(key) {
            ids.push(n.handle.id());
        }
    }
    ids.sort_by_key(|id| id.distance(key));
    ids
}

/// Holders that nodes closer to the key pushed out of its k closest hand the record over
/// (`kad::replication`'s notes): their copies become cached ones (with `cache_ttl` 0 here:
/// gone), but only once a quorum of the k closest took the record. While every STORE times
/// out, they keep their copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_pushed_out_of_the_k_closest_hand_over_only_once_the_k_closest_hold_it() {
    let k = kademlia::K;
    let mut sim = build_quick(32, k).await;
    sim.nodes[0]
        .handle
        .put("moving".into(), b"v".to_vec(), None)
        .await
        .unwrap();
    let key = NodeId::hash(b"moving");
    let originals: Vec<NodeId> = sim.nodes.iter().map(|n| n.handle.id()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while holding(&sim, &key).await.len() < k {
        assert!(tokio::time::Instant::now() < deadline, "not on all {k}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From now on every STORE arrives after its sender gave up on it (the RPC timeout is 2 s).
    let slow = Duration::from_secs(5);
    for n in &sim.nodes {
        sim.net.delay_stores(&n.addr, slow);
    }
    // Ten nodes join with ids next to the key: the ten originals farthest from it are no longer
    // among its k closest.
    for i in 0..10u8 {
        let mut id = key;
        id.0[19] ^= i + 1;
        let addr = format!("near-{i}:1");
        let mut cfg = sim_config(id, &addr, Some(sim.nodes[0].addr.clone()));
        quick(&mut cfg);
        sim.net.delay_stores(&addr, slow);
        let j = sim.add_with(cfg);
        assert!(sim.nodes[j].handle.wait_joined().await);
    }
    // Several replicate intervals (1 s here): every holder replicated, and no STORE was answered.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = holding(&sim, &key).await;
    for id in &originals {
        assert!(held.contains(id), "an original holder gave its copy up");
    }
    // STOREs are answered again: the pushed-out holders hand over and the key ends up on its
    // k closest nodes, and only there.
    for n in &sim.nodes {
        sim.net.delay_stores(&n.addr, Duration::ZERO);
    }
    let mut all: Vec<NodeId> = sim.nodes.iter().map(|n| n.handle.id()).collect();
    all.sort_by_key(|id| id.distance(&key));
    all.truncate(k);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = holding(&sim, &key).await;
        if held == all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} holders, {} of the k closest",
            held.len(),
            held.iter().filter(|id| all.contains(id)).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.shutdown().await;
}
