//! Joining, and the periodic work of the paper: bucket refresh, replication and expiry
//! (sections 2.3 and 2.5).
//!
//! Join: resolve `P2P_REMOTE_HOST` (a name, or a comma-separated list of names) to every
//! address it stands for, ping them all, learn
//! whoever answers, look up this node's own id, then refresh every bucket farther than the
//! closest neighbour. While nobody answers, retry with exponential backoff (never give up).
//! A name that resolves only to this node, three times in a row, means this node is the
//! first: it creates the network. A joined node re-resolves the name every `rebootstrap_interval` and pings any
//! address it does not know, so that nodes which started apart (or were partitioned) merge
//! into one network. An address counts as known when a live contact advertises it or when
//! the node that answered a ping there is a live contact (on Kubernetes the name resolves to
//! pod IPs and nodes advertise DNS names: without that second rule every node would ping every
//! pod, and look itself up, at every re-bootstrap).
//!
//! Implementation notes (departures from the paper):
//! - The join's self-lookup and bucket refresh run a second time [`POST_JOIN_REFRESH`] (to
//!   twice that, at random) later (nodes that joined at the same moment only learn each
//!   other then), and empty buckets whose range should hold nodes (judging by the
//!   neighbourhood's density: `RoutingTable::gap_buckets`) are refreshed every
//!   `refresh_interval / 60`: nodes that start together otherwise keep blind spots for an
//!   hour. The random share of the delay, and the first maintenance tick's falling anywhere
//!   in the second tick's span (`event_loop`), keep nodes that started together from
//!   refreshing in lockstep: a simulation's 3,000 nodes, built in one simulated instant, all
//!   repeated their refreshes at once, and its memory peaked at 874 MB instead of 344 MB
//!   (the tick's phase alone did not lower the peak, only what stayed after it).
//! - A full bucket is refreshed by a PING of its least-recently seen contact, not by a
//!   lookup (`RoutingTable::refresh_probe`); only if that contact fails does the bucket get
//!   the paper's refresh lookup. A full bucket has no room for what a lookup would find, and
//!   the number of full buckets grows with log n: a lookup for each made a quiet network's
//!   traffic grow by about 0.5 messages per node per minute with each doubling (3.3 at 125
//!   nodes, 5.1 at 1,000); with the PING it is 2.4 and 3.1. Buckets with room (the few
//!   nearest this node, whose number does not grow with the network) are still looked up.
//!   For the same reason the join's refresh of every bucket beyond the closest neighbour
//!   (and its repeat) skips the buckets that are already full: a 1,000-node simulation with
//!   churn sends 12 % fewer messages, and finds as many of its lookups' true k closest.
//!   The price: a dead contact elsewhere in a full bucket stays until some RPC to it fails,
//!   which in a quiet network is rare. After an hour in which 30 % of 10,000 simulated nodes
//!   left and as many joined, 24 % of the entries in 200 nodes' buckets were dead (mostly in
//!   the far, full buckets) while their replacement caches held live contacts, and 3-5 % of
//!   lookups took 5 rounds or more. Pinging each minute the least-recently seen contact of
//!   every full bucket whose oldest contact was last heard from over 10 minutes ago cut those
//!   lookups by about half (52 -> 30 and 47 -> 21 of 1,000), at 4.8 idle messages per node
//!   per minute instead of 0.7: not done. In those 5-round lookups the fifth round is
//!   mostly (41 of 59 in one run) nothing but contacts that had left (most 5 to 50 minutes
//!   before), named by fourth-round peers near the target whose RPCs to them had not yet
//!   failed the [`MAX_FAILURES`](crate::kad::routing::MAX_FAILURES) times after which a
//!   contact is no longer named. Hiding such contacts did not help (10,000 nodes, 30 % churn,
//!   seed 1; 46-59 such lookups in five runs without a change): leaving contacts whose last
//!   RPC failed out of FIND_NODE answers, 66 (70 when deeper contacts filled their places);
//!   that and pinging each minute the 2 or 4 least-recently seen of this node's k + k/2
//!   closest contacts, 60 and 62 (at 2.7 and 4.7 idle messages per node per minute). A dead
//!   contact named in answers is queried by every lookup near it, and each failed query
//!   counts against it in the table of that lookup's node (which replaces it when a
//!   replacement waits); hidden from answers, it stays in every table until that node's own
//!   RPCs to it fail. What did help was elsewhere: most 5-round lookups had started slowly
//!   (their first hops gained 1 or 2 bits, not 4), because a joining node's far buckets
//!   held the k closest to one random id each; spreading full buckets over their range
//!   (`crate::kad::routing`'s notes) cut them from 55 to 8 of 1,000 at seed 1.
//!   What is left of that tail (11-19 of 1,000 lookups at seeds 1 and 2, varying from run
//!   to run) is again mostly dead contacts: in 17 of 19 such lookups the fifth round queried
//!   nothing but nodes that had left, named by fourth-round peers that had never sent them
//!   an RPC since (no failure counted) and had last heard from them 10 to 60 minutes
//!   before. Two ways to have those peers notice sooner did not help (one run per seed):
//!   pinging, with each FIND_NODE or FIND_VALUE answer, the first contact it names that was
//!   not heard from for 10 minutes, 14 and 12 lookups (idle traffic 0.69 -> 0.93 messages
//!   per node per minute); pinging each minute the least-recently seen of the node's k
//!   closest contacts when older than 10 minutes, and leaving contacts that failed since
//!   they were last heard from, over 10 minutes ago, out of answers, 21 and 18 (idle 1.1).
//! - An empty bucket's refresh starts from the contacts of farther buckets, not from this
//!   node's neighbours (see `RoutingTable::refresh_seeds`): when a whole neighbourhood missed
//!   the same range, a lookup through the neighbours never leaves them. When such a range
//!   opens (a first contact in an empty bucket), the records held for keys in it are
//!   replicated at once (`Core::observe`): they were placed without their true neighbours.
//! - Records stored by a STORE from a peer are not replicated by this node during the next
//!   replicate interval (the paper's optimisation in section 2.5), tracked per record.
//! - Stale contacts (section 4.1: kept, unused) are pinged, so peers that were unreachable
//!   for a while come back into use without waiting for them to send a request first. The
//!   first ping comes on the gap refresh's cadence; each one that fails doubles the wait for
//!   the next, up to the refresh interval (`RoutingTable::stale_due`). A contact that left
//!   for good stays in its bucket until a replacement comes (section 4.1), and was pinged
//!   every minute for as long as it stayed there: after an hour of 30 % churn that was most
//!   of the background traffic. `kademlia simulate --churn 0.3 --lookups 1000 --keys 200
//!   --idle-minutes 10 --seed 1`, messages per node per minute after the churn, every minute
//!   against backing off: 4.70 and 1.76 at 10,000 nodes, 4.67 and 1.72 at 1,000 (with
//!   `--lookups 200 --keys 50`), 5.59 and 2.32 at 200; lookups found their nodes as often
//!   (99.8 % at 10,000 both ways) and no key was lost.
//! - There is no republishing by the original publisher (section 2.5): records live until
//!   deleted or until the TTL their writer gave, and every holder replicates them hourly
//!   (see `crate::kad`'s notes). A holder whose replication STORE meets a newer version
//!   fetches it (`repair`), so a node that missed a write or delete catches up.
//! - Refresh and replication are jobs in a queue that runs a few lookups at a
//!   time (`jobs`); the paper starts them all at once. Records due for replication are
//!   queued as room allows; the rest stay due. A range that just opened makes its records
//!   due, but the store is scanned for them once per burst of openings
//!   (`REPLICATE_SCAN_DELAY`), not once per opening.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::driver::{Driver, Event, RpcDone};
use super::jobs::Job;
use super::state::{AfterLookup, Op, Purpose};
use crate::kad::lookup::{Mode, Outcome};
use crate::kad::store::unix_ms;
use crate::kad::{Contact, Key, Record, Request, replication};
use crate::net::TransportError;

