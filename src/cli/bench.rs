//! `kademlia bench`: pings, then puts, then gets against random nodes of a running network,
//! with a progress bar; prints latency percentiles, throughput, lookup rounds and correctness
//! counts. A ping is the Info call: one round trip through a node that does no network work.
//! Put and get latencies are also given as multiples of the ping's median measured in the
//! same run, which stays comparable on a shared, noisy machine. Bounded in operations and in
//! time (`--max-seconds`), like redis-benchmark. `--before-gets` runs a command between the
//! puts and the gets, and `--get-addrs` sends the gets elsewhere: `scripts/measure-kill.sh`
//! kills nodes with the one and reads through the survivors with the other. `--stream` sends
//! the puts and gets as frames on one `Stream` per node (`net::grpc::dht_stream`) instead of
//! as unary calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use tonic::transport::Channel;

use super::client::endpoint;
use crate::net::grpc::dht_stream::DhtStream;
use crate::pb::{self, dht_client::DhtClient};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Comma-separated node addresses (host:port)
    #[arg(long, value_delimiter = ',')]
    pub addrs: Vec<String>,
    /// Or: this many nodes on consecutive ports from --base-port on --host
    #[arg(long)]
    pub nodes: Option<u16>,
    #[arg(long, default_value_t = crate::config::DEFAULT_PORT)]
    pub base_port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Number of puts
    #[arg(long, default_value_t = 1000)]
    pub puts: usize,
    /// Number of gets (of the keys put, round robin)
    #[arg(long, default_value_t = 1000)]
    pub gets: usize,
    /// Number of pings (Info calls) measured first, the baseline round trip
    #[arg(long, default_value_t = 1000)]
    pub pings: usize,
    /// Requests in flight
    #[arg(long, short = 'c', default_value_t = 1)]
    pub concurrency: usize,
    /// Value size in bytes
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Keys the puts cycle through: with N, every put after the first N overwrites a key
    /// (0: every put a key of its own)
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// A shell command run after the puts, before the gets (e.g. one that kills nodes, to
    /// measure gets right after): the gets start as soon as it exits, and the run fails if it
    /// fails
    #[arg(long, value_name = "CMD")]
    pub before_gets: Option<String>,
    /// Comma-separated node addresses the gets go to (default: the nodes of the puts), e.g.
    /// the nodes a --before-gets command leaves running
    #[arg(long, value_delimiter = ',')]
    pub get_addrs: Vec<String>,
    /// Key prefix (a random suffix keeps runs apart)
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Stop each phase after this many seconds
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
    /// Send the puts and gets as frames on one `Stream` per node instead of as unary calls
    /// (the pings stay unary Info calls, so that the unit is the same either way)
    #[arg(long)]
    pub stream: bool,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
    /// One JSON object on stdout instead of the text report (latencies in ms and in pings)
    #[arg(long)]
    pub json: bool,
}

/// Results of one phase.
#[derive(Debug)]
pub struct PhaseStats {
    pub name: &'static str,
    pub ok: usize,
    pub errors: usize,
    pub wrong: usize,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub hops_total: u64,
    pub queried_total: u64,
    pub local: usize,
    /// The first few errors, as "Code: message".
    pub error_samples: Vec<String>,
}

impl PhaseStats {
    pub fn ops_per_sec(&self) -> f64 {
        (self.ok + self.errors) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Median latency in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.latency_us.value_at_quantile(0.5) as f64 / 1000.0
    }

    /// One line of figures; `ping_ms` (a ping's median) adds latencies in pings.
    pub fn report(&self, ping_ms: Option<f64>) -> String {
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        let mut s = format!(
            "{:<4} ok {:>6}  errors {:>4}  {:>9.1} ops/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.name,
            self.ok,
            self.errors,
            self.ops_per_sec(),
            q(0.50),
            q(0.95),
            q(0.99),
            self.latency_us.max() as f64 / 1000.0
        );
        if let Some(ping) = ping_ms.filter(|p| *p > 0.0) {
            s.push_str(&format!(
                "  (p50 {:.1} pings, p99 {:.1} pings)",
                q(0.50) / ping,
                q(0.99) / ping
            ));
        }
        if self.name == "get" {
            let remote = (self.ok - self.local).max(1) as f64;
            s.push_str(&format!(
                "  wrong {}  local {}  rounds/get {:.2}  rpcs/get {:.1}",
                self.wrong,
                self.local,
                self.hops_total as f64 / remote,
                self.queried_total as f64 / remote
            ));
        }
        for e in &self.error_samples {
            s.push_str(&format!("\n     error: {e}"));
        }
        s
    }

