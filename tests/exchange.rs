//! Peer requests as frames on `Exchange` streams (`net::grpc::exchange`, `net::grpc::session`)
//! over real loopback gRPC: nodes use them, a node without them (`peer_streams = false`, as an
//! older version) still gets every request as a unary call, each frame passes the checks a
//! call passes, and a node that shuts down ends its streams instead of waiting for them.

use crate::common;

use std::time::{Duration, Instant};

use common::{http, node_with_http as start, sample};
use kademlia::NodeId;
use kademlia::pb::kademlia_client::KademliaClient;
use kademlia::pb::{self, reply_frame, request_frame};
use tokio_stream::wrappers::ReceiverStream;

fn calls(service_method: &str, code: u8) -> String {
    format!(
        "rpc_server_call_duration_seconds_count{{rpc_system=\"grpc\",\
         rpc_service=\"kademlia.v1.Kademlia\",rpc_method=\"{service_method}\",\
         rpc_grpc_status_code=\"{code}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_send_frames_and_a_node_without_streams_gets_unary_calls() {
    let (first, first_http) = start(None, |_| {}).await;
    let mut nodes = vec![(first, first_http)];
    for _ in 0..2 {
        nodes.push(start(Some(nodes[0].0.addr.clone()), |_| {}).await);
    }
    // An older node: no Exchange.
    let (old, old_http) = start(Some(nodes[0].0.addr.clone()), |cfg| {
        cfg.peer_streams = false;
    })
    .await;
    for (n, _) in &nodes {
        assert_eq!(common::peers_once(&n.handle, 3).await, 3);
    }
    assert_eq!(common::peers_once(&old.handle, 3).await, 3);

    // Every put reaches all four nodes (k = 20); gets through the old node and a new one.
    for i in 0..10 {
        let key = format!("key-{i}");
        let value = format!("value-{i}").into_bytes();
        nodes[0]
            .0
            .handle
            .put(key.clone(), value.clone(), None)
            .await
            .unwrap();
        assert_eq!(old.handle.get(key.clone()).await.unwrap().value, value);
        assert_eq!(nodes[1].0.handle.get(key).await.unwrap().value, value);
    }

    // The largest value a node takes (64 KiB): its STOREs go as unary calls (over
    // `STREAM_REQUEST_MAX_BYTES`), and it comes back in a FIND_VALUE reply frame.
    let big: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    nodes[0]
        .0
        .handle
        .put("big".into(), big.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        nodes[1].0.handle.get("big".into()).await.unwrap().value,
        big
    );
    assert_eq!(old.handle.get("big".into()).await.unwrap().value, big);

    // The new nodes served frames: their STOREs came on streams.
    let (_, _, text) = http(&nodes[1].1, "GET", "/metrics").await;
    let frames = sample(&text, "kademlia_peer_frames_total").unwrap_or(0.0);
    let stores = sample(&text, &calls("Store", 0)).unwrap_or(0.0);
    assert!(stores >= 10.0, "{text}");
    assert!(frames >= stores, "every STORE came as a frame: {text}");
    assert!(
        sample(&text, &calls("Exchange", 0)).is_some_and(|n| (1.0..=20.0).contains(&n)),
        "a few streams carried them: {text}"
    );
    // The old node refused streams, and served the same requests as unary calls.
    let (_, _, text) = http(&old_http, "GET", "/metrics").await;
    assert_eq!(
        sample(&text, "kademlia_peer_frames_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, &calls("Exchange", 12)).is_some_and(|n| n >= 1.0),
        "the others tried a stream and were told UNIMPLEMENTED: {text}"
    );
    assert!(
        sample(&text, &calls("Store", 0)).is_some_and(|n| n >= 10.0),
        "{text}"
    );
    old.stop().await;
    for (n, _) in nodes {
        n.stop().await;
    }
}

/// A PING frame from a made-up sender.
fn ping(id: u64, node_id: Vec<u8>) -> pb::RequestFrame {
    pb::RequestFrame {
        id,
        request: Some(request_frame::Request::Ping(pb::PingRequest {
            header: Some(pb::Header {
                sender: Some(pb::Contact {
                    node_id,
                    address: "127.0.0.1:9".into(),
                    incarnation: 1,
                }),
                network_id: "kademlia".into(),
            }),
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_is_validated_and_rate_limited_like_a_call() {
    let (node, _) = start(None, |cfg| cfg.peer_rate_limit = 5).await;
    let mut client = KademliaClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut replies = client
        .exchange(ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    let sender = NodeId::random(&mut rand::rng()).0.to_vec();
    tx.send(pb::RequestFrame {
        id: 7,
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(ping(8, vec![1, 2, 3])).await.unwrap();
    for id in 100..140 {
        tx.send(ping(id, sender.clone())).await.unwrap();
    }
    drop(tx);

    let mut answered = std::collections::HashMap::new();
    while let Some(frame) = replies.message().await.expect("the stream ends cleanly") {
        assert!(
            answered.insert(frame.id, frame.reply).is_none(),
            "id {} answered twice",
            frame.id
        );
    }
    assert_eq!(answered.len(), 42, "every frame is answered once");
    let failure = |id: u64| match &answered[&id] {
        Some(reply_frame::Reply::Failure(f)) => Some(f.clone()),
        _ => None,
    };
    let empty = failure(7).expect("a frame without a request fails");
    assert_eq!(empty.code, tonic::Code::InvalidArgument as i32, "{empty:?}");
    let short = failure(8).expect("a 3-byte node id fails");
    assert_eq!(short.code, tonic::Code::InvalidArgument as i32, "{short:?}");
    assert!(short.message.contains("node_id"), "{short:?}");
    // A burst of twice the rate (10), the stream's own call and the two bad frames included.
    let (mut pongs, mut limited) = (0, 0);
    for id in 100..140 {
        match &answered[&id] {
            Some(reply_frame::Reply::Ping(_)) => pongs += 1,
            Some(reply_frame::Reply::Failure(f)) => {
                assert_eq!(f.code, tonic::Code::ResourceExhausted as i32, "{f:?}");
                assert!(f.message.contains("more than 5 peer requests"), "{f:?}");
                limited += 1;
            }
            other => panic!("frame {id}: {other:?}"),
        }
    }
    assert!((1..=10).contains(&pongs), "{pongs} answered");
    assert_eq!(pongs + limited, 40);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_ends_its_streams_instead_of_waiting_for_them() {
    let (a, _) = start(None, |_| {}).await;
    let (b, b_http) = start(Some(a.addr.clone()), |cfg| {
        cfg.drain_timeout = Duration::from_secs(30);
    })
    .await;
    assert_eq!(common::peers_once(&a.handle, 1).await, 1);
    assert_eq!(common::peers_once(&b.handle, 1).await, 1);
    a.handle.put("k".into(), b"v".to_vec(), None).await.unwrap();
    // `a` holds a stream open to `b`.
    let (_, _, text) = http(&b_http, "GET", "/metrics").await;
    assert!(
        sample(&text, "kademlia_peer_frames_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let started = Instant::now();
    b.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "b waited {:?} for a stream it should have ended",
        started.elapsed()
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_four_streams() {
    let (node, _) = start(None, |_| {}).await;
    // One channel: one connection.
    let client = KademliaClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let open = || {
        let mut client = client.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::RequestFrame>(1);
            let opened = client.exchange(ReceiverStream::new(rx)).await;
            (tx, opened)
        }
    };
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (tx, opened) = open().await;
        streams.push((tx, opened.expect("one of the first four").into_inner()));
    }
    let (_tx, fifth) = open().await;
    let refused = fifth.expect_err("a fifth stream on the connection");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("4 peer streams"), "{refused:?}");
    // One ends (the sender closes its side, the node ends its own): room for another.
    let (tx, mut replies) = streams.pop().unwrap();
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    common::until_a_stream_opens(open).await;
    drop(streams);
    node.stop().await;
}
