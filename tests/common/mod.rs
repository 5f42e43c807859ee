//! Shared helpers for the integration tests: an in-memory network of nodes and a launcher of
//! real gRPC nodes on loopback.
#![allow(dead_code)]

pub mod process;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use kademlia::NodeId;
use kademlia::net::memory::MemoryNetwork;
use kademlia::node::{NodeConfig, NodeHandle, PendingNode};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::oneshot;

/// A node of a simulated network.
pub struct SimNode {
    pub handle: NodeHandle,
    pub addr: String,
    /// Where the node's requests arrive (to attach it under more addresses).
    pub inbound: tokio::sync::mpsc::Sender<kademlia::net::Inbound>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Many nodes in one process over the in-memory transport.
pub struct SimNet {
    pub net: MemoryNetwork,
    pub nodes: Vec<SimNode>,
    pub rng: StdRng,
    /// Applied to the configuration of every node [`SimNet::add`] creates.
    pub tweak: fn(&mut NodeConfig),
}

pub fn sim_config(id: NodeId, addr: &str, remote: Option<String>) -> NodeConfig {
    let mut cfg = NodeConfig::new(id, addr);
    cfg.remote_host = remote;
    cfg.params.rpc_timeout = Duration::from_secs(2);
    cfg
}

impl SimNet {
    pub fn new(seed: u64) -> Self {
        SimNet {
            net: MemoryNetwork::new(),
            nodes: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            tweak: |_| {},
        }
    }

    /// Adds a node that joins through `remote` (or creates the network when `None`).
    pub fn add(&mut self, remote: Option<String>) -> usize {
        let i = self.nodes.len();
        let addr = format!("sim-{i}:50051");
        let id = NodeId::random(&mut self.rng);
        let mut cfg = sim_config(id, &addr, remote);
        (self.tweak)(&mut cfg);
        self.add_with(cfg)
    }

    pub fn add_with(&mut self, cfg: NodeConfig) -> usize {
        let addr = cfg.addr.clone();
        let pending = PendingNode::new(cfg, Arc::new(self.net.transport()));
        self.net.attach(&addr, pending.inbound.clone());
        let handle = pending.handle.clone();
        let inbound = pending.inbound.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = pending.start(async move {
            let _ = rx.await;
        });
        self.nodes.push(SimNode {
            handle,
            addr,
            inbound,
            stop: Some(tx),
            task,
        });
        self.nodes.len() - 1
    }

    /// Builds a network of `n` nodes: node 0 creates it, the rest join through a random
    /// earlier node, `wave` of them at a time.
    pub async fn build(seed: u64, n: usize, wave: usize) -> SimNet {
        Self::build_with(seed, n, wave, |_| {}).await
    }

    /// [`SimNet::build`] with `tweak` applied to every node's configuration.
    pub async fn build_with(
        seed: u64,
        n: usize,
        wave: usize,
        tweak: fn(&mut NodeConfig),
    ) -> SimNet {
        let mut sim = SimNet::new(seed);
        sim.tweak = tweak;
        sim.add(None);
        assert!(sim.nodes[0].handle.wait_joined().await);
        while sim.nodes.len() < n {
            let batch = wave.min(n - sim.nodes.len());
            let start = sim.nodes.len();
            for _ in 0..batch {
                let via = sim.rng.random_range(0..start);
                let remote = sim.nodes[via].addr.clone();
                sim.add(Some(remote));
            }
            let joins = sim.nodes[start..].iter().map(|n| n.handle.wait_joined());
            let joined =
                tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(joins))
                    .await
                    .expect("wave joined in time");
            assert!(
                joined.into_iter().all(|j| j),
                "a node stopped before joining"
            );
        }
        sim
    }

    /// A random live node's handle.
    pub fn random_live(&mut self) -> NodeHandle {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].stop.is_some())
            .collect();
        let i = live[self.rng.random_range(0..live.len())];
        self.nodes[i].handle.clone()
    }

    /// Kills node `i`: it vanishes from the network and its driver stops.
    pub async fn kill(&mut self, i: usize) {
        self.net.detach(&self.nodes[i].addr);
        if let Some(stop) = self.nodes[i].stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.nodes[i].task, tokio::spawn(async {}));
        let _ = task.await;
    }

    pub fn is_live(&self, i: usize) -> bool {
        self.nodes[i].stop.is_some()
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if self.is_live(i) {
                self.kill(i).await;
            }
        }
    }
}

/// A real gRPC node on a loopback port.
pub struct GrpcNode {
    pub handle: NodeHandle,
    /// The address peers reach it at (its advertised address).
    pub addr: String,
    /// The address of its client service (the same as `addr` unless peers have their own port).
    pub client_addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcNode {
    /// Starts a node serving on `listeners` (one `TcpListener`, or [`kademlia::Listeners`]) with
    /// `cfg` (whose `addr` must be the peer listener's).
    pub async fn start(listeners: impl Into<kademlia::Listeners>, cfg: NodeConfig) -> GrpcNode {
        let listeners = listeners.into();
        let addr = cfg.addr.clone();
        let client_addr = listeners.client.local_addr().expect("bound").to_string();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (htx, hrx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            kademlia::run(listeners, cfg, shutdown, move |h| {
                let _ = htx.send(h);
            })
            .await
            .expect("server ran");
        });
        let handle = hrx.await.expect("node started");
        GrpcNode {
            handle,
            addr,
            client_addr,
            stop: Some(stop_tx),
            task,
        }
    }

