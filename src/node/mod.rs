//! The driver: one task owns a node's [`Core`](crate::kad::Core) and performs its effects.
//!
//! The task selects over inbound peer requests, client commands, completed RPCs and timers
//! (lookup deadlines, join retries, maintenance). Lookups are state machines kept in a table
//! of operations; the task sends the RPCs they ask for on spawned futures whose results come
//! back as events. [`NodeHandle`] is the cloneable front door used by the client service, the
//! CLI's devnet and tests.
//!
//! Every piece of work is bounded, so that a slow network degrades instead of collapsing:
//! peer RPCs in flight ([`MAX_RPCS_IN_FLIGHT`], with an outbox and parked lookups: `flow`),
//! maintenance lookups ([`MAX_MAINTENANCE_LOOKUPS`] at once from a deduplicated queue: `jobs`),
//! operations ([`MAX_OPERATIONS`]; clients beyond get RESOURCE_EXHAUSTED), every RPC (the
//! RPC timeout, whatever the transport), every lookup (a deadline of
//! `lookup_timeout` and at most `lookup_max_queries` RPCs),
//! and peer requests whose sender stopped waiting are dropped unanswered. [`NodeInfo::load`]
//! reports where a node stands.

mod backlog;
pub mod clock;
mod driver;
mod event_loop;
mod flow;
mod jobs;
mod maintenance;
mod ops;
mod persist;
mod recent;
mod repair;
mod rtt;
mod state;
mod trace;

pub use backlog::BacklogStats;
pub use flow::{FlowStats, MAX_OPERATIONS, MAX_RPCS_IN_FLIGHT, OUTBOX_CAPACITY};
pub use jobs::{JOB_QUEUE_CAPACITY, JobStats, MAX_MAINTENANCE_LOOKUPS};
pub use recent::{LookupPath, RECENT_LOOKUPS};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::DhtError;
use crate::kad::{Contact, NodeId, Params};
use crate::net::{Inbound, Transport};

/// Everything a node needs to run (`crate::config::Settings` builds one from the settings).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address advertised to peers ("host:port").
    pub addr: String,
    pub network_id: String,
    /// `P2P_REMOTE_HOST`: `None` creates a new network, `Some(name)` joins through it.
    pub remote_host: Option<String>,
    pub params: Params,
    /// STOREs that must succeed for a put or delete (fewer only in a smaller network).
    pub quorum: usize,
    /// Copies a get waits for, the local one included (see `ops`).
    pub read_quorum: usize,
    /// A lookup ends after this long, found or not (then it "gave up").
    pub lookup_timeout: Duration,
    /// RPCs one lookup sends at most (at the cap it gives up).
    pub lookup_max_queries: u32,
    /// Disjoint paths per lookup (`kad::lookup::Lookup::with_disjoint_paths`); 1: off.
    pub lookup_disjoint_paths: usize,
    /// Puts are conditional writes (`kad::write`; the default): their lookup ends at
    /// convergence and the STOREs check versions. Off: a put surveys all of the k closest
    /// first, as deletes always do.
    pub conditional_puts: bool,
    pub refresh_interval: Duration,
    pub replicate_interval: Duration,
    /// Lifetime of a put without a TTL; `None`: until deleted.
    pub record_ttl: Option<Duration>,
    /// Longest TTL a put may ask for.
    pub max_ttl: Duration,
    /// Shortest life of a tombstone.
    pub tombstone_grace: Duration,
    /// Longest life of a cached copy; 0 disables caching.
    pub cache_ttl: Duration,
    pub max_value_bytes: usize,
    pub max_records: usize,
    /// Memory the records may take, counted as `kad::store::record_bytes`.
    pub max_store_bytes: usize,
    /// Percent of `max_store_bytes` that the records one peer outside this node's
    /// neighbourhood brought may take (`kad::Core`'s per-peer quota); 100: no quota.
    pub peer_store_quota_pct: u8,
    /// How often a joined node re-resolves `P2P_REMOTE_HOST` to merge with nodes it does not know.
    pub rebootstrap_interval: Duration,
    /// Longest wait between bootstrap attempts.
    pub bootstrap_backoff_max: Duration,
    /// Longest wait for in-flight calls on shutdown.
    pub drain_timeout: Duration,
    /// Where records, identity and contacts persist (`data_dir`); `None` keeps them in memory.
    /// Its id must be `id` (see [`crate::storage::DataDir::open`]).
    pub data_dir: Option<crate::storage::SharedDataDir>,
    /// How far this node's wall clock reads ahead of the system clock, in milliseconds
    /// (negative: behind). Always 0 outside tests: it stands for a host whose clock is wrong
    /// (not a setting: see `sim_versions`).
    pub clock_offset_ms: i64,
    /// Peer requests per second the server admits from one remote IP; 0: no limit.
    pub peer_rate_limit: u32,
    /// Peer requests as frames on streams (`crate::net::grpc::session`); false: unary only,
    /// sent and served.
    pub peer_streams: bool,
    /// Peer mTLS (`tls_ca_cert`): the id is then the one its certificate's key stands for.
    pub peer_tls: Option<std::sync::Arc<crate::net::tls::PeerTls>>,
}

