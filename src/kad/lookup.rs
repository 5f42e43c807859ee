//! The iterative node lookup as a state machine (paper section 2.3).
//!
//! The lookup never performs I/O. The driver asks [`Lookup::poll`] what to do next, sends the
//! RPCs it is told to, and feeds replies back with [`Lookup::on_success`] / [`Lookup::on_failure`].
//! At most `alpha` requests are in flight until the lookup converges: when the alpha closest
//! contacts still in the running have all answered (the paper's "a round of FIND_NODEs fails
//! to return a node any closer"), it sends to all of the k closest it has not queried at once,
//! as the paper does, and from then on queries every new candidate among the k closest as
//! soon as it is named. A request that outlives its timeout stops counting against `alpha`
//! (its late reply is still used). The lookup ends when the k closest contacts seen have all
//! answered or failed, or, for FIND_VALUE, at the first record found.
//!
//! Implementation notes (departures from the paper):
//! - The lookup keeps alpha requests in flight as answers come in rather than waiting for
//!   each round of alpha to finish, and it takes convergence to be the alpha closest having
//!   answered rather than a whole round without a closer node. With no lockstep rounds, a
//!   lookup's rounds ([`Outcome::rounds`]) are those of the paper's: a contact belongs to the
//!   round after the earliest-round peer that named it before it was queried (counting the
//!   round of whichever answer happened to arrive first overstated some: of 1,000 lookups
//!   among 10,000 simulated nodes, 14 went 5 rounds by that count and 7 by this one; with
//!   30 % churn, 58 and 54).
//! - A survey (a surveyed put's, a delete's or a locate's FIND_VALUE visit of the k closest)
//!   whose seeds are all of the key's k closest that this node could know of
//!   ([`Lookup::all_at_once`]; the driver asks `RoutingTable::covers`: the buckets around them
//!   are not full, so the table turned nobody away there) asks them all at once, where the
//!   paper asks alpha first and the rest once they answered. A survey has to hear from each of
//!   them anyway, so this costs no RPCs and saves that first round: in a network of k nodes or
//!   fewer (`docker compose up --scale node=20`) on every surveyed put; among 100 nodes on
//!   about a quarter of them. A closer node one of them names is still asked, so a table that
//!   missed one (a diversity cap turned it away) costs a round, as before. 20-node devnet
//!   (`kademlia devnet --nodes 20`, 1,000 puts at concurrency 1 through `kademlia bench`, builds
//!   alternated, three pairs): put p50 1.25-1.54 -> 1.17-1.33 ms, 647-756 -> 721-814
//!   puts/s, FIND_VALUEs a put 19.0 either way; 100 nodes: within the machine's noise.
//! - A survey whose seeds are not all of the k closest converges as soon as any one of its
//!   alpha closest candidates still in the running has answered
//!   ([`Lookup::at_first_near_answer`]), where the paper waits for all alpha: a peer that
//!   close to the key has the key's neighbourhood in its own unsplit buckets, so its answer
//!   already names the k closest, and the survey has to ask each of them anyway. In a
//!   100-node simulated network where each request costs its receiver 100 ms, 18 of 60 puts
//!   took four rounds or more before, 5 after (`sim_write_quorum`); 100-node devnet
//!   (`kademlia devnet --nodes 100`, 1,000 puts at concurrency 1): FIND_VALUEs a survey
//!   20.03 either way. A conditional put's lookup ([`Lookup::until_converged`]) ends at that
//!   first near answer, for the same reason: its STOREs go to the k closest seen, which that
//!   answer named. 100-node devnet (`kademlia devnet --nodes 100`, then `kademlia bench
//!   --puts 2000` at concurrency 1 and 32, six alternating pairs of builds): FIND_VALUEs a put
//!   6.4 -> 3.6, lookup rounds 1.62 -> 1.31, put p50 0.92-1.19 -> 0.86-1.06 ms (lower in 5 of
//!   6 pairs), puts/s at 32 in flight 1,289-1,760 -> 1,536-1,909 (higher in all 6). The put
//!   then waits for more STORE answers (fewer replicas answered its lookup), but those STOREs
//!   were sent anyway. Among 1,000 simulated nodes such puts still store at exactly their
//!   key's k closest (`sim_write_quorum`).
//! - A lookup may be given a deadline ([`Lookup::with_deadline`]; the driver uses the
//!   `lookup_timeout_ms` setting, [`LOOKUP_DEADLINE_TIMEOUTS`] RPC timeouts by default): when every request times out, the paper's
//!   lookup goes on for as many timeouts as it has candidates, holding its caller (and its
//!   share of the node's RPC slots) all that time. Past the deadline it ends with what it
//!   has and says so ([`Outcome::gave_up`]); callers must not take its `closest` for the
//!   true k closest.
//! - A lookup may be given a cap on the RPCs it sends ([`Lookup::with_query_cap`]); at the
//!   cap it ends as at the deadline. A peer that answers every query with fresh "closer"
//!   contacts otherwise keeps a lookup going until the deadline.
//! - A lookup asks each peer for k + k/2 contacts ([`Lookup::ask`], the `count` of a
//!   FIND_NODE or FIND_VALUE; the paper's replies carry k): under churn a peer's k closest
//!   hold contacts that left without notice, which it has not noticed yet, and they pushed
//!   live nodes at the edge of the k closest out of every reply (a 1,000-node simulation
//!   with 30 % churn found the true k closest in 88 % of lookups with k, 100 % with k + k/2).
//!   The lookup still ends when the k closest still in the running have answered, so the
//!   spares cost bytes, not RPCs, until contacts fail.
//! - A reply with more contacts than asked for is refused (the peer counts as failed, its contacts
//!   and record unused), and a lookup queries each address once: a second id at an address
//!   already in the lookup is skipped, so one host cannot feed it made-up ids that all lead
//!   back to itself.
//! - A lookup may run along several disjoint paths ([`Lookup::with_disjoint_paths`], from
//!   S/Kademlia, Baumgart & Mies 2007, section 4.4; the `lookup_disjoint_paths` setting):
//!   one lying peer then leads one path astray, not the lookup.
//! - A FIND_VALUE lookup may be asked to go on until several contacts returned the record
//!   ([`Lookup::wanting`]): a get then answers the newest of them, so one holder that missed
//!   a write or delete cannot answer for the key alone. A holder returns the record without
//!   contacts (paper section 2.3; `crate::kad::core`), so the further holders come from the
//!   contacts that non-holders named and from the lookup's own seeds: holders sit together,
//!   at the key, and a reply naming the nearest of them names the rest. Once it has found a
//!   record it keeps at most one request more in flight than the records it still wants,
//!   rather than alpha:
//!   a get wanting two copies sent a fourth FIND_VALUE whenever the first copy came back
//!   before the other two answers. `scripts/measure.sh`, 100 nodes, two runs of each:
//!   FIND_VALUEs per get 4.0-4.1 -> 3.1-3.4, gets/s at 32 in flight +13-14 %, rounds per get
//!   1.00-1.01 -> 1.01-1.09, get p50 at concurrency 1 unchanged (3.7-4.0 and 3.9-4.1 pings).
//!   A get among holders ([`Lookup::beside_a_holder`]) starts that way: on a node that holds
//!   a replica (it is itself one of the k closest, so its closest contacts are the other
//!   replicas), or whose closest contacts to the key lie nearer it than the node's own k-th
//!   closest contact lies to the node (then they are likely replicas too). In a network of
//!   k nodes or fewer (`docker compose up --scale node=20`) that is every get.
//! - A get's spare request is hedged ([`Lookup::hedged`]; `crate::node::rtt`): among holders
//!   it sends as many FIND_VALUEs as copies it still wants, and another in place of each that
//!   has gone unanswered for the smoothed round trip plus four deviations (TCP's
//!   retransmission timeout, RFC 6298), where the paper's lookup sends alpha at once. The
//!   spare sent at once covered a holder that is slow or silent; such a holder now costs a
//!   get that delay, and a get among healthy holders sends no spare. A holder that fails, or
//!   answers without the record, is replaced at once as before. 100-node devnet (`kademlia
//!   devnet`, 1,000 puts then gets through `kademlia bench`, the FIND_VALUEs the nodes served
//!   (`rpc_server_call_duration_seconds_count`) divided by the gets): 2.82-2.83 -> 1.86
//!   FIND_VALUEs a get, at concurrency 1 and 32. Gets right after 30 of 100 node processes
//!   stopped answering (`SIGNAL=STOP scripts/measure-kill.sh`, their connections open and
//!   silent): p99 2,011 -> 199 ms, max 6,017 -> 401 ms, 82 -> 880 gets/s; after 30 were
//!   killed (calls to them fail at once): p99 24.9 -> 23.4 ms, RPCs a get 3.9 -> 2.6.

use std::collections::{BTreeMap, HashSet, btree_map};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::id::{Distance, NodeId};
use super::message::Contact;
use super::store::Record;

/// What the lookup asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// FIND_NODE: the k closest nodes.
    FindNode,
    /// FIND_VALUE: stop at the first record (live or tombstone), or at the first
    /// [`Lookup::wanting`] records.
    FindValue,
    /// FIND_VALUE without stopping: visit the k closest and note who holds which version
    /// (used by Locate, and by Put/Delete to reach stale copies next to the key). It asks for
    /// metadata only (`omit_value`), and the records it reports carry no value.
    Survey,
}