    pub async fn client(&self) -> kademlia::pb::dht_client::DhtClient<tonic::transport::Channel> {
        kademlia::cli::client::connect(&self.client_addr)
            .await
            .expect("connect")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// How many live peers `node` knows once it knows `want` (or after 10 s, whatever it knows
/// then). A sender is learned once it proved its address, a PING after it was first heard, so
/// under load a table can fill a little after a node has joined.
pub async fn peers_once(node: &NodeHandle, want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let peers = node.info().await.expect("info").peers;
        if peers >= want || tokio::time::Instant::now() >= deadline {
            return peers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a stream with `open` (which returns the stream's sending side, kept until the answer
/// is checked, and the call's answer) until the node accepts one, for up to 5 s: the place of
/// a stream that ended comes back once the node has seen it end. Every refusal on the way must
/// be RESOURCE_EXHAUSTED.
pub async fn until_a_stream_opens<F, Fut, T, R>(mut open: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (T, Result<R, tonic::Status>)>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_tx, again) = open().await;
        match again {
            Ok(_) => return,
            Err(s) if tokio::time::Instant::now() < deadline => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(s) => panic!("the ended stream's place never came back: {s:?}"),
        }
    }
}

/// What `node` answers for `key` once it answers `want` (`None`: NOT_FOUND), retrying for up
/// to 10 s. A put or delete answers at its quorum while its other STOREs are still on their
/// way, so a get through another node may answer the version before it for a moment (README,
/// "Consistency"); every answer on the way must be one of `older`, and any other answer, or
/// no convergence, fails the test.
pub async fn reads_eventually(
    node: &NodeHandle,
    key: &str,
    want: Option<&[u8]>,
    older: &[Option<&[u8]>],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = match node.get(key.into()).await {
            Ok(g) => Some(g.value),
            Err(kademlia::DhtError::NotFound(_)) => None,
            Err(e) => panic!("{} reading {key}: {e}", node.addr()),
        };
        if got.as_deref() == want {
            return;
        }
        assert!(
            older.contains(&got.as_deref()),
            "{} reading {key}: {got:?}, neither {want:?} nor an earlier version {older:?}",
            node.addr()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still reads {got:?} for {key} 10 s after {want:?} was written",
            node.addr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` nodes on loopback, each with an HTTP listener (`/metrics`), node 0 creating the
/// network and the others joining through it; returns them with their HTTP addresses.
pub async fn network_with_http(n: usize) -> (Vec<GrpcNode>, Vec<String>) {
    network_with_http_tweaked(n, |_| {}).await
}

/// [`network_with_http`] with `tweak` applied to every node's configuration.
pub async fn network_with_http_tweaked(
    n: usize,
    tweak: fn(&mut NodeConfig),
) -> (Vec<GrpcNode>, Vec<String>) {
    let mut nodes: Vec<GrpcNode> = Vec::new();
    let mut http_addrs = Vec::new();
    for i in 0..n {
        let remote = (i > 0).then(|| nodes[0].addr.clone());
        let (node, http_addr) = node_with_http(remote, tweak).await;
        nodes.push(node);
        http_addrs.push(http_addr);
    }
    (nodes, http_addrs)
}

/// One node on loopback with an HTTP listener, creating a network (`remote` `None`) or
/// joining through `remote`, with `tweak` applied to its configuration; returns it once it
/// has joined, with its HTTP address.
pub async fn node_with_http(
    remote: Option<String>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> (GrpcNode, String) {
    let (client, addr) = loopback_listener().await;
    let (http_listener, http_addr) = loopback_listener().await;
    let mut cfg = NodeConfig::new(NodeId::random(&mut rand::rng()), &addr);
    cfg.remote_host = remote;
    cfg.bootstrap_backoff_max = Duration::from_millis(300);
    tweak(&mut cfg);
    let listeners = kademlia::Listeners {
        client,
        peer: None,
        http: Some(http_listener),
    };
    let node = GrpcNode::start(listeners, cfg).await;
    node.handle.wait_joined().await;
    (node, http_addr)
}

/// The value of the sample of a `/metrics` page whose line starts with `series` (name and
/// labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// Binds a listener on 127.0.0.1 with an OS-chosen port; returns it with its address.
pub async fn loopback_listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("local addr").to_string();
    (l, addr)
}

/// A loopback port free right now (for processes that must be told their port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; returns the status code, the headers and the body.
pub async fn http(addr: &str, method: &str, path: &str) -> (u16, String, String) {
    try_http(addr, method, path)
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// [`http`], with an error when nothing listens at `addr` yet.
pub async fn try_http(
    addr: &str,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut raw),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers, then a body");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        // Chunks: a hex size line, the data, CRLF; a size of 0 ends them.
        let (mut rest, mut out) = (body, String::new());
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, head, body))
}
