//! Overload at the edges of one node: too many client operations, peer requests nobody waits
//! for any more, and a full inbound queue behind the gRPC peer service.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::SimNet;
use kademlia::kad::{Contact, Envelope, Request};
use kademlia::net::Inbound;
use kademlia::net::grpc::peer_service::PeerService;
use kademlia::node::{MAX_OPERATIONS, NodeConfig, PendingNode};
use kademlia::pb::kademlia_server::Kademlia;
use kademlia::{DhtError, NodeId};
use tokio::sync::{mpsc, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_operations_beyond_its_limit_and_answers_the_rest_in_bounded_time() {
    let sim = SimNet::build(51, 2, 1).await;
    let node = sim.nodes[0].handle.clone();
    // The peer takes 1 s per request: the lookups of the gets below wait on it until their
    // RPCs time out (2 s).
    sim.net.set_service_time(Duration::from_secs(1));
    let extra = 100;
    let started = Instant::now();
    let gets = (0..MAX_OPERATIONS + extra).map(|i| {
        let node = node.clone();
        async move { node.get(format!("absent-{i}")).await }
    });
    let results = futures::future::join_all(gets).await;
    let took = started.elapsed();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(DhtError::ResourceExhausted(m)) if m.contains("overloaded")))
        .count();
    let unavailable = results
        .iter()
        .filter(|r| matches!(r, Err(DhtError::Unavailable(_))))
        .count();
    assert!(
        refused >= extra,
        "{refused} refused of {} (limit {MAX_OPERATIONS})",
        results.len()
    );
    // The rest could not be looked up: UNAVAILABLE, not NOT_FOUND. Only the few requests the
    // peer served within their 2 s timeout (one a second) got its "not here".
    let not_found = results
        .iter()
        .filter(|r| matches!(r, Err(DhtError::NotFound(_))))
        .count();
    assert!(not_found <= 4, "{not_found} NOT_FOUND");
    assert_eq!(
        refused + unavailable + not_found,
        results.len(),
        "{:?}",
        results.iter().find(|r| !matches!(
            r,
            Err(DhtError::ResourceExhausted(_) | DhtError::Unavailable(_) | DhtError::NotFound(_))
        ))
    );
    // Within a lookup's deadline (5 RPC timeouts of 2 s) and then some.
    assert!(took < Duration::from_secs(15), "answers took {took:?}");
    sim.net.set_service_time(Duration::ZERO);
    // Once the peer is fast again, the node serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.put("after".into(), b"ok".to_vec(), None).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "still failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sim.nodes[1].handle.get("after".into()).await.unwrap().value,
        b"ok"
    );
    sim.shutdown().await;
}

fn ping_from(id: u8) -> Envelope {
    Envelope {
        sender: Contact::new(NodeId([id; 20]), format!("peer-{id}:1")),
        network_id: "kademlia".into(),
        body: Request::Ping,
    }
}

#[tokio::test]
async fn peer_requests_whose_sender_gave_up_are_dropped_unanswered() {
    let net = kademlia::net::memory::MemoryNetwork::new();
    // Both senders answer a PING at their address (a sender is learned once it did).
    for id in [2u8, 3] {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Inbound>(8);
        net.attach(&format!("peer-{id}:1"), tx);
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let _ = req.reply.send(Ok(kademlia::kad::Reply {
                    responder: ping_from(id).sender,
                    body: kademlia::kad::Response::Pong,
                }));
            }
        });
    }
    let cfg = NodeConfig::new(NodeId([1; 20]), "alone:1");
    let pending = PendingNode::new(cfg, Arc::new(net.transport()));
    let (inbound, handle) = (pending.inbound.clone(), pending.handle.clone());
    // Queued before the driver runs: one sender still waits, one gave up.
    let (waiting_tx, waiting_rx) = oneshot::channel();
    let (gone_tx, gone_rx) = oneshot::channel();
    drop(gone_rx);
    for (id, reply) in [(2, gone_tx), (3, waiting_tx)] {
        let req = Inbound {
            envelope: ping_from(id),
            source: None,
            reply,
        };
        inbound.send(req).await.unwrap();
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = pending.start(async move {
        let _ = stopped.await;
    });
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting_rx)
        .await
        .expect("the waiting sender is answered")
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    let info = handle.info().await.unwrap();
    assert_eq!(info.load.rpcs.shed, 1, "{:?}", info.load);
    // The dropped request was not even learned from: only the sender that waited is known
    // (once it answered the PING that verifies its address).
    let started = std::time::Instant::now();
    while handle.info().await.unwrap().peers == 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.info().await.unwrap().peers, 1);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn a_full_inbound_queue_answers_resource_exhausted_at_once() {
    // A driver that reads nothing: its queue holds one request.
    let (tx, _rx) = mpsc::channel::<Inbound>(1);
    let service = PeerService::new(tx, false);
    let ping = || {
        tonic::Request::new(kademlia::pb::PingRequest {
            header: Some(kademlia::pb::Header {
                sender: Some(kademlia::net::grpc::convert::contact_to_pb(
                    &ping_from(2).sender,
                )),
                network_id: "kademlia".into(),
            }),
        })
    };
    let first = {
        let service = service.clone();
        let req = ping();
        tokio::spawn(async move { service.ping(req).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let second = service.ping(ping()).await;
    let status = second.expect_err("the queue is full");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("overloaded"), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    first.abort();
}

/// Nodes whose stores are full refuse further records with RESOURCE_EXHAUSTED: the put says
/// so (RESOURCE_EXHAUSTED too), nothing is lost of what was stored, and the full nodes stay in each other's routing
/// tables (a full store is not a dead peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_stores_refuse_clearly_and_are_not_taken_for_dead() {
    let sim = common::SimNet::build_with(81, 6, 6, |cfg| {
        // Room for about ten records of 100 bytes.
        cfg.max_store_bytes = 10 * (kademlia::kad::store::RECORD_OVERHEAD_BYTES + 110);
    })
    .await;
    // Every node knows the 5 others first (a sender is learned once it answered a PING, so
    // nodes that joined together meet in the post-join lookups, `POST_JOIN_REFRESH` later).
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &sim.nodes {
        while n.handle.info().await.unwrap().peers < 5 {
            assert!(
                Instant::now() < deadline,
                "{} never learned its peers",
                n.addr
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let node = sim.nodes[0].handle.clone();
    let mut stored = Vec::new();
    let mut refusal = None;
    for i in 0..40 {
        let key = format!("fill-{i:02}");
        match node.put(key.clone(), vec![i as u8; 100], None).await {
            Ok(_) => stored.push(key),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the stores filled up");
    eprintln!("{} puts stored, then: {refusal}", stored.len());
    assert!(
        matches!(refusal, DhtError::ResourceExhausted(_)),
        "a put refused for lack of room is RESOURCE_EXHAUSTED: {refusal:?}"
    );
    let refusal = refusal.to_string();
    assert!(refusal.contains("store is full"), "{refusal}");
    assert!(stored.len() >= 5, "only {} puts fit", stored.len());
    for key in &stored {
        assert!(node.get(key.clone()).await.is_ok(), "{key} lost");
    }
    for n in &sim.nodes {
        let info = n.handle.info().await.unwrap();
        assert_eq!(info.peers, 5, "{} lost peers: {info:?}", n.addr);
        assert_eq!(info.stale_peers, 0, "{}: {info:?}", n.addr);
    }
    sim.shutdown().await;
}
