//! Client operations (put, get, delete, locate, info, routes) as steps of the driver.
//!
//! The decisions are the core's: a put or delete runs a survey lookup (FIND_VALUE to the k
//! closest without stopping at the first record, asking for versions and not values), then
//! follows [`crate::kad::write`]'s plan (version, tombstone lifetime, replica set, quorum;
//! this node's own copy is written once a peer accepted the version). A get waits for the
//! copies [`crate::kad::read`] says, answers the newest and repairs the older copies it saw,
//! and caches the value at the closest node on the path that lacked it. This module only
//! sends, stores and answers.
//!
//! When a lookup contacted peers and none answered, and some peer did answer this node
//! before, Put, Delete, Get and Locate fail with UNAVAILABLE instead of acting on this node
//! alone (the node is cut off, or everyone it knew is down).

use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::driver::{Driver, RpcDone};
use super::state::{AfterLookup, Op, Purpose, Reply};
use super::{
    BucketDump, Command, GetResult, Located, MAX_KEY_BYTES, MAX_OPERATIONS, MAX_PICTURE_RECORDS,
    NodeInfo, NodeLoad, NodeLookup, RouteEntry, Snapshot, WriteResult,
};
use crate::error::DhtError;
use crate::kad::lookup::{Mode, Outcome};
use crate::kad::read::{copies_wanted, resolve};
use crate::kad::store::{NEVER, PutOutcome, StoreError, unix_ms, unix_us};
use crate::kad::write::{Ack, Plan, Step, Verdict, Write, WriteSettings};
use crate::kad::{NodeId, Record, Reply as PeerReply, Request, Response};
use crate::net::TransportError;

/// A get's answer from this node's own copy.
fn local_answer(key: String, record: &Record) -> Result<GetResult, DhtError> {
    if record.tombstone {
        return Err(DhtError::NotFound(key));
    }
    Ok(GetResult {
        key_id: record.key,
        value: record.value.clone(),
        version: record.version,
        expires_at_ms: record.expires_at_ms,
        local: true,
        hops: 0,
        queried: 0,
    })
}

/// A client's answer to a write that ended with `verdict`.
fn write_answer(record: &Record, verdict: Verdict) -> Result<WriteResult, DhtError> {
    match verdict {
        Verdict::Acknowledged { stored_at } => Ok(WriteResult {
            key_id: record.key,
            version: record.version,
            stored_at,
        }),
        Verdict::Superseded { newer } => Err(DhtError::Aborted(format!(
            "a newer version ({newer}) of key {:?} exists; this write ({}) was not applied",
            record.user_key, record.version
        ))),
        Verdict::Exhausted {
            stored,
            needed,
            why,
        } => Err(DhtError::ResourceExhausted(format!(
            "stored on {stored} node(s), fewer than the quorum of {needed}, because the replicas are out of room or capacity ({why}): the nodes that stored it keep it; free space (delete keys) or add nodes"
        ))),
        Verdict::ShortOfQuorum {
            stored,
            needed,
            refused,
        } => {
            let refused = refused
                .map(|why| format!("; refused by {why}"))
                .unwrap_or_default();
            Err(DhtError::Unavailable(format!(
                "stored on {stored} node(s), fewer than the quorum of {needed}: the write may be partially applied (the nodes that stored it keep it, and replication spreads it); retry it{refused}"
            )))
        }
    }
}

