//! Logging and traces.
//!
//! Logging: a tracing subscriber with an env-filter. `RUST_LOG` wins over the `log` setting.
//! Lifecycle events (created/joined, peers, maintenance) log at info, each RPC at debug.
//! `log_format = json` writes one JSON object per event (tracing-subscriber's JSON format:
//! `timestamp`, `level`, `fields` with the message, and the enclosing spans) for clusters'
//! log collectors.
//!
//! Traces: when the standard `OTEL_*` variables ask for them ([`otlp`]), a node also exports
//! its spans over OTLP, and W3C trace context travels in the metadata of every peer RPC
//! ([`propagation`]), so that one client call is one trace across every node it touched.
//! The spans (all at debug level, target `kademlia::…`):
//! - each gRPC call served, peer and client (`net::grpc::trace`), named `kademlia.v1.Dht/Get`
//!   and so on, with OpenTelemetry's `rpc.*` attributes and `kademlia.node.id`;
//! - each lookup (`lookup`: target, kind, rounds, peers queried, outcome), each of its rounds
//!   (`lookup round`: the peers learned in round r are queried in round r), each write
//!   (`write`: its replica set and quorum);
//! - each peer RPC this node sent (`kademlia.v1.Kademlia/Store` and so on, kind client: peer
//!   id, XOR-distance bucket, round, outcome), whose context the peer continues.
//!
//! With no exporter asked for there is no OpenTelemetry layer: the spans, at debug level,
//! are disabled under the default filter (`info`), so tracing skips them at their call site,
//! and no trace context is read or written on the wire.

pub mod otlp;
pub mod propagation;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines look (`log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// What [`init_node`] set up; [`Telemetry::shutdown`] exports the spans still buffered.
#[must_use = "dropping it without shutdown() loses the spans still buffered"]
pub struct Telemetry {
    traces: Option<otlp::Traces>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.traces.is_some()
    }

    /// Exports what is buffered and stops the exporter (a bounded wait: see
    /// [`otlp::SHUTDOWN_TIMEOUT`]).
    pub async fn shutdown(self) {
        if let Some(traces) = self.traces {
            traces.shutdown().await;
        }
    }
}

fn log_filter(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        // Colours only for a person at a terminal; container logs stay plain text.
        LogFormat::Text => layer
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .boxed(),
        LogFormat::Json => layer.json().with_ansi(false).boxed(),
    }
}

/// Installs the global subscriber for logs only (idempotent: later calls are ignored). Logs
/// go to stderr so that client subcommands keep stdout for their output.
pub fn init(default_filter: &str, format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format).with_filter(log_filter(default_filter)))
        .try_init();
}

/// Installs the global subscriber of a node process: logs as [`init`], and spans exported
/// over OTLP when the `OTEL_*` variables ask for it ([`otlp::Settings::from_env`]). Fails
/// on `OTEL_*` values it cannot honour, naming them. Must run inside the tokio runtime (the
/// exporter's channel lives on it).
pub fn init_node(default_filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let traces = match otlp::Settings::from_env()? {
        Some(settings) => Some(otlp::Traces::start(&settings)?),
        None => None,
    };
    let otel = traces.as_ref().map(|t| t.layer());
    let installed = tracing_subscriber::registry()
        .with(log_layer(format).with_filter(log_filter(default_filter)))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && traces.is_some() {
        propagation::enable();
    }
    Ok(Telemetry { traces })
}
