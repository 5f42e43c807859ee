//! `kademlia node`: load settings, init logging, serve until SIGTERM or ctrl-c.

use std::path::PathBuf;

use clap::Args;
use tracing::info;

use crate::config::Settings;
use crate::net::advertise::advertise_address;

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// TOML file with settings (see the README's configuration table)
    #[arg(long, env = "KADEMLIA_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Port of the client service (put/get), health and reflection
    #[arg(long)]
    pub port: Option<u16>,
    /// Port of the peer service, when peers get their own (0: share --port)
    #[arg(long)]
    pub peer_port: Option<u16>,
    /// Port of the HTTP listener (/metrics; 0: none)
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Interface to listen on
    #[arg(long)]
    pub host: Option<String>,
    /// Address peers use to reach this node (host:port)
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Host to join through (empty creates a new network); overrides P2P_REMOTE_HOST
    #[arg(long)]
    pub remote_host: Option<String>,
    /// Network id; peers from other networks are refused
    #[arg(long)]
    pub network_id: Option<String>,
    /// Node id: 40 hex digits, or a string whose SHA-1 becomes the id
    #[arg(long)]
    pub node_id: Option<String>,
    /// Directory for records, identity and contacts (empty: memory only)
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Any other setting, as name=value (repeatable)
    #[arg(long = "set", value_parser = super::parse_kv)]
    pub set: Vec<(String, String)>,
}

impl NodeArgs {
    /// The flags as setting overrides.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut o: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push((k.to_string(), v));
            }
        };
        add("port", self.port.map(|p| p.to_string()));
        add("peer_port", self.peer_port.map(|p| p.to_string()));
        add("http_port", self.http_port.map(|p| p.to_string()));
        add("host", self.host.clone());
        add("advertise_addr", self.advertise_addr.clone());
        add("remote_host", self.remote_host.clone());
        add("network_id", self.network_id.clone());
        add("node_id", self.node_id.clone());
        add("data_dir", self.data_dir.clone());
        o.extend(self.set.iter().cloned());
        o
    }
}

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("ctrl-c received"),
        _ = term => info!("SIGTERM received"),
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref(), &args.overrides())?;
    let format = crate::telemetry::LogFormat::parse(&settings.log_format).expect("validated");
    let telemetry = crate::telemetry::init_node(&settings.log, format)?;
    if telemetry.exporting() {
        info!("exporting traces over OTLP (OTEL_* variables)");
    }
    let peer_port = (settings.peer_port != 0).then_some(settings.peer_port);
    let http_port = (settings.http_port != 0).then_some(settings.http_port);
    let listeners =
        super::bind_listeners(&settings.host, settings.port, peer_port, http_port).await?;
    let addr = advertise_address(
        &settings.advertise_addr,
        &settings.host,
        settings.peer_listen_port(),
    )
    .await;
    let cfg = settings.open_node_config(addr)?;
    if let Some(dir) = &cfg.data_dir {
        info!(path = %dir.path().display(), node = %cfg.id, contacts = dir.saved_contacts().len(), "data dir open");
    }
    let result = crate::run(listeners, cfg, shutdown_signal(), |_| {}).await;
    telemetry.shutdown().await;
    result?;
    info!("bye");
    Ok(())
}
