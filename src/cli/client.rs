//! One-shot client subcommands: each connects to a node, makes one call and prints the answer.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::pb::{self, dht_client::DhtClient};

/// Default deadline of a client call (`--timeout`).
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 10_000;

static CALL_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets the deadline of every call [`connect`] makes from now on (once per process: the
/// command line's `--timeout`).
pub fn set_call_timeout(timeout: Duration) {
    let _ = CALL_TIMEOUT.set(timeout);
}

fn call_timeout() -> Duration {
    *CALL_TIMEOUT.get_or_init(|| Duration::from_millis(DEFAULT_CALL_TIMEOUT_MS))
}

/// Connects to a node's client service; connecting and every call are bounded by the
/// deadline `--timeout` set.
pub async fn connect(addr: &str) -> anyhow::Result<DhtClient<Channel>> {
    let channel = endpoint(addr)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(DhtClient::new(channel)
        .max_decoding_message_size(32 * 1024 * 1024)
        .max_encoding_message_size(32 * 1024 * 1024))
}

pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(5).min(call_timeout()))
        .timeout(call_timeout())
        .tcp_nodelay(true))
}

/// A gRPC status as an error a person can read.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

pub async fn put(addr: &str, key: String, value: Vec<u8>, ttl: Option<u64>) -> anyhow::Result<()> {
    let r = connect(addr)
        .await?
        .put(pb::PutRequest {
            key,
            value,
            ttl_seconds: ttl,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("OK stored on {} node(s), version {}", r.replicas, r.version);
    Ok(())
}

/// The value `put` stores: VALUE as typed, or the bytes of FILE; `-` for either reads
/// standard input to its end.
pub fn value_from(
    value: Option<String>,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let stdin = || -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the value from standard input")?;
        Ok(bytes)
    };
    match (value, file) {
        (_, Some(path)) if path.as_os_str() == "-" => stdin(),
        (_, Some(path)) => std::fs::read(&path)
            .with_context(|| format!("cannot read the value from {}", path.display())),
        (Some(v), None) if v == "-" => stdin(),
        (Some(v), None) => Ok(v.into_bytes()),
        (None, None) => Err(anyhow!("give a VALUE, or --file FILE")),
    }
}

/// Where `get` puts the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOut {
    /// Printed as text (invalid UTF-8 shown as U+FFFD) with a newline.
    Text,
    /// The bytes as they are on standard output.
    Raw,
    /// The bytes as they are in a file.
    File(std::path::PathBuf),
}

pub async fn get(addr: &str, key: String, to: ValueOut) -> anyhow::Result<()> {
    use std::io::Write;
    let r = connect(addr)
        .await?
        .get(pb::GetRequest { key })
        .await
        .map_err(status_error)?
        .into_inner();
    match to {
        ValueOut::Text => println!("{}", String::from_utf8_lossy(&r.value)),
        ValueOut::Raw => {
            let mut out = std::io::stdout().lock();
            out.write_all(&r.value)?;
            out.flush()?;
        }
        ValueOut::File(path) => std::fs::write(&path, &r.value)
            .with_context(|| format!("cannot write the value to {}", path.display()))?,
    }
    Ok(())
}

pub async fn delete(addr: &str, key: String) -> anyhow::Result<()> {
    let r = connect(addr)
        .await?
        .delete(pb::DeleteRequest { key })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "OK deleted on {} node(s), version {}",
        r.replicas, r.version
    );
    Ok(())
}

pub async fn locate(addr: &str, key: String) -> anyhow::Result<()> {
    let r = connect(addr)
        .await?
        .locate(pb::LocateRequest { key })
        .await
        .map_err(status_error)?
        .into_inner();
    print!("{}", format_locate(&r));
    Ok(())
}