    /// The phase's figures as JSON; `ping_ms` adds the latencies in pings.
    pub fn to_json(&self, ping_ms: Option<f64>) -> serde_json::Value {
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        let mut v = serde_json::json!({
            "ok": self.ok,
            "errors": self.errors,
            "wrong": self.wrong,
            "ops_per_sec": self.ops_per_sec(),
            "p50_ms": q(0.50),
            "p95_ms": q(0.95),
            "p99_ms": q(0.99),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
        });
        if let Some(ping) = ping_ms.filter(|p| *p > 0.0) {
            v["p50_pings"] = (q(0.50) / ping).into();
            v["p99_pings"] = (q(0.99) / ping).into();
        }
        if self.name == "get" {
            let remote = (self.ok - self.local).max(1) as f64;
            v["local"] = self.local.into();
            v["rounds_per_get"] = (self.hops_total as f64 / remote).into();
            v["rpcs_per_get"] = (self.queried_total as f64 / remote).into();
        }
        v
    }
}

fn value_for(key: &str, size: usize) -> Vec<u8> {
    key.bytes().cycle().take(size.max(1)).collect()
}

/// One node the benchmark talks to: unary calls, and a stream when puts and gets go as
/// frames (`--stream`).
#[derive(Clone)]
struct Node {
    client: DhtClient<Channel>,
    stream: Option<Arc<DhtStream>>,
}

impl Node {
    async fn put(&mut self, m: pb::PutRequest) -> Result<pb::PutResponse, tonic::Status> {
        match &self.stream {
            Some(s) => s.put(m).await,
            None => Ok(self.client.put(m).await?.into_inner()),
        }
    }

    async fn get(&mut self, m: pb::GetRequest) -> Result<pb::GetResponse, tonic::Status> {
        match &self.stream {
            Some(s) => s.get(m).await,
            None => Ok(self.client.get(m).await?.into_inner()),
        }
    }
}

async fn clients(addrs: &[String], args: &BenchArgs) -> anyhow::Result<Vec<Node>> {
    let max = crate::net::grpc::message_limit(args.value_size);
    let mut out = Vec::new();
    for a in addrs {
        let ch = endpoint(a)?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {a}"))?;
        let stream = args
            .stream
            .then(|| Arc::new(DhtStream::open(ch.clone(), max)));
        out.push(Node {
            client: DhtClient::new(ch).max_decoding_message_size(max),
            stream,
        });
    }
    Ok(out)
}

/// Runs `total` operations with `concurrency` workers; `op(i, client)` returns
/// (ok, wrong, hops, queried, local).
async fn phase<F, Fut>(
    name: &'static str,
    total: usize,
    args: &BenchArgs,
    clients: &[Node],
    op: F,
) -> PhaseStats
where
    F: Fn(usize, Node) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(bool, u32, u32, bool), tonic::Status>> + Send,
{
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>4} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name);
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, op, bar, clients) = (next.clone(), op.clone(), bar.clone(), clients.to_vec());
        workers.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut ok, mut errors, mut wrong, mut hops, mut queried, mut local) =
                (0, 0, 0, 0u64, 0u64, 0);
            let mut samples: Vec<String> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let client = clients[rand::rng().random_range(0..clients.len())].clone();
                let t = Instant::now();
                let r = op(i, client).await;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                match r {
                    Ok((correct, hp, q, l)) => {
                        ok += 1;
                        wrong += usize::from(!correct);
                        hops += u64::from(hp);
                        queried += u64::from(q);
                        local += usize::from(l);
                    }
                    Err(status) => {
                        errors += 1;
                        if samples.len() < 3 {
                            samples.push(format!("{:?}: {}", status.code(), status.message()));
                        }
                    }
                }
                bar.inc(1);
            }
            (h, ok, errors, wrong, hops, queried, local, samples)
        }));
    }
    let mut stats = PhaseStats {
        name,
        ok: 0,
        errors: 0,
        wrong: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        hops_total: 0,
        queried_total: 0,
        local: 0,
        error_samples: Vec::new(),
    };
    for w in workers {
        if let Ok((h, ok, errors, wrong, hops, queried, local, samples)) = w.await {
            for s in samples {
                if stats.error_samples.len() < 3 {
                    stats.error_samples.push(s);
                }
            }
            let _ = stats.latency_us.add(&h);
            stats.ok += ok;
            stats.errors += errors;
            stats.wrong += wrong;
            stats.hops_total += hops;
            stats.queried_total += queried;
            stats.local += local;
        }
    }
    stats.elapsed = started.elapsed();
    bar.finish_and_clear();
    stats
}

