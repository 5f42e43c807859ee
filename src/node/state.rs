//! The state the driver's handlers share: the running operations, why each RPC was sent, what
//! a finished lookup feeds, and the progress of joining. Types only: the driver
//! (`driver`) and the handlers (`ops`, `maintenance`, `repair`) build on them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::trace::LookupTrace;
use super::{GetResult, Located, NodeLookup, WriteResult};
use crate::error::DhtError;
use crate::kad::lookup::Lookup;
use crate::kad::write::Write;
use crate::kad::{NodeId, Record};

/// Where a client operation's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

/// Why an RPC was sent, which decides what its result feeds.
#[derive(Clone, Debug)]
pub(crate) enum Purpose {
    Lookup,
    Store,
    PingLru,
    Bootstrap,
    /// A replication STORE: an answer saying a newer version exists makes this node fetch
    /// it (its own copy is outdated: it missed a write or a delete).
    Replicate(NodeId),
    /// A FIND_VALUE for a newer version of a record this node holds.
    Adopt(NodeId),
    /// A PING to the address a request's sender claimed (see `Effect::Verify`).
    Verify(String),
    /// A PING that stands for the refresh of a full bucket (`RoutingTable::refresh_probe`):
    /// if it fails, the bucket is refreshed by a lookup after all.
    RefreshProbe(usize),
    Oneway,
}

/// What to do when a lookup finishes.
pub(crate) enum AfterLookup {
    Get {
        key: String,
        reply: Reply<GetResult>,
        started: Instant,
    },
    Write {
        record: Record,
        reply: Reply<WriteResult>,
        /// A conditional write (`kad::write`): its survey ends at convergence.
        conditional: bool,
    },
    Locate {
        reply: Reply<(NodeId, Vec<Located>)>,
    },
    FindNode {
        reply: Reply<NodeLookup>,
    },
    Join,
    Refresh,
    /// Records of one replication group (see `crate::kad::replication`).
    Replicate {
        records: Vec<Record>,
    },
}

/// A running operation.
pub(crate) enum Op {
    Lookup {
        lookup: Box<Lookup>,
        then: AfterLookup,
        wait_until: Option<Instant>,
        trace: LookupTrace,
    },
    /// A put's or delete's STOREs (see [`crate::kad::write`]).
    Write {
        write: Box<Write>,
        /// Taken when the client is answered (at the quorum: the other STOREs go on).
        reply: Option<Reply<WriteResult>>,
    },
    /// The STOREs of a replication group, sent a record at a time while fewer than
    /// [`REPLICATION_STORES_IN_FLIGHT`] are in flight.
    Replicate {
        records: VecDeque<Record>,
        /// The nodes the group's lookup found.
        closest: Vec<crate::kad::Contact>,
        in_flight: usize,
        /// Records this node is not among the k closest of (by the nodes found): the version
        /// sent, and how many more of its STOREs must find it held before this node's copy
        /// becomes a cached one (`Driver::on_handover_reply`).
        handover: HashMap<NodeId, (u64, usize)>,
    },
    Bootstrap {
        pending: usize,
        answered: usize,
        /// Pings this node answered itself (the name also stands for it).
        selves: usize,
        rejoin: bool,
    },
}

/// Progress of joining.
#[derive(Debug, Default)]
pub(crate) struct JoinState {
    pub retry_at: Option<Instant>,
    pub backoff: Duration,
    pub in_progress: bool,
    pub attempts: u32,
    pub last_bootstrap: Option<Instant>,
    /// Consecutive resolutions that found only this node.
    pub self_only: u32,
    /// When to repeat the join's bucket refresh once (see [`POST_JOIN_REFRESH`]).
    pub post_refresh_at: Option<Instant>,
    pub post_refresh_done: bool,
    /// Addresses at which this node answered its own bootstrap ping.
    pub own_addrs: HashSet<String>,
    /// The node that answered a bootstrap ping at each address P2P_REMOTE_HOST resolved to
    /// (the addresses of the last resolution only). On Kubernetes the name resolves to pod IPs
    /// while nodes advertise DNS names, so the contacts' addresses never match what the
    /// name resolves to; this is how a re-bootstrap knows those nodes already.
    pub aliases: HashMap<String, NodeId>,
}
