//! The driver's spans (`crate::telemetry` lists them all): a lookup and its rounds, a
//! write, and each peer RPC this node sends. A span's parent is what caused it: a client
//! call's span (entered while the driver handles its command and its finished lookups), a
//! lookup round, or nothing (maintenance starts its own traces). The RPC's span is the one its
//! request is sent in, so the peer continues it (`crate::telemetry::propagation`).
//!
//! All are at debug level: with no exporter and the default filter they are disabled, and
//! the bookkeeping here is skipped with them.

use std::collections::BTreeMap;

use tracing::Span;
use tracing::field::{Empty, display};

use crate::kad::lookup::{Mode, Outcome};
use crate::kad::{NodeId, Reply, Request};
use crate::net::TransportError;

/// A lookup's span, and the spans of its rounds that have queries in flight.
pub(crate) struct LookupTrace {
    span: Span,
    /// The span that was current when the lookup started.
    parent: Span,
    /// Round -> its span and its queries in flight. A round's span closes when its last
    /// query is answered (a later query learned in that round opens it again).
    rounds: BTreeMap<u32, (Span, usize)>,
}

impl LookupTrace {
    /// The span of a lookup started now by node `node`, a child of the current span.
    pub fn start(node: NodeId, target: NodeId, mode: Mode) -> LookupTrace {
        let parent = Span::current();
        let span = tracing::debug_span!(
            "lookup",
            otel.name = "lookup",
            kademlia.node.id = %node,
            kademlia.target = %target,
            kademlia.lookup.kind = mode.label(),
            kademlia.lookup.rounds = Empty,
            kademlia.lookup.queried = Empty,
            kademlia.lookup.outcome = Empty,
        );
        LookupTrace {
            span,
            parent,
            rounds: BTreeMap::new(),
        }
    }

    /// The span a query to a contact learned in round `round` is sent in.
    pub fn query(&mut self, round: u32) -> Span {
        if self.span.is_disabled() {
            return Span::none();
        }
        let (span, in_flight) = self.rounds.entry(round).or_insert_with(|| {
            let span = tracing::debug_span!(
                parent: &self.span,
                "lookup round",
                otel.name = "lookup round",
                kademlia.round = round,
            );
            (span, 0)
        });
        *in_flight += 1;
        span.clone()
    }

    /// A query of round `round` was answered (or failed).
    pub fn answered(&mut self, round: u32) {
        if let Some((_, in_flight)) = self.rounds.get_mut(&round) {
            *in_flight = in_flight.saturating_sub(1);
            if *in_flight == 0 {
                self.rounds.remove(&round);
            }
        }
    }

    /// Records how the lookup ended; returns the span that started it, for what the lookup
    /// feeds to run in.
    pub fn finish(self, outcome: &Outcome) -> Span {
        self.span.record("kademlia.lookup.rounds", outcome.rounds);
        self.span.record("kademlia.lookup.queried", outcome.queried);
        self.span.record("kademlia.lookup.outcome", outcome.label());
        self.parent
    }
}

/// The span of a write's STOREs (a child of the current span: the client call's).
pub(crate) fn write_span(replicas: usize, quorum: usize) -> Span {
    tracing::debug_span!(
        "write",
        otel.name = "write",
        kademlia.write.replicas = replicas,
        kademlia.write.quorum = quorum,
    )
}

/// The RPC's method and full name, as the peer service names them.
fn method(body: &Request) -> (&'static str, &'static str) {
    match body {
        Request::Ping => ("Ping", "kademlia.v1.Kademlia/Ping"),
        Request::Store { .. } => ("Store", "kademlia.v1.Kademlia/Store"),
        Request::FindNode { .. } => ("FindNode", "kademlia.v1.Kademlia/FindNode"),
        Request::FindValue { .. } => ("FindValue", "kademlia.v1.Kademlia/FindValue"),
    }
}

/// The span of a peer RPC from node `me` to `addr` (node `to`, if known), under `parent`;
/// `round` for a lookup's query.
pub(crate) fn rpc_span(
    parent: &Span,
    me: &NodeId,
    body: &Request,
    addr: &str,
    to: Option<NodeId>,
    round: Option<u32>,
) -> Span {
    let (method, name) = method(body);
    let span = tracing::debug_span!(
        parent: parent,
        "peer rpc",
        otel.name = name,
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = "kademlia.v1.Kademlia",
        rpc.method = method,
        server.address = addr,
        kademlia.peer.id = Empty,
        kademlia.bucket = Empty,
        kademlia.round = Empty,
        kademlia.outcome = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(to) = to {
        span.record("kademlia.peer.id", display(&to));
        if let Some(bucket) = me.bucket_index(&to) {
            span.record("kademlia.bucket", bucket);
        }
    }
    if let Some(round) = round {
        span.record("kademlia.round", round);
    }
    span
}

/// Records a peer RPC's outcome on its span.
pub(crate) fn rpc_done(span: &Span, result: &Result<Reply, TransportError>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(_) => {
            span.record("kademlia.outcome", "ok");
        }
        Err(e) => {
            span.record("kademlia.outcome", e.label());
            span.record("otel.status_code", "error");
            span.record("otel.status_description", e.to_string().as_str());
        }
    }
}
