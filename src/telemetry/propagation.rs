//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, or in a frame's fields on
//! a peer stream (`crate::net::grpc::exchange`): a peer RPC carries the context of the span
//! that sent it, and a served call continues the context it came with, so that a lookup's
//! trace goes on at every node it touched.
//!
//! Off (nothing read or written) unless the node exports traces (`telemetry::init_node`).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns propagation on (once spans are exported).
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether trace context is carried.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes `span`'s trace context into an outgoing request's metadata.
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// Makes `span` continue the trace context a served request came with (if any).
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when the span is disabled or already started: then it has no parent to take.
    let _ = span.set_parent(cx);
}

/// `span`'s trace context as the `traceparent` and `tracestate` fields of a frame; empty
/// strings when nothing is carried.
pub fn fields(span: &tracing::Span) -> (String, String) {
    if !enabled() {
        return Default::default();
    }
    let mut map = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut map);
    (
        map.remove("traceparent").unwrap_or_default(),
        map.remove("tracestate").unwrap_or_default(),
    )
}

/// Makes `span` continue the trace context of a frame's `traceparent` and `tracestate`.
pub fn continue_from_fields(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if !enabled() || traceparent.is_empty() {
        return;
    }
    let mut map = std::collections::HashMap::new();
    map.insert("traceparent".to_string(), traceparent.to_string());
    if !tracestate.is_empty() {
        map.insert("tracestate".to_string(), tracestate.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&map);
    let _ = span.set_parent(cx);
}
