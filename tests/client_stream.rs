//! Put, get and delete as frames on the client `Stream` call (`net::grpc::client_stream`,
//! `net::grpc::dht_stream`) over real loopback gRPC: each frame answers what the unary call
//! answers, many wait on one stream at once, each is counted and named like the call it
//! carries, a connection holds at most four such streams, and a node that shuts down ends
//! them instead of waiting for them.

use crate::common;

use std::time::{Duration, Instant};

use common::{http, node_with_http as start, sample};
use kademlia::net::grpc::dht_stream::DhtStream;
use kademlia::pb::{self, client_reply_frame, client_request_frame, dht_client::DhtClient};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const LIMIT: usize = 8 << 20;

fn calls(method: &str, code: u8) -> String {
    format!(
        "rpc_server_call_duration_seconds_count{{rpc_system=\"grpc\",\
         rpc_service=\"kademlia.v1.Dht\",rpc_method=\"{method}\",\
         rpc_grpc_status_code=\"{code}\"}}"
    )
}

async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn put(key: &str, value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.to_vec(),
        ttl_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_answer_what_the_calls_answer_and_many_wait_on_one_stream() {
    let (a, a_http) = start(None, |_| {}).await;
    let (b, _) = start(Some(a.addr.clone()), |_| {}).await;
    assert_eq!(common::peers_once(&a.handle, 1).await, 1);
    let ch = channel(&a.client_addr).await;
    let stream = DhtStream::open(ch.clone(), LIMIT);
    let mut unary = DhtClient::new(ch);

    // A put on the stream is stored on both nodes; the unary get and b read it back.
    let r = stream.put(put("k", b"v1")).await.unwrap();
    assert_eq!(r.replicas, 2, "{r:?}");
    assert_eq!(r.key_id, kademlia::NodeId::hash(b"k").to_hex());
    let got = unary
        .get(pb::GetRequest { key: "k".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.value.as_slice(), got.version), (&b"v1"[..], r.version));
    assert_eq!(b.handle.get("k".into()).await.unwrap().value, b"v1");
    // A unary put, read on the stream.
    unary.put(put("k", b"v2")).await.unwrap();
    assert_eq!(
        stream
            .get(pb::GetRequest { key: "k".into() })
            .await
            .unwrap()
            .value,
        b"v2"
    );

    // Errors come back with the unary call's code and message.
    let missing = stream
        .get(pb::GetRequest {
            key: "never-put".into(),
        })
        .await
        .unwrap_err();
    let unary_missing = unary
        .get(pb::GetRequest {
            key: "never-put".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert_eq!(missing.message(), unary_missing.message());
    let empty = stream.put(put("", b"x")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    assert!(empty.message().contains("key"), "{empty:?}");

    // Delete on the stream: the key is gone for the unary get too.
    let d = stream
        .delete(pb::DeleteRequest { key: "k".into() })
        .await
        .unwrap();
    assert!(d.version > r.version && d.replicas == 2, "{d:?}");
    assert_eq!(
        unary
            .get(pb::GetRequest { key: "k".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // 60 puts, then 60 gets, all waiting on the one stream at once; every answer reaches its
    // own request.
    let puts = (0..60).map(|i| stream.put(put(&format!("many-{i}"), format!("{i}").as_bytes())));
    for r in futures::future::join_all(puts).await {
        r.unwrap();
    }
    let gets = (0..60).map(|i| {
        let stream = &stream;
        async move {
            let key = format!("many-{i}");
            (i, stream.get(pb::GetRequest { key }).await.unwrap().value)
        }
    });
    for (i, value) in futures::future::join_all(gets).await {
        assert_eq!(value, format!("{i}").into_bytes());
    }

    // Each frame was counted as a frame and as the call it carried; one stream carried them.
    let (_, _, text) = http(&a_http, "GET", "/metrics").await;
    let frames = sample(&text, "kademlia_client_frames_total").unwrap_or(0.0);
    assert_eq!(frames, 125.0, "{text}");
    assert_eq!(sample(&text, &calls("Put", 0)), Some(62.0), "{text}");
    assert_eq!(sample(&text, &calls("Put", 3)), Some(1.0), "{text}");
    assert_eq!(sample(&text, &calls("Get", 0)), Some(62.0), "{text}");
    assert_eq!(sample(&text, &calls("Get", 5)), Some(3.0), "{text}");
    assert_eq!(sample(&text, &calls("Delete", 0)), Some(1.0), "{text}");
    assert_eq!(sample(&text, &calls("Stream", 0)), Some(1.0), "{text}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_without_a_request_is_refused_and_a_connection_holds_at_most_four_streams() {
    let (node, _) = start(None, |_| {}).await;
    // One channel: one connection.
    let client = DhtClient::new(channel(&node.client_addr).await);
    let open = || {
        let mut client = client.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::ClientRequestFrame>(4);
            let opened = client.stream(ReceiverStream::new(rx)).await;
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
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("4 client streams"),
        "{refused:?}"
    );

    // A frame with no request, then a good one, on one of the four.
    let (tx, mut replies) = streams.pop().unwrap();
    tx.send(pb::ClientRequestFrame {
        id: 41,
        ..Default::default()
    })
    .await
    .unwrap();
    let reply = replies.message().await.unwrap().unwrap();
    match reply.reply {
        Some(client_reply_frame::Reply::Failure(f)) => {
            assert_eq!(reply.id, 41);
            assert_eq!(Code::from_i32(f.code), Code::InvalidArgument, "{f:?}");
        }
        other => panic!("a frame without a request must fail: {other:?}"),
    }
    tx.send(pb::ClientRequestFrame {
        id: 42,
        request: Some(client_request_frame::Request::Put(put("p", b"q"))),
        ..Default::default()
    })
    .await
    .unwrap();
    let reply = replies.message().await.unwrap().unwrap();
    assert!(
        reply.id == 42 && matches!(reply.reply, Some(client_reply_frame::Reply::Put(_))),
        "{reply:?}"
    );

    // It ends (the client closes its side, the node ends its own): room for another.
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    common::until_a_stream_opens(open).await;
    drop(streams);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_ends_its_client_streams_instead_of_waiting_for_them() {
    let (node, _) = start(None, |cfg| {
        cfg.drain_timeout = Duration::from_secs(30);
    })
    .await;
    let stream = DhtStream::open(channel(&node.client_addr).await, LIMIT);
    stream.put(put("k", b"v")).await.unwrap();
    let started = Instant::now();
    node.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the node waited {:?} for a stream it should have ended",
        started.elapsed()
    );
    let after = stream
        .get(pb::GetRequest { key: "k".into() })
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unavailable, "{after:?}");
    assert!(stream.ended());
}
