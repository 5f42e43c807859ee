//! Replication's STOREs, paced ([`REPLICATION_STORES_IN_FLIGHT`]), and repairing outdated
//! copies. A node that missed a write or a delete (it was paused,
//! partitioned or down) learns so when it replicates its copy: the peer answers that it holds
//! a newer version. The node then fetches that version from the peer (one FIND_VALUE) and
//! keeps it, so it stops serving and spreading the old value.

use tracing::{debug, warn};

use super::driver::{Driver, RpcDone};
use super::state::{Op, Purpose};
use crate::kad::lookup::replica_set;
use crate::kad::store::{PutOutcome, unix_ms};
use crate::kad::{Key, Request, Response};

/// A replication group's STOREs in flight at most (one record's worth, beyond which the next
/// record waits): replication shares the node's RPC slots with its clients' lookups and must
/// not crowd them out, however many records a group holds.
pub(crate) const REPLICATION_STORES_IN_FLIGHT: usize = crate::kad::K;

impl Driver {
    /// Sends the next records of replication `op` while few of its STOREs are in flight;
    /// ends the op once all were answered, and then says so (its maintenance slot is free).
    #[must_use]
    pub(crate) fn pump_replication(&mut self, op: u64) -> bool {
        let (me, k) = (self.core.me().clone(), self.cfg.params.k);
        loop {
            let Some(Op::Replicate {
                records,
                closest,
                in_flight,
            }) = self.ops.get_mut(&op)
            else {
                return false;
            };
            if *in_flight >= REPLICATION_STORES_IN_FLIGHT {
                return false;
            }
            let Some(record) = records.pop_front() else {
                let ended = *in_flight == 0;
                if ended {
                    self.ops.remove(&op);
                }
                return ended;
            };
            let mut found = replica_set(closest, &record.key, &me, k);
            found.retain(|c| c.id != me.id);
            *in_flight += found.len();
            let now_ms = unix_ms(self.wall());
            if let Some(delay) = self.backlog.sent(&record.key, now_ms) {
                self.metrics.observe_replication(delay);
            }
            for c in found {
                let body = Request::Store {
                    record: record.clone(),
                    cached: false,
                };
                self.send(Some(op), Purpose::Replicate(record.key), &c, body);
            }
        }
    }

    /// A replication STORE of `key` was answered.
    pub(crate) fn on_replicated(&mut self, key: Key, done: &RpcDone) {
        self.metrics.observe_replication_store(done.result.is_ok());
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
            self.send(
                None,
                Purpose::Adopt(key),
                &from,
                Request::FindValue {
                    key,
                    count: 0,
                    omit_value: false,
                },
            );
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