impl NodeConfig {
    /// The limits of this node's record store.
    pub fn store_limits(&self) -> crate::kad::StoreLimits {
        crate::kad::StoreLimits::new(
            self.max_value_bytes,
            self.max_records,
            self.max_store_bytes,
            self.peer_store_quota_pct,
        )
    }

    /// The defaults (paper values where the paper gives one) for node `id` at `addr`; also
    /// the defaults of `crate::config::Settings`, which is built on this module, not the
    /// other way round.
    pub fn new(id: NodeId, addr: impl Into<String>) -> Self {
        let secs = Duration::from_secs;
        let rpc_timeout = Duration::from_millis(2000);
        NodeConfig {
            id,
            addr: addr.into(),
            network_id: "kademlia".into(),
            remote_host: None,
            params: Params {
                k: crate::kad::K,
                alpha: crate::kad::ALPHA,
                rpc_timeout,
                max_clock_skew: Duration::from_millis(60_000),
                max_ttl: DEFAULT_MAX_TTL,
                diversity: crate::kad::diversity::DiversityLimits {
                    per_bucket: 2,
                    per_table: 10,
                },
            },
            quorum: 3,
            read_quorum: 2,
            lookup_timeout: rpc_timeout * crate::kad::lookup::LOOKUP_DEADLINE_TIMEOUTS,
            lookup_max_queries: 10 * crate::kad::K as u32,
            lookup_disjoint_paths: 1,
            conditional_puts: true,
            refresh_interval: crate::kad::T_REFRESH,
            replicate_interval: crate::kad::T_REPLICATE,
            record_ttl: None,
            max_ttl: DEFAULT_MAX_TTL,
            tombstone_grace: DEFAULT_TOMBSTONE_GRACE,
            cache_ttl: secs(300),
            max_value_bytes: 65_536,
            max_records: 1_000_000,
            max_store_bytes: 64 << 20,
            peer_store_quota_pct: 50,
            rebootstrap_interval: secs(60),
            bootstrap_backoff_max: Duration::from_millis(10_000),
            drain_timeout: secs(10),
            data_dir: None,
            clock_offset_ms: 0,
            peer_rate_limit: 2000,
            peer_streams: true,
            peer_tls: None,
        }
    }
}

/// Default longest TTL: a year.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Default shortest life of a tombstone: ten days (as Cassandra's gc_grace_seconds).
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(10 * 86_400);

/// Longest accepted user key, in bytes.
pub use crate::kad::store::MAX_KEY_BYTES;

/// A successful put or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub key_id: NodeId,
    pub version: u64,
    pub stored_at: Vec<String>,
}

/// A successful get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    pub key_id: NodeId,
    pub value: Vec<u8>,
    pub version: u64,
    pub expires_at_ms: u64,
    pub local: bool,
    pub hops: u32,
    pub queried: u32,
}

/// What a node lookup ([`NodeHandle::find_node`]) found.
#[derive(Clone, Debug)]
pub struct NodeLookup {
    /// The k closest nodes that answered, closest first (this node not among them).
    pub closest: Vec<crate::kad::Contact>,
    /// Rounds the lookup went (see [`crate::kad::lookup::Outcome::rounds`]).
    pub rounds: u32,
    /// RPCs it sent.
    pub queried: u32,
    /// It reached its deadline before it converged.
    pub gave_up: bool,
}

/// One node in a Locate answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub contact: Contact,
    pub has_value: bool,
    pub tombstone: bool,
    pub version: u64,
}

/// Node identity and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: String,
    pub network_id: String,
    /// Live contacts.
    pub peers: usize,
    /// Contacts flagged stale (kept, unused until heard from again).
    pub stale_peers: usize,
    pub records: usize,
    pub joined: bool,
    pub k: usize,
    pub alpha: usize,
    pub uptime: Duration,
    pub load: NodeLoad,
}

/// How much work a node has under way (every figure is bounded: see [`MAX_OPERATIONS`],
/// [`MAX_RPCS_IN_FLIGHT`], [`OUTBOX_CAPACITY`], [`MAX_MAINTENANCE_LOOKUPS`] and
/// [`JOB_QUEUE_CAPACITY`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Lookups, writes and joins running.
    pub operations: usize,
    pub rpcs: FlowStats,
    pub jobs: JobStats,
    /// Records due for replication not yet stored again, and how late (`node::backlog`).
    pub replication: BacklogStats,
}

/// A contact in a routing-table dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub contact: Contact,
    pub last_seen_ago: Duration,
    pub failures: u32,
}

impl RouteEntry {
    /// Stale: kept, but unused until heard from again (as `kad::routing::Entry::is_stale`).
    pub fn is_stale(&self) -> bool {
        self.failures >= crate::kad::routing::MAX_FAILURES
    }
}

/// A non-empty k-bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketDump {
    pub index: usize,
    pub contacts: Vec<RouteEntry>,
    pub replacements: Vec<RouteEntry>,
}

