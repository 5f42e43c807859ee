//! A tower layer that gives every served gRPC call a span (`crate::telemetry` lists the
//! spans), continuing the W3C trace context the call came with. It wraps the peer and client
//! services outermost, beside `crate::metrics::MetricsLayer`, so that calls the admission
//! layers shed have their span too.
//!
//! The span is named after the call (`kademlia.v1.Kademlia/Store`), with OpenTelemetry's
//! RPC attributes (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), the
//! serving node's id (`kademlia.node.id`), and, on peer calls, the sender's id
//! (`kademlia.peer.id`, recorded by the peer service once the request is decoded). Each frame
//! on a peer stream gets the same span, named after the RPC it carries (`super::exchange`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tracing::Instrument;

use crate::kad::NodeId;
use crate::metrics::{grpc_method, grpc_status};

/// See the module doc.
#[derive(Clone)]
pub struct TraceLayer {
    node: NodeId,
}

impl TraceLayer {
    /// Spans of calls served by node `node`.
    pub fn new(node: NodeId) -> Self {
        TraceLayer { node }
    }
}

impl<S> tower_layer::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            node: self.node,
        }
    }
}

/// A service wrapped by [`TraceLayer`].
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    node: NodeId,
}

impl<S: NamedService> NamedService for Traced<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Traced<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + NamedService,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let span = call_span(
            path.trim_start_matches('/'),
            S::NAME,
            grpc_method(path),
            &self.node,
        );
        crate::telemetry::propagation::continue_from(&span, req.headers());
        let fut = span.in_scope(|| self.inner.call(req));
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = fut.await;
                if let Ok(r) = &response {
                    record_status(&recorded, grpc_status(r.headers()).parse().unwrap_or(2));
                }
                response
            }
            .instrument(span),
        )
    }
}

/// The span of one served call, or of one frame on a peer stream (`super::exchange`): `name`
/// is the call's path without its leading slash (`kademlia.v1.Kademlia/Store`).
pub(crate) fn call_span(name: &str, service: &str, method: &str, node: &NodeId) -> tracing::Span {
    tracing::debug_span!(
        "grpc call",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        kademlia.node.id = %node,
        kademlia.peer.id = tracing::field::Empty,
    )
}

/// Records a served call's gRPC status code on its span.
pub(crate) fn record_status(span: &tracing::Span, code: i32) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", i64::from(code));
    if code != 0 {
        span.record("otel.status_code", "error");
    }
}