impl Mode {
    /// `find_node`, `find_value` or `survey` (metrics' and spans' name for it).
    pub fn label(&self) -> &'static str {
        match self {
            Mode::FindNode => "find_node",
            Mode::FindValue => "find_value",
            Mode::Survey => "survey",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting { deadline: Instant },
    TimedOut,
    Succeeded { had_record: bool },
    Failed,
}

#[derive(Clone, Debug)]
struct Peer {
    contact: Contact,
    state: State,
    /// Lookup round in which this peer was learned (1 = from the local routing table): the
    /// lowest, while it is not queried yet, of the rounds of the peers that named it.
    hop: u32,
    /// The disjoint path this peer belongs to (see [`Lookup::with_disjoint_paths`]).
    path: usize,
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Send the lookup's RPC to this contact.
    Query(Contact),
    /// Nothing to send now; poll again after a reply or at this deadline.
    Wait(Option<Instant>),
    /// The lookup is over: call [`Lookup::finish`].
    Done,
}

/// A record found by the lookup and who returned it.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub record: Record,
    pub from: Contact,
    pub hop: u32,
}

/// The result of a lookup.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The id the lookup searched for.
    pub target: NodeId,
    /// The k closest contacts that answered, closest first.
    pub closest: Vec<Contact>,
    /// The k closest contacts that did not fail or time out (answered, awaited or not queried
    /// yet), closest first: where a lookup that ended at convergence
    /// ([`Lookup::until_converged`]) puts a record.
    pub candidates: Vec<Contact>,
    /// The newest record seen (FindValue / Survey), by `Record::supersedes`.
    pub found: Option<Found>,
    /// Every contact that returned a record, with the record (Survey).
    pub holders: Vec<(Contact, Record)>,
    /// The closest contact that answered without the record: where to cache it (section 2.5).
    pub cache_at: Option<Contact>,
    /// RPCs sent.
    pub queried: u32,
    /// Rounds the lookup went: the highest round of a peer it queried (1: only contacts from
    /// its own routing table; 0: it queried nobody). A peer's round is one more than that of
    /// the earliest-round peer that named it before it was queried, as in the paper's
    /// rounds, whichever answer arrived first.
    pub rounds: u32,
    /// The lookup reached its deadline before it converged: `closest` may miss closer nodes.
    pub gave_up: bool,
}

/// A contact a lookup queried: what the node's page draws as the lookup's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visit {
    pub id: NodeId,
    /// The round in which it was learned (1: from this node's routing table).
    pub round: u32,
    /// It answered (else it failed, timed out or is still awaited).
    pub answered: bool,
}

/// One iterative lookup.
#[derive(Debug)]
pub struct Lookup {
    target: NodeId,
    local: NodeId,
    k: usize,
    alpha: usize,
    timeout: Duration,
    mode: Mode,
    peers: BTreeMap<Distance, Peer>,
    found: Option<Found>,
    holders: Vec<(Contact, Record)>,
    queried: u32,
    deadline: Option<Instant>,
    gave_up: bool,
    /// FindValue stops once this many contacts returned a record.
    wanted: usize,
    /// The addresses of the contacts in `peers`.
    addrs: HashSet<Arc<str>>,
    /// RPCs the lookup may send at most.
    max_queries: u32,
    /// Disjoint paths (S/Kademlia section 4.4); 1: the paper's single lookup.
    paths: usize,
    /// The paths that have converged (see [`PathScan::converged`]): from then on they query
    /// every candidate among their k closest at once, not alpha at a time.
    converged: Vec<bool>,
    /// End at convergence instead of querying the rest of the k closest
    /// ([`Lookup::until_converged`]).
    stop_at_convergence: bool,
    /// The closest seeds are holders, or likely ones ([`Lookup::beside_a_holder`]).
    beside_holder: bool,
    /// Among holders, a request unanswered this long stops counting as in flight, and the
    /// spare waits for that ([`Lookup::hedged`]); `None`: the spare goes out at once.
    hedge: Option<Duration>,
    /// Converge once any of the alpha closest has answered ([`Lookup::at_first_near_answer`]).
    first_near_answer: bool,
}

/// What [`Lookup::scan`] finds on one path.
#[derive(Default)]
struct PathScan {
    next: Option<Distance>,
    in_flight: usize,
    wake: Option<Instant>,
    path_in_flight: usize,
    /// The path's alpha closest candidates still in the running have all answered: the
    /// paper's "a round fails to return closer nodes", when the rest of its k closest are
    /// queried at once.
    converged: bool,
    /// One of the path's alpha closest candidates still in the running has answered.
    near_answered: bool,
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A lookup gives up after this many RPC timeouts (see [`Lookup::with_deadline`]).
pub const LOOKUP_DEADLINE_TIMEOUTS: u32 = 5;

/// Disjoint paths a lookup may run at most (`lookup_disjoint_paths`; each costs a lookup's
/// messages).
pub const MAX_DISJOINT_PATHS: usize = 16;

impl Lookup {
    /// Starts a lookup for `target` from the given seed contacts (normally the local k closest).
    pub fn new(
        local: NodeId,
        target: NodeId,
        seeds: Vec<Contact>,
        k: usize,
        alpha: usize,
        timeout: Duration,
        mode: Mode,
    ) -> Self {
        let mut l = Lookup {
            target,
            local,
            k,
            alpha,
            timeout,
            mode,
            peers: BTreeMap::new(),
            found: None,
            holders: Vec::new(),
            queried: 0,
            deadline: None,
            gave_up: false,
            wanted: 1,
            addrs: HashSet::new(),
            max_queries: u32::MAX,
            paths: 1,
            converged: vec![false],
            stop_at_convergence: false,
            beside_holder: false,
            hedge: None,
            first_near_answer: false,
        };
        l.add(seeds, 1, 0);
        l
    }

    /// Runs the lookup along `paths` disjoint paths (S/Kademlia, Baumgart & Mies 2007,
    /// section 4.4): the seeds are dealt to the paths in turn, closest first; a contact
    /// learned from a reply joins the path of the peer that named it, unless a path already
    /// holds it, so no peer is queried by two paths. Each path runs as a lookup of its own
    /// (its k closest, `alpha` requests in flight) and the lookup ends when every path has;
    /// its result is the k closest that answered on any path. A path that meets a lying peer
    /// can be led astray by it, the others cannot, which is what lets a lookup get past
    /// adversarial nodes, for `paths` times the messages. Set before the first poll.
    pub fn with_disjoint_paths(mut self, paths: usize) -> Self {
        self.paths = paths.max(1);
        self.converged = vec![false; self.paths];
        for (i, p) in self.peers.values_mut().enumerate() {
            p.path = i % self.paths;
        }
        self
    }

    /// Ends the lookup at `at` whatever it is waiting for (then [`Outcome::gave_up`] is set).
    /// Without a deadline a lookup in a network where every request times out goes on for as
    /// many timeouts as it has candidates.
    pub fn with_deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Sends at most `queries` RPCs (at least one); a lookup that reaches the cap with
    /// candidates left ends as at its deadline ([`Outcome::gave_up`]).
    pub fn with_query_cap(mut self, queries: u32) -> Self {
        self.max_queries = queries.max(1);
        self
    }

    /// A FindValue lookup that goes on until `records` contacts (at least one) returned a
    /// record, so that the caller can take the newest of them; the paper stops at the first.
    pub fn wanting(mut self, records: usize) -> Self {
        self.wanted = records.max(1);
        self
    }

    /// The closest seeds hold the target's record, or likely do: this node holds a replica
    /// (it is one of the key's k closest nodes, so its own closest contacts to the key are the
    /// other replicas), or the seeds lie nearer the key than this node's own k-th closest
    /// contact lies to it (the caller judges). The lookup starts as one that has found a
    /// record, with one request more in flight than the records it wants (or as many, with
    /// [`Lookup::hedged`]) rather than alpha (see the module's notes). Not on disjoint paths
    /// ([`Lookup::with_disjoint_paths`]): each of them starts with alpha, so that lying peers
    /// next to this node cannot starve them.
    pub fn beside_a_holder(mut self, holders_at_hand: bool) -> Self {
        self.beside_holder = holders_at_hand;
        self
    }

    /// Once among holders (a record found, or [`Lookup::beside_a_holder`]), a FindValue
    /// lookup keeps as many requests in flight as the records it still wants, with no spare,
    /// and a request unanswered for `after` no longer counts: another goes out in its place
    /// (a hedged request: Dean and Barroso, "The Tail at Scale", 2013), and whichever answers
    /// first is used. A holder that fails, or answers without the record, is replaced at once
    /// either way.
    pub fn hedged(mut self, after: Duration) -> Self {
        self.hedge = Some(after);
        self
    }

    /// The seeds are the target's k closest nodes as far as this node knows (the caller
    /// judges, e.g. by [`RoutingTable::covers`](super::routing::RoutingTable::covers)): the
    /// lookup starts as one that has converged and sends to all of them at once, where the
    /// paper's asks alpha first. Not on disjoint paths. Set after
    /// [`Lookup::with_disjoint_paths`].
    pub fn all_at_once(mut self, seeds_are_the_closest: bool) -> Self {
        if seeds_are_the_closest && self.paths == 1 {
            self.converged = vec![true];
        }
        self
    }