/// What the node's picture shows (`crate::picture`): its routing table, the keys it holds
/// (the first [`MAX_PICTURE_RECORDS`]) and its last lookups.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: NodeId,
    pub k: usize,
    pub buckets: Vec<BucketDump>,
    pub keys: Vec<crate::kad::Key>,
    /// Records held, all of them (`keys` may list fewer).
    pub records: usize,
    /// Oldest first.
    pub lookups: Vec<LookupPath>,
}

/// Keys a [`Snapshot`] lists at most.
pub const MAX_PICTURE_RECORDS: usize = 2000;

type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

/// Client commands handled by the driver.
pub(crate) enum Command {
    Put {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
        reply: Reply<WriteResult>,
    },
    Get {
        key: String,
        reply: Reply<GetResult>,
    },
    Delete {
        key: String,
        reply: Reply<WriteResult>,
    },
    Locate {
        key: String,
        reply: Reply<(NodeId, Vec<Located>)>,
    },
    FindNode {
        target: NodeId,
        reply: Reply<NodeLookup>,
    },
    Info {
        reply: oneshot::Sender<NodeInfo>,
    },
    Routes {
        reply: oneshot::Sender<Vec<BucketDump>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    /// Commands, each with the span of the call that sent it (`trace`).
    commands: mpsc::Sender<(Command, tracing::Span)>,
    joined: watch::Receiver<bool>,
    id: NodeId,
    addr: String,
    metrics: Arc<crate::metrics::Metrics>,
}

fn stopped() -> DhtError {
    DhtError::Unavailable("node is shutting down".into())
}

impl NodeHandle {
    /// The node's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the node has created or joined a network.
    pub fn is_joined(&self) -> bool {
        *self.joined.borrow()
    }

    /// A receiver that changes when the node joins.
    pub fn joined_watch(&self) -> watch::Receiver<bool> {
        self.joined.clone()
    }

    /// Waits until the node has created or joined a network (or stopped).
    pub async fn wait_joined(&self) -> bool {
        let mut rx = self.joined.clone();
        rx.wait_for(|j| *j).await.is_ok()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        let command = (make(tx), tracing::Span::current());
        self.commands.send(command).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn put(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<WriteResult, DhtError> {
        self.call(|reply| Command::Put {
            key,
            value,
            ttl,
            reply,
        })
        .await
    }

    pub async fn get(&self, key: String) -> Result<GetResult, DhtError> {
        self.call(|reply| Command::Get { key, reply }).await
    }

    pub async fn delete(&self, key: String) -> Result<WriteResult, DhtError> {
        self.call(|reply| Command::Delete { key, reply }).await
    }

    pub async fn locate(&self, key: String) -> Result<(NodeId, Vec<Located>), DhtError> {
        self.call(|reply| Command::Locate { key, reply }).await
    }

    /// A FIND_NODE lookup of `target` (paper section 2.3): the k closest nodes this node can
    /// find. What joins, refreshes and replication run; the simulation measures it.
    pub async fn find_node(&self, target: NodeId) -> Result<NodeLookup, DhtError> {
        self.call(|reply| Command::FindNode { target, reply }).await
    }

    pub async fn info(&self) -> Result<NodeInfo, DhtError> {
        self.ask(|reply| Command::Info { reply }).await
    }

    pub async fn routes(&self) -> Result<Vec<BucketDump>, DhtError> {
        self.ask(|reply| Command::Routes { reply }).await
    }

    /// What the node's picture draws.
    pub async fn snapshot(&self) -> Result<Snapshot, DhtError> {
        self.ask(|reply| Command::Snapshot { reply }).await
    }

    /// A question about the node's state, which cannot fail once asked (no client span).
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((make(tx), tracing::Span::none()))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }
}

/// Queue lengths between transports/clients and the driver.
const INBOUND_QUEUE: usize = 4096;
const COMMAND_QUEUE: usize = 1024;

/// A node that has been created but whose driver has not started yet: attach
/// [`PendingNode::inbound`] to a transport's server side, then [`PendingNode::start`].
pub struct PendingNode {
    pub handle: NodeHandle,
    pub inbound: mpsc::Sender<Inbound>,
    parts: driver::Parts,
}

impl PendingNode {
    pub fn new(cfg: NodeConfig, transport: Arc<dyn Transport>) -> Self {
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (joined_tx, joined_rx) = watch::channel(false);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let handle = NodeHandle {
            commands: cmd_tx,
            joined: joined_rx,
            id: cfg.id,
            addr: cfg.addr.clone(),
            metrics: metrics.clone(),
        };
        let parts = driver::Parts {
            cfg,
            transport,
            metrics,
            inbound: inbound_rx,
            commands: cmd_rx,
            joined: joined_tx,
        };
        PendingNode {
            handle,
            inbound: inbound_tx,
            parts,
        }
    }

    /// Starts the driver task; it runs until `shutdown` completes.
    pub fn start(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(event_loop::run(self.parts, shutdown))
    }
}
