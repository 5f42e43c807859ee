//! Assembles a node's gRPC server: peer service, client service, health and reflection.
//!
//! Ports: with one listener, peers and clients share it. With a separate peer listener
//! (`peer_port`), the client port serves put/get, health and reflection, and the peer port
//! serves the peer RPCs and health, so that a network policy can admit the peer port only
//! from the cluster's own nodes.
//!
//! Health reports NOT_SERVING until the node has created or joined a network, SERVING after,
//! and NOT_SERVING again as soon as shutdown starts; then the server stops accepting, drains
//! in-flight calls and returns.
//!
//! With an HTTP listener (`http_port`), `/metrics` is served there (`crate::net::http`), and
//! every served call is counted by `crate::metrics::MetricsLayer`.
//!
//! Admission: the peer and client services each handle a bounded number of requests at once
//! and shed the rest with RESOURCE_EXHAUSTED (`admission`); every request has a deadline
//! (`ServeOptions::request_timeout`), and a connection opens at most
//! [`MAX_STREAMS_PER_CONNECTION`] streams at once.

use std::future::Future;

use futures::{FutureExt, TryFutureExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::info;

use tower_layer::Layer;

use super::admission::{AdmissionLayer, CLIENT_REQUESTS_IN_FLIGHT, PEER_REQUESTS_IN_FLIGHT};
use super::client_stream::ClientFrameGuards;
use super::dht_service::DhtService;
use super::exchange::{FrameGuards, STREAMS_PER_CONNECTION};
use super::frames::OpenStreams;
use super::pb;
use super::peer_service::PeerService;
use super::rate::RateLimitLayer;
use super::trace::TraceLayer;
use crate::metrics::MetricsLayer;
use crate::net::Inbound;
use crate::node::NodeHandle;

/// Health service name that reports SERVING whenever the process is up (liveness), while
/// `""`, `kademlia.v1.Dht` and `kademlia.v1.Kademlia` report SERVING only once joined
/// (readiness).
pub const LIVENESS_SERVICE: &str = "liveness";

/// Settings of the gRPC server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest gRPC message accepted (must hold the largest value plus framing).
    pub max_message_bytes: usize,
    /// Longest wait for in-flight calls after shutdown starts.
    pub drain_timeout: std::time::Duration,
    /// Longest a request may take (a put: its lookup, then its STOREs); then DEADLINE
    /// EXCEEDED or CANCELLED.
    pub request_timeout: std::time::Duration,
    /// Peer requests per second admitted from one remote IP (`rate`); 0: no limit.
    pub peer_rate_limit: u32,
    /// Whether the peer service serves `Exchange` streams (`super::exchange`).
    pub peer_streams: bool,
    /// Peer mTLS on the peer listener (which must then be its own).
    pub peer_tls: Option<std::sync::Arc<crate::net::tls::PeerTls>>,
    /// Where served calls are counted (and what the HTTP listener serves).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Concurrent HTTP/2 streams (calls) one connection may open at most.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Accepted connections with Nagle's algorithm off (the builder's `tcp_nodelay` only applies
/// to listeners tonic binds itself, and small RPCs would otherwise wait for delayed ACKs).
/// Accept errors (such as running out of file descriptors) are logged and retried after a
/// pause instead of in a busy loop.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(stream), listener));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Where a node listens: its client port, and its peer port when peers have their own.
pub struct Listeners {
    /// The client service (put/get), health and reflection; also the peer service when
    /// `peer` is `None`.
    pub client: TcpListener,
    /// The peer service (PING, STORE, FIND_NODE, FIND_VALUE) and health.
    pub peer: Option<TcpListener>,
    /// The HTTP listener (`/metrics`, `crate::net::http`), when there is one (`http_port`).
    pub http: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// One port for peers and clients.
    fn from(client: TcpListener) -> Self {
        Listeners {
            client,
            peer: None,
            http: None,
        }
    }
}

/// Serves `node` on `listeners` until `shutdown` completes.
pub async fn serve(
    listeners: Listeners,
    node: NodeHandle,
    inbound: mpsc::Sender<Inbound>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("kademlia.v1.Dht", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("kademlia.v1.Kademlia", ServingStatus::NotServing)
        .await;
    // For liveness probes: SERVING while the process runs, joined or not.
    reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let health_task = {
        let reporter = reporter.clone();
        let mut joined = node.joined_watch();
        tokio::spawn(async move {
            loop {
                let status = if *joined.borrow_and_update() && !*stop_rx.borrow() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in ["", "kademlia.v1.Dht", "kademlia.v1.Kademlia"] {
                    reporter.set_service_status(name, status).await;
                }
                tokio::select! {
                    r = joined.changed() => if r.is_err() { break },
                    _ = stop_rx.changed() => {}
                }
            }
            for name in ["", "kademlia.v1.Dht", "kademlia.v1.Kademlia"] {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        })
    };

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("embedded descriptor set is valid");

    let max = options.max_message_bytes;
    let measured = MetricsLayer::new(options.metrics.clone());
    let traced = TraceLayer::new(node.id());
    let rate = RateLimitLayer::new(options.peer_rate_limit);
    let admission = AdmissionLayer::new(PEER_REQUESTS_IN_FLIGHT, "peer");
    let mut peer_service = PeerService::new(inbound, options.peer_tls.is_some());
    if options.peer_streams {
        // Frames on streams pass the same rate limit and admission budget as calls.
        peer_service = peer_service.with_streams(FrameGuards {
            rate: rate.clone(),
            admission: admission.clone(),
            metrics: options.metrics.clone(),
            node: node.id(),
            request_timeout: options.request_timeout,
            stopping: stop_tx.subscribe(),
            open: OpenStreams::new(STREAMS_PER_CONNECTION, "peer"),
        });
    }
    let peer = measured.layer(
        traced.layer(
            rate.layer(
                admission.layer(
                    pb::kademlia_server::KademliaServer::new(peer_service)
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max),
                ),
            ),
        ),
    );
    // Frames on client streams take the same admission budget as client calls.
    let client_admission = AdmissionLayer::new(CLIENT_REQUESTS_IN_FLIGHT, "client");
    let dht_service = DhtService::new(node.clone()).with_streams(ClientFrameGuards::new(
        client_admission.clone(),
        options.metrics.clone(),
        options.request_timeout,
        stop_tx.subscribe(),
    ));
    let dht = measured.layer(
        traced.layer(
            client_admission.layer(
                pb::dht_server::DhtServer::new(dht_service)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            ),
        ),
    );

    let http_task = listeners.http.map(|l| {
        let (metrics, node, mut stop) =
            (options.metrics.clone(), node.clone(), stop_tx.subscribe());
        info!(http = ?l.local_addr().ok(), "HTTP listener (/metrics)");
        tokio::spawn(crate::net::http::serve(l, metrics, node, async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        }))
    });
    let client_addr = listeners.client.local_addr().ok();
    let peer_addr = listeners.peer.as_ref().and_then(|l| l.local_addr().ok());
    info!(client = ?client_addr, peer = ?peer_addr.or(client_addr), advertise = %node.addr(), "gRPC server listening");
    let drain_timeout = options.drain_timeout;
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        info!("shutting down: health NOT_SERVING, draining in-flight calls");
        let _ = stop_tx.send(true);
        let _ = drain_tx.send(());
    }
    .boxed()
    .shared();
    let drain_deadline = async move {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let builder = || {
        Server::builder()
            .tcp_nodelay(true)
            .timeout(options.request_timeout)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
    };
    let mut client = builder()
        .add_service(health.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(dht);
    let servers = match listeners.peer {
        // One port: peers and clients share it (the default).
        None => {
            debug_assert!(options.peer_tls.is_none(), "checked by crate::run_with");
            client = client.add_service(peer);
            client
                .serve_with_incoming_shutdown(incoming(listeners.client), signal)
                .boxed()
        }
        // The peer service on its own port, the client's without it.
        Some(peer_listener) => {
            let peers = builder().add_service(health).add_service(peer);
            let peers = match &options.peer_tls {
                Some(tls) => {
                    let metrics = options.metrics.clone();
                    let ended = move |h: crate::net::tls::Handshake| {
                        metrics.observe_tls_handshake(h.label())
                    };
                    let accepted =
                        crate::net::tls::incoming(incoming(peer_listener), tls.acceptor(), ended);
                    peers
                        .serve_with_incoming_shutdown(accepted, signal.clone())
                        .boxed()
                }
                None => peers
                    .serve_with_incoming_shutdown(incoming(peer_listener), signal.clone())
                    .boxed(),
            };
            let clients = client.serve_with_incoming_shutdown(incoming(listeners.client), signal);
            futures::future::try_join(clients, peers)
                .map_ok(|_| ())
                .boxed()
        }
    };
    let result = tokio::select! {
        r = servers => r,
        _ = drain_deadline => {
            tracing::warn!(?drain_timeout, "in-flight calls still running after the drain timeout; stopping");
            Ok(())
        }
    };
    health_task.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    result
}