    /// The lookup takes itself to have converged as soon as any of its alpha closest
    /// candidates still in the running has answered, rather than all of them. A peer that
    /// close to the target has the target's neighbourhood in its own small, unsplit buckets
    /// (paper section 2.4), so its answer names the k closest. A survey (which has to hear from
    /// each of the k closest anyway) then asks the rest of them at once, and a closer node that
    /// another answer names later is still asked; with [`Lookup::until_converged`] (a
    /// conditional put's, whose STOREs do that last round) the lookup ends there, whatever the
    /// order the two are set in. Not on disjoint paths.
    pub fn at_first_near_answer(mut self, on: bool) -> Self {
        self.first_near_answer = on;
        self
    }

    /// Whether [`Lookup::at_first_near_answer`] applies: asked for, and on a single path.
    fn converges_at_first_near_answer(&self) -> bool {
        self.first_near_answer && self.paths == 1
    }

    /// Ends the lookup once it has converged (every path's alpha closest candidates still in
    /// the running have answered), without the last round to the rest of the k closest:
    /// [`Outcome::candidates`] then holds the k closest seen, some of them not queried. A
    /// put's conditional STOREs (see [`super::write`]) do that last round's work: each
    /// replica answers with the version it holds, and a dead one fails its STORE.
    pub fn until_converged(mut self) -> Self {
        self.stop_at_convergence = true;
        self
    }

    pub fn target(&self) -> NodeId {
        self.target
    }

