//! `kademlia devnet`: N real gRPC nodes in one process on consecutive loopback ports.
//! Node 0 creates the network; the others join through it, all started at once. With
//! `--tls-dir`, peers talk mTLS on ports of their own (`--peer-base-port`). With
//! `--http-base-port`, node i serves `/metrics` and its page on that port + i.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use crate::config::Settings;
use crate::node::NodeHandle;

#[derive(Args, Debug)]
pub struct DevnetArgs {
    /// Number of nodes
    #[arg(long, default_value_t = 10)]
    pub nodes: u16,
    /// Port of the first node; node i listens on base-port + i
    #[arg(long, default_value_t = crate::config::DEFAULT_PORT)]
    pub base_port: u16,
    /// Loopback address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Keep each node's records, id and contacts in DIR/node-PORT (empty: memory only)
    #[arg(long, default_value = "")]
    pub data_dir: String,
    /// Peers talk mTLS with the cluster CA in DIR (made there if missing), each node on its
    /// own peer port (--peer-base-port + i) and with its own outbound connections
    #[arg(long, value_name = "DIR", default_value = "")]
    pub tls_dir: String,
    /// With --tls-dir: node i's peer port is peer-base-port + i [default: base-port + 1000]
    #[arg(long)]
    pub peer_base_port: Option<u16>,
    /// Node i serves its HTTP listener (`/metrics`, the page at `/`) on http-base-port + i
    #[arg(long)]
    pub http_base_port: Option<u16>,
    /// Any node setting, as name=value (repeatable), e.g. --set k=8
    #[arg(long = "set", value_parser = super::parse_kv)]
    pub set: Vec<(String, String)>,
}

