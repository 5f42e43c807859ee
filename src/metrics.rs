//! The node's metrics: one registry, exposed in the OpenMetrics text format on the HTTP
//! listener (`net::http`, setting `http_port`) at `/metrics`.
//!
//! Names follow the OpenTelemetry semantic conventions for RPCs as Prometheus spells them
//! (`rpc_server_call_duration_seconds` with `rpc_system`, `rpc_service`, `rpc_method` and
//! `rpc_grpc_status_code`), and Prometheus' conventions for the node's own state (a
//! `kademlia_` prefix, base units, `_total` on counters):
//! - `rpc_server_call_duration_seconds`: every gRPC call this node served, peer and client,
//!   by service, method and status code (its `_count` counts the calls, so calls shed with
//!   RESOURCE_EXHAUSTED, code 8, show there too), recorded by [`MetricsLayer`];
//! - `kademlia_lookup_rounds` and `kademlia_lookup_queries`: every lookup this node ran
//!   (for its clients and its own maintenance), by `kind` and `outcome`, recorded by the driver;
//! - `kademlia_routing_contacts{state}` and `kademlia_routing_bucket_contacts{bucket,state}`:
//!   live and stale contacts, in all and per non-empty k-bucket;
//! - `kademlia_store_records`; `kademlia_operations` (lookups, writes and joins running);
//!   `kademlia_peer_rpcs_in_flight`, `kademlia_peer_rpcs_queued`,
//!   `kademlia_peer_rpcs_refused_total` (the outbox was full) and
//!   `kademlia_peer_requests_dropped_total` (their sender had stopped waiting);
//!   `kademlia_maintenance_lookups` and `kademlia_maintenance_jobs_queued`;
//! - replication (paper section 2.5): `kademlia_replication_backlog_records` (records due
//!   whose STOREs were not sent yet) and `kademlia_replication_lag_seconds` (how long ago the
//!   oldest of them fell due: a node falling behind shows it growing), read from the driver's
//!   `node::backlog`; `kademlia_replication_delay_seconds` (per record replicated, from due to
//!   sent), `kademlia_replication_stores_total{outcome}` (replication STOREs answered or
//!   failed) and `kademlia_replication_handovers_total` (records replicated by a node not
//!   among their k closest, whose own copy then became a cached one), recorded by the driver;
//! - `kademlia_write_stores_total{phase,outcome}`: the STOREs of client puts and deletes. A
//!   write answers its client once its quorum has stored it; `phase="background"` counts the
//!   STOREs that answered after that; `kademlia_write_retries_total`: puts whose conditional
//!   STOREs met a newer version and that wrote again after a full survey (`kad::write`);
//! - `kademlia_peer_frames_total`: peer requests served as frames on `Exchange` streams
//!   (`net::grpc::exchange`); each is also in `rpc_server_call_duration_seconds` under the
//!   RPC it carries, like a unary call; `kademlia_client_frames_total`: client requests
//!   served as frames on `Stream` streams (`net::grpc::client_stream`), likewise;
//! - `kademlia_peer_tls_handshakes_total{outcome}`: TLS handshakes on the peer port (with peer
//!   mTLS on), `accepted`, `failed` (no certificate from the cluster CA, or a broken exchange)
//!   or `timed_out`, recorded by `net::tls::incoming`.
//!
//! The node's state is read when a scrape comes (`net::http` asks the driver for its info and
//! routing table and hands them over as a [`NodeState`]), so no hot path pays for it. This
//! module knows nothing of the node: the node owns a [`Metrics`] and records its lookups in
//! it.
//!
//! Why a crate: `prometheus-client` is the Prometheus project's own Rust client; it encodes
//! OpenMetrics (what Prometheus prefers to scrape), escapes labels and keeps histograms
//! lock-free, which is more than a few lines to get right by hand.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tonic::server::NamedService;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc_system: &'static str,
    rpc_service: &'static str,
    rpc_method: String,
    rpc_grpc_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// `find_node`, `find_value` or `survey` (a FIND_VALUE visit of the k closest).
    kind: &'static str,
    /// `found` (a record), `converged` (the k closest answered) or `gave_up` (deadline or
    /// query cap).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteStoreLabels {
    /// `quorum`: answered before the client's answer (these decide it); `background`:
    /// answered after the quorum had answered the client.
    phase: &'static str,
    /// `ok` (stored) or `failed` (refused, a newer version held, or no answer).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// What happened: `ok` or `failed` for replication STOREs; `accepted`, `failed` or
    /// `timed_out` for TLS handshakes.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabels {
    bucket: String,
    state: &'static str,
}