/// Figures of one run.
pub struct BenchResult {
    pub ping: PhaseStats,
    pub put: PhaseStats,
    pub get: PhaseStats,
}

/// Runs the benchmark.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<BenchResult> {
    let mut addrs = args.addrs.clone();
    if let Some(n) = args.nodes {
        addrs.extend((0..n).map(|i| format!("{}:{}", args.host, args.base_port + i)));
    }
    anyhow::ensure!(!addrs.is_empty(), "give --addrs or --nodes");
    let clients = clients(&addrs, args).await?;
    let run_id: u32 = rand::rng().random();
    let prefix = Arc::new(format!("{}-{run_id:08x}", args.prefix));
    let size = args.value_size;
    let puts = args.puts.max(1);
    // The distinct keys put: the gets read them round robin.
    let keys = match args.keys {
        0 => puts,
        n => n.min(puts),
    };

    let ping = phase("ping", args.pings, args, &clients, |_, mut c| async move {
        c.client.info(pb::InfoRequest {}).await?;
        Ok((true, 0, 0, false))
    })
    .await;

    let p = prefix.clone();
    let put_stats = phase("put", args.puts, args, &clients, move |i, mut c| {
        let key = format!("{p}-{}", i % keys);
        async move {
            let value = value_for(&key, size);
            c.put(pb::PutRequest {
                key,
                value,
                ttl_seconds: None,
            })
            .await?;
            Ok((true, 0, 0, false))
        }
    })
    .await;

    if let Some(cmd) = &args.before_gets {
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c").arg(cmd);
        let status = tokio::task::spawn_blocking(move || sh.status())
            .await?
            .with_context(|| format!("cannot run --before-gets {cmd:?}"))?;
        anyhow::ensure!(status.success(), "--before-gets {cmd:?} failed: {status}");
    }
    let get_clients = match args.get_addrs.as_slice() {
        [] => clients,
        addrs => self::clients(addrs, args).await?,
    };
    let p = prefix.clone();
    let get_stats = phase("get", args.gets, args, &get_clients, move |i, mut c| {
        let key = format!("{p}-{}", i % keys);
        async move {
            let r = c.get(pb::GetRequest { key: key.clone() }).await?;
            Ok((r.value == value_for(&key, size), r.hops, r.queried, r.local))
        }
    })
    .await;
    Ok(BenchResult {
        ping,
        put: put_stats,
        get: get_stats,
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let nodes = args.addrs.len() + args.nodes.unwrap_or(0) as usize;
    if !args.json {
        println!(
            "bench: {} pings, {} puts, {} gets, concurrency {}, {}-byte values, {} node(s), {}",
            args.pings,
            args.puts,
            args.gets,
            args.concurrency,
            args.value_size,
            nodes,
            if args.stream {
                "puts and gets as frames on one stream per node"
            } else {
                "unary calls"
            }
        );
    }
    let r = bench(&args).await?;
    let ping = (r.ping.ok > 0).then(|| r.ping.p50_ms());
    if args.json {
        let out = serde_json::json!({
            "nodes": nodes,
            "concurrency": args.concurrency,
            "value_size": args.value_size,
            "keys": args.keys,
            "stream": args.stream,
            "ping": r.ping.to_json(None),
            "put": r.put.to_json(ping),
            "get": r.get.to_json(ping),
        });
        println!("{out}");
    } else {
        println!("{}", r.ping.report(None));
        println!("{}", r.put.report(ping));
        println!("{}", r.get.report(ping));
    }
    anyhow::ensure!(
        r.get.wrong == 0,
        "{} gets returned a wrong value",
        r.get.wrong
    );
    Ok(())
}
