//! The node's HTTP listener (setting `http_port`), beside gRPC: `GET /metrics` answers the
//! node's metrics in the OpenMetrics text format (`crate::metrics`), for Prometheus; any
//! other path is 404 and any other method 405. HTTP/1.1 on hyper (already in the tree under
//! tonic), one task per connection, stopped with the node. A client that does not send its
//! request headers within [`HEADER_READ_TIMEOUT`] is disconnected, and at most
//! [`MAX_CONNECTIONS`] connections are served at once (more are closed at once): the listener
//! is for a few scrapers, and idle or slow connections must not pile up.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::{CONTENT_TYPE, Metrics, NodeState};
use crate::node::NodeHandle;

/// How long a connection may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// HTTP connections served at once at most.
pub const MAX_CONNECTIONS: usize = 64;

/// The node's state as the metrics show it.
async fn state(node: &NodeHandle) -> Result<NodeState, crate::DhtError> {
    let info = node.info().await?;
    let buckets = node
        .routes()
        .await?
        .iter()
        .map(|b| {
            let stale = b.contacts.iter().filter(|e| e.is_stale()).count();
            (b.index, b.contacts.len() - stale, stale)
        })
        .collect();
    let load = info.load;
    Ok(NodeState {
        live: info.peers,
        stale: info.stale_peers,
        buckets,
        records: info.records,
        operations: load.operations,
        rpcs_in_flight: load.rpcs.in_flight,
        rpcs_queued: load.rpcs.queued,
        rpcs_refused: load.rpcs.refused,
        requests_dropped: load.rpcs.shed,
        maintenance_running: load.jobs.running,
        maintenance_queued: load.jobs.queued,
    })
}

async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    node: NodeHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    let text = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => match state(&node).await {
            Ok(s) => reply(StatusCode::OK, CONTENT_TYPE, metrics.render(&s)),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("{e}\n")),
        },
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET is served\n".into(),
        ),
        (_, path) => reply(StatusCode::NOT_FOUND, text, format!("no page at {path}\n")),
    })
}

/// Serves `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    node: NodeHandle,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("HTTP connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let (metrics, node) = (metrics.clone(), node.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| answer(req, metrics.clone(), node.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}