pub fn format_locate(r: &pb::LocateResponse) -> String {
    let mut out = format!("key id {}\n", r.key_id);
    for n in &r.nodes {
        let state = if n.has_value {
            format!("has v{}", n.version)
        } else if n.tombstone {
            format!("deleted v{}", n.version)
        } else {
            "-".to_string()
        };
        out.push_str(&format!(
            "{}  {:<24} {}\n",
            &n.node_id[..16],
            n.address,
            state
        ));
    }
    out
}

pub async fn ping(addr: &str) -> anyhow::Result<()> {
    let mut c = connect(addr).await?;
    let start = Instant::now();
    let r = c
        .info(pb::InfoRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "pong from {} at {} in {:.2} ms",
        r.node_id,
        r.address,
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

pub async fn info(addr: &str) -> anyhow::Result<()> {
    let r = connect(addr)
        .await?
        .info(pb::InfoRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    print!("{}", format_info(&r));
    Ok(())
}

pub fn format_info(r: &pb::InfoResponse) -> String {
    format!(
        "node id:  {}\naddress:  {}\nnetwork:  {}\njoined:   {}\npeers:    {}\nstale:    {}\nrecords:  {}\nk/alpha:  {}/{}\nuptime:   {}s\nversion:  {}\nload:     {} operations, {} RPCs in flight ({} queued), {} maintenance lookups ({} queued); {} RPCs refused, {} requests shed\n",
        r.node_id,
        r.address,
        r.network_id,
        r.joined,
        r.peers,
        r.stale_peers,
        r.records,
        r.k,
        r.alpha,
        r.uptime_seconds,
        r.version,
        r.operations,
        r.rpcs_in_flight,
        r.rpcs_queued,
        r.maintenance_running,
        r.maintenance_queued,
        r.rpcs_refused,
        r.requests_shed,
    )
}

pub async fn routes(addr: &str) -> anyhow::Result<()> {
    let r = connect(addr)
        .await?
        .routing_table(pb::RoutingTableRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    print!("{}", format_routes(&r));
    Ok(())
}

/// `routes --svg FILE`: the node's picture (`crate::picture`), as its page draws it.
pub async fn picture(
    addr: &str,
    file: &std::path::Path,
    highlight: Option<String>,
) -> anyhow::Result<()> {
    let r = connect(addr)
        .await?
        .picture(pb::PictureRequest {
            highlight_key: highlight.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if file == std::path::Path::new("-") {
        print!("{}", r.svg);
    } else {
        std::fs::write(file, &r.svg)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        eprintln!("wrote {} ({} bytes)", file.display(), r.svg.len());
    }
    Ok(())
}

pub fn format_routes(r: &pb::RoutingTableResponse) -> String {
    let total: usize = r.buckets.iter().map(|b| b.contacts.len()).sum();
    let mut out = format!(
        "node {}: {} contacts in {} buckets\n",
        r.node_id,
        total,
        r.buckets.len()
    );
    for b in &r.buckets {
        out.push_str(&format!(
            "bucket {:>3} ({} contacts, {} replacements)\n",
            b.index,
            b.contacts.len(),
            b.replacements.len()
        ));
        for c in &b.contacts {
            out.push_str(&format!(
                "  {}  {:<24} seen {} ms ago\n",
                &c.node_id[..16],
                c.address,
                c.last_seen_ms_ago
            ));
        }
    }
    out
}

/// Asks a node's grpc.health.v1 service about `service` ("" = joined and serving,
/// [`LIVENESS_SERVICE`](crate::net::grpc::server::LIVENESS_SERVICE) = process up).
pub async fn health_status(addr: &str, service: &str) -> anyhow::Result<ServingStatus> {
    let channel = endpoint(addr)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown))
}

pub async fn health(addr: &str, timeout_ms: u64) -> anyhow::Result<()> {
    let status = tokio::time::timeout(Duration::from_millis(timeout_ms), health_status(addr, ""))
        .await
        .map_err(|_| anyhow!("no answer from {addr} within {timeout_ms} ms"))??;
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(())
    } else {
        Err(anyhow!("{addr} is {status:?}"))
    }
}