/// First wait before retrying a failed bootstrap.
const BOOTSTRAP_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// After joining, the self-lookup and the bucket refresh run once more this much later (up to
/// twice as much, at random): nodes that started at the same moment may not have been known
/// to anyone during the first ones.
pub(crate) const POST_JOIN_REFRESH: Duration = Duration::from_secs(5);
/// Resolutions in a row that must find only this node before it creates a network.
const SELF_ONLY_BEFORE_CREATE: u32 = 3;
/// Looks for records due for replication at most this often.
const REPLICATE_SCAN_MIN: Duration = Duration::from_millis(50);
/// Stale contacts pinged per probe round (closest to this node first).
const STALE_PROBE_BATCH: usize = 20;

impl Driver {
    pub(crate) fn start_join(&mut self) {
        match self.cfg.remote_host.clone() {
            None if self.saved_contacts.is_empty() => {
                info!(node = %self.core.id(), "P2P_REMOTE_HOST is empty: created a new network");
                let _ = self.joined.send(true);
            }
            None => {
                info!(node = %self.core.id(), saved = self.saved_contacts.len(), "rejoining through the contacts saved in the data dir");
                self.bootstrap(false);
            }
            Some(host) => {
                info!(node = %self.core.id(), remote = %host, "joining a network");
                self.bootstrap(false);
            }
        }
    }