/// A counter that mirrors a running total kept elsewhere (the driver's).
#[derive(Default)]
struct Mirrored {
    counter: Counter,
    seen: AtomicU64,
}

impl Mirrored {
    fn follow(&self, total: u64) {
        let before = self.seen.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(before));
    }
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    lookup_rounds: Family<LookupLabels, Histogram, fn() -> Histogram>,
    lookup_queries: Family<LookupLabels, Histogram, fn() -> Histogram>,
    contacts: Family<StateLabels, Gauge>,
    bucket_contacts: Family<BucketLabels, Gauge>,
    records: Gauge,
    operations: Gauge,
    rpcs_in_flight: Gauge,
    rpcs_queued: Gauge,
    rpcs_refused: Mirrored,
    requests_dropped: Mirrored,
    maintenance_lookups: Gauge,
    maintenance_queued: Gauge,
    replication_backlog: Gauge,
    replication_lag: Gauge<f64, AtomicU64>,
    replication_delay: Histogram,
    replication_stores: Family<OutcomeLabels, Counter>,
    handovers: Counter,
    write_stores: Family<WriteStoreLabels, Counter>,
    write_retries: Counter,
    peer_frames: Counter,
    client_frames: Counter,
    tls_handshakes: Family<OutcomeLabels, Counter>,
}

/// Latency buckets from 100 µs to about 3.3 s, doubling: a loopback ping is a few hundred
/// microseconds, a put on a slow network seconds.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Replication delays from 100 ms to about 1.8 h, quadrupling: on time is well under a
/// second late, a node falling behind is minutes to hours late (the interval is an hour).
fn delay_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 4.0, 9))
}

/// Rounds of a lookup: 1 to 10 (a network of n nodes needs about log2(n) / 5, section 2.3).
fn rounds_histogram() -> Histogram {
    Histogram::new((1..=10).map(f64::from))
}

