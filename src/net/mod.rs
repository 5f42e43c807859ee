//! Transports: how a driver sends peer requests and receives them.
//!
//! [`Transport`] sends a domain [`Envelope`] to an address and returns the peer's [`Reply`];
//! inbound requests reach a node's driver as [`Inbound`] messages on a channel, whichever
//! transport carried them. Two implementations: [`grpc`] (tonic, production) and [`memory`]
//! (in-process, for tests and simulation, with failure injection).

pub mod advertise;
pub mod grpc;
pub mod http;
pub mod memory;
pub mod tls;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::kad::{Envelope, Rejection, Reply};

/// Why an outbound request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("request to {0} timed out")]
    Timeout(String),
    #[error("peer {0} refused the request: {1}")]
    Rejected(String, String),
    #[error("peer {0} sent an invalid reply: {1}")]
    Invalid(String, String),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    /// The peer is up but refused the request for lack of capacity (RESOURCE_EXHAUSTED).
    #[error("peer {0} is overloaded: {1}")]
    Overloaded(String, String),
    /// This node did not send the request: its own outbound queue was full.
    #[error("request to {0} not sent: {1}")]
    NotSent(String, String),
}

impl TransportError {
    /// What the failure says about the peer: `Some(false)` it may be gone (counts towards
    /// flagging the contact stale, or evicts a pinged LRU contact), `Some(true)` it is up
    /// (it refused for lack of capacity), `None` nothing (this node never sent the request).
    pub fn peer_alive(&self) -> Option<bool> {
        match self {
            TransportError::Overloaded(..) => Some(true),
            TransportError::NotSent(..) => None,
            _ => Some(false),
        }
    }

    /// A short name for the kind of failure (on trace spans).
    pub fn label(&self) -> &'static str {
        match self {
            TransportError::Unreachable(..) => "unreachable",
            TransportError::Timeout(..) => "timeout",
            TransportError::Rejected(..) => "rejected",
            TransportError::Invalid(..) => "invalid",
            TransportError::Resolve(..) => "unresolved",
            TransportError::Overloaded(..) => "overloaded",
            TransportError::NotSent(..) => "not_sent",
        }
    }
}

/// Sends peer requests.
pub trait Transport: Send + Sync + 'static {
    /// Sends `env` to the node at `addr` ("host:port") and waits for its reply, bounded by the
    /// transport's own timeout.
    fn send(&self, addr: &str, env: Envelope) -> BoxFuture<'static, Result<Reply, TransportError>>;

    /// Resolves a bootstrap name ("host" or "host:port") to every address it stands for.
    fn resolve(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, TransportError>>;
}

/// A request delivered to a node's driver, with where to send the answer.
pub struct Inbound {
    pub envelope: Envelope,
    /// The IP address the request's connection came from, where the transport knows it.
    pub source: Option<std::net::IpAddr>,
    pub reply: oneshot::Sender<Result<Reply, Rejection>>,
}
