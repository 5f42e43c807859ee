//! A Kademlia DHT node served over gRPC.
//!
//! # Layout
//! - [`kad`]: the Kademlia core (ids, k-buckets, lookups, records): no I/O, time passed in.
//! - [`net`]: the [`net::Transport`] trait, its gRPC ([`net::grpc`]) and in-memory
//!   ([`net::memory`]) implementations, and address selection.
//! - [`node`]: the driver that owns a core, performs its effects and runs maintenance.
//! - [`storage`]: the data dir (records, identity, contacts in redb) for `data_dir`.
//! - [`config`]: typed, layered settings; [`telemetry`]: logging and OTLP traces; [`metrics`]: the metrics
//!   registry (served by [`net::http`]); [`error`]: error types and their gRPC statuses.
//! - [`cli`]: the `kademlia` binary's subcommands (node, client calls, shell, devnet, bench,
//!   simulate).
//! - [`sim`]: many nodes in one process on a simulated clock (`kademlia simulate`).
//!
//! [`run`] serves one node on a listener until a shutdown future completes: `main` and the
//! tests use it the same way.

pub mod cli;
pub mod config;
pub mod error;
pub mod kad;
pub mod metrics;
pub mod net;
pub mod node;
pub mod picture;
pub mod sim;
pub mod storage;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;

pub use config::Settings;
pub use error::DhtError;
pub use kad::{ALPHA, K, NodeId};
pub use net::grpc::{Listeners, pb};
pub use node::{NodeConfig, NodeHandle, PendingNode};

/// Serves one node over gRPC on `listeners` (a `TcpListener` for one shared port) until `shutdown` completes, then drains in-flight
/// calls and stops the driver. `on_start` receives the node's handle once it exists.
pub async fn run(
    listeners: impl Into<Listeners>,
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(NodeHandle),
) -> anyhow::Result<()> {
    let port = cfg
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(config::DEFAULT_PORT);
    let transport = Arc::new(node_transport(&cfg, port));
    run_with(listeners, cfg, transport, shutdown, on_start).await
}

/// The outbound gRPC transport of the node `cfg` describes: its RPC timeout, its message
/// limit, and its peer TLS if any. `default_port` completes bootstrap names without a port.
pub(crate) fn node_transport(cfg: &NodeConfig, default_port: u16) -> net::grpc::GrpcTransport {
    let transport = net::grpc::GrpcTransport::new(cfg.params.rpc_timeout, default_port)
        .with_max_value_bytes(cfg.max_value_bytes)
        .with_streams(cfg.peer_streams);
    match &cfg.peer_tls {
        Some(tls) => transport.with_tls(tls.clone()),
        None => transport,
    }
}

/// [`run`] with a given outbound transport. Nodes of one process (the devnet) share one, so
/// that each destination gets one HTTP/2 connection rather than one per sending node.
pub async fn run_with(
    listeners: impl Into<Listeners>,
    cfg: NodeConfig,
    transport: Arc<dyn net::Transport>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(NodeHandle),
) -> anyhow::Result<()> {
    let listeners = listeners.into();
    if cfg.peer_tls.is_some() && listeners.peer.is_none() {
        anyhow::bail!("peer TLS needs a peer port of its own (peer_port)");
    }
    let max_message_bytes = net::grpc::message_limit(cfg.max_value_bytes);
    let drain_timeout = cfg.drain_timeout;
    let request_timeout = cfg.lookup_timeout + 2 * cfg.params.rpc_timeout;
    let peer_tls = cfg.peer_tls.clone();
    let peer_rate_limit = cfg.peer_rate_limit;
    let peer_streams = cfg.peer_streams;
    let pending = PendingNode::new(cfg, transport);
    let handle = pending.handle.clone();
    let inbound = pending.inbound.clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let driver = pending.start(async move {
        let _ = stop_rx.await;
    });
    on_start(handle.clone());
    let options = net::grpc::ServeOptions {
        max_message_bytes,
        drain_timeout,
        request_timeout,
        peer_rate_limit,
        peer_streams,
        peer_tls,
        metrics: handle.metrics(),
    };
    let result = net::grpc::serve(listeners, handle, inbound, options, shutdown).await;
    let _ = stop_tx.send(());
    let _ = driver.await;
    Ok(result?)
}