    /// The round in which contact `id` was learned (1: from this node's routing table), if
    /// the lookup knows it.
    pub fn round_of(&self, id: &NodeId) -> Option<u32> {
        self.peers.get(&self.target.distance(id)).map(|p| p.hop)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Contacts to ask each peer for (a FIND_NODE's or FIND_VALUE's `count`): k plus k/2
    /// spares. A peer's closest contacts include some that left without notice
    /// and that it has not noticed yet; with only k of them, those would push live contacts
    /// near the edge of the k closest out of every reply, and the lookup would end without
    /// them. A reply with more than this is refused.
    pub fn ask(&self) -> u32 {
        (self.k + self.k / 2) as u32
    }

    /// Whether its FIND_VALUEs ask for metadata only (`omit_value`): a survey settles
    /// versions and replicas, where values would only cost bandwidth and memory.
    pub fn omit_value(&self) -> bool {
        self.mode == Mode::Survey
    }

    /// The contacts queried so far, closest to the target first.
    pub fn visits(&self) -> Vec<Visit> {
        self.peers
            .values()
            .filter(|p| p.state != State::NotContacted)
            .map(|p| Visit {
                id: p.contact.id,
                round: p.hop,
                answered: matches!(p.state, State::Succeeded { .. }),
            })
            .collect()
    }

    fn add(&mut self, contacts: Vec<Contact>, hop: u32, path: usize) {
        for c in contacts {
            if c.id == self.local {
                continue;
            }
            let d = c.id.distance(&self.target);
            match self.peers.entry(d) {
                btree_map::Entry::Occupied(mut known) => {
                    // Named again, by a peer of an earlier round whose answer came after a
                    // later round's: not queried yet, it is that much nearer the start (the
                    // rounds a lookup reports count the shortest chain to each peer).
                    let p = known.get_mut();
                    if p.state == State::NotContacted && p.path == path && p.contact.addr == c.addr
                    {
                        p.hop = p.hop.min(hop);
                    }
                }
                btree_map::Entry::Vacant(slot) => {
                    if self.addrs.contains(&c.addr) {
                        continue;
                    }
                    self.addrs.insert(c.addr.clone());
                    slot.insert(Peer {
                        contact: c,
                        state: State::NotContacted,
                        hop,
                        path,
                    });
                }
            }
        }
    }

    /// Decides the next step at time `now`.
    pub fn poll(&mut self, now: Instant) -> Poll {
        for p in self.peers.values_mut() {
            if let State::Waiting { deadline } = p.state
                && deadline <= now
            {
                p.state = State::TimedOut;
            }
        }
        if self.mode == Mode::FindValue && self.holders.len() >= self.wanted {
            return Poll::Done;
        }
        if self.deadline.is_some_and(|d| d <= now) {
            self.gave_up = true;
            return Poll::Done;
        }
        // Each path, in turn, among its k closest candidates still in the running: one to
        // query, if it has fewer than alpha requests in flight.
        let mut any_next = false;
        let mut any_in_flight = false;
        // Requests in flight on every path (timed-out ones were marked above), and those of
        // them that went late for a hedge.
        let mut waiting = 0;
        let mut late = 0;
        let mut all_converged = true;
        let mut wake: Option<Instant> = None;
        let mut query: Option<Distance> = None;
        for path in 0..self.paths {
            let scan = self.scan(path);
            let near = self.converges_at_first_near_answer() && scan.near_answered;
            all_converged &= scan.converged || near;
            any_next |= scan.next.is_some();
            any_in_flight |= scan.in_flight > 0;
            waiting += scan.path_in_flight;
            let path_late = self.late(path, now);
            late += path_late;
            wake = earlier(wake, scan.wake);
            if let Some(d) = scan.next {
                // Past convergence the paper sends to all of the k closest not yet queried.
                self.converged[path] |= scan.converged || near;
                let limit = if self.converged[path] {
                    self.k.max(self.alpha)
                } else {
                    self.alpha
                };
                // Hedged requests that went late stop counting against alpha, as timed-out
                // ones do (their answers are still awaited and used).
                if scan.path_in_flight.saturating_sub(path_late) < limit {
                    query = query.or(Some(d));
                } else {
                    wake = earlier(wake, self.next_deadline());
                }
            }
        }
        if self.stop_at_convergence && all_converged {
            return Poll::Done;
        }
        if any_next && self.queried >= self.max_queries {
            // At the cap: what is in flight may still answer, nothing more is sent.
            if waiting == 0 {
                self.gave_up = true;
                return Poll::Done;
            }
            return Poll::Wait(self.earliest(self.next_deadline()));
        }
        if query.is_some() && self.enough_in_flight(waiting.saturating_sub(late)) {
            // Enough holders are being asked: wait for them (or for one to time out, or to go
            // late, which lets another go out in its place).
            let wake = earlier(self.next_deadline(), self.next_late(now));
            return Poll::Wait(self.earliest(wake));
        }
        match query {
            Some(d) => {
                let p = self.peers.get_mut(&d).expect("candidate exists");
                p.state = State::Waiting {
                    deadline: now + self.timeout,
                };
                self.queried += 1;
                Poll::Query(p.contact.clone())
            }
            None if !any_next && !any_in_flight => Poll::Done,
            None => Poll::Wait(self.earliest(wake)),
        }
    }

    /// The hedge ([`Lookup::hedged`]) when it applies: the lookup is among holders.
    fn hedge_now(&self) -> Option<Duration> {
        self.hedge.filter(|_| self.among_holders())
    }

    /// When `p`'s request goes late: unanswered for `hedge`. `None` when it is not in flight.
    fn turns_late(&self, p: &Peer, hedge: Duration) -> Option<Instant> {
        match p.state {
            // Sent at its deadline less the timeout.
            State::Waiting { deadline } => {
                Some(deadline.checked_sub(self.timeout).unwrap_or(deadline) + hedge)
            }
            _ => None,
        }
    }

    /// Requests in flight on `path` that went late for the hedge, when it applies.
    fn late(&self, path: usize, now: Instant) -> usize {
        let Some(hedge) = self.hedge_now() else {
            return 0;
        };
        self.peers
            .values()
            .filter(|p| p.path == path && self.turns_late(p, hedge).is_some_and(|at| at <= now))
            .count()
    }

    /// The next moment a request in flight goes late for the hedge, when it applies.
    fn next_late(&self, now: Instant) -> Option<Instant> {
        let hedge = self.hedge_now()?;
        self.peers
            .values()
            .filter_map(|p| self.turns_late(p, hedge))
            .filter(|at| *at > now)
            .min()
    }

    /// A FindValue lookup that found a record, or started among holders on one path.
    fn among_holders(&self) -> bool {
        self.mode == Mode::FindValue
            && (!self.holders.is_empty() || (self.beside_holder && self.paths == 1))
    }

    /// A FindValue lookup that found a record already has one request more in flight than
    /// the records it still wants: the next holder is most likely among them (holders sit
    /// together, at the key), and the spare covers one that fails or lacks the record. A
    /// get with `read_quorum` 2 otherwise sent a fourth FIND_VALUE as soon as the first copy
    /// came back (see the module's notes).
    ///
    /// With [`Lookup::hedged`] there is no spare at once, and `timely` leaves out the requests
    /// that went late (as a timed-out one stops counting against alpha): each late holder
    /// gets one in its place, and several silent ones do not hold the lookup until their
    /// timeouts.
    fn enough_in_flight(&self, timely: usize) -> bool {
        let spare = usize::from(self.hedge.is_none());
        self.among_holders() && timely >= self.wanted.saturating_sub(self.holders.len()) + spare
    }

    /// One path's state: its closest candidate not yet contacted among its k closest still in
    /// the running, the requests in flight among those (and when the first of them times
    /// out), its requests in flight beyond them too (which still count against its limit of
    /// requests in flight), and whether its alpha closest have all answered.
    fn scan(&self, path: usize) -> PathScan {
        let mut scan = PathScan {
            converged: true,
            ..PathScan::default()
        };
        let mut considered = 0;
        for (d, p) in self.peers.iter().filter(|(_, p)| p.path == path) {
            if let State::Waiting { .. } = p.state {
                scan.path_in_flight += 1;
            }
            if considered == self.k {
                continue;
            }
            match p.state {
                State::Failed | State::TimedOut => continue,
                State::NotContacted if scan.next.is_none() => scan.next = Some(*d),
                State::Waiting { deadline: t } => {
                    scan.in_flight += 1;
                    scan.wake = earlier(scan.wake, Some(t));
                }
                _ => {}
            }
            if considered < self.alpha {
                if matches!(p.state, State::Succeeded { .. }) {
                    scan.near_answered = true;
                } else {
                    scan.converged = false;
                }
            }
            considered += 1;
        }
        scan
    }

    /// `wake`, or the lookup's own deadline if that comes first.
    fn earliest(&self, wake: Option<Instant>) -> Option<Instant> {
        match (wake, self.deadline) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| match p.state {
                State::Waiting { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// A queried contact answered with `closer` contacts and possibly a record.
    pub fn on_success(&mut self, id: &NodeId, closer: Vec<Contact>, record: Option<Record>) {
        if closer.len() > self.ask() as usize {
            return self.on_failure(id);
        }
        let d = id.distance(&self.target);
        let Some(peer) = self.peers.get_mut(&d) else {
            return;
        };
        peer.state = State::Succeeded {
            had_record: record.is_some(),
        };
        let hop = peer.hop;
        let path = peer.path;
        let from = peer.contact.clone();
        let mut record = record;
        if let Some(r) = record.as_mut().filter(|_| self.omit_value()) {
            // Asked for metadata only: a value sent anyway (by an older node, or one that
            // ignores the request) is not held here, k times over.
            r.value = Vec::new();
        }
        if let Some(record) = record
            && record.key == self.target
        {
            let newer = self
                .found
                .as_ref()
                .is_none_or(|f| record.supersedes(&f.record));
            if newer {
                self.found = Some(Found {
                    record: record.clone(),
                    from: from.clone(),
                    hop,
                });
            }
            self.holders.push((from, record));
        }
        self.add(closer, hop + 1, path);
    }

    /// A queried contact failed (error or transport timeout).
    pub fn on_failure(&mut self, id: &NodeId) {
        if let Some(p) = self.peers.get_mut(&id.distance(&self.target)) {
            p.state = State::Failed;
        }
    }

    /// Ends the lookup and reports what it found.
    pub fn finish(self) -> Outcome {
        let answered = || {
            self.peers
                .values()
                .filter(|p| matches!(p.state, State::Succeeded { .. }))
        };
        let closest = answered().take(self.k).map(|p| p.contact.clone()).collect();
        let candidates = self
            .peers
            .values()
            .filter(|p| !matches!(p.state, State::Failed | State::TimedOut))
            .take(self.k)
            .map(|p| p.contact.clone())
            .collect();
        let cache_at = answered()
            .find(|p| p.state == State::Succeeded { had_record: false })
            .map(|p| p.contact.clone());
        let rounds = self
            .peers
            .values()
            .filter(|p| p.state != State::NotContacted)
            .map(|p| p.hop)
            .max()
            .unwrap_or(0);
        Outcome {
            rounds,
            target: self.target,
            closest,
            candidates,
            found: self.found,
            holders: self.holders,
            cache_at,
            queried: self.queried,
            gave_up: self.gave_up,
        }
    }
}

/// The `k` nodes closest to `key` among `found` and `me`, closest first.
pub fn replica_set(found: &[Contact], key: &NodeId, me: &Contact, k: usize) -> Vec<Contact> {
    let mut all = found.to_vec();
    all.push(me.clone());
    all.sort_by_key(|c| c.id.distance(key));
    all.dedup_by_key(|c| c.id);
    all.truncate(k);
    all
}

impl Outcome {
    /// How it ended: `found` (a record), `gave_up` (deadline or query cap) or `converged`
    /// (the k closest answered).
    pub fn label(&self) -> &'static str {
        if self.found.is_some() {
            "found"
        } else if self.gave_up {
            "gave_up"
        } else {
            "converged"
        }
    }

    /// The lookup queried contacts and none of them answered. When some contact did answer
    /// this node before (`RoutingTable::any_answered`), the node is cut off, or every peer it
    /// knows is down: its answer says nothing about the network, so a write must not count
    /// this node alone as the replica set, and a read must not report the key missing.
    pub fn nobody_answered(&self) -> bool {
        self.queried > 0 && self.closest.is_empty()
    }

    /// The k nodes closest to the target among those that answered and `me`: where a record
    /// for the target is stored (this node included when it is one of them).
    pub fn replica_set(&self, me: &Contact, k: usize) -> Vec<Contact> {
        self.replica_set_for(&self.target, me, k)
    }

    /// The same for another key near the target (replication of a group of keys, see
    /// [`super::replication`]): the nodes found, ranked by distance to `key`.
    pub fn replica_set_for(&self, key: &NodeId, me: &Contact, k: usize) -> Vec<Contact> {
        replica_set(&self.closest, key, me, k)
    }

    /// Where to cache a found record and for how long (paper section 2.5): at the closest
    /// node that answered without it, for `max_life_ms` halved for every answering node
    /// between it and the target. `None` when there is no such node or the life rounds to 0.
    pub fn cache_placement(&self, max_life_ms: u64) -> Option<(Contact, u64)> {
        let at = self.cache_at.as_ref()?;
        let dist = at.id.distance(&self.target);
        let between = self
            .closest
            .iter()
            .filter(|c| c.id.distance(&self.target) < dist)
            .count();
        let life = max_life_ms >> between.min(63);
        (life > 0).then(|| (at.clone(), life))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::routing::RoutingTable;
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};
    use std::collections::HashMap;

    const K: usize = 20;
    const ALPHA: usize = 3;

    /// A static network where every node has seen every other node (buckets keep the first
    /// `bucket_k`). A node's table is built when it is first asked for: a lookup queries a
    /// few dozen nodes, and building all n tables would cost n² inserts.
    struct Tables {
        ids: Vec<NodeId>,
        bucket_k: usize,
        built: std::cell::RefCell<HashMap<NodeId, RoutingTable>>,
    }

    impl Tables {
        /// The `count` closest contacts to `target` in `node`'s table.
        fn closest(&self, node: &NodeId, target: &NodeId, count: usize) -> Vec<Contact> {
            let now = Instant::now();
            let mut built = self.built.borrow_mut();
            let table = built.entry(*node).or_insert_with(|| {
                let mut t = RoutingTable::new(*node, self.bucket_k, now);
                for other in &self.ids {
                    let _ = t.insert(Contact::new(*other, other.to_hex()), now);
                }
                t
            });
            table.closest(target, count)
        }
    }

    fn network(n: usize, seed: u64, bucket_k: usize) -> (Vec<NodeId>, Tables) {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..n).map(|_| NodeId::random(&mut rng)).collect();
        let tables = Tables {
            ids: ids.clone(),
            bucket_k,
            built: Default::default(),
        };
        (ids, tables)
    }

    /// Answers the lookup's queries from the static tables; returns every id it was told of.
    fn run(lookup: &mut Lookup, tables: &Tables, dead: &[NodeId]) -> Vec<NodeId> {
        let now = Instant::now();
        let mut learned = Vec::new();
        loop {
            match lookup.poll(now) {
                Poll::Query(c) if dead.contains(&c.id) => lookup.on_failure(&c.id),
                Poll::Query(c) => {
                    let closer = tables.closest(&c.id, &lookup.target(), K);
                    learned.extend(closer.iter().map(|c| c.id));
                    lookup.on_success(&c.id, closer, None);
                }
                Poll::Wait(_) => panic!("synchronous replies never leave the lookup waiting"),
                Poll::Done => break,
            }
        }
        learned
    }

    #[test]
    fn visits_list_the_queried_contacts_closest_first_with_their_rounds() {
        // Two contacts a bucket: the origin's table holds few near the target, so the lookup
        // needs more than one round.
        let (ids, tables) = network(300, 7, 2);
        let target = NodeId::random(&mut StdRng::seed_from_u64(8));
        let seeds = tables.closest(&ids[0], &target, K);
        let seed_ids: Vec<NodeId> = seeds.iter().map(|c| c.id).collect();
        let dead = vec![seed_ids[0]];
        let mut l = Lookup::new(
            ids[0],
            target,
            seeds,
            K,
            ALPHA,
            Duration::from_secs(1),
            Mode::FindNode,
        );
        run(&mut l, &tables, &dead);
        let visits = l.visits();
        let queried = l.queried as usize;
        assert_eq!(visits.len(), queried, "one visit per RPC sent");
        assert!(
            visits
                .windows(2)
                .all(|w| w[0].id.distance(&target) < w[1].id.distance(&target))
        );
        let dead_visit = visits
            .iter()
            .find(|v| v.id == dead[0])
            .expect("the dead seed was queried");
        assert!(!dead_visit.answered);
        assert_eq!(dead_visit.round, 1);
        assert!(
            visits
                .iter()
                .filter(|v| v.id != dead[0])
                .all(|v| v.answered)
        );
        // Rounds past the first exist; round 1 is the seeds.
        let rounds = visits.iter().map(|v| v.round).max().unwrap();
        assert!(rounds >= 2, "{visits:?}");
        assert!(
            visits
                .iter()
                .filter(|v| v.round == 1)
                .all(|v| seed_ids.contains(&v.id))
        );
        assert_eq!(rounds, l.finish().rounds);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn converges_to_the_closest_node(seed in any::<u64>(), n in 2usize..400) {
            let (ids, tables) = network(n, seed, K);
            let mut rng = StdRng::seed_from_u64(seed ^ 0xabcdef);
            let origin = ids[0];
            let target = NodeId::random(&mut rng);
            let seeds = tables.closest(&origin, &target, K);
            let mut learned: Vec<NodeId> = seeds.iter().map(|c| c.id).collect();
            let mut l = Lookup::new(origin, target, seeds, K, ALPHA, Duration::from_secs(1), Mode::FindNode);
            learned.extend(run(&mut l, &tables, &[]));
            let out = l.finish();
            let got: Vec<NodeId> = out.closest.iter().map(|c| c.id).collect();
            // The closest node of the whole network is always found (paper section 2.3).
            let closest = ids.iter().copied().filter(|i| *i != origin).min_by_key(|i| i.distance(&target));
            prop_assert_eq!(got.first().copied(), closest);
            // And the lookup stops only with the k closest of everything it was told of.
            learned.sort();
            learned.dedup();
            let mut truth: Vec<NodeId> = learned.into_iter().filter(|i| *i != origin).collect();
            truth.sort_by_key(|i| i.distance(&target));
            truth.truncate(K);
            prop_assert_eq!(got, truth);
        }

        #[test]
        fn a_lookup_until_converged_stops_at_the_alpha_closest_and_names_the_k_closest_seen(seed in any::<u64>(), n in 2usize..400) {
            let (ids, tables) = network(n, seed, K);
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let dead: Vec<NodeId> = ids[1..].iter().copied().filter(|_| rand::Rng::random_bool(&mut rng, 0.1)).collect();
            let target = NodeId::random(&mut rng);
            let seeds = tables.closest(&ids[0], &target, K);
            let mut learned: Vec<NodeId> = seeds.iter().map(|c| c.id).collect();
            let new = |seeds| Lookup::new(ids[0], target, seeds, K, ALPHA, Duration::from_secs(1), Mode::Survey);
            let mut full = new(seeds.clone());
            run(&mut full, &tables, &dead);
            let mut l = new(seeds).until_converged();
            learned.extend(run(&mut l, &tables, &dead));
            let queried = l.queried;
            let failed: Vec<NodeId> = l.visits().iter().filter(|v| !v.answered).map(|v| v.id).collect();
            let out = l.finish();
            prop_assert!(queried <= full.queried, "{} > {}", queried, full.queried);
            // The candidates are the k closest of everything it was told of that did not fail,
            // in order (a dead node not queried yet among them: its STORE will fail).
            learned.sort();
            learned.dedup();
            let mut truth: Vec<NodeId> = learned.into_iter().filter(|i| *i != ids[0] && !failed.contains(i)).collect();
            truth.sort_by_key(|i| i.distance(&target));
            truth.truncate(K);
            let got: Vec<NodeId> = out.candidates.iter().map(|c| c.id).collect();
            prop_assert_eq!(&got, &truth);
            // It converged: the alpha closest of them answered.
            for c in got.iter().take(ALPHA) {
                prop_assert!(out.closest.iter().any(|a| a.id == *c), "{} did not answer", c.short());
            }
        }

        #[test]
        fn skips_dead_nodes_and_ends_with_the_closest_live_nodes_it_learned(seed in any::<u64>(), n in 30usize..200) {
            let (ids, tables) = network(n, seed, K);
            let mut rng = StdRng::seed_from_u64(seed);
            let dead: Vec<NodeId> = ids[1..].iter().copied().filter(|_| rand::Rng::random_bool(&mut rng, 0.3)).collect();
            let target = NodeId::random(&mut rng);
            let seeds = tables.closest(&ids[0], &target, K);
            let mut learned: Vec<NodeId> = seeds.iter().map(|c| c.id).collect();
            let mut l = Lookup::new(ids[0], target, seeds, K, ALPHA, Duration::from_secs(1), Mode::FindNode);
            learned.extend(run(&mut l, &tables, &dead));
            let out = l.finish();
            // Peers keep listing dead nodes among their k closest, so live nodes just beyond
            // them may never be mentioned. What the lookup promises: of everything it was told
            // of, it ends with exactly the k closest that are alive, in order.
            learned.sort();
            learned.dedup();
            let mut truth: Vec<NodeId> = learned.into_iter().filter(|i| !dead.contains(i) && *i != ids[0]).collect();
            truth.sort_by_key(|i| i.distance(&target));
            truth.truncate(K);
            let got: Vec<NodeId> = out.closest.iter().map(|c| c.id).collect();
            prop_assert_eq!(got, truth);
        }
    }

    #[test]
    fn at_most_alpha_in_flight_and_timeouts_free_slots() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let seeds: Vec<Contact> = (0..10)
            .map(|_| {
                let id = NodeId::random(&mut rng);
                Contact::new(id, id.to_hex())
            })
            .collect();
        let target = NodeId::random(&mut rng);
        let mut l = Lookup::new(
            NodeId([0; 20]),
            target,
            seeds,
            K,
            ALPHA,
            Duration::from_millis(100),
            Mode::FindNode,
        );
        for _ in 0..ALPHA {
            assert!(matches!(l.poll(now), Poll::Query(_)));
        }
        assert_eq!(
            l.poll(now),
            Poll::Wait(Some(now + Duration::from_millis(100)))
        );
        // After the timeout the slots are free again.
        let later = now + Duration::from_millis(100);
        for _ in 0..ALPHA {
            assert!(matches!(l.poll(later), Poll::Query(_)));
        }
    }

    #[test]
    fn a_lookup_past_its_deadline_gives_up_with_what_it_has() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(4);
        let seeds: Vec<Contact> = (0..10)
            .map(|_| {
                let id = NodeId::random(&mut rng);
                Contact::new(id, id.to_hex())
            })
            .collect();
        let target = NodeId::random(&mut rng);
        let timeout = Duration::from_millis(100);
        let deadline = now + Duration::from_millis(250);
        let mut l = Lookup::new(
            NodeId([0; 20]),
            target,
            seeds.clone(),
            K,
            ALPHA,
            timeout,
            Mode::FindNode,
        )
        .with_deadline(deadline);
        let first = match l.poll(now) {
            Poll::Query(c) => c,
            other => panic!("{other:?}"),
        };
        l.on_success(&first.id, Vec::new(), None);
        // Every other request times out; the lookup would go on for 10 candidates / 3 * 100 ms.
        let mut t = now;
        loop {
            match l.poll(t) {
                Poll::Query(_) => {}
                Poll::Wait(Some(w)) => {
                    assert!(w <= deadline, "never waits past its deadline");
                    t = w;
                }
                Poll::Wait(None) => panic!("requests are in flight"),
                Poll::Done => break,
            }
        }
        assert_eq!(t, deadline);
        let out = l.finish();
        assert!(out.gave_up);
        assert_eq!(
            out.closest,
            vec![first],
            "what answered before the deadline"
        );
        // Without a deadline the same lookup ends when every candidate has timed out.
        let mut l = Lookup::new(
            NodeId([0; 20]),
            target,
            seeds,
            K,
            ALPHA,
            timeout,
            Mode::FindNode,
        );
        let mut t = now;
        while let Poll::Query(_) | Poll::Wait(_) = l.poll(t) {
            t += timeout;
        }
        assert!(t > deadline);
        assert!(!l.finish().gave_up);
    }

