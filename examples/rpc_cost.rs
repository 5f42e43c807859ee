//! What one peer RPC costs on this machine's gRPC stack, and what the same exchange would cost
//! as a message on a long-lived bidirectional stream: the measurement behind issue 12's
//! question of whether the node's own code or the transport bounds puts per second.
//!
//! A FIND_NODE request and a reply of 30 contacts (what a lookup sends and gets: k + k/2) go
//! back and forth between a tonic client and a tonic server in this process, on loopback,
//! with `CONNS` HTTP/2 connections and `PER` requests in flight on each (32 in all, as in
//! `kademlia bench -c 32`). Once as unary calls (how peers talk today: one HTTP/2 stream per
//! RPC, with its HEADERS, DATA and trailers), once as messages on one bidirectional stream per
//! connection (DATA frames only). The server echoes a fixed reply and does no other work, so
//! the figures are the transport's alone. Prints, for each, exchanges per second and CPU time
//! (user + system, both sides) per exchange, from /proc/self/stat.
//!
//! `cargo run --release --example rpc_cost -- [EXCHANGES] [CONNS] [PER]` (defaults 100,000,
//! 8, 4). The service is built from tonic's generic parts (`tonic::server::Grpc` with the
//! prost codec) on paths of its own, so the product's protocol does not change to measure it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::StreamExt;
use http::uri::PathAndQuery;
use kademlia::net::grpc::pb::{Contact, FindNodeRequest, FindNodeResponse, Header};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const UNARY: &str = "/rpccost.Echo/Unary";
const STREAM: &str = "/rpccost.Echo/Stream";

fn request(i: u64) -> FindNodeRequest {
    FindNodeRequest {
        header: Some(Header {
            sender: Some(contact(i)),
            network_id: "kademlia".into(),
        }),
        target: vec![(i % 251) as u8; 20],
        count: 30,
    }
}

fn contact(i: u64) -> Contact {
    Contact {
        node_id: vec![(i % 253) as u8; 20],
        address: format!("10.0.{}.{}:50051", i % 200, i % 250),
        incarnation: 1_765_000_000_000 + i,
    }
}

fn reply() -> FindNodeResponse {
    FindNodeResponse {
        responder: Some(contact(0)),
        closer: (1..=30).map(contact).collect(),
    }
}

/// Answers every FIND_NODE with the same 30 contacts.
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "rpccost.Echo";
}

struct UnarySvc;

impl tonic::server::UnaryService<FindNodeRequest> for UnarySvc {
    type Response = FindNodeResponse;
    type Future = BoxFuture<Response<FindNodeResponse>, Status>;
    fn call(&mut self, _req: Request<FindNodeRequest>) -> Self::Future {
        Box::pin(async { Ok(Response::new(reply())) })
    }
}

struct StreamSvc;

impl tonic::server::StreamingService<FindNodeRequest> for StreamSvc {
    type Response = FindNodeResponse;
    type ResponseStream = ReceiverStream<Result<FindNodeResponse, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
    fn call(&mut self, req: Request<Streaming<FindNodeRequest>>) -> Self::Future {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Ok(_)) = inbound.next().await {
                if tx.send(Ok(reply())).await.is_err() {
                    break;
                }
            }
        });
        Box::pin(async { Ok(Response::new(ReceiverStream::new(rx))) })
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let streaming = req.uri().path() == STREAM;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(if streaming {
                grpc.streaming(StreamSvc, req).await
            } else {
                grpc.unary(UnarySvc, req).await
            })
        })
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat has a command")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("clock ticks");
    // utime and stime (fields 14 and 15 of the whole line), in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

async fn unary(channel: Channel, n: usize) {
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..n {
        grpc.ready().await.expect("channel ready");
        let codec = ProstCodec::<FindNodeRequest, FindNodeResponse>::default();
        let path = PathAndQuery::from_static(UNARY);
        let r = grpc
            .unary(Request::new(request(i as u64)), path, codec)
            .await;
        assert_eq!(r.expect("unary call").into_inner().closer.len(), 30);
    }
}

async fn stream(channel: Channel, n: usize, per: usize) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let (tx, rx) = mpsc::channel::<FindNodeRequest>(64);
    let codec = ProstCodec::<FindNodeRequest, FindNodeResponse>::default();
    let path = PathAndQuery::from_static(STREAM);
    let mut replies = grpc
        .streaming(Request::new(ReceiverStream::new(rx)), path, codec)
        .await
        .expect("stream opened")
        .into_inner();
    let mut sent = 0;
    while sent < per.min(n) {
        tx.send(request(sent as u64)).await.expect("stream open");
        sent += 1;
    }
    for _ in 0..n {
        let r = replies.next().await.expect("a reply").expect("no error");
        assert_eq!(r.closer.len(), 30);
        if sent < n {
            tx.send(request(sent as u64)).await.expect("stream open");
            sent += 1;
        }
    }
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: usize| {
        args.next()
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (total, conns, per) = (next(100_000), next(8), next(4));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("bound");
    // Nagle off on accepted connections too (as the node does): `Server::tcp_nodelay` applies
    // only to listeners tonic binds itself, and with it on, a unary reply's trailers wait for
    // the client's delayed ACK.
    let incoming = TcpListenerStream::new(listener).map(|s| {
        s.and_then(|s| {
            s.set_nodelay(true)?;
            Ok(s)
        })
    });
    tokio::spawn(
        Server::builder()
            .add_service(Echo)
            .serve_with_incoming(incoming),
    );
    let mut channels = Vec::new();
    for _ in 0..conns {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("uri");
        channels.push(endpoint.tcp_nodelay(true).connect().await.expect("connect"));
    }
    let each = total / (conns * per);
    println!(
        "{} FIND_NODE exchanges (30-contact replies), {conns} connections, {per} in flight on each, 2 worker threads",
        each * conns * per
    );
    for round in 1..=2 {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let calls: Vec<_> = channels
            .iter()
            .flat_map(|c| (0..per).map(move |_| tokio::spawn(unary(c.clone(), each))))
            .collect();
        for c in calls {
            c.await.expect("unary task");
        }
        report(round, "unary calls", each * conns * per, t0, c0);
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let streams: Vec<_> = channels
            .iter()
            .map(|c| tokio::spawn(stream(c.clone(), each * per, per)))
            .collect();
        for s in streams {
            s.await.expect("stream task");
        }
        report(round, "stream messages", each * conns * per, t0, c0);
    }
}

fn report(round: u32, what: &str, n: usize, t0: Instant, c0: f64) {
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    println!(
        "round {round}  {what:<16} {:>9.0} per second  {:>6.1} us CPU each",
        n as f64 / wall,
        cpu * 1e6 / n as f64
    );
}
