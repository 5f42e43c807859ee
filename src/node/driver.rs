//! The driver task: the event loop, RPC plumbing and the table of running operations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::maintenance::{JoinState, Published};
use super::ops::{AfterLookup, Op, Purpose};
use super::{Command, NodeConfig};
use crate::kad::lookup::{Lookup, Mode, Poll};
use crate::kad::store::unix_us;
use crate::kad::{
    Contact, Core, Effect, Envelope, MemoryStore, NodeId, Reply, Request, StoreLimits,
};
use crate::net::{Inbound, Transport, TransportError};

/// The channels and settings a driver starts from.
pub(crate) struct Parts {
    pub cfg: NodeConfig,
    pub transport: Arc<dyn Transport>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub commands: mpsc::Receiver<Command>,
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
    pub ops: HashMap<u64, Op>,
    pub next_op: u64,
    pub events: mpsc::UnboundedSender<Event>,
    pub joined: watch::Sender<bool>,
    pub join: JoinState,
    pub published: HashMap<NodeId, Published>,
    pub pinging: HashSet<NodeId>,
    /// When stale contacts were last pinged (maintenance).
    pub last_stale_probe: Option<Instant>,
    pub last_version: u64,
    pub started: Instant,
    pub rng: StdRng,
    pub tick: Duration,
}

/// Runs a node until `shutdown` completes.
pub(crate) async fn run(parts: Parts, shutdown: impl std::future::Future<Output = ()> + Send) {
    let Parts {
        cfg,
        transport,
        mut inbound,
        mut commands,
        joined,
    } = parts;
    let now = Instant::now();
    let limits = StoreLimits {
        max_value_bytes: cfg.max_value_bytes,
        max_records: cfg.max_records,
    };
    let incarnation = crate::kad::store::unix_ms(SystemTime::now());
    let me = Contact::new(cfg.id, cfg.addr.clone()).with_incarnation(incarnation);
    let core = Core::new(
        me,
        cfg.network_id.clone(),
        cfg.params.clone(),
        Box::new(MemoryStore::new(limits)),
        now,
    );
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let tick = maintenance_tick(&cfg);
    let mut d = Driver {
        core,
        cfg,
        transport,
        ops: HashMap::new(),
        next_op: 0,
        events: events_tx,
        joined,
        join: JoinState::default(),
        published: HashMap::new(),
        pinging: HashSet::new(),
        last_stale_probe: None,
        last_version: 0,
        started: now,
        rng: StdRng::from_os_rng(),
        tick,
    };
    info!(node = %d.core.id(), addr = %d.cfg.addr, network = %d.cfg.network_id, "node starting");
    d.start_join();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let wake = d.next_wake().map(tokio::time::Instant::from_std);
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(ev) = events_rx.recv() => d.on_event(ev),
            Some(req) = inbound.recv() => d.on_inbound(req),
            Some(cmd) = commands.recv() => d.on_command(cmd),
            _ = ticker.tick() => d.maintenance(),
            _ = sleep => d.on_wake(),
        }
    }
    let _ = d.joined.send(false);
    info!(node = %d.core.id(), "node stopped");
}

/// How often maintenance runs: a tenth of the shortest interval, between 50 ms and 60 s.
fn maintenance_tick(cfg: &NodeConfig) -> Duration {
    let shortest = [
        cfg.refresh_interval,
        cfg.replicate_interval,
        cfg.republish_interval,
        cfg.record_ttl,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::from_secs(60));
    (shortest / 10).clamp(Duration::from_millis(50), Duration::from_secs(60))
}

impl Driver {
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    pub fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    /// A version greater than any this node issued before (publisher clock, microseconds).
    pub fn next_version(&mut self) -> u64 {
        let v = unix_us(self.wall()).max(self.last_version + 1);
        self.last_version = v;
        v
    }

    pub fn is_joined(&self) -> bool {
        *self.joined.borrow()
    }

    fn next_wake(&self) -> Option<Instant> {
        let lookups = self.ops.values().filter_map(|op| match op {
            Op::Lookup { wait_until, .. } => *wait_until,
            _ => None,
        });
        lookups
            .chain(self.join.retry_at)
            .chain(self.join.post_refresh_at)
            .min()
    }

    fn on_wake(&mut self) {
        let now = self.now();
        let due: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| matches!(op, Op::Lookup { wait_until: Some(t), .. } if *t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.advance(id);
        }
        if self.join.post_refresh_at.is_some_and(|t| t <= now) {
            self.join.post_refresh_at = None;
            self.join.post_refresh_done = true;
            self.refresh_beyond_closest_neighbour();
        }
        if self.join.retry_at.is_some_and(|t| t <= now) {
            self.join.retry_at = None;
            self.bootstrap(false);
        }
    }

