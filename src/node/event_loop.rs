//! The event loop of a node's driver task, and where each event goes.
//!
//! This is the top of the driver's layers: `state` (types) and `driver` (the state, RPC
//! plumbing, lookups, the store's commits) at the bottom; the handlers above them (`ops` for
//! client commands, `maintenance` for joining and the periodic work, `repair` for
//! replication's STOREs and outdated copies, `persist` for saved contacts), which use the
//! driver and never each other's callers; and this module, which owns the loop and routes
//! events, finished RPCs and finished lookups to the handlers. Nothing below calls up into
//! it: a lookup that finishes is queued (`Driver::finished`) and handed on by [`Driver::settle`]
//! at the end of the turn.

use std::time::{Duration, Instant};

use tracing::info;

use super::NodeConfig;
use super::driver::{Driver, Event, Parts, RpcDone};
use super::state::{AfterLookup, Op, Purpose};
use crate::kad::Response;
use crate::kad::lookup::Outcome;

/// Peer requests handled in one turn of the loop at most (their writes share one commit).
const INBOUND_BATCH: usize = 64;

/// Runs a node until `shutdown` completes.
pub(crate) async fn run(parts: Parts, shutdown: impl std::future::Future<Output = ()> + Send) {
    let Parts {
        cfg,
        transport,
        metrics,
        mut inbound,
        mut commands,
        joined,
    } = parts;
    let tick = maintenance_tick(&cfg);
    let (mut d, mut events_rx) = Driver::new(cfg, transport, metrics, joined, tick);
    info!(node = %d.core.id(), addr = %d.cfg.addr, network = %d.cfg.network_id, "node starting");
    d.start_join();
    d.settle();
    // The first tick falls anywhere in the second tick's span: nodes started together
    // (`docker compose up --scale`, a StatefulSet, a simulation's build) do not all refresh,
    // probe and replicate at the same moment, every tick after.
    let phase = d.spread(tick, 1.0..2.0);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, tick);
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
        // Not biased: under load, a steady stream of one kind (replies, peer requests) must
        // not starve the others (client commands, maintenance).
        tokio::select! {
            _ = &mut shutdown => break,
            Some(ev) = events_rx.recv() => d.on_event(ev),
            Some(req) = inbound.recv() => {
                // Requests that arrived together are handled together, so that their STOREs
                // share one commit to the data dir.
                d.on_inbound(req);
                for _ in 1..INBOUND_BATCH {
                    match inbound.try_recv() {
                        Ok(req) => d.on_inbound(req),
                        Err(_) => break,
                    }
                }
            }
            // A client call's span is current while its command is handled (`super::trace`).
            Some((cmd, span)) = commands.recv() => span.in_scope(|| d.on_command(cmd)),
            _ = ticker.tick() => d.maintenance(),
            _ = sleep => d.on_wake(),
        }
        d.settle();
        d.flush_store();
    }
    let _ = d.joined.send(false);
    d.flush_store();
    d.save_contacts();
    info!(node = %d.core.id(), "node stopped");
}

/// How often maintenance runs: a tenth of the shortest interval, between 50 ms and 60 s.
fn maintenance_tick(cfg: &NodeConfig) -> Duration {
    let shortest = [cfg.refresh_interval, cfg.replicate_interval]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(60));
    (shortest / 10).clamp(Duration::from_millis(50), Duration::from_secs(60))
}