    fn id_with(last: u8, first: u8) -> NodeId {
        let mut b = [0u8; 20];
        b[0] = first;
        b[19] = last;
        NodeId(b)
    }

    fn lookup_from(seeds: Vec<Contact>) -> Lookup {
        lookup_in(Mode::FindNode, seeds)
    }

    /// A lookup in `mode` of id 0 from node 9, seeded with `seeds`.
    fn lookup_in(mode: Mode, seeds: Vec<Contact>) -> Lookup {
        lookup_with_alpha(mode, seeds, ALPHA)
    }

    /// Version 1 of key `k` (id `key`), value "v", written by `publisher`.
    fn record_of(key: NodeId, publisher: NodeId) -> Record {
        Record {
            key,
            value: b"v".to_vec(),
            version: 1,
            expires_at_ms: u64::MAX,
            tombstone: false,
            publisher,
            user_key: "k".into(),
        }
    }

    fn lookup_with_alpha(mode: Mode, seeds: Vec<Contact>, alpha: usize) -> Lookup {
        Lookup::new(
            NodeId([9; 20]),
            NodeId([0; 20]),
            seeds,
            K,
            alpha,
            Duration::from_secs(1),
            mode,
        )
    }

    #[test]
    fn a_lookup_asks_for_spares_and_uses_them_when_the_k_closest_failed() {
        let now = Instant::now();
        let seed = id_with(1, 1);
        let mut l = lookup_from(vec![Contact::new(seed, "seed")]);
        assert_eq!(l.ask() as usize, K + K / 2);
        assert!(matches!(l.poll(now), Poll::Query(_)));
        // The seed names k + k/2 contacts; the k closest of them left without notice.
        let named: Vec<Contact> = (1..=(K + K / 2) as u8)
            .map(|i| Contact::new(id_with(i, 0), format!("n{i}")))
            .collect();
        l.on_success(&seed, named, None);
        while let Poll::Query(c) = l.poll(now) {
            if c.id.0[19] as usize <= K {
                l.on_failure(&c.id);
            } else {
                l.on_success(&c.id, vec![], None);
            }
        }
        let got: Vec<u8> = l.finish().closest.iter().map(|c| c.id.0[19]).collect();
        let spares: Vec<u8> = ((K + 1) as u8..=(K + K / 2) as u8).collect();
        assert_eq!(
            got[..K / 2],
            spares[..],
            "the spares that answered, closest first"
        );
    }