    fn on_inbound(&mut self, req: Inbound) {
        let Inbound { envelope, reply } = req;
        debug!(rpc = envelope.body.name(), from = %envelope.sender.addr, "peer request");
        let (now, wall) = (self.now(), self.wall());
        let (result, effects) = self.core.handle(envelope, now, wall);
        let _ = reply.send(result);
        self.perform(effects);
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
                Effect::ReplicateDue => self.replicate_due(),
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
    pub fn send(&self, op: Option<u64>, purpose: Purpose, to: &Contact, body: Request) {
        self.send_to(op, purpose, &to.addr, Some(to.id), body);
    }

    /// Sends a request to an address whose node id may be unknown.
    pub fn send_to(
        &self,
        op: Option<u64>,
        purpose: Purpose,
        addr: &str,
        to_id: Option<NodeId>,
        body: Request,
    ) {
        let env = Envelope {
            sender: self.core.me().clone(),
            network_id: self.cfg.network_id.clone(),
            body,
        };
        let fut = self.transport.send(addr, env);
        let events = self.events.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            let result = fut.await;
            let _ = events.send(Event::Rpc(Box::new(RpcDone {
                op,
                purpose,
                to_id,
                addr,
                result,
            })));
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Rpc(done) => self.on_rpc_done(*done),
            Event::Resolved { result, rejoin } => self.on_resolved(result, rejoin),
        }
    }

    fn on_rpc_done(&mut self, done: RpcDone) {
        let (now, wall) = (self.now(), self.wall());
        match &done.result {
            Ok(reply) => {
                if let Some(expected) = done.to_id
                    && expected != reply.responder.id
                {
                    // Another node now answers at that address: the old one is gone.
                    self.core.routing_mut().remove(&expected);
                }
                if reply.responder.id != self.core.id() {
                    let effects = self.core.on_reply(reply.responder.clone(), now, wall);
                    self.perform(effects);
                }
            }
            Err(e) => {
                debug!(error = %e, "peer RPC failed");
                if let Some(id) = done.to_id {
                    self.core.on_failure(&id);
                }
            }
        }
        self.dispatch(done);
    }

    /// Starts a lookup and drives it as far as it can go.
    pub fn start_lookup(&mut self, target: NodeId, mode: Mode, then: AfterLookup) {
        let seeds = self
            .core
            .routing()
            .lookup_seeds(&target, self.core.params().k);
        self.start_lookup_from(target, seeds, mode, then);
    }

    /// Refreshes bucket `index` (paper section 2.3): a node lookup for a random id in its
    /// range, started as [`RoutingTable::refresh_seeds`] says.
    ///
    /// [`RoutingTable::refresh_seeds`]: crate::kad::routing::RoutingTable::refresh_seeds
    pub fn refresh_bucket(&mut self, index: usize) {
        let target = self.core.id().random_in_bucket(index, &mut self.rng);
        let k = self.core.params().k;
        let seeds = self.core.routing().refresh_seeds(index, &target, k);
        self.start_lookup_from(target, seeds, Mode::FindNode, AfterLookup::Refresh);
    }

    fn start_lookup_from(
        &mut self,
        target: NodeId,
        seeds: Vec<Contact>,
        mode: Mode,
        then: AfterLookup,
    ) {
        let now = self.now();
        let p = self.core.params().clone();
        self.core.routing_mut().mark_lookup(&target, now);
        let lookup = Lookup::new(
            self.core.id(),
            target,
            seeds,
            p.k,
            p.alpha,
            p.rpc_timeout,
            mode,
        );
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            id,
            Op::Lookup {
                lookup: Box::new(lookup),
                then,
                wait_until: None,
            },
        );
        self.advance(id);
    }

    /// Polls a lookup: sends what it asks for, or finishes it.
    pub fn advance(&mut self, id: u64) {
        let now = self.now();
        loop {
            let Some(Op::Lookup {
                lookup, wait_until, ..
            }) = self.ops.get_mut(&id)
            else {
                return;
            };
            match lookup.poll(now) {
                Poll::Query(contact) => {
                    let body = match lookup.mode() {
                        Mode::FindNode => Request::FindNode {
                            target: lookup.target(),
                        },
                        Mode::FindValue | Mode::Survey => Request::FindValue {
                            key: lookup.target(),
                        },
                    };
                    self.send(Some(id), Purpose::Lookup, &contact, body);
                }
                Poll::Wait(t) => {
                    *wait_until = t;
                    return;
                }
                Poll::Done => {
                    let Some(Op::Lookup { lookup, then, .. }) = self.ops.remove(&id) else {
                        return;
                    };
                    let outcome = lookup.finish();
                    self.after_lookup(outcome, then);
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
