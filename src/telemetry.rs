//! Logging: a tracing subscriber with an env-filter. `RUST_LOG` wins over the `log` setting.
//! Lifecycle events (created/joined, peers, maintenance) log at info, each RPC at debug.
//! `log_format = json` writes one JSON object per event (tracing-subscriber's JSON format:
//! `timestamp`, `level`, `fields` with the message, and the enclosing spans) for clusters'
//! log collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber (idempotent: later calls are ignored). Logs go to stderr so
/// that client subcommands keep stdout for their output.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        // Colours only for a person at a terminal; container logs stay plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
