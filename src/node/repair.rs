//! Replication's STOREs, paced ([`REPLICATION_STORES_IN_FLIGHT`]), and repairing outdated
//! copies. A node that missed a write or a delete (it was paused,
//! partitioned or down) learns so when it replicates its copy: the peer answers that it holds
//! a newer version. The node then fetches that version from the peer (one FIND_VALUE) and
//! keeps it, so it stops serving and spreading the old value.
//!
//! A node that replicates a record while not among its key's k closest hands it over: once
//! `quorum` of its STOREs found the record held, its own copy becomes a cached one
//! ([`Driver::on_handover_reply`]; why, in `crate::kad::replication`'s notes). Only STOREs
//! that the peer answered count, so a copy is never given up for peers that did not take it.

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
        let (me, k, quorum) = (self.core.me().clone(), self.cfg.params.k, self.cfg.quorum);
        loop {
            let Some(Op::Replicate {
                records,
                closest,
                in_flight,
                handover,
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
            let outside = found.iter().all(|c| c.id != me.id);
            found.retain(|c| c.id != me.id);
            if outside && !found.is_empty() {
                let needed = quorum.clamp(1, found.len());
                handover.insert(record.key, (record.version, needed));
            }
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

    /// A STORE of replication `op` for `key` was answered. When this node is not among the
    /// key's k closest (by the nodes the op's lookup found), every answer showing that the
    /// peer now holds the version sent, or a newer one, counts; once `quorum` did, this
    /// node's copy becomes a cached one that expires within `cache_ttl` (see the module's
    /// notes).
    pub(crate) fn on_handover_reply(&mut self, op: u64, key: Key, done: &RpcDone) {
        let Ok(reply) = &done.result else { return };
        let Some(Op::Replicate { handover, .. }) = self.ops.get_mut(&op) else {
            return;
        };
        let Some((version, needed)) = handover.get_mut(&key) else {
            return;
        };
        let holds = match reply.body {
            Response::Stored { stored: true, .. } => true,
            Response::Stored {
                stored: false,
                current_version,
            } => current_version >= *version,
            _ => false,
        };
        if !holds {
            return;
        }
        *needed -= 1;
        if *needed > 0 {
            return;
        }
        let sent = *version;
        handover.remove(&key);
        let wall = self.wall();
        if self
            .core
            .store()
            .get(&key, wall)
            .is_none_or(|s| s.record.version != sent)
        {
            return;
        }
        let until = unix_ms(wall).saturating_add(self.cfg.cache_ttl.as_millis() as u64);
        if self.core.store_mut().demote(&key, until) {
            debug!(key = %key.short(), "handed over to the k closest: own copy is a cached one now");
            self.metrics.observe_handover();
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
        // A copy handed over meanwhile (cached now) is not repaired: it expires.
        let held = (self.core.store().get(&key, wall))
            .filter(|s| !s.cached)
            .map(|s| s.record.version);
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
