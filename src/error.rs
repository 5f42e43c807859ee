//! Errors of the library, and the single place where they become `tonic::Status`.

use tonic::Status;

use crate::kad::Rejection;
use crate::kad::store::StoreError;

/// Why a client operation (put, get, ...) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// The request itself is wrong (empty key, oversize value, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// No node has the key (or it was deleted).
    #[error("key {0:?} not found")]
    NotFound(String),
    /// Not enough nodes could be reached, or the node is not serving.
    #[error("{0}")]
    Unavailable(String),
    /// A newer version of the record exists.
    #[error("{0}")]
    Aborted(String),
    /// A limit of this node was reached.
    #[error("{0}")]
    ResourceExhausted(String),
}

impl From<DhtError> for Status {
    fn from(e: DhtError) -> Self {
        let msg = e.to_string();
        match e {
            DhtError::InvalidArgument(_) => Status::invalid_argument(msg),
            DhtError::NotFound(_) => Status::not_found(msg),
            DhtError::Unavailable(_) => Status::unavailable(msg),
            DhtError::Aborted(_) => Status::aborted(msg),
            DhtError::ResourceExhausted(_) => Status::resource_exhausted(msg),
        }
    }
}

/// A peer request refused by the core.
pub fn rejection_status(r: Rejection) -> Status {
    let msg = r.to_string();
    match r {
        Rejection::WrongNetwork { .. } => Status::failed_precondition(msg),
        Rejection::SelfSender(_) => Status::invalid_argument(msg),
        Rejection::Store(StoreError::ValueTooLarge { .. }) => Status::invalid_argument(msg),
        Rejection::Store(StoreError::Expired) => Status::invalid_argument(msg),
        Rejection::Store(
            StoreError::Full { .. } | StoreError::FullBytes { .. } | StoreError::OverQuota { .. },
        ) => Status::resource_exhausted(msg),
        Rejection::Store(StoreError::KeyTooLong { .. }) => Status::invalid_argument(msg),
        Rejection::Store(StoreError::Io(_)) => Status::unavailable(msg),
        Rejection::VersionAhead { .. } => Status::failed_precondition(msg),
        Rejection::ExpiryTooFar { .. } => Status::invalid_argument(msg),
    }
}

/// Invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot load configuration: {0}")]
    Load(config::ConfigError),
}

// Not `#[from]`: that would also make the inner error the source and print it twice.
impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(e)
    }
}