impl Driver {
    fn next_wake(&self) -> Option<Instant> {
        let lookups = self.ops.values().filter_map(|op| match op {
            Op::Lookup { wait_until, .. } => *wait_until,
            _ => None,
        });
        lookups
            .chain(self.join.retry_at)
            .chain(self.join.post_refresh_at)
            .chain(self.replicate_scan_at)
            .chain(self.next_replicate_scan)
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
            self.repeat_join_lookups();
        }
        if self.join.retry_at.is_some_and(|t| t <= now) {
            self.join.retry_at = None;
            self.bootstrap(false);
        }
        let opened = self.replicate_scan_at.is_some_and(|t| t <= now);
        if opened || self.next_replicate_scan.is_some_and(|t| t <= now) {
            // Both are set again by `replicate_due` as needed: a past time left here would
            // wake the loop at once, again and again.
            self.replicate_scan_at = None;
            self.next_replicate_scan = None;
            self.replicate_due();
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Rpc(done) => self.on_rpc_done(*done),
            Event::Resolved { result, rejoin } => self.on_resolved(result, rejoin),
        }
    }

    fn on_rpc_done(&mut self, done: RpcDone) {
        self.learn_from_rpc(&done);
        let sent = done.sent;
        self.dispatch(done);
        if sent {
            self.release_slot();
        }
    }

    /// Hands every lookup that finished this turn to what waited for it (which may start and
    /// finish more).
    fn settle(&mut self) {
        while !self.finished.is_empty() {
            for (outcome, then, started_by) in std::mem::take(&mut self.finished) {
                started_by.in_scope(|| self.after_lookup(outcome, then));
            }
        }
    }

    fn after_lookup(&mut self, outcome: Outcome, then: AfterLookup) {
        match then {
            AfterLookup::Get {
                key,
                reply,
                started,
            } => self.finish_get(key, outcome, reply, started),
            AfterLookup::Write {
                record,
                reply,
                conditional,
            } => self.write_replicas(record, outcome, reply, conditional),
            AfterLookup::Locate { reply } => self.finish_locate(outcome, reply),
            AfterLookup::FindNode { reply } => self.finish_find_node(outcome, reply),
            AfterLookup::Join => self.joined_lookup_done(outcome),
            AfterLookup::Refresh => self.job_done(),
            AfterLookup::Replicate { records } => {
                let op = self.new_op(Op::Replicate {
                    records: records.into(),
                    closest: outcome.closest,
                    in_flight: 0,
                    handover: Default::default(),
                });
                if self.pump_replication(op) {
                    self.job_done();
                }
            }
        }
    }

    /// Routes a finished RPC to whatever was waiting for it.
    fn dispatch(&mut self, done: RpcDone) {
        match done.purpose {
            Purpose::Lookup => {
                let Some(op) = done.op else { return };
                let Some(Op::Lookup { lookup, trace, .. }) = self.ops.get_mut(&op) else {
                    return;
                };
                if let Some(round) = done.to_id.and_then(|id| lookup.round_of(&id)) {
                    trace.answered(round);
                }
                match (done.result, done.to_id) {
                    (Ok(reply), Some(id)) => {
                        let (closer, record) = match reply.body {
                            Response::Nodes { closer } => (closer, None),
                            Response::Value { record, closer } => (closer, record),
                            _ => (Vec::new(), None),
                        };
                        lookup.on_success(&id, closer, record);
                    }
                    (_, Some(id)) => lookup.on_failure(&id),
                    _ => {}
                }
                self.advance(op);
            }
            Purpose::Store => {
                if let Some(op) = done.op {
                    self.on_store_result(op, &done);
                }
            }
            Purpose::PingLru => {
                if let Some(id) = done.to_id {
                    self.pinging.remove(&id);
                    let alive = match &done.result {
                        Ok(_) => Some(true),
                        Err(e) => e.peer_alive(),
                    };
                    if let Some(alive) = alive {
                        let now = self.now();
                        self.core.on_ping_result(&id, alive, now);
                    }
                }
            }
            Purpose::Bootstrap => self.on_bootstrap_ping(done),
            Purpose::Replicate(key) => {
                if let Some(op) = done.op {
                    self.on_handover_reply(op, key, &done);
                }
                self.on_replicated(key, &done);
                if let Some(op) = done.op
                    && let Some(Op::Replicate { in_flight, .. }) = self.ops.get_mut(&op)
                {
                    *in_flight = in_flight.saturating_sub(1);
                    if self.pump_replication(op) {
                        self.job_done();
                    }
                }
            }
            Purpose::Adopt(key) => self.on_adopt(key, &done),
            // The answer, if any, was learned with every reply (`learn_from_rpc`).
            Purpose::Verify(addr) => {
                self.verifying.remove(&addr);
            }
            Purpose::RefreshProbe(index) => self.on_refresh_probe(index, &done),
            Purpose::Oneway => {}
        }
    }
}
