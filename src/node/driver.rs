//! The driver: the state a node's task owns, and the plumbing every handler uses (sending RPCs
//! under flow control, running lookups, committing the store, performing the core's effects).
//! It calls no handler: the event loop (`event_loop`) routes what comes back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, warn};

use super::flow::{Admit, Flow, Outgoing};
use super::jobs::Jobs;
use super::state::{AfterLookup, JoinState, Op, Purpose};
use super::trace::{self, LookupTrace};
use super::{Command, NodeConfig};
use crate::kad::clock::HybridClock;
use crate::kad::lookup::{Lookup, Mode, Outcome, Poll};
use crate::kad::store::StoreError;
use crate::kad::{
    Contact, Core, Effect, Envelope, MemoryStore, NodeId, Record, RecordStore, Rejection, Reply,
    Request, Response,
};
use crate::net::{Inbound, Transport, TransportError};

/// How long a range that just opened waits before its records are looked for, so that the
/// openings of one burst (a partition healing) cost one scan of the store.
const REPLICATE_SCAN_DELAY: Duration = Duration::from_millis(250);

/// Senders' claims verified at once at most (PINGs in flight); claims beyond are not learned
/// (their senders are learned when they answer one of this node's RPCs, or send again).
pub const MAX_VERIFICATIONS: usize = 64;

type InboundReply = tokio::sync::oneshot::Sender<Result<Reply, Rejection>>;

/// The channels and settings a driver starts from.
pub(crate) struct Parts {
    pub cfg: NodeConfig,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub commands: mpsc::Receiver<(Command, tracing::Span)>,
    pub joined: watch::Sender<bool>,
}

/// A finished outbound RPC.
pub(crate) struct RpcDone {
    pub op: Option<u64>,
    pub purpose: Purpose,
    /// The id we believed the peer to have (`None` for a bare bootstrap address).
    pub to_id: Option<NodeId>,
    /// The address the request went to.
    pub addr: String,
    pub result: Result<Reply, TransportError>,
    /// The request was sent (it held a flow-control slot), not refused before sending.
    pub sent: bool,
    /// From sending the request to its answer (or failure).
    pub elapsed: Duration,
}

/// Things that happen to the driver besides requests and commands.
pub(crate) enum Event {
    Rpc(Box<RpcDone>),
    Resolved {
        result: Result<Vec<String>, TransportError>,
        rejoin: bool,
    },
}

/// The state owned by the driver task.
pub(crate) struct Driver {
    pub core: Core,
    pub cfg: NodeConfig,
    pub transport: Arc<dyn Transport>,
    /// Where finished lookups are counted (the node's registry, `crate::metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    pub ops: HashMap<u64, Op>,
    pub next_op: u64,
    pub events: mpsc::UnboundedSender<Event>,
    pub joined: watch::Sender<bool>,
    pub join: JoinState,
    pub pinging: HashSet<NodeId>,
    /// Addresses pinged to verify a sender's claim (see `Effect::Verify`).
    pub verifying: HashSet<String>,
    /// When stale contacts were last pinged (maintenance).
    pub last_stale_probe: Option<Instant>,
    /// Rounds of stale pings so far (`RoutingTable::stale_due` backs off by round).
    pub stale_probe_round: u64,
    /// Issues the versions of this node's writes (see [`crate::kad::write`]).
    pub clock: HybridClock,
    pub started: Instant,
    pub rng: StdRng,
    pub tick: Duration,
    /// Outbound RPC slots, the outbox and parked lookups.
    pub flow: Flow,
    /// Maintenance lookups, queued and running.
    pub jobs: Jobs,
    /// When to look for records due for replication (set by ranges that just opened, so that
    /// many openings at once cost one scan of the store).
    pub replicate_scan_at: Option<Instant>,
    /// The next regular look for records due for replication (finer than the maintenance
    /// tick, so that holders' staggered turns stay apart: see `replicate_due`).
    pub next_replicate_scan: Option<Instant>,
    /// Contacts saved in the data dir when the node last ran (pinged when joining).
    pub saved_contacts: Vec<Contact>,
    /// The contacts last saved to the data dir (sorted by id).
    pub contacts_saved: Vec<Contact>,
    /// Answers to peer requests waiting for the store's commit ([`Driver::flush_store`]).
    pub held_replies: Vec<(InboundReply, Result<Reply, Rejection>)>,
    /// Why a commit earlier in this turn failed (see [`Driver::commit`]).
    pub commit_failed: Option<StoreError>,
    /// Keys of each replication group whose job is queued (see `replicate_due`).
    pub replication_groups: HashMap<NodeId, Vec<NodeId>>,
    /// Records due for replication whose STOREs were not sent yet.
    pub backlog: super::backlog::Backlog,
    /// Lookups that finished, for the event loop to hand on (`event_loop::after_lookup`), with
    /// the span that started each.
    pub finished: Vec<(Outcome, AfterLookup, tracing::Span)>,
    /// The last lookups, for the node's picture.
    pub recent: super::recent::Recent,
    /// Lookup requests' round trips, for a get's hedged spare.
    pub round_trips: super::rtt::RoundTrips,
}