/// A started devnet.
pub struct Devnet {
    pub handles: Vec<NodeHandle>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Devnet {
    /// Starts `n` nodes on `host:base_port..`; returns once all are listening. With
    /// `peer_base_port`, node i serves peers on `peer_base_port + i` (its advertised address);
    /// with `http_base_port`, HTTP on `http_base_port + i`.
    pub async fn start(
        n: u16,
        host: &str,
        base_port: u16,
        peer_base_port: Option<u16>,
        http_base_port: Option<u16>,
        settings: &Settings,
    ) -> anyhow::Result<Devnet> {
        anyhow::ensure!(n >= 1, "--nodes must be at least 1");
        let last = base_port
            .checked_add(n - 1)
            .context("ports run past 65535")?;
        if let Some(p) = peer_base_port {
            p.checked_add(n - 1).context("peer ports run past 65535")?;
            anyhow::ensure!(
                p > last || p + (n - 1) < base_port,
                "peer ports overlap the client ports"
            );
        }
        if let Some(p) = http_base_port {
            let http_last = p.checked_add(n - 1).context("HTTP ports run past 65535")?;
            let overlaps = |lo: u16, hi: u16| p <= hi && lo <= http_last;
            anyhow::ensure!(
                !overlaps(base_port, last),
                "HTTP ports overlap the client ports"
            );
            if let Some(q) = peer_base_port {
                anyhow::ensure!(
                    !overlaps(q, q + (n - 1)),
                    "HTTP ports overlap the peer ports"
                );
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        let seed = format!("{host}:{}", peer_base_port.unwrap_or(base_port));
        // One outbound transport for all nodes: one connection per destination instead of
        // one per (sender, destination) pair, which would need n^2 file descriptors.
        let rpc_timeout = std::time::Duration::from_millis(settings.rpc_timeout_ms);
        let transport: std::sync::Arc<dyn crate::net::Transport> = std::sync::Arc::new(
            crate::net::grpc::GrpcTransport::new(rpc_timeout, base_port)
                .with_max_value_bytes(settings.max_value_bytes)
                .with_streams(settings.peer_streams),
        );
        for port in base_port..=last {
            let peer_port = peer_base_port.map(|p| p + (port - base_port));
            let http_port = http_base_port.map(|p| p + (port - base_port));
            let listeners = super::bind_listeners(host, port, peer_port, http_port).await?;
            let mut s = settings.clone();
            s.port = port;
            s.peer_port = peer_port.unwrap_or(0);
            s.remote_host = if port == base_port {
                String::new()
            } else {
                seed.clone()
            };
            // One data dir per node, under the one given.
            if !settings.data_dir.is_empty() {
                let dir = std::path::Path::new(&settings.data_dir).join(format!("node-{port}"));
                s.data_dir = dir.to_string_lossy().into_owned();
            }
            let cfg = s
                .open_node_config(format!("{host}:{}", s.peer_listen_port()))
                .with_context(|| format!("node on port {port}"))?;
            let mut rx = stop_rx.clone();
            // With peer TLS a connection carries its node's certificate: one transport each.
            let transport: std::sync::Arc<dyn crate::net::Transport> = match &cfg.peer_tls {
                Some(_) => std::sync::Arc::new(crate::node_transport(&cfg, base_port)),
                None => transport.clone(),
            };
            let (htx, hrx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                let on_start = move |h: NodeHandle| {
                    let _ = htx.send(h);
                };
                if let Err(e) = crate::run_with(listeners, cfg, transport, shutdown, on_start).await
                {
                    tracing::error!(error = %e, port, "devnet node failed");
                }
            }));
            handles.push(hrx.await.context("node did not start")?);
        }
        Ok(Devnet {
            handles,
            stop,
            tasks,
        })
    }

    /// Waits until every node has joined, up to `timeout`.
    pub async fn wait_joined(&self, timeout: Duration) -> anyhow::Result<()> {
        let all = futures::future::join_all(self.handles.iter().map(|h| h.wait_joined()));
        tokio::time::timeout(timeout, all)
            .await
            .context("not every node joined in time")?;
        Ok(())
    }

    /// Stops every node and waits for them to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let mut overrides = args.set.clone();
    overrides.push(("host".into(), args.host.clone()));
    if !args.data_dir.is_empty() {
        overrides.push(("data_dir".into(), args.data_dir.clone()));
    }
    let mut peer_base_port = args.peer_base_port;
    if !args.tls_dir.is_empty() {
        let dir = std::path::PathBuf::from(&args.tls_dir);
        super::cert::ensure_ca(&dir)?;
        let (cert, key) = super::cert::ca_files(&dir);
        overrides.push(("tls_ca_cert".into(), cert.to_string_lossy().into_owned()));
        overrides.push(("tls_ca_key".into(), key.to_string_lossy().into_owned()));
        let base = args.base_port;
        peer_base_port = Some(match peer_base_port {
            Some(p) => p,
            None => base.checked_add(1000).context("no room for peer ports")?,
        });
    }
    if let Some(p) = peer_base_port {
        // Validated as one node's; each node gets its own below.
        overrides.push(("peer_port".into(), p.to_string()));
    }
    let settings = Settings::load(None, &overrides)?;
    let format = crate::telemetry::LogFormat::parse(&settings.log_format).expect("validated");
    let telemetry = crate::telemetry::init_node(&settings.log, format)?;
    let started = Instant::now();
    let net = Devnet::start(
        args.nodes,
        &args.host,
        args.base_port,
        peer_base_port,
        args.http_base_port,
        &settings,
    )
    .await?;
    for (i, h) in net.handles.iter().enumerate() {
        match args.http_base_port {
            Some(p) => println!(
                "node {i:>3}  {}  {}  http://{}:{}/",
                h.addr(),
                h.id(),
                args.host,
                p + i as u16
            ),
            None => println!("node {i:>3}  {}  {}", h.addr(), h.id()),
        }
    }
    net.wait_joined(Duration::from_secs(120)).await?;
    println!(
        "ready: {} nodes on {}:{}-{} joined in {} ms (ctrl-c to stop)",
        args.nodes,
        args.host,
        args.base_port,
        args.base_port + args.nodes - 1,
        started.elapsed().as_millis()
    );
    super::node::shutdown_signal().await;
    net.stop().await;
    telemetry.shutdown().await;
    println!("devnet stopped");
    Ok(())
}