fn check_key(key: &str) -> Result<NodeId, DhtError> {
    if key.is_empty() {
        return Err(DhtError::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(DhtError::InvalidArgument(format!(
            "key is {} bytes, the maximum is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(NodeId::hash(key.as_bytes()))
}

impl Driver {
    pub(crate) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Put {
                key,
                value,
                ttl,
                reply,
            } => self.put(key, value, ttl, reply),
            Command::Get { key, reply } => self.get(key, reply),
            Command::Delete { key, reply } => self.delete(key, reply),
            Command::Locate { key, reply } => match check_key(&key) {
                Err(e) => drop(reply.send(Err(e))),
                Ok(_) if let Some(e) = self.cannot_start() => drop(reply.send(Err(e))),
                Ok(id) => self.start_lookup(id, Mode::Survey, AfterLookup::Locate { reply }),
            },
            Command::FindNode { target, reply } => match self.cannot_start() {
                Some(e) => drop(reply.send(Err(e))),
                None => self.start_lookup(target, Mode::FindNode, AfterLookup::FindNode { reply }),
            },
            Command::Info { reply } => drop(reply.send(self.info())),
            Command::Routes { reply } => drop(reply.send(self.routes())),
            Command::Snapshot { reply } => drop(reply.send(self.snapshot())),
        }
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.core.id(),
            addr: self.cfg.addr.clone(),
            network_id: self.cfg.network_id.clone(),
            peers: self.core.routing().len(),
            stale_peers: self.core.routing().stale_len(),
            records: self.core.store().len(),
            joined: self.is_joined(),
            k: self.cfg.params.k,
            alpha: self.cfg.params.alpha,
            uptime: self.now() - self.started,
            load: NodeLoad {
                operations: self.ops.len(),
                rpcs: self.flow.stats(),
                jobs: self.jobs.stats(),
                replication: self.backlog.stats(unix_ms(self.wall())),
            },
        }
    }

    fn snapshot(&self) -> Snapshot {
        let store = self.core.store();
        Snapshot {
            id: self.core.id(),
            k: self.core.params().k,
            buckets: self.routes(),
            keys: store
                .iter()
                .take(MAX_PICTURE_RECORDS)
                .map(|s| s.record.key)
                .collect(),
            records: store.len(),
            lookups: self.recent.list(),
        }
    }

    fn routes(&self) -> Vec<BucketDump> {
        let now = self.now();
        let entry = |e: &crate::kad::routing::Entry| RouteEntry {
            contact: e.contact.clone(),
            last_seen_ago: now.saturating_duration_since(e.last_seen),
            failures: e.failures,
        };
        self.core
            .routing()
            .buckets()
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty() || !b.replacements.is_empty())
            .map(|(index, b)| BucketDump {
                index,
                contacts: b.entries.iter().map(entry).collect(),
                replacements: b.replacements.iter().map(entry).collect(),
            })
            .collect()
    }

    /// UNAVAILABLE when a lookup reached none of the peers that this node has reached before:
    /// acting on this node alone would lose a write or misreport a read (`consequence` says
    /// which). A node that never reached anyone, such as the first node of a new network,
    /// acts alone.
    ///
    /// Also UNAVAILABLE when the lookup gave up at its deadline: the nodes it found need not
    /// be the key's closest, so neither a write nor a "not found" may rest on them.
    fn cut_off(&self, outcome: &Outcome, consequence: &str) -> Option<DhtError> {
        if outcome.gave_up {
            let limit = self.cfg.lookup_timeout;
            warn!(key = %outcome.target.short(), contacted = outcome.queried, "lookup gave up");
            return Some(DhtError::Unavailable(format!(
                "the lookup gave up after {limit:?} ({} contacted): the network is too slow to answer right now; {consequence}",
                outcome.queried
            )));
        }
        if !outcome.nobody_answered() || !self.core.routing().any_answered() {
            return None;
        }
        warn!(
            key = %outcome.target.short(),
            contacted = outcome.queried,
            "no peer answered: this node cannot reach the network"
        );
        Some(DhtError::Unavailable(format!(
            "no peer answered ({} contacted): this node cannot reach the network right now; {consequence}",
            outcome.queried
        )))
    }

    /// Why a client operation cannot start now: the node has not joined, or it already runs
    /// as many operations as it may.
    fn cannot_start(&self) -> Option<DhtError> {
        if !self.is_joined() {
            return Some(DhtError::Unavailable(
                "node has not joined a network yet".into(),
            ));
        }
        (self.ops.len() >= MAX_OPERATIONS).then(|| {
            DhtError::ResourceExhausted(format!(
                "node is overloaded: {MAX_OPERATIONS} operations under way; retry later"
            ))
        })
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
        reply: Reply<WriteResult>,
    ) {
        let key_id = match check_key(&key) {
            Ok(id) => id,
            Err(e) => return drop(reply.send(Err(e))),
        };
        if value.len() > self.cfg.max_value_bytes {
            let msg = format!(
                "value is {} bytes, the maximum is {}",
                value.len(),
                self.cfg.max_value_bytes
            );
            return drop(reply.send(Err(DhtError::InvalidArgument(msg))));
        }
        if let Some(e) = self.cannot_start() {
            return drop(reply.send(Err(e)));
        }
        let ttl = ttl.filter(|t| !t.is_zero()).or(self.cfg.record_ttl);
        if let Some(ttl) = ttl.filter(|t| *t > self.cfg.max_ttl) {
            let msg = format!(
                "ttl_seconds {} exceeds max_ttl_secs ({}); omit it for a value that lives until deleted",
                ttl.as_secs(),
                self.cfg.max_ttl.as_secs()
            );
            return drop(reply.send(Err(DhtError::InvalidArgument(msg))));
        }
        let expires_at_ms = match ttl {
            Some(ttl) => unix_ms(self.wall()).saturating_add(ttl.as_millis() as u64),
            None => NEVER,
        };
        let record = Record {
            key: key_id,
            value,
            // Settled by the write's plan, after the survey (`write_replicas`).
            version: 0,
            expires_at_ms,
            tombstone: false,
            publisher: self.core.id(),
            user_key: key,
        };
        let then = AfterLookup::Write {
            record,
            reply,
            conditional: self.cfg.conditional_puts,
        };
        self.start_lookup(key_id, Mode::Survey, then);
    }

    fn delete(&mut self, key: String, reply: Reply<WriteResult>) {
        let key_id = match check_key(&key) {
            Ok(id) => id,
            Err(e) => return drop(reply.send(Err(e))),
        };
        if let Some(e) = self.cannot_start() {
            return drop(reply.send(Err(e)));
        }
        // The version and expiry are settled once the survey has seen the copies it deletes
        // (`write_replicas`).
        let record = Record {
            key: key_id,
            value: Vec::new(),
            version: 0,
            expires_at_ms: 0,
            tombstone: true,
            publisher: self.core.id(),
            user_key: key,
        };
        // A delete's tombstone must outlive every copy it shadows, so it hears from all of the
        // k closest before it picks its expiry: a surveyed write, not a conditional one.
        let then = AfterLookup::Write {
            record,
            reply,
            conditional: false,
        };
        self.start_lookup(key_id, Mode::Survey, then);
    }

    fn get(&mut self, key: String, reply: Reply<GetResult>) {
        let key_id = match check_key(&key) {
            Ok(id) => id,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let wall = self.wall();
        let local = self
            .core
            .store()
            .get(&key_id, wall)
            .map(|s| (s.record.clone(), s.cached));
        // The local copy counts as one of the copies the get waits for (a cached one does
        // not); a node that has not joined yet (just restarted) serves what it holds.
        let local_cached = local.as_ref().map(|(_, cached)| *cached);
        let wanted = copies_wanted(self.cfg.read_quorum, local_cached);
        if let Some((record, _)) = &local
            && (wanted == 0 || !self.is_joined())
        {
            return drop(reply.send(local_answer(key, record)));
        }
        if let Some(e) = self.cannot_start() {
            return drop(reply.send(Err(e)));
        }
        let then = AfterLookup::Get {
            key,
            reply,
            started: self.now(),
        };
        self.start_read(key_id, wanted, local_cached == Some(false), then);
    }

    /// Answers a get with the newest copy among the local one and those the lookup found,
    /// and repairs the copies it saw that are older (read repair; see [`crate::kad::read`]).
    pub(crate) fn finish_get(
        &mut self,
        key: String,
        outcome: Outcome,
        reply: Reply<GetResult>,
        started: Instant,
    ) {
        let wall = self.wall();
        let local = self.local_copy(&outcome.target);
        let resolution = resolve(local.as_ref(), &outcome.holders);
        // Cut off, the local copy alone must not answer for the key: it may be one that
        // missed a write or a delete while this node was away.
        if outcome.holders.is_empty()
            && let Some(e) = self.cut_off(&outcome, "cannot tell whether it exists")
        {
            return drop(reply.send(Err(e)));
        }
        let Some(newest) = resolution.newest else {
            debug!(key, queried = outcome.queried, "get: not found");
            return drop(reply.send(Err(DhtError::NotFound(key))));
        };
        if resolution.adopt
            && let Err(e) = self.core.accept(newest.clone(), wall)
        {
            warn!(key = %newest.key.short(), error = %e, "read repair: refused the newer copy");
        }
        for holder in &resolution.repair {
            debug!(key = %newest.key.short(), to = %holder.addr, "read repair");
            let body = Request::Store {
                record: newest.clone(),
                cached: false,
            };
            self.send(None, Purpose::Oneway, holder, body);
        }
        if resolution.local_is_newest {
            return drop(reply.send(local_answer(key, &newest)));
        }
        if newest.tombstone {
            return drop(reply.send(Err(DhtError::NotFound(key))));
        }
        let hops = outcome.found.as_ref().map_or(0, |f| f.hop);
        debug!(key, hops, queried = outcome.queried, elapsed = ?(self.now() - started), "get: found");
        let placement = outcome.cache_placement(self.cfg.cache_ttl.as_millis() as u64);
        if let Some((target, life)) = placement {
            let mut cached = newest.clone();
            let until = unix_ms(wall).saturating_add(life);
            cached.expires_at_ms = cached.expires_at_ms.min(until);
            let body = Request::Store {
                record: cached,
                cached: true,
            };
            self.send(None, Purpose::Oneway, &target, body);
        }
        let _ = reply.send(Ok(GetResult {
            key_id: newest.key,
            value: newest.value,
            version: newest.version,
            expires_at_ms: newest.expires_at_ms,
            local: false,
            hops,
            queried: outcome.queried,
        }));
    }

    pub(crate) fn finish_find_node(&mut self, outcome: Outcome, reply: Reply<NodeLookup>) {
        if let Some(e) = self.cut_off(&outcome, "cannot tell which nodes are closest") {
            return drop(reply.send(Err(e)));
        }
        let _ = reply.send(Ok(NodeLookup {
            closest: outcome.closest,
            rounds: outcome.rounds,
            queried: outcome.queried,
            gave_up: outcome.gave_up,
        }));
    }

    pub(crate) fn finish_locate(&mut self, outcome: Outcome, reply: Reply<(NodeId, Vec<Located>)>) {
        if let Some(e) = self.cut_off(&outcome, "cannot tell who holds it") {
            return drop(reply.send(Err(e)));
        }
        let target = outcome.target;
        let local = self.local_copy(&target);
        let nodes = outcome
            .replica_set(self.core.me(), self.cfg.params.k)
            .into_iter()
            .map(|c| {
                let held = if c.id == self.core.id() {
                    local.clone()
                } else {
                    outcome
                        .holders
                        .iter()
                        .find(|(h, _)| h.id == c.id)
                        .map(|(_, r)| r.clone())
                };
                Located {
                    has_value: held.as_ref().is_some_and(|r| !r.tombstone),
                    tombstone: held.as_ref().is_some_and(|r| r.tombstone),
                    version: held.map_or(0, |r| r.version),
                    contact: c,
                }
            })
            .collect();
        let _ = reply.send(Ok((target, nodes)));
    }

    /// Stores a put's or delete's record at its replica set, as [`Write::plan`] says.
    pub(crate) fn write_replicas(
        &mut self,
        record: Record,
        outcome: Outcome,
        reply: Reply<WriteResult>,
        conditional: bool,
    ) {
        if let Some(e) = self.cut_off(&outcome, "nothing was written") {
            // With no peer answering, this node alone would "succeed" and the value would be
            // lost to the rest of the network.
            return drop(reply.send(Err(e)));
        }
        let wall = self.wall();
        let local = self.local_copy(&record.key);
        let routing = self.core.routing();
        let settings = WriteSettings {
            k: self.cfg.params.k,
            quorum: self.cfg.quorum,
            known: routing.len() + routing.stale_len() + 1,
            tombstone_grace_ms: self.cfg.tombstone_grace.as_millis() as u64,
            conditional,
        };
        let me = self.core.me().clone();
        let Plan {
            write,
            replicas,
            also,
        } = Write::plan(
            record,
            &outcome,
            local.as_ref(),
            &me,
            settings,
            &mut self.clock,
            unix_us(wall),
        );
        let store = Request::Store {
            record: write.record().clone(),
            cached: false,
        };
        // The STOREs' spans are this write's children (`super::trace`).
        let span = super::trace::write_span(replicas.len(), self.cfg.quorum);
        let _in_write = span.enter();
        for holder in &also {
            self.send(None, Purpose::Oneway, holder, store.clone());
        }
        let op = self.new_op(Op::Write {
            write: Box::new(write),
            reply: Some(reply),
        });
        for c in &replicas {
            self.send(Some(op), Purpose::Store, c, store.clone());
        }
        self.step_write(op);
    }

    pub(crate) fn on_store_result(&mut self, op: u64, done: &RpcDone) {
        let Some(Op::Write { write, .. }) = self.ops.get_mut(&op) else {
            return;
        };
        let ack = match &done.result {
            Ok(PeerReply {
                body: Response::Stored { stored: true, .. },
                ..
            }) => Ack::Stored,
            Ok(PeerReply {
                body:
                    Response::Stored {
                        stored: false,
                        current_version,
                    },
                ..
            }) => Ack::Newer(*current_version),
            Err(TransportError::Rejected(_, why)) => Ack::Refused(why.clone()),
            Err(TransportError::Overloaded(_, why)) => Ack::Exhausted(why.clone()),
            _ => Ack::Failed,
        };
        self.metrics
            .observe_write_store(ack == Ack::Stored, write.answered());
        write.on_ack(&done.addr, ack);
        self.step_write(op);
    }

    /// Performs what write `op` asks for, until it waits or is done.
    fn step_write(&mut self, op: u64) {
        loop {
            let Some(Op::Write { write, .. }) = self.ops.get_mut(&op) else {
                return;
            };
            match write.poll() {
                Step::Wait => return,
                Step::StoreLocal => {
                    let record = write.record().clone();
                    let wall = self.wall();
                    // This node's own copy counts towards the quorum once it is on disk.
                    let put = self.core.store_mut().put(record, false, wall);
                    let ack = match put.and_then(|o| self.commit().map(|()| o)) {
                        Ok(PutOutcome::Stored) => Ack::Stored,
                        Ok(PutOutcome::Stale { current_version }) => Ack::Newer(current_version),
                        Err(e @ (StoreError::Full { .. } | StoreError::FullBytes { .. })) => {
                            Ack::Exhausted(e.to_string())
                        }
                        Err(e) => {
                            warn!(error = %e, "local store refused a record");
                            Ack::Refused(e.to_string())
                        }
                    };
                    if let Some(Op::Write { write, .. }) = self.ops.get_mut(&op) {
                        write.on_local(ack);
                    }
                }
                Step::Answer(verdict) => {
                    // The quorum has it: the client need not wait for the slower replicas.
                    if let Some(Op::Write { write, reply }) = self.ops.get_mut(&op)
                        && let Some(reply) = reply.take()
                    {
                        let _ = reply.send(write_answer(write.record(), verdict));
                    }
                }
                Step::Retry { newer } => {
                    let Some(Op::Write { write, reply }) = self.ops.remove(&op) else {
                        return;
                    };
                    let Some(reply) = reply.filter(|r| !r.is_closed()) else {
                        return;
                    };
                    debug!(
                        key = %write.record().key.short(),
                        newer,
                        "write: a replica holds a newer version; writing again after a survey"
                    );
                    self.metrics.observe_write_retry();
                    let then = AfterLookup::Write {
                        record: write.record().clone(),
                        reply,
                        conditional: false,
                    };
                    self.start_lookup(write.record().key, Mode::Survey, then);
                    return;
                }
                Step::Done(verdict) => {
                    let Some(Op::Write { write, reply }) = self.ops.remove(&op) else {
                        return;
                    };
                    match reply {
                        Some(reply) => drop(reply.send(write_answer(write.record(), verdict))),
                        None => debug!(
                            key = %write.record().key.short(),
                            ?verdict,
                            "write: the STOREs after the quorum's answer are done"
                        ),
                    }
                    return;
                }
            }
        }
    }
}
