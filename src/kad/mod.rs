//! The Kademlia core: ids, k-buckets, lookups, records and the handling of peer requests.
//!
//! Nothing in here performs I/O or reads a clock: time is passed in (`Instant` for timers,
//! `SystemTime` for record expiry), and work that needs the network is returned as [`Effect`]s
//! for the driver (`crate::node`) to perform.
//!
//! Implementation notes (departures from the paper):
//! - Record lifetime is that of a key-value service, not the paper's 24-hour soft state
//!   (section 2.5: records expire 24 hours after publication unless the publisher republishes
//!   them). A put without a TTL lives until it is deleted ([`store::NEVER`]); a put with a TTL
//!   expires at that time on every replica, bounded by `max_ttl`. There is no republishing:
//!   every holder replicates its records to the current k closest nodes every
//!   `T_REPLICATE`, so no record depends on the node that first accepted it.
//! - A delete is a tombstone that lives at least `tombstone_grace` and as long as any copy it
//!   deletes that the delete saw ([`store::tombstone_expiry`]).
//! - Records carry versions from a hybrid logical clock ([`clock`]); a write goes to a quorum
//!   of the replica set ([`write`]) and a get waits for `read_quorum` copies and repairs older
//!   ones ([`read`]). The paper's records have no versions and its STOREs no quorum.

pub mod clock;
pub mod core;
pub mod diversity;
pub mod id;
pub mod lookup;
pub mod message;
pub mod read;
pub mod replication;
pub mod routing;
pub mod store;
pub mod write;

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

/// Protocol parameters shared by the core and the driver.
#[derive(Clone, Debug)]
pub struct Params {
    pub k: usize,
    pub alpha: usize,
    pub rpc_timeout: Duration,
    /// How far ahead of this node's clock a stored record's version may be (see
    /// [`Core::handle`]).
    pub max_clock_skew: Duration,
    /// Longest finite lifetime a stored record may have left (see [`Core::handle`]).
    pub max_ttl: Duration,
    /// Contacts per network neighbourhood in a bucket and in the routing table.
    pub diversity: diversity::DiversityLimits,
}