impl Driver {
    /// A driver for `cfg` (its store opened, or taken from the data dir), and the receiver of
    /// its events.
    pub fn new(
        cfg: NodeConfig,
        transport: Arc<dyn Transport>,
        metrics: Arc<crate::metrics::Metrics>,
        joined: watch::Sender<bool>,
        tick: Duration,
    ) -> (Driver, mpsc::UnboundedReceiver<Event>) {
        let now = super::clock::now();
        let limits = cfg.store_limits();
        let incarnation = crate::kad::store::unix_ms(super::clock::wall());
        let me = Contact::new(cfg.id, cfg.addr.clone()).with_incarnation(incarnation);
        let store: Box<dyn RecordStore> = match &cfg.data_dir {
            Some(dir) => Box::new(
                dir.take_store()
                    .expect("a data dir serves one node: its records were already taken"),
            ),
            None => Box::new(MemoryStore::new(limits)),
        };
        let saved_contacts = cfg
            .data_dir
            .as_ref()
            .map(|d| d.saved_contacts().to_vec())
            .unwrap_or_default();
        let core = Core::new(me, cfg.network_id.clone(), cfg.params.clone(), store, now)
            .with_authenticated_ids(cfg.peer_tls.is_some());
        // The driver's channel to itself. It needs no bound of its own: an event is an RPC
        // that held one of the MAX_RPCS_IN_FLIGHT slots, one the outbox refused in the same
        // turn, or the names of one bootstrap attempt resolved (attempts are paced by the
        // backoff and rebootstrap_interval_secs); and a bounded channel the
        // driver both fills and drains could deadlock it.
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let d = Driver {
            core,
            cfg,
            transport,
            metrics,
            ops: HashMap::new(),
            next_op: 0,
            events: events_tx,
            joined,
            join: JoinState::default(),
            pinging: HashSet::new(),
            verifying: HashSet::new(),
            last_stale_probe: None,
            stale_probe_round: 0,
            clock: HybridClock::default(),
            started: now,
            rng: StdRng::from_os_rng(),
            tick,
            flow: Flow::default(),
            jobs: Jobs::default(),
            replicate_scan_at: None,
            next_replicate_scan: None,
            saved_contacts,
            contacts_saved: Vec::new(),
            held_replies: Vec::new(),
            commit_failed: None,
            replication_groups: HashMap::new(),
            backlog: Default::default(),
            finished: Vec::new(),
            recent: Default::default(),
            round_trips: Default::default(),
        };
        (d, events_rx)
    }
}

impl Driver {
    pub fn now(&self) -> Instant {
        super::clock::now()
    }

    /// `base` times a random factor from `factors`: waits that nodes started together must
    /// not all end at the same moment (the first maintenance tick, the post-join refresh,
    /// bootstrap retries).
    pub fn spread(&mut self, base: Duration, factors: std::ops::Range<f64>) -> Duration {
        base.mul_f64(rand::Rng::random_range(&mut self.rng, factors))
    }

    /// This node's wall clock (the system's, moved by `NodeConfig::clock_offset_ms`).
    pub fn wall(&self) -> SystemTime {
        let offset = Duration::from_millis(self.cfg.clock_offset_ms.unsigned_abs());
        if self.cfg.clock_offset_ms >= 0 {
            super::clock::wall() + offset
        } else {
            super::clock::wall() - offset
        }
    }

    /// This node's live copy of `key`, if it holds one.
    pub fn local_copy(&self, key: &NodeId) -> Option<Record> {
        let wall = self.wall();
        self.core.store().get(key, wall).map(|s| s.record.clone())
    }

    pub fn is_joined(&self) -> bool {
        *self.joined.borrow()
    }

