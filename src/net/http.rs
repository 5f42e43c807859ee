//! The node's HTTP listener (setting `http_port`), beside gRPC:
//! - `GET /metrics`: the node's metrics in the OpenMetrics text format (`crate::metrics`),
//!   for Prometheus;
//! - `GET /`: a self-contained page (`page.html`: no external script, style or font) that
//!   shows the node's picture (`crate::picture`) and redraws it every 2 s;
//! - `GET /picture.svg[?highlight=ID]`: the picture, with the newest lookup for target ID
//!   (40 hex digits) standing out;
//! - `POST /lookup` with a key as the body: runs a lookup for the key (as `locate` does) and
//!   answers the picture with that lookup drawn round by round; the headers
//!   `x-lookup-target` (the key's id) and `x-lookup-summary` say what it found.
//!
//! Any other path is 404 and any other method 405. HTTP/1.1 on hyper (already in the tree under
//! tonic), one task per connection, stopped with the node. A client that does not send its
//! request headers within [`HEADER_READ_TIMEOUT`] is disconnected, and at most
//! [`MAX_CONNECTIONS`] connections are served at once (more are closed at once): the listener
//! is for a few scrapers, and idle or slow connections must not pile up.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::DhtError;
use crate::kad::NodeId;
use crate::metrics::{CONTENT_TYPE, Metrics, NodeState};
use crate::node::{MAX_KEY_BYTES, NodeHandle};

/// The page at `/`.
const PAGE: &str = include_str!("page.html");
const SVG: &str = "image/svg+xml";

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
        replication_backlog: load.replication.records,
        replication_lag: load.replication.lag,
    })
}

type Answer = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

const TEXT: &str = "text/plain; charset=utf-8";

fn failed(e: &DhtError) -> Answer {
    let status = match e {
        DhtError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        DhtError::NotFound(_) => StatusCode::NOT_FOUND,
        DhtError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        DhtError::Unavailable(_) | DhtError::Aborted(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    reply(status, TEXT, format!("{e}\n"))
}

/// `GET /picture.svg`, with `highlight=ID` in the query if any.
async fn picture(node: &NodeHandle, query: Option<&str>) -> Answer {
    let mut highlight = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("highlight", hex)) => match NodeId::from_hex(hex) {
                Some(id) => highlight = Some(id),
                None => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        TEXT,
                        format!("highlight must be an id of 40 hex digits, got {hex:?}\n"),
                    );
                }
            },
            _ => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("unknown query parameter {pair:?} (only highlight=ID)\n"),
                );
            }
        }
    }
    match node.snapshot().await {
        Ok(s) => reply(
            StatusCode::OK,
            SVG,
            crate::picture::render(&s, highlight, false),
        ),
        Err(e) => failed(&e),
    }
}

/// `POST /lookup`: the body is the key.
async fn lookup(node: &NodeHandle, body: Incoming) -> Answer {
    let bytes = match Limited::new(body, MAX_KEY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                format!("a key is at most {MAX_KEY_BYTES} bytes\n"),
            );
        }
    };
    let Ok(key) = String::from_utf8(bytes.to_vec()) else {
        return reply(
            StatusCode::BAD_REQUEST,
            TEXT,
            "the key must be UTF-8 text\n".into(),
        );
    };
    let (target, located) = match node.locate(key).await {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    let holders = located
        .iter()
        .filter(|l| l.has_value && !l.tombstone)
        .count();
    let summary = format!(
        "{} nodes closest to the key answered, {holders} hold its value",
        located.len()
    );
    match node.snapshot().await {
        Ok(s) => {
            let mut r = reply(
                StatusCode::OK,
                SVG,
                crate::picture::render(&s, Some(target), true),
            );
            let headers = r.headers_mut();
            headers.insert(
                "x-lookup-target",
                target.to_hex().parse().expect("hex is a valid header"),
            );
            headers.insert(
                "x-lookup-summary",
                summary.parse().expect("ASCII is a valid header"),
            );
            r
        }
        Err(e) => failed(&e),
    }
}

async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    node: NodeHandle,
) -> Result<Answer, Infallible> {
    let only = |allowed: &str| {
        reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("only {allowed} is served here\n"),
        )
    };
    let path = req.uri().path().to_owned();
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => match state(&node).await {
            Ok(s) => reply(StatusCode::OK, CONTENT_TYPE, metrics.render(&s)),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{e}\n")),
        },
        (Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        (Method::GET, "/picture.svg") => picture(&node, req.uri().query()).await,
        (Method::POST, "/lookup") => lookup(&node, req.into_body()).await,
        (_, "/metrics" | "/" | "/picture.svg") => only("GET"),
        (_, "/lookup") => only("POST"),
        (_, path) => reply(StatusCode::NOT_FOUND, TEXT, format!("no page at {path}\n")),
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