    /// Resolves `P2P_REMOTE_HOST`; the answer comes back as an event.
    pub(crate) fn bootstrap(&mut self, rejoin: bool) {
        if self.join.in_progress {
            return;
        }
        let Some(host) = self.cfg.remote_host.clone() else {
            // No name to resolve: a restarted creator rejoins through its saved contacts.
            if !rejoin && !self.saved_contacts.is_empty() {
                self.join.in_progress = true;
                self.join.attempts += 1;
                self.join.last_bootstrap = Some(self.now());
                self.on_resolved(Ok(Vec::new()), false);
            }
            return;
        };
        self.join.in_progress = true;
        self.join.attempts += 1;
        self.join.last_bootstrap = Some(self.now());
        // A comma-separated list is the union of its names; unresolvable names are skipped.
        let lookups: Vec<_> = host
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| self.transport.resolve(n))
            .collect();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut addrs = Vec::new();
            let mut first_err = None;
            for r in futures::future::join_all(lookups).await {
                match r {
                    Ok(a) => addrs.extend(a),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            addrs.sort();
            addrs.dedup();
            let result = match first_err {
                Some(e) if addrs.is_empty() => Err(e),
                _ => Ok(addrs),
            };
            let _ = events.send(Event::Resolved { result, rejoin });
        });
    }

    pub(crate) fn on_resolved(
        &mut self,
        result: Result<Vec<String>, TransportError>,
        rejoin: bool,
    ) {
        let mut addrs = match result {
            Ok(addrs) => addrs,
            // Saved contacts are pinged even when the name does not resolve.
            Err(e) if !rejoin && !self.saved_contacts.is_empty() => {
                warn!(error = %e, "cannot resolve P2P_REMOTE_HOST: trying the saved contacts");
                Vec::new()
            }
            Err(e) => {
                self.join.in_progress = false;
                if rejoin {
                    debug!(error = %e, "re-bootstrap: cannot resolve P2P_REMOTE_HOST");
                } else {
                    self.retry_join(&format!("{e}"));
                }
                return;
            }
        };
        if !rejoin {
            addrs.extend(self.saved_contact_addrs());
            addrs.sort();
            addrs.dedup();
        }
        self.join.aliases.retain(|a, _| addrs.contains(a));
        let others: Vec<String> = addrs
            .into_iter()
            .filter(|a| *a != self.cfg.addr && !self.join.own_addrs.contains(a))
            .collect();
        if !others.is_empty() {
            self.join.self_only = 0;
        }
        if others.is_empty() && !rejoin {
            self.found_only_self();
            return;
        }
        let targets: Vec<String> = if rejoin {
            // Stale contacts count as unknown: pinging them again is how a node that lost
            // touch with everyone finds its way back. An address is known when a live contact
            // advertises it, or when the node that answered there before is a live contact;
            // contacts waiting in a replacement cache count too (a full bucket's spread moves
            // live ones there: a node whose bootstrap contact was moved otherwise looked
            // itself up and refreshed its buckets at every re-bootstrap).
            // (Compared in place, nothing copied: this runs every re-bootstrap interval.)
            let routing = self.core.routing();
            let known = |a: &String| {
                routing.live_or_waiting().any(|c| *c.addr == **a)
                    || self
                        .join
                        .aliases
                        .get(a)
                        .and_then(|id| routing.proven(id))
                        .is_some_and(|e| !e.is_stale())
            };
            others.into_iter().filter(|a| !known(a)).collect()
        } else {
            others
        };
        if targets.is_empty() {
            self.join.in_progress = false;
            return;
        }
        debug!(count = targets.len(), rejoin, "pinging bootstrap addresses");
        let op = self.new_op(Op::Bootstrap {
            selves: 0,
            pending: targets.len(),
            answered: 0,
            rejoin,
        });
        for addr in targets {
            self.send_to(Some(op), Purpose::Bootstrap, &addr, None, Request::Ping);
        }
    }

    pub(crate) fn on_bootstrap_ping(&mut self, done: RpcDone) {
        let Some(op) = done.op else { return };
        let me = self.core.id();
        let Some(Op::Bootstrap {
            pending,
            answered,
            selves,
            ..
        }) = self.ops.get_mut(&op)
        else {
            return;
        };
        *pending -= 1;
        match &done.result {
            // The name also stands for this node (it advertises another form of its address).
            Ok(reply) if reply.responder.id == me => {
                *selves += 1;
                self.join.own_addrs.insert(done.addr.clone());
            }
            Ok(reply) => {
                *answered += 1;
                let id = reply.responder.id;
                self.join.aliases.insert(done.addr.clone(), id);
            }
            Err(e) => debug!(error = %e, "bootstrap ping failed"),
        }
        if *pending > 0 {
            return;
        }
        let Some(Op::Bootstrap {
            answered,
            selves,
            rejoin,
            ..
        }) = self.ops.remove(&op)
        else {
            return;
        };
        if answered > 0 || (!rejoin && !self.core.routing().is_empty()) {
            self.start_lookup(self.core.id(), Mode::FindNode, AfterLookup::Join);
        } else if selves > 0 && !rejoin {
            self.found_only_self();
        } else {
            self.join.in_progress = false;
            if !rejoin && self.cfg.remote_host.is_none() {
                // The creator restarted and none of its saved contacts answered.
                info!(node = %self.core.id(), "no saved contact answered: created a new network");
                let _ = self.joined.send(true);
            } else if !rejoin {
                self.retry_join("no bootstrap address answered");
            }
        }
    }

    /// The bootstrap name led only to this node. Peers starting at the same moment may not be
    /// in DNS yet, so create a network only after this happened several times in a row.
    fn found_only_self(&mut self) {
        self.join.in_progress = false;
        if !self.core.routing().is_empty() {
            self.start_lookup(self.core.id(), Mode::FindNode, AfterLookup::Join);
            return;
        }
        self.join.self_only += 1;
        if self.join.self_only < SELF_ONLY_BEFORE_CREATE {
            self.retry_join("P2P_REMOTE_HOST resolves only to this node so far");
            return;
        }
        info!(node = %self.core.id(), "P2P_REMOTE_HOST resolves only to this node: created a new network");
        let _ = self.joined.send(true);
    }

    fn retry_join(&mut self, why: &str) {
        let next = if self.join.backoff.is_zero() {
            BOOTSTRAP_BACKOFF_MIN
        } else {
            self.join.backoff * 2
        };
        self.join.backoff = next.min(self.cfg.bootstrap_backoff_max);
        let wait = self.spread(self.join.backoff, 0.5..1.0);
        let host = self.cfg.remote_host.as_deref().unwrap_or_default();
        if self.join.self_only > 0 {
            info!(remote = %host, attempt = self.join.attempts, retry_in = ?wait, "{why}");
        } else {
            warn!(remote = %host, attempt = self.join.attempts, retry_in = ?wait, "cannot join yet: {why}");
        }
        self.join.retry_at = Some(self.now() + wait);
    }

    /// The self-lookup of a join finished.
    pub(crate) fn joined_lookup_done(&mut self, outcome: Outcome) {
        self.join.in_progress = false;
        if self.core.routing().is_empty() {
            self.retry_join("no peer answered the self-lookup");
            return;
        }
        self.join.backoff = Duration::ZERO;
        if !self.is_joined() {
            info!(node = %self.core.id(), peers = self.core.routing().len(), found = outcome.closest.len(), "joined the network");
            let _ = self.joined.send(true);
        } else {
            debug!(
                peers = self.core.routing().len(),
                "re-bootstrap merged new contacts"
            );
        }
        if self.join.post_refresh_at.is_none() && !self.join.post_refresh_done {
            // Between one and two times the delay, at random: nodes that joined together do
            // not repeat their refreshes all at the same moment.
            let wait = self.spread(POST_JOIN_REFRESH, 1.0..2.0);
            self.join.post_refresh_at = Some(self.now() + wait);
        }
        self.save_contacts();
        self.refresh_beyond_closest_neighbour();
    }

    /// The join's two steps again (paper section 2.3): a self-lookup, then the refresh of every
    /// bucket farther than the closest neighbour.
    pub(crate) fn repeat_join_lookups(&mut self) {
        self.jobs.push(Job::SelfLookup);
        self.refresh_beyond_closest_neighbour();
    }

    /// Paper section 2.3: refresh every bucket farther than the closest neighbour, except the
    /// full ones (their contacts were just learned, and they have no room for what a lookup
    /// would find: see the module's notes).
    pub(crate) fn refresh_beyond_closest_neighbour(&mut self) {
        let now = self.now();
        let lowest = self.core.routing().lowest_nonempty().unwrap_or(0);
        let highest = self.core.routing().highest_nonempty().unwrap_or(0);
        for index in (lowest + 1)..=highest {
            if self.core.routing().refresh_probe(index).is_some() {
                self.core.routing_mut().mark_refreshed(index, now);
            } else {
                self.jobs.push(Job::Refresh(index));
            }
        }
        self.run_jobs();
    }

    /// Starts queued maintenance jobs while fewer than the maximum run (see [`Jobs`]).
    pub(crate) fn run_jobs(&mut self) {
        while let Some(job) = self.jobs.start_next() {
            let wall = self.wall();
            match job {
                Job::Refresh(index) => self.refresh_bucket(index),
                Job::SelfLookup => {
                    self.start_lookup(self.core.id(), Mode::FindNode, AfterLookup::Refresh)
                }
                Job::Replicate(group) => {
                    let keys = self.replication_groups.remove(&group).unwrap_or_default();
                    let mut records: Vec<Record> = Vec::with_capacity(keys.len());
                    for key in &keys {
                        match self.core.store().get(key, wall) {
                            Some(s) if !s.cached => records.push(s.record.clone()),
                            _ => self.backlog.forget(key),
                        }
                    }
                    match records.first() {
                        // One lookup for the group, from its first key.
                        Some(first) => {
                            let target = first.key;
                            let then = AfterLookup::Replicate { records };
                            self.start_lookup(target, Mode::FindNode, then);
                        }
                        None => self.jobs.done(),
                    }
                }
            }
        }
    }

    /// A maintenance job's lookup finished: its slot goes to the next job.
    pub(crate) fn job_done(&mut self) {
        self.jobs.done();
        self.run_jobs();
    }

    /// Periodic work, every maintenance tick.
    pub(crate) fn maintenance(&mut self) {
        let (now, wall) = (self.now(), self.wall());
        self.save_contacts();
        let expired = self.core.store_mut().expire(wall);
        if expired > 0 {
            debug!(expired, "expired records");
        }
        if !self.is_joined() {
            return;
        }
        // Empty buckets whose range should hold nodes are likely blind spots (nodes that
        // joined after this node's refresh): look again well before the hour is up, and first.
        let gap_interval = (self.cfg.refresh_interval / 60).max(self.tick);
        let gaps = self.core.routing().gap_buckets(now, gap_interval);
        if !gaps.is_empty() {
            debug!(buckets = gaps.len(), "refreshing empty buckets");
        }
        // Bucket refresh (section 2.3).
        let stale = self
            .core
            .routing()
            .stale_buckets(now, self.cfg.refresh_interval);
        if !stale.is_empty() {
            debug!(buckets = stale.len(), "refreshing buckets");
        }
        for index in gaps {
            self.jobs.push(Job::Refresh(index));
        }
        for index in stale {
            match self.core.routing().refresh_probe(index) {
                // A full bucket: one PING instead of a lookup (a lookup if it fails).
                Some(lru) => {
                    self.core.routing_mut().mark_refreshed(index, now);
                    self.send(None, Purpose::RefreshProbe(index), &lru, Request::Ping);
                }
                None => {
                    self.jobs.push(Job::Refresh(index));
                }
            }
        }
        // Stale contacts are kept but unused (section 4.1); ping them on the same cadence, so
        // that peers which were only unreachable for a while come back into use.
        if self
            .last_stale_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= gap_interval)
        {
            self.last_stale_probe = Some(now);
            self.probe_stale(gap_interval);
        }
        self.replicate_due();
        self.run_jobs();
        // Merge with nodes behind P2P_REMOTE_HOST that this node does not know.
        if self.cfg.remote_host.is_some()
            && self
                .join
                .last_bootstrap
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.rebootstrap_interval)
        {
            self.bootstrap(true);
        }
    }

    /// The PING that stood for bucket `index`'s refresh came back: a contact that did not
    /// answer (its failure is already counted) leaves the bucket to a refresh lookup, as in
    /// the paper.
    pub(crate) fn on_refresh_probe(&mut self, index: usize, done: &RpcDone) {
        let alive = match &done.result {
            Ok(_) => true,
            Err(e) => e.peer_alive() == Some(true),
        };
        if !alive {
            self.jobs.push(Job::Refresh(index));
            self.run_jobs();
        }
    }

    /// Replication (section 2.5): records not refreshed by a STORE within the replicate
    /// interval are queued by group of nearby keys (one lookup per group, see
    /// [`crate::kad::replication`]), as many groups as the job queue has room for, to be
    /// stored again at the k closest nodes found when their turn comes.
    pub(crate) fn replicate_due(&mut self) {
        let wall = self.wall();
        let interval_ms = self.cfg.replicate_interval.as_millis() as u64;
        let cutoff = unix_ms(wall).saturating_sub(interval_ms);
        let spread_ms = interval_ms / replication::STAGGER_DIVISOR;
        let me = self.core.id();
        let reach = replication::reach_bits(self.core.routing());
        let bits = replication::group_bits(reach, self.cfg.params.k);
        let now_ms = unix_ms(wall);
        // Each due record with the moment it fell due (for the backlog's lag).
        let due: Vec<(Key, u64)> = self
            .core
            .store()
            .iter()
            .filter(|s| !s.cached && s.refreshed_at_ms <= cutoff)
            .filter_map(|s| {
                // Records marked due at once (`mark_due`: refreshed at 0) do not wait.
                if s.refreshed_at_ms == 0 {
                    return Some((s.record.key, now_ms));
                }
                let wait = interval_ms + replication::stagger(&me, &s.record.key, reach, spread_ms);
                let due_ms = s.refreshed_at_ms + wait;
                (due_ms <= now_ms).then_some((s.record.key, due_ms))
            })
            .collect();
        let (mut queued, mut left, mut left_oldest) = (0, 0, None::<u64>);
        for (key, due_ms) in due {
            let group = replication::group_of(&key, bits);
            // A group still waiting takes more keys; a new one needs room in the queue (the
            // keys of groups that find none stay due).
            if let Some(keys) = self.replication_groups.get_mut(&group) {
                keys.push(key);
            } else if self.jobs.push(Job::Replicate(group)) {
                self.replication_groups.insert(group, vec![key]);
            } else {
                left += 1;
                left_oldest = Some(left_oldest.map_or(due_ms, |o| o.min(due_ms)));
                continue;
            }
            self.core.store_mut().touch(&key, wall);
            self.backlog.queue(key, due_ms);
            queued += 1;
        }
        self.backlog.left_due(left, left_oldest);
        if queued > 0 {
            debug!(
                records = queued,
                groups = self.replication_groups.len(),
                "replicating records"
            );
        }
        // Holders' turns for one record lie spread_ms / k apart: look twice as often, or they
        // would fall due in the same look and replicate together.
        let k = self.cfg.params.k.max(1) as u32;
        let every = (self.cfg.replicate_interval / (4 * k)).max(REPLICATE_SCAN_MIN);
        self.next_replicate_scan = self.is_joined().then(|| self.now() + every);
        self.run_jobs();
    }

    /// Pings the stale contacts due this round (`RoutingTable::stale_due`; rounds are
    /// `interval` apart): an answer makes one live again, a failure keeps it stale (or hands
    /// its slot to a replacement) and doubles its wait for the next ping, up to the refresh
    /// interval.
    fn probe_stale(&mut self, interval: Duration) {
        let me = self.core.id();
        let round = self.stale_probe_round;
        self.stale_probe_round += 1;
        let longest = (self.cfg.refresh_interval.as_secs_f64() / interval.as_secs_f64()).max(1.0);
        let doublings = longest.log2().floor() as u32;
        let due = self.core.routing().stale_due(round, doublings);
        let mut stale: Vec<Contact> = due.cloned().collect();
        stale.sort_by_key(|c| c.id.distance(&me));
        stale.truncate(STALE_PROBE_BATCH);
        if !stale.is_empty() {
            debug!(contacts = stale.len(), "pinging stale contacts");
        }
        for c in stale {
            self.send(None, Purpose::Oneway, &c, Request::Ping);
        }
    }
}