    pub fn on_inbound(&mut self, req: Inbound) {
        let Inbound {
            envelope,
            source,
            reply,
        } = req;
        if reply.is_closed() {
            // The sender stopped waiting (it timed out while the request sat in the queue):
            // answering would be work for nobody, and work a slow node cannot spare.
            self.flow.note_shed();
            return;
        }
        debug!(rpc = envelope.body.name(), from = %envelope.sender.addr, "peer request");
        let (now, wall) = (self.now(), self.wall());
        let sender = envelope.sender.addr.clone();
        let (result, effects) = self.core.handle_from(envelope, source, now, wall);
        if let Err(e @ (Rejection::VersionAhead { .. } | Rejection::ExpiryTooFar { .. })) = &result
        {
            warn!(from = %sender, "{e}");
        }
        // While the store has writes to commit, every answer waits for the commit: none may
        // acknowledge (or show) a record that is not on disk yet.
        if self.core.store().unflushed() {
            self.held_replies.push((reply, result));
        } else {
            let _ = reply.send(result);
        }
        self.perform(effects);
    }

    /// Commits the store's pending writes now; a failure (which undoes them all, held ones
    /// included) is remembered for [`Driver::flush_store`].
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let result = self.core.store_mut().flush();
        if let Err(e) = &result {
            self.commit_failed = Some(e.clone());
        }
        result
    }

    /// Commits the store's pending writes (one fsync for all of them), then sends the answers
    /// that waited for it; if the commit failed, the writes were undone and the answers that
    /// acknowledged one say so instead.
    pub fn flush_store(&mut self) {
        // A commit earlier in this turn that failed undid the held writes too.
        let flushed = self.commit();
        let flushed = match self.commit_failed.take() {
            Some(e) => Err(e),
            None => flushed,
        };
        for (reply, result) in self.held_replies.drain(..) {
            let result = match (&flushed, result) {
                (
                    Err(e),
                    Ok(Reply {
                        body: Response::Stored { stored: true, .. },
                        ..
                    }),
                ) => Err(Rejection::Store(e.clone())),
                (_, result) => result,
            };
            let _ = reply.send(result);
        }
    }

    /// Carries out the core's effects.
    pub fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::PingLru { lru } => {
                    if self.pinging.insert(lru.id) {
                        self.send(None, Purpose::PingLru, &lru, Request::Ping);
                    }
                }
                Effect::Verify { addr } => {
                    if self.verifying.len() < MAX_VERIFICATIONS
                        && self.verifying.insert(addr.clone())
                    {
                        self.send_to(
                            None,
                            Purpose::Verify(addr.clone()),
                            &addr,
                            None,
                            Request::Ping,
                        );
                    }
                }
                Effect::ReplicateDue => {
                    let at = self.now() + REPLICATE_SCAN_DELAY;
                    self.replicate_scan_at.get_or_insert(at);
                }
                Effect::Handoff { to, records } => {
                    debug!(to = %to.addr, records = records.len(), "handing records to a new contact");
                    for record in records {
                        self.send(
                            None,
                            Purpose::Oneway,
                            &to,
                            Request::Store {
                                record,
                                cached: false,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Sends a request to a known contact; the result comes back as an event.
    pub fn send(&mut self, op: Option<u64>, purpose: Purpose, to: &Contact, body: Request) {
        self.send_to(op, purpose, &to.addr, Some(to.id), body);
    }

    /// Sends a request to an address whose node id may be unknown, as flow control allows:
    /// now, after the RPCs queued before it, or not at all (then it fails at once as
    /// [`TransportError::NotSent`]).
    pub fn send_to(
        &mut self,
        op: Option<u64>,
        purpose: Purpose,
        addr: &str,
        to_id: Option<NodeId>,
        body: Request,
    ) {
        let rpc = Outgoing {
            op,
            purpose,
            addr: addr.to_string(),
            to_id,
            body,
            parent: tracing::Span::current(),
            round: None,
        };
        match self.flow.offer(rpc) {
            Admit::Send(rpc) => self.transmit(rpc),
            Admit::Queued => {}
            Admit::Refused(rpc) => {
                let why = "this node's outbound queue is full".to_string();
                let _ = self.events.send(Event::Rpc(Box::new(RpcDone {
                    op: rpc.op,
                    purpose: rpc.purpose,
                    to_id: rpc.to_id,
                    result: Err(TransportError::NotSent(rpc.addr.clone(), why)),
                    addr: rpc.addr,
                    sent: false,
                    elapsed: Duration::ZERO,
                })));
            }
        }
    }

    /// Sends an RPC that holds a flow-control slot. Every RPC is bounded by the RPC timeout
    /// here, whatever the transport does, so a slot always comes back.
    fn transmit(&self, rpc: Outgoing) {
        let span = trace::rpc_span(
            &rpc.parent,
            &self.core.id(),
            &rpc.body,
            &rpc.addr,
            rpc.to_id,
            rpc.round,
        );
        let env = Envelope {
            sender: self.core.me().clone(),
            network_id: self.cfg.network_id.clone(),
            body: rpc.body,
        };
        let fut = self.transport.send(&rpc.addr, env);
        let timeout = self.cfg.params.rpc_timeout;
        let events = self.events.clone();
        let (op, purpose, to_id, addr) = (rpc.op, rpc.purpose, rpc.to_id, rpc.addr);
        let traced = span.clone();
        let rpc = async move {
            let sent_at = tokio::time::Instant::now();
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout(addr.clone())),
            };
            trace::rpc_done(&traced, &result);
            let _ = events.send(Event::Rpc(Box::new(RpcDone {
                op,
                purpose,
                to_id,
                addr,
                result,
                sent: true,
                elapsed: sent_at.elapsed(),
            })));
        };
        tokio::spawn(rpc.instrument(span));
    }

    /// A slot came back: send what waits in the outbox, then resume parked lookups.
    pub fn release_slot(&mut self) {
        self.flow.finished();
        while let Some(rpc) = self.flow.next_queued() {
            self.transmit(rpc);
        }
        while let Some(op) = self.flow.next_parked() {
            self.advance(op);
        }
    }

    /// Updates the routing table from a finished RPC: who answered, who failed.
    pub fn learn_from_rpc(&mut self, done: &RpcDone) {
        let (now, wall) = (self.now(), self.wall());
        match &done.result {
            Ok(reply) => {
                if matches!(done.purpose, Purpose::Lookup) {
                    self.round_trips.observe(done.elapsed);
                }
                if let Some(expected) = done.to_id
                    && expected != reply.responder.id
                    && self
                        .core
                        .routing()
                        .entry(&expected)
                        .is_some_and(|e| *e.contact.addr == *done.addr)
                {
                    // Another node now answers at the address where this node knew `expected`:
                    // the old one is gone. (An address some peer merely claimed for it proves
                    // nothing.)
                    self.core.routing_mut().remove(&expected);
                }
                if reply.responder.id != self.core.id() {
                    let responder = reply.responder.clone();
                    let effects = self.core.on_reply(responder, &done.addr, now, wall);
                    self.perform(effects);
                }
            }
            Err(e) => {
                debug!(error = %e, "peer RPC failed");
                if let Some(id) = done.to_id
                    && e.peer_alive() == Some(false)
                {
                    self.core.on_failure(&id);
                }
            }
        }
    }

    /// Starts a lookup and drives it as far as it can go.
    pub fn start_lookup(&mut self, target: NodeId, mode: Mode, then: AfterLookup) {
        let seeds = self
            .core
            .routing()
            .lookup_seeds(&target, self.core.params().k);
        self.start_lookup_from(target, seeds, mode, |l| l, then);
    }

    /// A FIND_VALUE lookup that goes on until `records` contacts returned the record (see
    /// [`Lookup::wanting`]). It starts among holders ([`Lookup::beside_a_holder`]) when this
    /// node holds a replica of the key (`holds_replica`), or when its `records` closest seeds
    /// are likely replicas ([`RoutingTable::likely_replicas`]). Its spare request is hedged
    /// ([`Lookup::hedged`]) by the round trips seen so far.
    ///
    /// [`RoutingTable::likely_replicas`]: crate::kad::routing::RoutingTable::likely_replicas
    pub fn start_read(
        &mut self,
        target: NodeId,
        records: usize,
        holds_replica: bool,
        then: AfterLookup,
    ) {
        let routing = self.core.routing();
        let seeds = routing.lookup_seeds(&target, self.core.params().k);
        let likely = routing.likely_replicas(&target, &seeds) >= records;
        let hedge = self.round_trips.hedge(self.core.params().rpc_timeout);
        let shape = |l: Lookup| {
            let l = l.wanting(records).beside_a_holder(holds_replica || likely);
            match hedge {
                Some(after) => l.hedged(after),
                None => l,
            }
        };
        self.start_lookup_from(target, seeds, Mode::FindValue, shape, then);
    }

    /// Refreshes bucket `index` (paper section 2.3): a node lookup for a random id in its
    /// range, started as [`RoutingTable::refresh_seeds`] says.
    ///
    /// [`RoutingTable::refresh_seeds`]: crate::kad::routing::RoutingTable::refresh_seeds
    pub fn refresh_bucket(&mut self, index: usize) {
        let target = self.core.id().random_in_bucket(index, &mut self.rng);
        let k = self.core.params().k;
        let seeds = self.core.routing().refresh_seeds(index, &target, k);
        self.start_lookup_from(target, seeds, Mode::FindNode, |l| l, AfterLookup::Refresh);
    }

    fn start_lookup_from(
        &mut self,
        target: NodeId,
        seeds: Vec<Contact>,
        mode: Mode,
        shape: impl FnOnce(Lookup) -> Lookup,
        then: AfterLookup,
    ) {
        let now = self.now();
        let p = self.core.params().clone();
        // A survey must hear from each of the k closest: when the seeds are all of them that
        // this node could know of, it asks them at once (`Lookup::all_at_once`).
        let seeds_cover = mode == Mode::Survey && self.core.routing().covers(&target, &seeds);
        self.core.routing_mut().mark_lookup(&target, now);
        let lookup = Lookup::new(
            self.core.id(),
            target,
            seeds,
            p.k,
            p.alpha,
            p.rpc_timeout,
            mode,
        )
        .with_deadline(now + self.cfg.lookup_timeout)
        .with_query_cap(self.cfg.lookup_max_queries)
        .with_disjoint_paths(self.cfg.lookup_disjoint_paths);
        let lookup = shape(lookup);
        // A put's conditional STOREs do the survey's last round (`kad::write`): its lookup
        // ends at the first answer from one of the alpha closest it knows.
        let lookup = match then {
            AfterLookup::Write {
                conditional: true, ..
            } => lookup.until_converged().at_first_near_answer(true),
            _ => lookup
                .all_at_once(seeds_cover)
                .at_first_near_answer(mode == Mode::Survey),
        };
        let trace = LookupTrace::start(self.core.id(), target, mode);
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            id,
            Op::Lookup {
                lookup: Box::new(lookup),
                then,
                wait_until: None,
                trace,
            },
        );
        self.advance(id);
    }

    /// Polls a lookup: sends what it asks for, or finishes it.
    pub fn advance(&mut self, id: u64) {
        let now = self.now();
        loop {
            let may_send = self.flow.lookup_may_send();
            let Some(Op::Lookup {
                lookup,
                wait_until,
                trace,
                ..
            }) = self.ops.get_mut(&id)
            else {
                return;
            };
            if !may_send {
                // No slot: ask for nothing until one frees (see `flow`).
                self.flow.park(id);
                return;
            }
            match lookup.poll(now) {
                Poll::Query(contact) => {
                    let body = match lookup.mode() {
                        Mode::FindNode => Request::FindNode {
                            target: lookup.target(),
                            count: lookup.ask(),
                        },
                        Mode::FindValue | Mode::Survey => Request::FindValue {
                            key: lookup.target(),
                            count: lookup.ask(),
                            omit_value: lookup.omit_value(),
                        },
                    };
                    let round = lookup.round_of(&contact.id).unwrap_or(1);
                    let parent = trace.query(round);
                    self.flow.take_slot();
                    self.transmit(Outgoing {
                        op: Some(id),
                        purpose: Purpose::Lookup,
                        addr: contact.addr.to_string(),
                        to_id: Some(contact.id),
                        body,
                        parent,
                        round: Some(round),
                    });
                }
                Poll::Wait(t) => {
                    *wait_until = t;
                    return;
                }
                Poll::Done => {
                    let Some(Op::Lookup {
                        lookup,
                        then,
                        trace,
                        ..
                    }) = self.ops.remove(&id)
                    else {
                        return;
                    };
                    let mode = lookup.mode();
                    let visits = lookup.visits();
                    let outcome = lookup.finish();
                    let found = outcome.found.is_some();
                    self.recent
                        .record(outcome.target, mode.label(), visits, found);
                    self.metrics.observe_lookup(mode, &outcome);
                    let started_by = trace.finish(&outcome);
                    self.finished.push((outcome, then, started_by));
                    return;
                }
            }
        }
    }

    pub fn new_op(&mut self, op: Op) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(id, op);
        id
    }
}
