//! The `kademlia` command line: run a node, call one, open a shell, start a local network,
//! benchmark a network, simulate a large one, make the cluster CA.

pub mod bench;
pub mod cert;
pub mod client;
pub mod devnet;
pub mod node;
pub mod shell;
pub mod simulate;

use clap::{Parser, Subcommand};

/// Default address client subcommands talk to.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

#[derive(Parser, Debug)]
#[command(
    name = "kademlia",
    version,
    about = "A Kademlia DHT node and its tools, over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by the client subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Node to talk to (host:port) [default: 127.0.0.1 on KADEMLIA_PORT, else 127.0.0.1:50051]
    #[arg(long = "addr", short = 'a', env = "KADEMLIA_ADDR", global = true)]
    pub addr_flag: Option<String>,
    /// Deadline of each call, in milliseconds (DEADLINE_EXCEEDED after it)
    #[arg(
        long = "timeout",
        env = "KADEMLIA_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value_t = client::DEFAULT_CALL_TIMEOUT_MS
    )]
    pub call_timeout_ms: u64,
}

impl Target {
    /// The address to talk to. Without `-a`, a node on this host at the port the node's own
    /// settings name, so `kademlia health` inside a container checks the node beside it.
    pub fn addr(&self) -> String {
        self.addr_flag
            .clone()
            .unwrap_or_else(|| match std::env::var("KADEMLIA_PORT") {
                Ok(p) if p.parse::<u16>().is_ok() => format!("127.0.0.1:{p}"),
                _ => DEFAULT_ADDR.to_string(),
            })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node (settings: file < KADEMLIA_* / P2P_REMOTE_HOST < flags)
    Node(node::NodeArgs),
    /// Store a value under a key (VALUE `-`: read it from standard input)
    Put {
        key: String,
        #[arg(required_unless_present = "file")]
        value: Option<String>,
        /// Read the value's bytes from FILE (`-`: standard input) instead of VALUE
        #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "value")]
        file: Option<std::path::PathBuf>,
        /// Time to live in seconds (default: the node's record TTL)
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Read a key's value (printed as text, with a newline, unless --raw or -o)
    Get {
        key: String,
        /// Write the value's bytes to standard output as they are, with no newline
        #[arg(long, conflicts_with = "output")]
        raw: bool,
        /// Write the value's bytes to FILE
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key
    Delete {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show the k closest nodes to a key and which hold it
    Locate {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check that a node answers, and how fast
    Ping {
        #[command(flatten)]
        target: Target,
    },
    /// Show a node's id, address and counters
    Info {
        #[command(flatten)]
        target: Target,
    },
    /// Show a node's routing table; with --svg, write its picture (the page's drawing)
    Routes {
        #[command(flatten)]
        target: Target,
        /// Write the node's picture as SVG to this file ("-": standard output)
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
        /// With --svg: the newest lookup for this key stands out
        #[arg(long, value_name = "KEY", requires = "svg")]
        highlight: Option<String>,
    },
    /// Exit 0 when the node reports SERVING on grpc.health.v1 (for container health checks)
    Health {
        #[command(flatten)]
        target: Target,
        /// Give up after this many milliseconds
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Interactive console: set/get/delete/locate/routes/info/help, one command per line
    Shell {
        #[command(flatten)]
        target: Target,
    },
    /// Start N nodes in this process on consecutive loopback ports, serve until interrupted
    Devnet(devnet::DevnetArgs),
    /// Drive a running network with puts and gets, print latency percentiles and throughput
    Bench(bench::BenchArgs),
    /// Simulate a network of many nodes in this process on a simulated clock (churn, lookups, keys)
    Simulate(simulate::SimulateArgs),
    /// Make the cluster CA for peer mTLS
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

impl Command {
    /// The node a client subcommand talks to.
    fn target(&self) -> Option<&Target> {
        match self {
            Command::Put { target, .. }
            | Command::Get { target, .. }
            | Command::Delete { target, .. }
            | Command::Locate { target, .. }
            | Command::Ping { target }
            | Command::Info { target }
            | Command::Routes { target, .. }
            | Command::Health { target, .. }
            | Command::Shell { target } => Some(target),
            Command::Node(_)
            | Command::Devnet(_)
            | Command::Bench(_)
            | Command::Simulate(_)
            | Command::Cert(_) => None,
        }
    }
}

/// Runs the parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    if let Some(target) = cli.command.target() {
        client::set_call_timeout(std::time::Duration::from_millis(target.call_timeout_ms));
    }
    match cli.command {
        Command::Node(args) => node::run(args).await,
        Command::Put {
            key,
            value,
            file,
            ttl,
            target,
        } => {
            let value = client::value_from(value, file)?;
            client::put(&target.addr(), key, value, ttl).await
        }
        Command::Get {
            key,
            raw,
            output,
            target,
        } => {
            let to = match (raw, output) {
                (_, Some(path)) => client::ValueOut::File(path),
                (true, None) => client::ValueOut::Raw,
                (false, None) => client::ValueOut::Text,
            };
            client::get(&target.addr(), key, to).await
        }
        Command::Delete { key, target } => client::delete(&target.addr(), key).await,
        Command::Locate { key, target } => client::locate(&target.addr(), key).await,
        Command::Ping { target } => client::ping(&target.addr()).await,
        Command::Info { target } => client::info(&target.addr()).await,
        Command::Routes {
            target, svg: None, ..
        } => client::routes(&target.addr()).await,
        Command::Routes {
            target,
            svg: Some(file),
            highlight,
        } => client::picture(&target.addr(), &file, highlight).await,
        Command::Health { target, timeout_ms } => client::health(&target.addr(), timeout_ms).await,
        Command::Shell { target } => {
            shell::run(&target.addr(), tokio::io::stdin(), tokio::io::stdout()).await
        }
        Command::Devnet(args) => devnet::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Cert(cmd) => cert::run(cmd),
    }
}

/// Listens on `host:port` for clients and, when given, on `host:peer_port` for peers and on
/// `host:http_port` for HTTP (`/metrics`).
pub(crate) async fn bind_listeners(
    host: &str,
    port: u16,
    peer_port: Option<u16>,
    http_port: Option<u16>,
) -> anyhow::Result<crate::Listeners> {
    use anyhow::Context;
    let bind = |port: u16| async move {
        tokio::net::TcpListener::bind((host, port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))
    };
    let optional = |port: Option<u16>| async move {
        match port {
            Some(p) => bind(p).await.map(Some),
            None => Ok(None),
        }
    };
    Ok(crate::Listeners {
        client: bind(port).await?,
        peer: optional(peer_port).await?,
        http: optional(http_port).await?,
    })
}

/// Parses a `--set name=value` flag.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand's arguments are consistent (unique names, valid defaults): clap
    /// checks this only when a subcommand is used, which would be in production.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
