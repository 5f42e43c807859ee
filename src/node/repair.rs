//! Repairing outdated copies. A node that missed a write or a delete (it was paused,
//! partitioned or down) learns so when it replicates its copy: the peer answers that it holds
//! a newer version. The node then fetches that version from the peer (one FIND_VALUE) and
//! keeps it, so it stops serving and spreading the old value.

use tracing::{debug, warn};

use super::driver::{Driver, RpcDone};
use super::ops::Purpose;
use crate::kad::store::PutOutcome;
use crate::kad::{Key, Request, Response};

impl Driver {
    /// A replication STORE of `key` was answered.
    pub(crate) fn on_replicated(&mut self, key: Key, done: &RpcDone) {
        let Ok(reply) = &done.result else { return };
        let Response::Stored {
            stored: false,
            current_version,
        } = reply.body
        else {
            return;
        };
        let wall = self.wall();
        let held = self.core.store().get(&key, wall).map(|s| s.record.version);
        if held.is_some_and(|v| v < current_version) {
            debug!(key = %key.short(), newer = current_version, from = %reply.responder.addr, "own copy is outdated: fetching the newer version");
            let from = reply.responder.clone();
            self.send(None, Purpose::Adopt(key), &from, Request::FindValue { key });
        }
    }

    /// The newer version of `key` asked for by [`Driver::on_replicated`] arrived.
    pub(crate) fn on_adopt(&mut self, key: Key, done: &RpcDone) {
        let Ok(reply) = &done.result else { return };
        let Response::Value {
            record: Some(record),
            ..
        } = &reply.body
        else {
            return;
        };
        if record.key != key {
            return;
        }
        let wall = self.wall();
        match self.core.accept(record.clone(), wall) {
            Ok(PutOutcome::Stored) => {
                debug!(key = %key.short(), version = record.version, tombstone = record.tombstone, "adopted the newer version")
            }
            Ok(PutOutcome::Stale { .. }) => {}
            Err(e) => warn!(key = %key.short(), error = %e, "refused a newer version from a peer"),
        }
    }
}
