//! The Kademlia core: ids, k-buckets, lookups, records and the handling of peer requests.
//!
//! Nothing in here performs I/O or reads a clock: time is passed in (`Instant` for timers,
//! `SystemTime` for record expiry), and work that needs the network is returned as [`Effect`]s
//! for the driver (`crate::node`) to perform.

pub mod core;
pub mod id;
pub mod lookup;
pub mod message;
pub mod routing;
pub mod store;

use std::time::Duration;

pub use self::core::{Core, Effect};
pub use id::{Distance, Key, NodeId};
pub use message::{Contact, Envelope, Rejection, Reply, Request, Response};
pub use store::{MemoryStore, Record, RecordStore, StoreLimits};

/// Bucket size and replication factor (paper section 2.2: "k is chosen such that any given k
/// nodes are very unlikely to fail within an hour of each other"; the paper uses k = 20).
pub const K: usize = 20;
/// Lookup parallelism (paper section 2.3: "alpha is a system-wide concurrency parameter, such as 3").
pub const ALPHA: usize = 3;
/// Buckets not looked up for this long are refreshed (paper section 2.3: one hour).
pub const T_REFRESH: Duration = Duration::from_secs(3600);
/// Every node replicates the records it holds this often (paper section 2.5: every hour).
pub const T_REPLICATE: Duration = Duration::from_secs(3600);
/// The original publisher republishes its records this often (paper section 2.5: 24 hours).
pub const T_REPUBLISH: Duration = Duration::from_secs(86_400);
/// Records expire this long after publication unless republished (paper section 2.5: 24 hours).
pub const T_EXPIRE: Duration = Duration::from_secs(86_400);

/// Protocol parameters shared by the core and the driver.
#[derive(Clone, Debug)]
pub struct Params {
    pub k: usize,
    pub alpha: usize,
    pub rpc_timeout: Duration,
    /// How far ahead of this node's clock a stored record's version may be (see
    /// [`Core::handle`]).
    pub max_clock_skew: Duration,
}