/// RPCs of a lookup: 1 to 512, doubling (`lookup_max_queries` caps them, 200 by default).
fn queries_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            calls: Family::new_with_constructor(call_histogram),
            lookup_rounds: Family::new_with_constructor(rounds_histogram),
            lookup_queries: Family::new_with_constructor(queries_histogram),
            contacts: Family::default(),
            bucket_contacts: Family::default(),
            records: Gauge::default(),
            operations: Gauge::default(),
            rpcs_in_flight: Gauge::default(),
            rpcs_queued: Gauge::default(),
            rpcs_refused: Mirrored::default(),
            requests_dropped: Mirrored::default(),
            maintenance_lookups: Gauge::default(),
            maintenance_queued: Gauge::default(),
            replication_backlog: Gauge::default(),
            replication_lag: Gauge::default(),
            replication_delay: delay_histogram(),
            replication_stores: Family::default(),
            handovers: Counter::default(),
            write_stores: Family::default(),
            write_retries: Counter::default(),
            peer_frames: Counter::default(),
            client_frames: Counter::default(),
            tls_handshakes: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "rpc_server_call_duration_seconds",
            "gRPC calls served, by service, method and status code, and how long they took",
            m.calls.clone(),
        );
        r.register(
            "kademlia_lookup_rounds",
            "Rounds of the lookups this node ran (the hop of the farthest peer queried)",
            m.lookup_rounds.clone(),
        );
        r.register(
            "kademlia_lookup_queries",
            "Peers the lookups this node ran queried",
            m.lookup_queries.clone(),
        );
        r.register(
            "kademlia_routing_contacts",
            "Contacts in the routing table (live, or stale: kept but unused)",
            m.contacts.clone(),
        );
        r.register(
            "kademlia_routing_bucket_contacts",
            "Contacts per non-empty k-bucket (bucket i: distance from 2^i to 2^(i+1))",
            m.bucket_contacts.clone(),
        );
        r.register("kademlia_store_records", "Records held", m.records.clone());
        r.register(
            "kademlia_operations",
            "Lookups, writes and joins running",
            m.operations.clone(),
        );
        r.register(
            "kademlia_peer_rpcs_in_flight",
            "Peer RPCs this node has under way",
            m.rpcs_in_flight.clone(),
        );
        r.register(
            "kademlia_peer_rpcs_queued",
            "Peer RPCs waiting for a slot",
            m.rpcs_queued.clone(),
        );
        r.register(
            "kademlia_peer_rpcs_refused",
            "Peer RPCs refused before sending because the outbox was full",
            m.rpcs_refused.counter.clone(),
        );
        r.register(
            "kademlia_peer_requests_dropped",
            "Peer requests dropped unanswered because their sender had stopped waiting",
            m.requests_dropped.counter.clone(),
        );
        r.register(
            "kademlia_maintenance_lookups",
            "Maintenance lookups (refresh, replication) running",
            m.maintenance_lookups.clone(),
        );
        r.register(
            "kademlia_maintenance_jobs_queued",
            "Maintenance jobs waiting",
            m.maintenance_queued.clone(),
        );
        r.register(
            "kademlia_replication_backlog_records",
            "Records due for replication whose STOREs were not sent yet",
            m.replication_backlog.clone(),
        );
        r.register_with_unit(
            "kademlia_replication_lag",
            "How long ago the oldest record of the replication backlog fell due",
            Unit::Seconds,
            m.replication_lag.clone(),
        );
        r.register_with_unit(
            "kademlia_replication_delay",
            "Per record replicated: from the moment it fell due to its STOREs being sent",
            Unit::Seconds,
            m.replication_delay.clone(),
        );
        r.register(
            "kademlia_replication_stores",
            "Replication STOREs sent, by outcome (ok: the peer answered)",
            m.replication_stores.clone(),
        );
        r.register(
            "kademlia_replication_handovers",
            "Records this node replicated while not among their k closest nodes, whose copy then \
             became a cached one (a quorum of those nodes held the record)",
            m.handovers.clone(),
        );
        r.register(
            "kademlia_write_stores",
            "STOREs of client puts and deletes, by outcome and phase (quorum: answered before the \
             client was; background: after)",
            m.write_stores.clone(),
        );
        r.register(
            "kademlia_write_retries",
            "Puts whose conditional STOREs met a newer version and that wrote again after a \
             full survey",
            m.write_retries.clone(),
        );
        r.register(
            "kademlia_peer_frames",
            "Peer requests served as frames on Exchange streams (also counted by RPC in \
             rpc_server_call_duration_seconds)",
            m.peer_frames.clone(),
        );
        r.register(
            "kademlia_client_frames",
            "Client requests served as frames on Stream streams (also counted by method in \
             rpc_server_call_duration_seconds)",
            m.client_frames.clone(),
        );
        r.register(
            "kademlia_peer_tls_handshakes",
            "TLS handshakes on the peer port, by outcome (accepted, failed, timed_out)",
            m.tls_handshakes.clone(),
        );
        m
    }

    /// Records one finished lookup.
    pub fn observe_lookup(
        &self,
        mode: crate::kad::lookup::Mode,
        outcome: &crate::kad::lookup::Outcome,
    ) {
        let labels = LookupLabels {
            kind: mode.label(),
            outcome: outcome.label(),
        };
        self.lookup_rounds
            .get_or_create(&labels)
            .observe(f64::from(outcome.rounds));
        self.lookup_queries
            .get_or_create(&labels)
            .observe(f64::from(outcome.queried));
    }

    /// Records one record's replication, `delay` after it fell due.
    pub fn observe_replication(&self, delay: std::time::Duration) {
        self.replication_delay.observe(delay.as_secs_f64());
    }

    /// Records one replication STORE's outcome.
    pub fn observe_replication_store(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.replication_stores
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records one record handed over to its k closest nodes (own copy now cached).
    pub fn observe_handover(&self) {
        self.handovers.inc();
    }

    /// Records one answered STORE of a client write; `background`: the client had been
    /// answered at the quorum before it came.
    pub fn observe_write_store(&self, ok: bool, background: bool) {
        let labels = WriteStoreLabels {
            phase: if background { "background" } else { "quorum" },
            outcome: if ok { "ok" } else { "failed" },
        };
        self.write_stores.get_or_create(&labels).inc();
    }

    /// Records one put written again after a full survey (see `kad::write`).
    pub fn observe_write_retry(&self) {
        self.write_retries.inc();
    }

    /// Records the end of one TLS handshake on the peer port (`net::tls::Handshake::label`).
    pub fn observe_tls_handshake(&self, outcome: &'static str) {
        self.tls_handshakes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records one request served as a frame on a stream (with [`Self::observe_call`]), of
    /// the peer service or, for any other `service`, of the client service.
    pub(crate) fn observe_frame(&self, service: &str) {
        if service == crate::net::grpc::pb::kademlia_server::SERVICE_NAME {
            self.peer_frames.inc();
        } else {
            self.client_frames.inc();
        }
    }

    /// Records one served call.
    pub(crate) fn observe_call(
        &self,
        service: &'static str,
        method: &str,
        code: &str,
        seconds: f64,
    ) {
        let labels = CallLabels {
            rpc_system: "grpc",
            rpc_service: service,
            rpc_method: method.to_string(),
            rpc_grpc_status_code: code.to_string(),
        };
        self.calls.get_or_create(&labels).observe(seconds);
    }

    /// Sets the gauges to `state`, then encodes every metric.
    pub fn render(&self, state: &NodeState) -> String {
        self.contacts
            .get_or_create(&StateLabels { state: "live" })
            .set(state.live as i64);
        self.contacts
            .get_or_create(&StateLabels { state: "stale" })
            .set(state.stale as i64);
        self.bucket_contacts.clear();
        for &(index, live, stale) in &state.buckets {
            for (label, n) in [("live", live), ("stale", stale)] {
                let labels = BucketLabels {
                    bucket: index.to_string(),
                    state: label,
                };
                self.bucket_contacts.get_or_create(&labels).set(n as i64);
            }
        }
        self.records.set(state.records as i64);
        self.operations.set(state.operations as i64);
        self.rpcs_in_flight.set(state.rpcs_in_flight as i64);
        self.rpcs_queued.set(state.rpcs_queued as i64);
        self.rpcs_refused.follow(state.rpcs_refused);
        self.requests_dropped.follow(state.requests_dropped);
        self.maintenance_lookups
            .set(state.maintenance_running as i64);
        self.maintenance_queued.set(state.maintenance_queued as i64);
        self.replication_backlog
            .set(state.replication_backlog as i64);
        self.replication_lag
            .set(state.replication_lag.as_secs_f64());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// What a scrape reads of the node (`net::http` fills it from the driver).
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    pub live: usize,
    pub stale: usize,
    /// `(bucket index, live contacts, stale contacts)` of every non-empty bucket.
    pub buckets: Vec<(usize, usize, usize)>,
    pub records: usize,
    pub operations: usize,
    pub rpcs_in_flight: usize,
    pub rpcs_queued: usize,
    /// Running totals, kept by the driver.
    pub rpcs_refused: u64,
    pub requests_dropped: u64,
    pub maintenance_running: usize,
    pub maintenance_queued: usize,
    pub replication_backlog: usize,
    pub replication_lag: std::time::Duration,
}

/// The method of a gRPC request's path: "/kademlia.v1.Kademlia/Ping" -> "Ping".
pub(crate) fn grpc_method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

/// The status code of a served unary call, from its response's headers: a call that failed
/// answers with its status there ("trailers-only"); one that succeeded sends status 0 in its
/// trailers.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> &str {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
}

/// A tower layer that records every call of the service it wraps in
/// `rpc_server_call_duration_seconds`. Put it outermost, so that calls refused by the
/// admission layers are counted with their status.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service wrapped by [`MetricsLayer`].
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S: NamedService> NamedService for Measured<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Measured<S>
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
        let method = grpc_method(req.uri().path()).to_string();
        let started = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = fut.await;
            if let Ok(r) = &response {
                let code = grpc_status(r.headers());
                metrics.observe_call(S::NAME, &method, code, started.elapsed().as_secs_f64());
            }
            response
        })
    }
}
