//! A node whose own network goes down for a while (paper section 4.1), over the in-memory
//! transport: it keeps its k-buckets, acknowledges no write it could not replicate, does not
//! report existing keys as missing, and serves again as soon as its links come back.

use crate::common;

use std::time::Duration;

use common::SimNet;
use kademlia::DhtError;

fn is_unavailable<T: std::fmt::Debug>(r: &Result<T, DhtError>) -> bool {
    matches!(r, Err(DhtError::Unavailable(msg)) if msg.contains("no peer answered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_keeps_its_contacts_and_acknowledges_nothing_it_cannot_replicate() {
    // Refresh every 3 s: stale contacts are pinged on the gap-refresh cadence (every tick).
    let sim = SimNet::build_with(21, 60, 60, |cfg| {
        cfg.refresh_interval = Duration::from_secs(3);
    })
    .await;
    sim.nodes[0]
        .handle
        .put("before".into(), b"the outage".to_vec(), None)
        .await
        .unwrap();
    // A node that does not hold "before".
    let (_, replicas) = sim.nodes[0].handle.locate("before".into()).await.unwrap();
    let x = (1..60)
        .find(|i| {
            let id = sim.nodes[*i].handle.id();
            replicas.iter().all(|r| r.contact.id != id)
        })
        .expect("60 nodes, 20 replicas");
    let node = sim.nodes[x].handle.clone();
    // Under load x's table may fill a little after the build returns (`peers_once`).
    common::peers_once(&node, 20).await;
    let before = node.info().await.unwrap();
    assert!(before.peers >= 20, "{before:?}");

    // x's network goes down: nothing it sends arrives, nothing reaches it.
    let addr = sim.nodes[x].addr.clone();
    for other in sim.nodes.iter().filter(|n| n.addr != addr) {
        sim.net.cut(&addr, &other.addr);
        sim.net.cut(&other.addr, &addr);
    }
    for i in 0..8 {
        let r = node
            .put(format!("during-{i}"), b"lost?".to_vec(), None)
            .await;
        assert!(
            is_unavailable(&r),
            "put {i} while cut off must fail, got {r:?}"
        );
        assert!(is_unavailable(&node.delete("before".into()).await));
    }
    let r = node.get("before".into()).await;
    assert!(is_unavailable(&r), "not NOT_FOUND: {r:?}");
    assert!(is_unavailable(&node.locate("before".into()).await));
    // The k-buckets were not voided: every contact is still there, live or flagged stale.
    // (The count may have grown: a message from a new peer can land between `before` and
    // the cut, but none may have gone.)
    let during = node.info().await.unwrap();
    assert!(
        during.peers + during.stale_peers >= before.peers + before.stale_peers,
        "before {before:?}, during {during:?}"
    );
    assert!(during.stale_peers > 0, "{during:?}");

    // The links come back: the node finds its peers through the contacts it kept.
    for other in sim.nodes.iter().filter(|n| n.addr != addr) {
        sim.net.heal(&addr, &other.addr);
        sim.net.heal(&other.addr, &addr);
    }
    node.put("after".into(), b"recovered".to_vec(), None)
        .await
        .expect("put after the outage");
    assert_eq!(
        node.get("before".into()).await.unwrap().value,
        b"the outage",
        "the delete attempted while cut off must not have happened"
    );
    for n in [&sim.nodes[0], &sim.nodes[59]] {
        assert_eq!(
            n.handle.get("after".into()).await.unwrap().value,
            b"recovered"
        );
        for i in 0..8 {
            assert_eq!(
                n.handle.get(format!("during-{i}")).await.unwrap_err(),
                DhtError::NotFound(format!("during-{i}"))
            );
        }
    }
    // The contacts flagged stale during the outage answer the next stale probe.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = node.info().await.unwrap();
        if now.stale_peers == 0 && now.peers >= before.peers {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale contacts did not come back: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.shutdown().await;
}
