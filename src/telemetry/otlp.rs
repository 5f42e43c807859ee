//! Span export over OTLP, configured by the standard OpenTelemetry environment variables.
//!
//! A node exports traces when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`, which uses the
//! default endpoint), unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The
//! OpenTelemetry SDK then reads the rest as the specification says:
//! - `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `grpc` or `http/protobuf` (the default, as the
//!   specification says; `http/json` is refused with a message);
//! - `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, `…_TIMEOUT`, `…_COMPRESSION`;
//! - `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service name defaults to
//!   `kademlia`; `service.instance.id` defaults to a random id per process);
//! - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`, so
//!   a node follows the sampling decision of the trace context it receives);
//! - `OTEL_BSP_*`: the batch processor's delay, queue and batch sizes (a full queue drops
//!   spans; it never blocks the node).
//!
//! Why these crates: `opentelemetry`, `opentelemetry_sdk` and `opentelemetry-otlp` are the
//! OpenTelemetry project's own Rust SDK, and `tracing-opentelemetry` (the tokio project's)
//! turns the node's tracing spans into OpenTelemetry spans; OTLP's encoding, batching,
//! retries and the variables' rules are the SDK's to get right. gRPC export runs on tonic, as
//! the node does; HTTP export on hyper, which tonic brings, so neither adds an HTTP stack.
//!
//! Implementation notes:
//! - The SDK's batch processor exports from its own thread with a blocking executor; hyper's
//!   client needs the tokio runtime, so [`OnRuntime`] runs each HTTP export as a task on the
//!   runtime that started the node.
//! - Only W3C trace context is propagated (`traceparent`, `tracestate`); `OTEL_PROPAGATORS`
//!   is not read.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

/// How long a node waits at exit for its last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "kademlia";

/// The OTLP export asked for by the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub protocol: Protocol,
    /// `OTEL_SERVICE_NAME` or `service.name` is set: the SDK takes it from there.
    pub service_name_given: bool,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`, for the HTTP client.
    pub timeout: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Reads the `OTEL_*` variables: `None` when no export is asked for; an error naming the
    /// variable when a value cannot be honoured.
    pub fn from_env() -> anyhow::Result<Option<Settings>> {
        Settings::from_vars(var)
    }

    /// [`Settings::from_env`] over any source of variables (for tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Settings>> {
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let exporter = get("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase());
        match exporter.as_deref() {
            Some("none") => return Ok(None),
            None | Some("otlp") => {}
            Some(other) => bail!(
                "OTEL_TRACES_EXPORTER={other} is not supported: this node exports traces with \
                 otlp (or none)"
            ),
        }
        let endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if endpoint.is_none() && exporter.is_none() {
            return Ok(None);
        }
        let (name, value) = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|n| get(n).map(|v| (n, v)))
        .unwrap_or(("", "http/protobuf".to_string()));
        let protocol = match value.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpBinary,
            other => bail!("{name}={other} is not supported: use grpc or http/protobuf"),
        };
        let timeout =
            match [
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ]
            .into_iter()
            .find_map(|n| get(n).map(|v| (n, v)))
            {
                Some((name, v)) => Duration::from_millis(v.trim().parse().with_context(|| {
                    format!("{name}={v}: expected a whole number of milliseconds")
                })?),
                None => Duration::from_secs(10),
            };
        let in_attributes = get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
            a.split(',').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "service.name")
            })
        });
        Ok(Some(Settings {
            protocol,
            service_name_given: get("OTEL_SERVICE_NAME").is_some() || in_attributes,
            timeout,
        }))
    }
}

/// A running exporter.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts the exporter (it connects lazily: a collector that is down costs dropped
    /// spans, never a node that fails to start). Must run inside the tokio runtime.
    pub fn start(settings: &Settings) -> anyhow::Result<Traces> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match settings.protocol {
            Protocol::Grpc => builder.with_tonic().with_protocol(Protocol::Grpc).build(),
            _ => {
                let client = OnRuntime {
                    inner: opentelemetry_http::hyper::HyperClient::with_default_connector(
                        settings.timeout,
                        None,
                    ),
                    runtime: tokio::runtime::Handle::current(),
                };
                builder
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_http_client(client)
                    .build()
            }
        }
        .context("cannot set up the OTLP trace exporter")?;
        let mut resource = Resource::builder();
        if !settings.service_name_given {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let instance = format!("{:032x}", rand::random::<u128>());
        let resource = resource
            .with_attribute(KeyValue::new("service.instance.id", Value::from(instance)))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Traces { provider })
    }

    /// The layer that turns this crate's spans into OpenTelemetry spans: spans of
    /// `kademlia::…` at any level, and warnings and errors within them as span events.
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("kademlia");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Busy and idle times per span cost a clock read at every enter and exit.
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|meta| {
                meta.target().starts_with("kademlia")
                    && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
            }))
            .boxed()
    }

    /// Exports what is buffered, then stops (at most [`SHUTDOWN_TIMEOUT`]).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("traces: the last spans may be lost: {e}"),
            Err(e) => eprintln!("traces: the exporter's shutdown failed: {e}"),
        }
    }
}

/// An HTTP client that runs each request as a task on the node's tokio runtime, whatever
/// thread asks (the SDK's batch processor asks from its own thread; hyper needs tokio).
#[derive(Debug)]
struct OnRuntime<C> {
    inner: C,
    runtime: tokio::runtime::Handle,
}

type Exported = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>;

impl<C> opentelemetry_http::HttpClient for OnRuntime<C>
where
    C: opentelemetry_http::HttpClient + Clone + 'static,
{
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<bytes::Bytes>,
    ) -> Pin<Box<dyn Future<Output = Exported> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let inner = self.inner.clone();
        let task = self
            .runtime
            .spawn(async move { inner.send_bytes(request).await });
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as _).and_then(|r| r) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<Settings>> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.trim().is_empty())
        })
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let off = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(settings(&off).unwrap(), None);
        let none = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ];
        assert_eq!(settings(&none).unwrap(), None);
    }

    #[test]
    fn protocol_follows_the_specification() {
        let at = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let s = settings(&[at]).unwrap().unwrap();
        assert_eq!(
            s.protocol,
            Protocol::HttpBinary,
            "the specification's default"
        );
        assert!(!s.service_name_given);
        assert_eq!(s.timeout, Duration::from_secs(10));
        let s = settings(&[at, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
            .unwrap()
            .unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        // The signal's own variable wins over the general one.
        let both = [
            at,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ];
        assert_eq!(
            settings(&both).unwrap().unwrap().protocol,
            Protocol::HttpBinary
        );
        let json = settings(&[at, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(
            json.to_string()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported"),
            "{json}"
        );
    }

    #[test]
    fn other_variables_are_checked() {
        let at = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces",
        );
        let s = settings(&[at, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])
            .unwrap()
            .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
        let bad = settings(&[at, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2s")]).unwrap_err();
        assert!(
            bad.to_string().contains("OTEL_EXPORTER_OTLP_TIMEOUT=2s"),
            "{bad}"
        );
        let zipkin = settings(&[at, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(
            zipkin.to_string().contains("OTEL_TRACES_EXPORTER=zipkin"),
            "{zipkin}"
        );
        let named = [at, ("OTEL_RESOURCE_ATTRIBUTES", "a=b, service.name=dht")];
        assert!(settings(&named).unwrap().unwrap().service_name_given);
        // The default endpoint, when the exporter is named without one.
        let default = settings(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap();
        assert!(default.is_some());
    }
}
