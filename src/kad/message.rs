//! Domain messages exchanged between peers (not protobuf types: those stay in `net::grpc`).

use std::sync::Arc;

use super::id::{Key, NodeId};
use super::store::Record;

/// A peer: its id and an address ("host:port") where it can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Contact {
    pub id: NodeId,
    /// Shared, not copied, by the many lists a contact is in (buckets, lookups, replies).
    pub addr: Arc<str>,
    /// When the node's process started (Unix ms; 0 = unknown): a higher value for a known id
    /// means the node restarted with an empty store.
    pub incarnation: u64,
}

impl Contact {
    pub fn new(id: NodeId, addr: impl Into<Arc<str>>) -> Self {
        Contact {
            id,
            addr: addr.into(),
            incarnation: 0,
        }
    }

    /// The same contact with an incarnation.
    pub fn with_incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }
}

/// The body of a peer request: the four RPCs of the paper (section 2.3).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Ping,
    Store {
        record: Record,
        cached: bool,
    },
    /// `count`: contacts wanted, see [`reply_count`].
    FindNode {
        target: NodeId,
        count: u32,
    },
    /// `omit_value`: the sender wants the record's metadata only (version, expiry,
    /// tombstone), and the reply's record comes with an empty value.
    FindValue {
        key: Key,
        count: u32,
        omit_value: bool,
    },
}

/// Contacts a FIND_NODE or FIND_VALUE reply carries for a request that asked for `count`: 0
/// means `k` (the paper's), and no request gets more than `2k`.
pub fn reply_count(count: u32, k: usize) -> usize {
    match count {
        0 => k,
        n => (n as usize).min(2 * k),
    }
}

impl Request {
    /// RPC name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "PING",
            Request::Store { .. } => "STORE",
            Request::FindNode { .. } => "FIND_NODE",
            Request::FindValue { .. } => "FIND_VALUE",
        }
    }
}

/// A request with the sender's contact and network id (carried by every peer RPC).
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub sender: Contact,
    pub network_id: String,
    pub body: Request,
}

/// The body of a peer response.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Pong,
    Stored {
        stored: bool,
        current_version: u64,
    },
    Nodes {
        closer: Vec<Contact>,
    },
    Value {
        record: Option<Record>,
        closer: Vec<Contact>,
    },
}

/// A response with the responder's contact, so that a node bootstrapping from a bare address
/// learns the id of whoever answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub responder: Contact,
    pub body: Response,
}

/// Why a receiver refused a well-formed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "network id mismatch: this node belongs to network {expected:?}, the request came from {got:?}"
    )]
    WrongNetwork { expected: String, got: String },
    #[error("sender claims this node's own id {0}")]
    SelfSender(String),
    #[error("store refused: {0}")]
    Store(#[from] super::store::StoreError),
    #[error(
        "store refused: the record's version {version} is {ahead_ms} ms ahead of this node's clock, more than the {max_ms} ms allowed (a forged version, or the writer's clock is wrong)"
    )]
    VersionAhead {
        version: u64,
        ahead_ms: u64,
        max_ms: u64,
    },
    #[error(
        "store refused: the record expires in {left_secs} s, more than max_ttl_secs ({max_secs}) allows"
    )]
    ExpiryTooFar { left_secs: u64, max_secs: u64 },
}