    /// A contact for each id, at addresses of their own ("c0", "c1", ...).
    fn contacts(ids: &[NodeId]) -> Vec<Contact> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Contact::new(*id, format!("c{i}")))
            .collect()
    }

    /// Queries the lookup sends at `now` before it has to wait for an answer.
    fn sent_now(l: &mut Lookup, now: Instant) -> Vec<Contact> {
        let mut sent = Vec::new();
        while let Poll::Query(c) = l.poll(now) {
            sent.push(c);
        }
        sent
    }

    /// `n` seeds at distances 1..=n from the target (id 0), at addresses "n1", "n2", ...
    fn ranked_seeds(n: u8) -> Vec<Contact> {
        spaced_seeds(n, 1)
    }

    /// `n` seeds at distances `step`, 2 `step`, .. from the target, at "n1", "n2", ...
    fn spaced_seeds(n: u8, step: u8) -> Vec<Contact> {
        (1..=n)
            .map(|i| Contact::new(id_with(i * step, 0), format!("n{i}")))
            .collect()
    }

    /// `by` answers naming the target's own id (closer than anyone), at "zero"; checks that
    /// the lookup asks it at once, and returns that query.
    fn names_a_closer_one(l: &mut Lookup, by: &NodeId, now: Instant) -> Vec<Contact> {
        l.on_success(by, vec![Contact::new(id_with(0, 0), "zero")], None);
        let closer = sent_now(l, now);
        assert_eq!(closer.len(), 1);
        assert_eq!(&*closer[0].addr, "zero");
        closer
    }

    #[test]
    fn once_the_alpha_closest_answered_the_rest_of_the_k_closest_are_queried_at_once() {
        let now = Instant::now();
        let seeds = ranked_seeds(30);
        let mut l = lookup_from(seeds);
        let first = sent_now(&mut l, now);
        assert_eq!(first.len(), ALPHA, "alpha in flight before convergence");
        // The second closest answers first: the closest is still out, so no burst yet.
        l.on_success(&first[1].id, vec![], None);
        let next = sent_now(&mut l, now);
        assert_eq!(next.len(), 1, "one freed slot, one query: {next:?}");
        l.on_success(&first[0].id, vec![], None);
        l.on_success(&first[2].id, vec![], None);
        // The three closest answered and named nobody closer: the paper's lookup now sends to
        // all of the k closest it has not queried, here k - 4, in one go.
        let burst = sent_now(&mut l, now);
        let ranks: Vec<u8> = burst.iter().map(|c| c.id.0[19]).collect();
        assert_eq!(ranks, (5..=K as u8).collect::<Vec<_>>());
        // A closer contact named during the burst is queried at once too.
        let closer = names_a_closer_one(&mut l, &burst[0].id, now);
        // It ends with every one of the k closest answered.
        for c in burst.iter().skip(1).chain(&next).chain(&closer) {
            l.on_success(&c.id, vec![], None);
        }
        assert_eq!(l.poll(now), Poll::Done);
        let got: Vec<u8> = l.finish().closest.iter().map(|c| c.id.0[19]).collect();
        assert_eq!(got, (0..K as u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_survey_whose_seeds_are_the_k_closest_asks_them_all_at_once() {
        let now = Instant::now();
        let seeds = ranked_seeds(30);
        let mut l = lookup_in(Mode::Survey, seeds.clone()).all_at_once(true);
        let first = sent_now(&mut l, now);
        let ranks: Vec<u8> = first.iter().map(|c| c.id.0[19]).collect();
        assert_eq!(
            ranks,
            (1..=K as u8).collect::<Vec<_>>(),
            "the k closest, not alpha"
        );
        // A closer contact one of them names is asked at once, as past convergence.
        let closer = names_a_closer_one(&mut l, &first[5].id, now);
        for c in first.iter().chain(&closer) {
            l.on_success(&c.id, vec![], None);
        }
        assert_eq!(l.poll(now), Poll::Done);
        let got: Vec<u8> = l.finish().closest.iter().map(|c| c.id.0[19]).collect();
        assert_eq!(got, (0..K as u8).collect::<Vec<_>>());
        // Without it, or on disjoint paths, alpha go first.
        let mut l = lookup_in(Mode::Survey, seeds.clone()).all_at_once(false);
        assert_eq!(sent_now(&mut l, now).len(), ALPHA);
        let mut l = lookup_in(Mode::Survey, seeds)
            .with_disjoint_paths(2)
            .all_at_once(true);
        assert_eq!(sent_now(&mut l, now).len(), 2 * ALPHA);
    }

    #[test]
    fn a_survey_asks_the_rest_of_the_k_closest_once_one_of_its_alpha_closest_answered() {
        let now = Instant::now();
        // Seeds at distances 8, 16, .., 240 from the target, room for closer ones between.
        let seeds = spaced_seeds(30, 8);
        let mut l = lookup_in(Mode::Survey, seeds.clone()).at_first_near_answer(true);
        let first = sent_now(&mut l, now);
        assert_eq!(first.len(), ALPHA, "alpha first, as in the paper");
        // The third seed answers, naming one closer than the first: it is no longer among the
        // alpha closest, so its answer does not count.
        l.on_success(&first[2].id, vec![Contact::new(id_with(1, 0), "one")], None);
        let next = sent_now(&mut l, now);
        assert_eq!(next.len(), 1, "one freed slot, one query: {next:?}");
        assert_eq!(&*next[0].addr, "one");
        // The closest seed answers: it is among the alpha closest, so the rest of the k
        // closest go out at once, while two of the alpha closest are still out.
        l.on_success(&first[0].id, vec![], None);
        let burst = sent_now(&mut l, now);
        let ranks: Vec<u8> = burst.iter().map(|c| c.id.0[19] / 8).collect();
        assert_eq!(
            ranks,
            (4..K as u8).collect::<Vec<_>>(),
            "the rest of the k closest"
        );
        // Without it (a FIND_NODE, or on disjoint paths), the closest answering frees one slot
        // for one query.
        for mut l in [
            lookup_in(Mode::Survey, seeds.clone()),
            lookup_in(Mode::Survey, seeds.clone())
                .with_disjoint_paths(2)
                .at_first_near_answer(true),
            lookup_in(Mode::Survey, seeds.clone())
                .at_first_near_answer(true)
                .with_disjoint_paths(2),
        ] {
            let first = sent_now(&mut l, now);
            l.on_success(&first[0].id, vec![], None);
            assert_eq!(sent_now(&mut l, now).len(), 1);
        }
    }

    #[test]
    fn a_lookup_until_converged_ends_at_its_first_near_answer_when_asked_to() {
        let now = Instant::now();
        let seeds = spaced_seeds(30, 8);
        for mut l in [
            lookup_in(Mode::Survey, seeds.clone())
                .at_first_near_answer(true)
                .until_converged(),
            lookup_in(Mode::Survey, seeds.clone())
                .until_converged()
                .at_first_near_answer(true),
        ] {
            let first = sent_now(&mut l, now);
            assert_eq!(first.len(), ALPHA);
            // A seed no longer among the alpha closest answers: the lookup goes on.
            l.on_success(&first[2].id, vec![Contact::new(id_with(1, 0), "one")], None);
            let next = sent_now(&mut l, now);
            assert_eq!(next.len(), 1, "{next:?}");
            assert_eq!(&*next[0].addr, "one");
            // One of the alpha closest answers: it ends, two requests still out, with the k
            // closest seen as its candidates.
            l.on_success(&next[0].id, vec![], None);
            assert_eq!(l.poll(now), Poll::Done);
            let out = l.finish();
            assert_eq!(out.candidates.len(), K);
            assert_eq!(&*out.candidates[0].addr, "one");
        }
        // Without it, the closest answering frees one slot for one query.
        let mut l = lookup_in(Mode::Survey, seeds).until_converged();
        let first = sent_now(&mut l, now);
        l.on_success(&first[0].id, vec![], None);
        assert_eq!(sent_now(&mut l, now).len(), 1);
    }

    #[test]
    fn a_contact_counts_in_the_round_of_the_shortest_chain_that_named_it() {
        let now = Instant::now();
        // Three seeds (round 1), far from the target.
        let seeds: Vec<Contact> = (1..=3u8)
            .map(|i| Contact::new(id_with(i, 9), format!("s{i}")))
            .collect();
        let mut l = lookup_from(seeds.clone());
        let first = sent_now(&mut l, now);
        assert_eq!(first.len(), 3);
        // Seed 1 names a peer (round 2), which is queried and names "late" and "b" (round 3).
        l.on_success(&seeds[0].id, vec![Contact::new(id_with(1, 5), "a")], None);
        let a = sent_now(&mut l, now);
        assert_eq!(&*a[0].addr, "a");
        let late = Contact::new(id_with(50, 0), "late");
        l.on_success(
            &a[0].id,
            vec![late.clone(), Contact::new(id_with(1, 0), "b")],
            None,
        );
        assert_eq!(l.round_of(&late.id), Some(3));
        // A seed's answer, slower than that chain, names it too: it is a round-2 contact,
        // as in the paper's rounds, whichever answer came first.
        l.on_success(&seeds[1].id, vec![late.clone()], None);
        assert_eq!(l.round_of(&late.id), Some(2));
        // b and late are queried; then the last seed names b too, at b's address and at
        // another: neither changes the round b was queried in.
        let b = id_with(1, 0);
        let sent: Vec<NodeId> = sent_now(&mut l, now).iter().map(|c| c.id).collect();
        assert_eq!(sent, vec![b, late.id]);
        l.on_success(
            &seeds[2].id,
            vec![Contact::new(b, "elsewhere"), Contact::new(b, "b")],
            None,
        );
        assert_eq!(l.round_of(&b), Some(3));
        assert_eq!(l.round_of(&late.id), Some(2));
    }

    #[test]
    fn a_reply_with_more_contacts_than_asked_for_is_refused() {
        let now = Instant::now();
        let honest = id_with(1, 1);
        let mut l = lookup_from(vec![Contact::new(honest, "honest")]);
        assert!(matches!(l.poll(now), Poll::Query(_)));
        let flood: Vec<Contact> = (0..=l.ask() as u8)
            .map(|i| Contact::new(id_with(i, 0), format!("fake{i}")))
            .collect();
        l.on_success(&honest, flood, None);
        assert_eq!(l.poll(now), Poll::Done, "none of the flood is queried");
        assert!(l.finish().closest.is_empty());
    }

    #[test]
    fn an_address_is_queried_once_whatever_ids_it_claims() {
        let now = Instant::now();
        let liar = id_with(1, 1);
        let mut l = lookup_from(vec![Contact::new(liar, "liar:1")]);
        assert!(matches!(l.poll(now), Poll::Query(_)));
        // It names closer ids, all at its own address, and one honest node.
        let mut closer: Vec<Contact> = (1..10u8)
            .map(|i| Contact::new(id_with(i, 0), "liar:1"))
            .collect();
        closer.push(Contact::new(id_with(50, 0), "honest:1"));
        l.on_success(&liar, closer, None);
        let Poll::Query(next) = l.poll(now) else {
            panic!("the honest node is queried");
        };
        assert_eq!(&*next.addr, "honest:1");
        l.on_success(&next.id, vec![], None);
        assert_eq!(l.poll(now), Poll::Done);
    }

    #[test]
    fn a_lookup_at_its_query_cap_gives_up() {
        let now = Instant::now();
        let first = id_with(200, 1);
        let mut l = lookup_from(vec![Contact::new(first, "n0")]).with_query_cap(5);
        let mut next_fake = 0u8;
        let mut sent = 0;
        // Every peer answers with fresh, closer contacts at fresh addresses.
        loop {
            match l.poll(now) {
                Poll::Query(c) => {
                    sent += 1;
                    let fresh: Vec<Contact> = (0..3)
                        .map(|_| {
                            next_fake += 1;
                            Contact::new(id_with(200 - next_fake, 0), format!("f{next_fake}"))
                        })
                        .collect();
                    l.on_success(&c.id, fresh, None);
                }
                Poll::Wait(_) => panic!("replies are synchronous"),
                Poll::Done => break,
            }
        }
        assert_eq!(sent, 5);
        assert!(l.finish().gave_up);
    }

    #[test]
    fn find_value_stops_at_first_record_and_names_cache_target() {
        let now = Instant::now();
        let target = NodeId([0; 20]);
        let mut near = [0u8; 20];
        near[19] = 1;
        let mut far = [0u8; 20];
        far[0] = 1;
        let (near, far) = (NodeId(near), NodeId(far));
        let seeds = vec![Contact::new(near, "near"), Contact::new(far, "far")];
        let mut l = Lookup::new(
            NodeId([9; 20]),
            target,
            seeds,
            K,
            ALPHA,
            Duration::from_secs(1),
            Mode::FindValue,
        );
        assert_eq!(l.poll(now), Poll::Query(Contact::new(near, "near")));
        assert_eq!(l.poll(now), Poll::Query(Contact::new(far, "far")));
        l.on_success(&near, vec![], None);
        let record = record_of(target, far);
        l.on_success(&far, vec![], Some(record.clone()));
        assert_eq!(l.poll(now), Poll::Done);
        let out = l.finish();
        assert_eq!(out.found.unwrap().record, record);
        assert_eq!(out.cache_at, Some(Contact::new(near, "near")));
    }

    #[test]
    fn find_value_wanting_two_records_returns_the_newer() {
        let now = Instant::now();
        let target = NodeId([0; 20]);
        let (a, b, c) = (id_at(1), id_at(2), id_at(3));
        let seeds = vec![
            Contact::new(a, "a"),
            Contact::new(b, "b"),
            Contact::new(c, "c"),
        ];
        let mut l = lookup_with_alpha(Mode::FindValue, seeds, 1).wanting(2);
        let record = |version: u64, tombstone: bool| Record {
            key: target,
            value: if tombstone { vec![] } else { b"old".to_vec() },
            version,
            expires_at_ms: u64::MAX,
            tombstone,
            publisher: a,
            user_key: "k".into(),
        };
        // The first holder missed a delete: its old value does not end the lookup.
        assert_eq!(l.poll(now), Poll::Query(Contact::new(a, "a")));
        l.on_success(&a, vec![], Some(record(1, false)));
        assert_eq!(l.poll(now), Poll::Query(Contact::new(b, "b")));
        l.on_success(&b, vec![], Some(record(2, true)));
        assert_eq!(l.poll(now), Poll::Done);
        let out = l.finish();
        assert_eq!(out.found.unwrap().record, record(2, true));
        assert_eq!(out.holders.len(), 2);
    }

    #[test]
    fn a_find_value_that_found_a_record_keeps_one_spare_in_flight_not_alpha() {
        let now = Instant::now();
        let target = NodeId([0; 20]);
        let ids: Vec<NodeId> = (1..=7).map(id_at).collect();
        let mut l = lookup_with_alpha(Mode::FindValue, contacts(&ids), 3).wanting(2);
        let record = record_of(target, ids[0]);
        // The first round is alpha, as in the paper.
        assert_eq!(sent_now(&mut l, now).len(), 3);
        // A contact without the record: still alpha in flight.
        l.on_success(&ids[0], vec![], None);
        assert_eq!(sent_now(&mut l, now).len(), 1);
        // A copy: one more wanted, two in flight: no fourth request.
        l.on_success(&ids[1], vec![], Some(record.clone()));
        assert_eq!(l.poll(now), Poll::Wait(Some(now + Duration::from_secs(1))));
        // One of the two fails: the spare is replaced.
        l.on_failure(&ids[2]);
        assert_eq!(sent_now(&mut l, now).len(), 1);
        // A request that times out stops counting, so a silent peer does not hold the get.
        let later = now + Duration::from_secs(1);
        assert_eq!(sent_now(&mut l, later).len(), 2);
        l.on_success(&ids[4], vec![], Some(record));
        assert_eq!(l.poll(later), Poll::Done);
        assert_eq!(l.finish().holders.len(), 2);
    }

    #[test]
    fn a_find_value_beside_a_holder_starts_with_one_spare_not_alpha() {
        let now = Instant::now();
        let target = NodeId([0; 20]);
        let ids: Vec<NodeId> = (1..=7).map(id_at).collect();
        // This node holds a replica and wants one more copy: the copy and a spare.
        let mut l = lookup_with_alpha(Mode::FindValue, contacts(&ids), 3)
            .wanting(1)
            .beside_a_holder(true);
        let ids_of = |sent: Vec<Contact>| sent.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids_of(sent_now(&mut l, now)), vec![ids[0], ids[1]]);
        // One without the record: the next one goes out, still two in flight.
        l.on_success(&ids[0], vec![], None);
        assert_eq!(ids_of(sent_now(&mut l, now)), vec![ids[2]]);
        l.on_success(&ids[2], vec![], Some(record_of(target, ids[2])));
        assert_eq!(l.poll(now), Poll::Done);
        // Not beside a holder: alpha, as in the paper.
        let mut l = lookup_with_alpha(Mode::FindValue, contacts(&ids), 3)
            .wanting(1)
            .beside_a_holder(false);
        assert_eq!(sent_now(&mut l, now).len(), 3);
        // On two disjoint paths: alpha on each.
        let mut l = lookup_with_alpha(Mode::FindValue, contacts(&ids), 3)
            .with_disjoint_paths(2)
            .wanting(1)
            .beside_a_holder(true);
        assert_eq!(sent_now(&mut l, now).len(), 6);
    }

    #[test]
    fn a_hedged_find_value_among_holders_sends_its_spare_only_once_a_request_is_late() {
        let now = Instant::now();
        let target = NodeId([0; 20]);
        let ids: Vec<NodeId> = (1..=7).map(id_at).collect();
        let ids_of = |sent: Vec<Contact>| sent.iter().map(|c| c.id).collect::<Vec<_>>();
        let hedge = Duration::from_millis(5);
        // A hedged FindValue lookup among (likely) holders, wanting `copies`.
        let holders = |copies: usize| {
            lookup_with_alpha(Mode::FindValue, contacts(&ids), 3)
                .wanting(copies)
                .beside_a_holder(true)
                .hedged(hedge)
        };
        // Among (likely) holders, wanting two copies: two requests and no spare yet; the
        // lookup wakes when the first of them is late.
        let mut l = holders(2);
        assert_eq!(ids_of(sent_now(&mut l, now)), vec![ids[0], ids[1]]);
        assert_eq!(l.poll(now), Poll::Wait(Some(now + hedge)));
        // One answers without the record: the next one goes out at once, still no spare.
        let soon = now + Duration::from_millis(1);
        l.on_success(&ids[0], vec![], None);
        assert_eq!(ids_of(sent_now(&mut l, soon)), vec![ids[2]]);
        assert_eq!(l.poll(soon), Poll::Wait(Some(now + hedge)));
        // ids[1] is late: one spare goes out, and only one.
        let late = now + hedge;
        assert_eq!(ids_of(sent_now(&mut l, late)), vec![ids[3]]);
        assert_eq!(l.poll(late), Poll::Wait(Some(soon + hedge)));
        // Two copies: done, without the late one's answer.
        l.on_success(&ids[2], vec![], Some(record_of(target, ids[2])));
        l.on_success(&ids[3], vec![], Some(record_of(target, ids[3])));
        assert_eq!(l.poll(late), Poll::Done);
        assert_eq!(l.finish().queried, 4);

        // Healthy holders: two requests, two copies, no spare at all.
        let mut l = holders(2);
        assert_eq!(sent_now(&mut l, now).len(), 2);
        l.on_success(&ids[0], vec![], Some(record_of(target, ids[0])));
        assert_eq!(
            sent_now(&mut l, soon),
            vec![],
            "one copy more is awaited, no spare"
        );
        l.on_success(&ids[1], vec![], Some(record_of(target, ids[1])));
        assert_eq!(l.poll(soon), Poll::Done);
        assert_eq!(l.finish().queried, 2);

        // Both holders asked are silent: each gets a spare once it is late, and the copies
        // end the lookup without waiting for the silent ones' timeouts.
        let mut l = holders(2);
        assert_eq!(ids_of(sent_now(&mut l, now)), vec![ids[0], ids[1]]);
        assert_eq!(ids_of(sent_now(&mut l, late)), vec![ids[2], ids[3]]);
        l.on_success(&ids[2], vec![], Some(record_of(target, ids[2])));
        l.on_success(&ids[3], vec![], Some(record_of(target, ids[3])));
        assert_eq!(l.poll(late), Poll::Done);

        // A failed holder is replaced at once.
        let mut l = holders(1);
        assert_eq!(ids_of(sent_now(&mut l, now)), vec![ids[0]]);
        l.on_failure(&ids[0]);
        assert_eq!(ids_of(sent_now(&mut l, soon)), vec![ids[1]]);

        // Not among holders: alpha at once, hedge or not (the paper's first round).
        let mut l = lookup_with_alpha(Mode::FindValue, contacts(&ids), 3)
            .wanting(2)
            .hedged(hedge);
        assert_eq!(sent_now(&mut l, now).len(), 3);
    }

    #[test]
    fn a_survey_keeps_versions_but_no_values() {
        let now = Instant::now();
        let target = NodeId([0; 20]);
        let (a, b) = (id_at(1), id_at(2));
        let mut l = lookup_in(
            Mode::Survey,
            vec![Contact::new(a, "a"), Contact::new(b, "b")],
        );
        assert!(l.omit_value(), "a survey asks for metadata only");
        let record = |version: u64| Record {
            key: target,
            value: vec![7; 1 << 20],
            version,
            expires_at_ms: u64::MAX,
            tombstone: false,
            publisher: a,
            user_key: "k".into(),
        };
        let sent = sent_now(&mut l, now);
        assert_eq!(sent.len(), 2);
        // Both send their megabyte, as a node that ignores `omit_value` would.
        l.on_success(&a, vec![], Some(record(1)));
        l.on_success(&b, vec![], Some(record(2)));
        assert_eq!(l.poll(now), Poll::Done);
        let out = l.finish();
        let held: Vec<(u64, usize)> = out
            .holders
            .iter()
            .map(|(_, r)| (r.version, r.value.len()))
            .collect();
        assert_eq!(held, vec![(1, 0), (2, 0)]);
        assert_eq!(out.found.unwrap().record, record(2).metadata());
        assert!(!lookup_in(Mode::FindValue, vec![]).omit_value());
    }

    fn id_at(distance_byte: u8) -> NodeId {
        let mut b = [0u8; 20];
        b[19] = distance_byte;
        NodeId(b)
    }

    /// An outcome for target 0 whose answering contacts and cache node sit at the given
    /// distances (contact `n` at distance `n` is named `c<n>`).
    fn outcome_of(closest: &[u8], cache_at: Option<u8>, queried: u32) -> Outcome {
        let contact = |d: u8| Contact::new(id_at(d), format!("c{d}"));
        Outcome {
            target: NodeId([0; 20]),
            closest: closest.iter().map(|d| contact(*d)).collect(),
            candidates: closest.iter().map(|d| contact(*d)).collect(),
            found: None,
            holders: vec![],
            cache_at: cache_at.map(contact),
            queried,
            rounds: 1,
            gave_up: false,
        }
    }

    #[test]
    fn nobody_answered_needs_queries_and_no_answer() {
        assert!(outcome_of(&[], None, 3).nobody_answered());
        assert!(!outcome_of(&[], None, 0).nobody_answered(), "nobody to ask");
        assert!(!outcome_of(&[1], None, 3).nobody_answered());
    }

    #[test]
    fn replica_set_takes_the_k_closest_with_this_node() {
        let outcome = outcome_of(&[1, 4, 9], None, 3);
        let me = Contact::new(id_at(2), "me");
        let ids: Vec<NodeId> = outcome.replica_set(&me, 3).iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![id_at(1), id_at(2), id_at(4)]);
        let far = Contact::new(id_at(200), "far");
        assert!(outcome.replica_set(&far, 3).iter().all(|c| c.id != far.id));
    }

    #[test]
    fn cache_life_halves_per_node_between_cache_and_target() {
        let mut outcome = outcome_of(&[1, 2, 8], Some(5), 4);
        // Two answering nodes (1 and 2) are closer than the cache at 5.
        assert_eq!(
            outcome.cache_placement(1000),
            Some((Contact::new(id_at(5), "c5"), 250))
        );
        assert_eq!(
            outcome.cache_placement(3),
            None,
            "a life that rounds to zero places nothing"
        );
        assert_eq!(
            outcome.cache_placement(0),
            None,
            "cache_ttl 0 disables caching"
        );
        outcome.cache_at = None;
        assert_eq!(outcome.cache_placement(1000), None);
    }

    #[test]
    fn disjoint_paths_converge_and_query_no_peer_twice() {
        let (ids, tables) = network(300, 9, K);
        let mut rng = StdRng::seed_from_u64(10);
        for _ in 0..20 {
            let me = ids[rng.random_range(0..ids.len())];
            let target = NodeId::random(&mut rng);
            let seeds = tables.closest(&me, &target, K);
            let mut l = Lookup::new(
                me,
                target,
                seeds,
                K,
                ALPHA,
                Duration::from_secs(1),
                Mode::FindNode,
            )
            .with_disjoint_paths(3);
            let mut queried = HashSet::new();
            let now = Instant::now();
            loop {
                match l.poll(now) {
                    Poll::Query(c) => {
                        assert!(queried.insert(c.id), "{} queried twice", c.id);
                        let closer = tables.closest(&c.id, &target, K);
                        l.on_success(&c.id, closer, None);
                    }
                    Poll::Wait(_) => panic!("synchronous replies never leave the lookup waiting"),
                    Poll::Done => break,
                }
            }
            let mut truth: Vec<NodeId> = ids.iter().copied().filter(|i| *i != me).collect();
            truth.sort_by_key(|i| i.distance(&target));
            let found: Vec<NodeId> = l.finish().closest.iter().map(|c| c.id).collect();
            assert_eq!(found, truth[..K].to_vec());
        }
    }
}
