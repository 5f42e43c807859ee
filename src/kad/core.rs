//! The state of one node (routing table + record store) and its answers to peer requests.
//!
//! A receiver learns every sender into its routing table (paper section 2.3), once the sender
//! proved its address (see the notes). When that finds a full
//! bucket, the core asks the driver to ping the least-recently-seen contact (unless it was
//! heard from just now, see the notes); when it learns a
//! brand-new contact, it hands over the records the newcomer is now responsible for (section
//! 2.5), but only for keys this node is itself closest to, to avoid duplicate transfers.
//!
//! Implementation notes (departures from the paper):
//! - A STORE whose version lies more than `Params::max_clock_skew` ahead of this node's clock
//!   is refused, and its sender is not learned: versions decide last-writer-wins, and the
//!   paper trusts them (it has none), so one forged far-future version would shadow every
//!   later write of its key.
//! - Likewise a STORE whose finite expiry lies more than `Params::max_ttl` ahead is refused.
//! - The paper learns every sender of a request. Here only a reply proves a contact: a
//!   request's sender is learned once it answered a PING at the address it claims, or when
//!   the request's connection came from that address's IP ([`Core::heard_from`]), a contact's address is the one it answered at, and a live
//!   contact is not moved by answers from another address ([`Core::on_reply`]). One forged
//!   header therefore cannot plant a contact or re-point a known one. Without signed
//!   identities (S/Kademlia, Baumgart & Mies 2007) a host can still answer under any id
//!   it likes at its own address, but an address holds one contact
//!   (`RoutingTable::insert`).
//! - A full bucket's least-recently seen contact is pinged for a newcomer only when it has
//!   not been heard from for [`LRS_PROBE_AFTER`] (or its last RPC failed); otherwise the
//!   newcomer just waits in the replacement cache. The paper pings it every time (section
//!   2.2), and in section 4.1 delays such probes until there is a message to send anyway. On a
//!   busy node every contact is heard from every second or two, so the ping only confirmed what
//!   the node had just seen: `scripts/measure.sh`'s devnet (100 nodes, puts at 32 in flight)
//!   sent 9.7 PINGs a put, a fifth of its peer RPCs. An idle node's contacts are older than
//!   that, and they are pinged as before.
//! - A FIND_VALUE whose receiver holds the record returns it without contacts, as the
//!   paper's does, but one that asks for metadata only (`omit_value`: the survey of a put,
//!   delete or locate, which visits all of the k closest) gets both. Returning both to every
//!   FIND_VALUE cost a get 3 × 30 contacts to pick, encode, decode and sort that it did not
//!   use once its copies were in: the devnet's CPU per get at 32 in flight fell by about a
//!   third (100 nodes, 30,000 gets, alternating builds: 165-191 -> 105-135 µs).
//! - The hand-off to a new contact reads only the key ranges it can concern (range scans of
//!   the key-ordered store, see `Core::handoff_keys`), not the whole store, and sends at most
//!   [`HANDOFF_MAX_RECORDS`] records at once; the rest are made due for replication.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::Params;
use super::diversity::ip_of;
use super::id::{NodeId, bit_position};
use super::message::{Contact, Envelope, Rejection, Reply, Request, Response, reply_count};
use super::routing::{InsertResult, RoutingTable};
use super::store::{NEVER, Owner, PutOutcome, Record, RecordStore, unix_ms, unix_us};

/// Records handed to one new contact at most in one go; the rest are made due for
/// replication, which paces its STOREs (`crate::kad::replication`), so that one newcomer
/// cannot flood the outbox.
pub const HANDOFF_MAX_RECORDS: usize = 256;

/// A full bucket's least-recently seen contact heard from this recently is taken to be alive:
/// a newcomer for that bucket waits in the replacement cache without a PING (see the notes).
pub const LRS_PROBE_AFTER: Duration = Duration::from_secs(10);

/// Work for the driver, produced while handling a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A bucket is full: ping its least-recently-seen contact and report with
    /// [`Core::on_ping_result`].
    PingLru { lru: Contact },
    /// Send these records to a newly learned contact (STORE).
    Handoff { to: Contact, records: Vec<Record> },
    /// Records are due for replication now (see [`Core::observe`]): run the replication step
    /// without waiting for the next maintenance tick.
    ReplicateDue,
    /// A request came from a sender this node cannot vouch for (see [`Core::heard_from`]):
    /// ping this address (as a bare address: no id is assumed); the answer is learned by
    /// [`Core::on_reply`].
    Verify { addr: String },
}

/// One node's Kademlia state.
pub struct Core {
    me: Contact,
    network_id: String,
    params: Params,
    routing: RoutingTable,
    store: Box<dyn RecordStore>,
    /// Peers' ids are bound to their keys and checked on every connection (peer mTLS).
    authenticated_ids: bool,
}

impl Core {
    pub fn new(
        me: Contact,
        network_id: String,
        params: Params,
        store: Box<dyn RecordStore>,
        now: Instant,
    ) -> Self {
        let routing = RoutingTable::new(me.id, params.k, now).with_diversity(params.diversity);
        Core {
            me,
            network_id,
            params,
            routing,
            store,
            authenticated_ids: false,
        }
    }

    /// A core whose transport proves every peer's id (peer mTLS, `crate::net::tls`): the
    /// per-peer quota then counts by id rather than by IP address.
    pub fn with_authenticated_ids(mut self, authenticated: bool) -> Self {
        self.authenticated_ids = authenticated;
        self
    }

    pub fn me(&self) -> &Contact {
        &self.me
    }
    pub fn id(&self) -> NodeId {
        self.me.id
    }
    pub fn network_id(&self) -> &str {
        &self.network_id
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }
    pub fn routing_mut(&mut self) -> &mut RoutingTable {
        &mut self.routing
    }
    pub fn store(&self) -> &dyn RecordStore {
        self.store.as_ref()
    }
    pub fn store_mut(&mut self) -> &mut dyn RecordStore {
        self.store.as_mut()
    }

    /// Answers a peer request, learning the sender (see [`Core::heard_from`]).
    pub fn handle(
        &mut self,
        env: Envelope,
        now: Instant,
        wall: SystemTime,
    ) -> (Result<Reply, Rejection>, Vec<Effect>) {
        self.handle_from(env, None, now, wall)
    }

    /// [`Core::handle`] for a request whose connection came from `source` (an IP address the
    /// transport vouches for, where it knows one).
    pub fn handle_from(
        &mut self,
        env: Envelope,
        source: Option<IpAddr>,
        now: Instant,
        wall: SystemTime,
    ) -> (Result<Reply, Rejection>, Vec<Effect>) {
        if env.network_id != self.network_id {
            let err = Rejection::WrongNetwork {
                expected: self.network_id.clone(),
                got: env.network_id,
            };
            return (Err(err), Vec::new());
        }
        if env.sender.id == self.me.id {
            // A node may reach itself while bootstrapping through a name that also stands for
            // it: answer its PING (so it can tell), refuse anything else claiming our id.
            return match env.body {
                Request::Ping => (
                    Ok(Reply {
                        responder: self.me.clone(),
                        body: Response::Pong,
                    }),
                    Vec::new(),
                ),
                _ => (Err(Rejection::SelfSender(self.me.id.to_hex())), Vec::new()),
            };
        }
        let k = self.params.k;
        let body = match env.body {
            Request::Ping => Ok(Response::Pong),
            Request::Store { record, .. } if let Some(err) = self.too_far_ahead(&record, wall) => {
                Err(err)
            }
            Request::Store { record, .. } if let Some(err) = self.lives_too_long(&record, wall) => {
                Err(err)
            }
            Request::Store { record, cached } => {
                let owner = self.quota_owner(&env.sender, source);
                match self.store.put_from(record, cached, owner, wall) {
                    Ok(PutOutcome::Stored) => Ok(Response::Stored {
                        stored: true,
                        current_version: 0,
                    }),
                    Ok(PutOutcome::Stale { current_version }) => Ok(Response::Stored {
                        stored: false,
                        current_version,
                    }),
                    Err(e) => Err(Rejection::Store(e)),
                }
            }
            Request::FindNode { target, count } => Ok(Response::Nodes {
                closer: self.closest_excluding(&target, reply_count(count, k), &env.sender.id),
            }),
            Request::FindValue {
                key,
                count,
                omit_value,
            } => {
                let record = self.store.get(&key, wall).map(|s| {
                    if omit_value {
                        s.record.metadata()
                    } else {
                        s.record.clone()
                    }
                });
                // The paper's FIND_VALUE: the record instead of contacts. A survey
                // (`omit_value`) visits the k closest, so it gets both.
                let closer = if record.is_some() && !omit_value {
                    Vec::new()
                } else {
                    self.closest_excluding(&key, reply_count(count, k), &env.sender.id)
                };
                Ok(Response::Value { record, closer })
            }
        };
        // Learn the sender after answering, so it is never returned to itself; a sender that
        // claimed a version from the future is not learned.
        let effects = match body {
            Err(Rejection::VersionAhead { .. } | Rejection::ExpiryTooFar { .. }) => Vec::new(),
            _ => self.heard_from(env.sender, source, now, wall),
        };
        (
            body.map(|body| Reply {
                responder: self.me.clone(),
                body,
            }),
            effects,
        )
    }

    /// Whom a STORE from `sender` counts against for the per-peer quota
    /// (`StoreLimits::max_owner_bytes`): nobody when the sender is one of this node's
    /// neighbours (see [`Core::neighbour`]), which replicate and hand off records to it by
    /// design; else the sender's id where ids are bound to keys (peer mTLS), or else the IP
    /// address its connection came from, which TCP vouches for (its claimed id where no
    /// address is known, as over the in-memory transport).
    fn quota_owner(&self, sender: &Contact, source: Option<IpAddr>) -> Option<Owner> {
        // Without bound ids, a claimed neighbour's id counts only from that neighbour's IP.
        let neighbour = self.neighbour(&sender.id).is_some_and(|n| {
            self.authenticated_ids
                || source.is_none_or(|ip| Some(ip.to_canonical()) == ip_of(&n.addr))
        });
        if neighbour {
            return None;
        }
        Some(match source.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(ip)) if !self.authenticated_ids => Owner::of(&ip.octets()),
            Some(IpAddr::V6(ip)) if !self.authenticated_ids => Owner::of(&ip.octets()),
            _ => Owner::of(&sender.id.0),
        })
    }

    /// The live contact `id`, if it is within this node's neighbourhood
    /// ([`RoutingTable::neighbour`]).
    pub fn neighbour(&self, id: &NodeId) -> Option<&Contact> {
        self.routing.neighbour(id)
    }

    /// Stores a record that came from a peer other than by STORE (a fetched newer version):
    /// the checks of a STORE apply.
    pub fn accept(&mut self, record: Record, wall: SystemTime) -> Result<PutOutcome, Rejection> {
        if let Some(err) = self
            .too_far_ahead(&record, wall)
            .or_else(|| self.lives_too_long(&record, wall))
        {
            return Err(err);
        }
        Ok(self.store.put(record, false, wall)?)
    }

    /// A record whose version lies more than `max_clock_skew` ahead of this node's clock is
    /// refused: versions are the writer's clock in microseconds, and last writer wins, so one
    /// STORE with a far-future version would otherwise shadow every later write of its key.
    fn too_far_ahead(&self, record: &Record, wall: SystemTime) -> Option<Rejection> {
        let now_us = unix_us(wall);
        let max_us = self.params.max_clock_skew.as_micros() as u64;
        let ahead_us = record.version.saturating_sub(now_us);
        (ahead_us > max_us).then_some(Rejection::VersionAhead {
            version: record.version,
            ahead_ms: ahead_us / 1000,
            max_ms: max_us / 1000,
        })
    }

    /// A record whose finite expiry lies more than `max_ttl` (plus the allowed clock skew)
    /// ahead is refused: no writer may ask for more than `max_ttl`. [`NEVER`] (a put without a
    /// TTL, or a tombstone for one) is a lifetime, not a time, and is accepted.
    fn lives_too_long(&self, record: &Record, wall: SystemTime) -> Option<Rejection> {
        if record.expires_at_ms == NEVER {
            return None;
        }
        let max_ms = (self.params.max_ttl + self.params.max_clock_skew).as_millis() as u64;
        let left_ms = record.expires_at_ms.saturating_sub(unix_ms(wall));
        (left_ms > max_ms).then_some(Rejection::ExpiryTooFar {
            left_secs: left_ms / 1000,
            max_secs: self.params.max_ttl.as_secs(),
        })
    }

    fn closest_excluding(&self, target: &NodeId, count: usize, exclude: &NodeId) -> Vec<Contact> {
        let mut v = self.routing.closest(target, count + 1);
        v.retain(|c| c.id != *exclude);
        v.truncate(count);
        v
    }

    /// A request's sender: an id and an address that it claims. It is learned when the claim
    /// holds as far as this node can tell:
    /// - it is known at that address (live, in a bucket or waiting in its replacement cache,
    ///   and not claiming a restart): it was proven there before, and is
    ///   [`observe`](Self::observe)d as the paper says;
    /// - or the request's connection came from the claimed address's IP (`source`, which
    ///   TCP's handshake vouches for) and the id is not live at another address;
    /// - otherwise it is asked to prove the claim ([`Effect::Verify`]: a PING to the claimed
    ///   address, whose answer [`Core::on_reply`] learns) if its bucket has room for it, and
    ///   is not learned from this request if not.
    ///
    /// So a forged header can neither plant a contact at an address its sender does not hold,
    /// nor re-point a known id, nor revive a stale contact.
    pub fn heard_from(
        &mut self,
        sender: Contact,
        source: Option<IpAddr>,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Effect> {
        let known = self.routing.proven(&sender.id);
        let vouched = known.is_some_and(|e| {
            e.contact.addr == sender.addr
                && !e.is_stale()
                && sender.incarnation <= e.contact.incarnation
        });
        let live_elsewhere = known.is_some_and(|e| e.contact.addr != sender.addr && !e.is_stale());
        let from_its_ip = source.is_some_and(|ip| Some(ip.to_canonical()) == ip_of(&sender.addr));
        if vouched || (from_its_ip && !live_elsewhere) {
            self.observe(sender, now, wall)
        } else if self.routing.has_room_for(&sender.id) {
            vec![Effect::Verify {
                addr: sender.addr.to_string(),
            }]
        } else {
            // A full bucket of live contacts that are spread over its range would only cache
            // it: contacts that answered this node's lookups fill the cache, and an unproven
            // claim must not make this node ping anyone (a spoofer could aim such pings at
            // will).
            Vec::new()
        }
    }

    /// `responder` answered an RPC this node sent to `dialed`: that proves `responder.id` is
    /// reachable at `dialed`, whatever address it advertises, and it is
    /// [`observe`](Self::observe)d there and noted as reachable. Unless it is known and live
    /// at another address: a contact stays where it answers until it stops answering there
    /// (it goes stale), so an answer from elsewhere claiming its id cannot re-point it.
    pub fn on_reply(
        &mut self,
        responder: Contact,
        dialed: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Effect> {
        let id = responder.id;
        if self
            .routing
            .entry(&id)
            .is_some_and(|e| *e.contact.addr != *dialed && !e.is_stale())
        {
            return Vec::new();
        }
        let contact = Contact {
            addr: dialed.into(),
            ..responder
        };
        let effects = self.observe(contact, now, wall);
        self.routing.mark_answered(&id);
        effects
    }

    /// Records that `contact` was heard from (it sent a request or answered one).
    ///
    /// A new contact gets the records it should hold (paper section 2.5). A new contact in a
    /// bucket that was empty opens a range of the id space this node knew nobody in: the
    /// records it holds for keys in that range were placed while it could not see their true
    /// neighbours (a blind spot, a healed partition), so they are replicated again at once.
    /// The hand-off alone cannot move them: it sends only to the first newcomer of the range.
    pub fn observe(&mut self, contact: Contact, now: Instant, wall: SystemTime) -> Vec<Effect> {
        let index = self.me.id.bucket_index(&contact.id);
        let opens = index.is_some_and(|i| self.routing.buckets()[i].entries.is_empty());
        match self.routing.insert(contact.clone(), now) {
            InsertResult::Inserted | InsertResult::Restarted => {
                let mut effects = Vec::new();
                let mut keys = self.handoff_keys(&contact, wall);
                // Beyond a batch, the records go the paced way: due for replication.
                let mut due = keys.split_off(keys.len().min(HANDOFF_MAX_RECORDS));
                if !keys.is_empty() {
                    let records = keys
                        .iter()
                        .filter_map(|k| self.store.get(k, wall))
                        .map(|s| s.record.clone())
                        .collect();
                    effects.push(Effect::Handoff {
                        to: contact,
                        records,
                    });
                }
                if let (true, Some(i)) = (opens, index) {
                    let (lo, hi) = self.me.id.bucket_range(i);
                    due.extend(self.store.range(&lo, &hi).map(|s| s.record.key));
                }
                let marked = due.iter().filter(|k| self.store.mark_due(k)).count();
                if marked > 0 {
                    effects.push(Effect::ReplicateDue);
                }
                effects
            }
            InsertResult::Full { lru } => {
                let alive = self.routing.entry(&lru.id).is_some_and(|e| {
                    e.failures == 0 && now.saturating_duration_since(e.last_seen) < LRS_PROBE_AFTER
                });
                if alive {
                    Vec::new()
                } else {
                    vec![Effect::PingLru { lru }]
                }
            }
            InsertResult::Updated | InsertResult::IsSelf | InsertResult::Crowded => Vec::new(),
        }
    }

    /// Outcome of an [`Effect::PingLru`].
    pub fn on_ping_result(&mut self, lru: &NodeId, alive: bool, now: Instant) {
        self.routing.on_ping_result(lru, alive, now);
    }

    /// An RPC to a known contact failed.
    pub fn on_failure(&mut self, id: &NodeId) {
        self.routing.on_failure(id);
    }

    /// Records the new contact should hold: it is among the k closest live contacts to the
    /// key, and this node is closer to the key than every other live contact it knows (paper
    /// section 2.5).
    ///
    /// Only the key ranges where both can hold are read, each a range scan of the store:
    /// - the keys nearer to this node than the newcomer's bucket, when fewer than k live
    ///   contacts lie nearer than that bucket (every one of them is nearer to such a key than
    ///   the newcomer is, so with k of them the newcomer is never among the k closest);
    /// - the keys of the newcomer's bucket and of every farther bucket that holds no other live
    ///   contact (a live contact in a key's own bucket is nearer to it than this node is).
    ///
    /// A newcomer far from this node in a populated network costs no scan at all.
    fn handoff_keys(&self, newcomer: &Contact, wall: SystemTime) -> Vec<NodeId> {
        let me = self.me.id;
        let Some(j) = me.bucket_index(&newcomer.id) else {
            return Vec::new();
        };
        let others: Vec<NodeId> = self
            .routing
            .live()
            .map(|c| c.id)
            .filter(|id| *id != newcomer.id)
            .collect();
        // Bit b set: bucket b holds another live contact (it is nearer than this node to every
        // key that differs from this node's id in bit b).
        let mut occupied = [0u8; super::id::ID_BYTES];
        for id in &others {
            let (byte, mask) =
                bit_position(me.bucket_index(id).expect("a contact is not this node"));
            occupied[byte] |= mask;
        }
        let occupied_at = |b: usize| {
            let (byte, mask) = bit_position(b);
            occupied[byte] & mask != 0
        };
        let k = self.params.k;
        let mut ranges = Vec::new();
        let nearer = others
            .iter()
            .filter(|id| me.bucket_index(id).is_some_and(|b| b < j))
            .count();
        if nearer < k {
            ranges.push(me.prefix_range(j));
        }
        ranges.extend(
            (j..super::id::ID_BITS)
                .filter(|b| !occupied_at(*b))
                .map(|b| me.bucket_range(b)),
        );
        let mine = |key: &NodeId| {
            let d = me.distance(key);
            d.0.iter().zip(&occupied).all(|(d, o)| d & o == 0)
        };
        let among_k_closest = |key: &NodeId| {
            let theirs = newcomer.id.distance(key);
            others
                .iter()
                .filter(|id| id.distance(key) < theirs)
                .take(k)
                .count()
                < k
        };
        ranges
            .into_iter()
            .flat_map(|(lo, hi)| self.store.range(&lo, &hi))
            .filter(|s| !s.cached && !s.record.expired(wall))
            .filter(|s| mine(&s.record.key) && among_k_closest(&s.record.key))
            .map(|s| s.record.key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::store::{MemoryStore, StoreLimits, unix_ms};
    use std::time::Duration;

    fn core(id: u8) -> Core {
        let params = Params {
            k: 20,
            alpha: 3,
            rpc_timeout: Duration::from_secs(1),
            max_clock_skew: Duration::from_secs(60),
            max_ttl: Duration::from_secs(3600),
            diversity: crate::kad::diversity::DiversityLimits::NONE,
        };
        let store = MemoryStore::new(StoreLimits::new(1024, 1000, 1 << 20, 100));
        Core::new(
            Contact::new(NodeId([id; 20]), "me:1"),
            "net".into(),
            params,
            Box::new(store),
            Instant::now(),
        )
    }

    fn env(sender: u8, network: &str, body: Request) -> Envelope {
        Envelope {
            sender: Contact::new(NodeId([sender; 20]), format!("n{sender}:1")),
            network_id: network.into(),
            body,
        }
    }

    fn record_at(key: NodeId, now: SystemTime) -> Record {
        Record {
            key,
            value: b"v".to_vec(),
            version: 1,
            expires_at_ms: unix_ms(now) + 10_000,
            tombstone: false,
            publisher: NodeId([2; 20]),
            user_key: "k".into(),
        }
    }

    #[test]
    fn a_full_bucket_pings_its_least_recently_seen_contact_only_when_not_heard_from_lately() {
        use crate::kad::routing::NEIGHBOURHOOD_BUCKET_FACTOR;
        let (t0, wall) = (Instant::now(), SystemTime::now());
        // 20 contacts in bucket 159, all in one quarter of it (so no newcomer spreads it), and
        // 3k nearer (bucket 158), so that bucket 159 does not grow past k.
        let id = |i: u8| {
            let mut b = [i; 20];
            b[0] = 0x80 | i;
            NodeId(b)
        };
        let full = || {
            let mut c = core(0);
            for i in 0..(20 * NEIGHBOURHOOD_BUCKET_FACTOR) as u8 {
                let mut near = [i; 20];
                near[0] = 0x40 | i;
                c.observe(Contact::new(NodeId(near), format!("near{i}:1")), t0, wall);
            }
            for i in 0..20 {
                c.observe(Contact::new(id(i), format!("c{i}:1")), t0, wall);
            }
            c
        };
        let newcomer = |i: u8| Contact::new(id(i), format!("c{i}:1"));
        let lru = Contact::new(id(0), "c0:1");
        // The least-recently seen was heard from a second ago: no PING, the newcomer waits.
        let mut c = full();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(c.observe(newcomer(20), later, wall), Vec::new());
        assert!(c.routing().entry(&id(20)).is_none());
        // Not heard from for LRS_PROBE_AFTER: pinged, as in the paper.
        let later = t0 + LRS_PROBE_AFTER;
        assert_eq!(
            c.observe(newcomer(21), later, wall),
            vec![Effect::PingLru { lru: lru.clone() }]
        );
        // Heard from just now, but its last RPC failed: pinged too.
        let mut c = full();
        c.on_failure(&id(0));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            c.observe(newcomer(20), later, wall),
            vec![Effect::PingLru { lru }]
        );
    }

    #[test]
    fn answers_a_ping_and_learns_the_sender_once_it_answered_at_its_address() {
        let mut c = core(1);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let (r, effects) = c.handle(env(2, "net", Request::Ping), now, wall);
        assert_eq!(r.unwrap().body, Response::Pong);
        assert!(
            !c.routing().contains(&NodeId([2; 20])),
            "not before it proved itself"
        );
        assert_eq!(
            effects,
            vec![Effect::Verify {
                addr: "n2:1".into()
            }]
        );
        let _ = c.on_reply(Contact::new(NodeId([2; 20]), "n2:1"), "n2:1", now, wall);
        assert_eq!(
            &*c.routing().entry(&NodeId([2; 20])).unwrap().contact.addr,
            "n2:1"
        );
        // Known at that address now: a request just refreshes it.
        let (_, effects) = c.handle(env(2, "net", Request::Ping), now, wall);
        assert!(effects.is_empty(), "{effects:?}");
    }

    #[test]
    fn a_forged_header_cannot_re_point_a_known_contact() {
        let mut c = core(1);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let b = NodeId([2; 20]);
        let _ = c.on_reply(Contact::new(b, "n2:1"), "n2:1", now, wall);
        // A PING claiming b's id from a dead address: b stays where it answered.
        let forged = Envelope {
            sender: Contact::new(b, "dead:1"),
            network_id: "net".into(),
            body: Request::Ping,
        };
        let (_, effects) = c.handle(forged, now, wall);
        assert_eq!(
            effects,
            vec![Effect::Verify {
                addr: "dead:1".into()
            }]
        );
        assert_eq!(&*c.routing().entry(&b).unwrap().contact.addr, "n2:1");
        // A claimed restart is verified too, not believed.
        let restarted = Envelope {
            sender: Contact::new(b, "n2:1").with_incarnation(9),
            network_id: "net".into(),
            body: Request::Ping,
        };
        let (_, effects) = c.handle(restarted, now, wall);
        assert_eq!(
            effects,
            vec![Effect::Verify {
                addr: "n2:1".into()
            }]
        );
    }

    #[test]
    fn a_request_from_the_claimed_ip_is_learned_at_once_but_re_points_nothing() {
        let mut c = core(1);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let ping = |id: u8, addr: &str| Envelope {
            sender: Contact::new(NodeId([id; 20]), addr),
            network_id: "net".into(),
            body: Request::Ping,
        };
        let local: IpAddr = "10.0.0.2".parse().unwrap();
        let (_, effects) = c.handle_from(ping(2, "10.0.0.2:50051"), Some(local), now, wall);
        assert!(effects.is_empty(), "{effects:?}");
        assert!(c.routing().contains(&NodeId([2; 20])));
        // Another IP than the claimed one: verified first.
        let (_, effects) = c.handle_from(ping(3, "10.0.0.3:50051"), Some(local), now, wall);
        assert_eq!(
            effects,
            vec![Effect::Verify {
                addr: "10.0.0.3:50051".into()
            }]
        );
        assert!(!c.routing().contains(&NodeId([3; 20])));
        // A live contact's id claimed from another port of a matching IP: not moved.
        let (_, effects) = c.handle_from(ping(2, "10.0.0.2:6666"), Some(local), now, wall);
        assert_eq!(
            effects,
            vec![Effect::Verify {
                addr: "10.0.0.2:6666".into()
            }]
        );
        assert_eq!(
            &*c.routing().entry(&NodeId([2; 20])).unwrap().contact.addr,
            "10.0.0.2:50051"
        );
    }

    #[test]
    fn a_reply_proves_the_address_it_came_from() {
        let mut c = core(1);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let b = NodeId([2; 20]);
        // It advertises another address than the one that was dialed (a bootstrap name's
        // address, or a lie): it is known where it answered.
        let _ = c.on_reply(Contact::new(b, "elsewhere:1"), "10.0.0.2:1", now, wall);
        assert_eq!(&*c.routing().entry(&b).unwrap().contact.addr, "10.0.0.2:1");
        // An answer from another address claiming its id does not move it while it is live.
        let _ = c.on_reply(Contact::new(b, "elsewhere:1"), "elsewhere:1", now, wall);
        assert_eq!(&*c.routing().entry(&b).unwrap().contact.addr, "10.0.0.2:1");
        // Once it stopped answering there (stale), an answer from elsewhere moves it.
        for _ in 0..crate::kad::routing::MAX_FAILURES {
            c.on_failure(&b);
        }
        let _ = c.on_reply(Contact::new(b, "elsewhere:1"), "elsewhere:1", now, wall);
        let e = c.routing().entry(&b).unwrap();
        assert_eq!(&*e.contact.addr, "elsewhere:1");
        assert!(!e.is_stale());
    }

    #[test]
    fn an_address_holds_one_contact() {
        let mut c = core(1);
        let (now, wall) = (Instant::now(), SystemTime::now());
        for i in 2..200u8 {
            let _ = c.on_reply(
                Contact::new(NodeId([i; 20]), "sybil:1"),
                "sybil:1",
                now,
                wall,
            );
        }
        assert_eq!(c.routing().len(), 1);
        assert!(c.routing().contains(&NodeId([199; 20])));
    }

    #[test]
    fn find_node_answers_the_count_asked_for_k_by_default_and_at_most_2k() {
        use rand::{Rng, SeedableRng};
        let mut c = core(1);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for i in 0..400 {
            let addr = format!("p{i}:1");
            let _ = c.on_reply(
                Contact::new(NodeId(rng.random()), addr.as_str()),
                &addr,
                now,
                wall,
            );
        }
        assert!(c.routing().len() > 60, "{}", c.routing().len());
        let target = NodeId([9; 20]);
        let mut answer = |count| match c
            .handle(
                env(2, "net", Request::FindNode { target, count }),
                now,
                wall,
            )
            .0
            .unwrap()
            .body
        {
            Response::Nodes { closer } => closer,
            other => panic!("{other:?}"),
        };
        let k = answer(0);
        assert_eq!(k.len(), 20, "0 asks for the paper's k");
        let more = answer(30);
        assert_eq!(more.len(), 30);
        assert_eq!(more[..20], k[..], "the k closest first, then the spares");
        assert_eq!(answer(1000).len(), 40, "never more than 2k");
        assert_eq!(answer(3).len(), 3);
    }

    #[test]
    fn rejects_other_networks_without_learning_them() {
        let mut c = core(1);
        let (r, _) = c.handle(
            env(2, "other", Request::Ping),
            Instant::now(),
            SystemTime::now(),
        );
        assert!(matches!(r, Err(Rejection::WrongNetwork { .. })));
        assert!(c.routing().is_empty());
    }

    #[test]
    fn find_value_returns_record_or_closer() {
        let mut c = core(1);
        let now = SystemTime::now();
        let key = NodeId([7; 20]);
        // Node `from` asks for the key, its value or (`omit_value`) its metadata only.
        let find_value = |c: &mut Core, from: u8, omit_value: bool| {
            let body = Request::FindValue {
                key,
                count: 0,
                omit_value,
            };
            c.handle(env(from, "net", body), Instant::now(), now).0
        };
        let r = find_value(&mut c, 2, false);
        assert_eq!(
            r.unwrap().body,
            Response::Value {
                record: None,
                closer: vec![]
            }
        );
        // Node 2 proves its address (see `heard_from`).
        let _ = c.on_reply(
            Contact::new(NodeId([2; 20]), "n2:1"),
            "n2:1",
            Instant::now(),
            now,
        );
        let record = record_at(key, now);
        let (r, _) = c.handle(
            env(
                2,
                "net",
                Request::Store {
                    record: record.clone(),
                    cached: false,
                },
            ),
            Instant::now(),
            now,
        );
        assert_eq!(
            r.unwrap().body,
            Response::Stored {
                stored: true,
                current_version: 0
            }
        );
        let r = find_value(&mut c, 3, false);
        match r.unwrap().body {
            Response::Value {
                record: Some(got),
                closer,
            } => {
                assert_eq!(got, record);
                // The record instead of contacts, as in the paper.
                assert_eq!(closer, vec![], "a holder names no contacts");
            }
            other => panic!("unexpected {other:?}"),
        }
        // A survey's FIND_VALUE gets the record's metadata, without the value, and the
        // contacts: it visits all of the k closest.
        let r = find_value(&mut c, 3, true);
        match r.unwrap().body {
            Response::Value {
                record: Some(got),
                closer,
            } => {
                // The sender itself is never in the answer; node 2 is.
                assert_eq!(
                    closer.iter().map(|c| c.id).collect::<Vec<_>>(),
                    vec![NodeId([2; 20])]
                );
                assert!(got.value.is_empty() && !record.value.is_empty());
                assert_eq!(got, record.metadata());
                assert_eq!(
                    (got.version, got.expires_at_ms, got.tombstone),
                    (record.version, record.expires_at_ms, record.tombstone)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_version_too_far_ahead_of_this_node_s_clock_is_refused() {
        let mut c = core(1);
        let now = SystemTime::now();
        let key = NodeId([7; 20]);
        let store = |version: u64| {
            let mut record = record_at(key, now);
            record.version = version;
            env(
                2,
                "net",
                Request::Store {
                    record,
                    cached: false,
                },
            )
        };
        // One forged STORE would otherwise pin the key: every later write has a lower version.
        let (r, _) = c.handle(store(u64::MAX), Instant::now(), now);
        assert!(
            matches!(r, Err(Rejection::VersionAhead { max_ms: 60_000, .. })),
            "{r:?}"
        );
        assert!(c.store().get(&key, now).is_none());
        // A writer whose clock is a little ahead (within the allowed skew) is fine.
        let ahead = unix_us(now) + 30_000_000;
        let (r, _) = c.handle(store(ahead), Instant::now(), now);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(c.store().get(&key, now).unwrap().record.version, ahead);
        let (r, _) = c.handle(store(unix_us(now) + 61_000_000), Instant::now(), now);
        assert!(matches!(r, Err(Rejection::VersionAhead { .. })), "{r:?}");
    }

    #[test]
    fn an_expiry_beyond_the_ttl_bound_is_refused_but_never_is_a_lifetime() {
        let mut c = core(1);
        let now = SystemTime::now();
        let store = |key: u8, expires_at_ms: u64| {
            let mut record = record_at(NodeId([key; 20]), now);
            record.expires_at_ms = expires_at_ms;
            env(
                2,
                "net",
                Request::Store {
                    record,
                    cached: false,
                },
            )
        };
        // max_ttl is an hour in these tests, the skew a minute.
        let (r, _) = c.handle(store(7, unix_ms(now) + 2 * 3_600_000), Instant::now(), now);
        assert!(
            matches!(r, Err(Rejection::ExpiryTooFar { max_secs: 3600, .. })),
            "{r:?}"
        );
        assert!(c.store().get(&NodeId([7; 20]), now).is_none());
        let (r, _) = c.handle(store(8, unix_ms(now) + 3_600_000), Instant::now(), now);
        assert!(r.is_ok(), "{r:?}");
        let (r, _) = c.handle(store(9, NEVER), Instant::now(), now);
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn hands_records_to_a_closer_newcomer() {
        let mut c = core(0x10);
        let now = SystemTime::now();
        let key = NodeId([0x11; 20]);
        let record = record_at(key, now);
        c.store_mut().put(record.clone(), false, now).unwrap();
        let effects = c.observe(
            Contact::new(NodeId([0x11; 20]), "new:1"),
            Instant::now(),
            now,
        );
        // The newcomer is also the first contact in its bucket: the key's range opened.
        assert_eq!(
            effects,
            vec![
                Effect::Handoff {
                    to: Contact::new(NodeId([0x11; 20]), "new:1"),
                    records: vec![record]
                },
                Effect::ReplicateDue
            ]
        );
    }

    #[test]
    fn a_first_contact_in_a_range_makes_that_range_s_records_due_for_replication() {
        let mut c = core(0x00);
        let now = SystemTime::now();
        let wall = Instant::now();
        // Keys in bucket 159 (top bit set) and in bucket 158.
        let far_key = NodeId([0x90; 20]);
        let mid_key = NodeId([0x50; 20]);
        for key in [far_key, mid_key] {
            c.store_mut().put(record_at(key, now), false, now).unwrap();
        }
        let refreshed = |c: &Core, key| c.store().get(&key, now).unwrap().refreshed_at_ms;
        assert!(refreshed(&c, far_key) > 0 && refreshed(&c, mid_key) > 0);
        // A first contact in bucket 159 (it also gets a hand-off: it is among the k closest
        // of every key, in a table of one): the records of its range are due now.
        let effects = c.observe(Contact::new(NodeId([0xff; 20]), "a:1"), wall, now);
        assert_eq!(effects.last(), Some(&Effect::ReplicateDue), "{effects:?}");
        assert_eq!(refreshed(&c, far_key), 0, "due now");
        assert!(refreshed(&c, mid_key) > 0, "another range: untouched");
        // A second contact in the same bucket opens nothing.
        c.store_mut().touch(&far_key, now);
        let effects = c.observe(Contact::new(NodeId([0xfe; 20]), "b:1"), wall, now);
        assert!(!effects.contains(&Effect::ReplicateDue), "{effects:?}");
        assert!(refreshed(&c, far_key) > 0);
    }

    /// The paper's rule read literally, over every record and every contact.
    fn handoff_by_full_scan(c: &Core, newcomer: &NodeId, wall: SystemTime) -> Vec<NodeId> {
        let live: Vec<NodeId> = c
            .routing()
            .buckets()
            .iter()
            .flat_map(|b| &b.entries)
            .filter(|e| !e.is_stale())
            .map(|e| e.contact.id)
            .collect();
        let me = c.id();
        let mut keys: Vec<NodeId> = c
            .store()
            .iter()
            .filter(|s| !s.cached && !s.record.expired(wall))
            .map(|s| s.record.key)
            .filter(|key| {
                let mut by_distance = live.clone();
                by_distance.sort_by_key(|id| id.distance(key));
                by_distance.truncate(c.params().k);
                by_distance.contains(newcomer)
                    && live
                        .iter()
                        .filter(|id| *id != newcomer)
                        .all(|id| id.distance(key) > me.distance(key))
            })
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_hand_off_reads_ranges_but_picks_what_a_full_scan_would() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(2002);
        let now = Instant::now();
        let wall = SystemTime::now();
        let (mut handed, mut trials_with_some) = (0, 0);
        for _ in 0..400 {
            let me = NodeId::random(&mut rng);
            let mut c = core(0);
            c.me = Contact::new(me, "me:1");
            c.params.k = rng.random_range(1..=6);
            c.routing = RoutingTable::new(me, c.params.k, now);
            // Ids crowd into a few buckets near and far, so buckets fill, stay empty or hold
            // only the newcomer.
            let near = |rng: &mut StdRng| {
                let index = [0, 1, 2, 3, 5, 8, 155, 157, 158, 159][rng.random_range(0..10)];
                me.random_in_bucket(index, rng)
            };
            for i in 0..rng.random_range(0..25) {
                let id = near(&mut rng);
                let _ = c.routing.insert(Contact::new(id, format!("c{i}:1")), now);
                if rng.random_bool(0.2) {
                    for _ in 0..crate::kad::routing::MAX_FAILURES {
                        c.routing.on_failure(&id);
                    }
                }
            }
            for _ in 0..rng.random_range(0..60) {
                let mut r = record_at(near(&mut rng), wall);
                if rng.random_bool(0.1) {
                    r.expires_at_ms = unix_ms(wall) - 1;
                }
                let cached = rng.random_bool(0.1);
                let _ = c.store.put(r, cached, wall - Duration::from_secs(1));
            }
            let newcomer = Contact::new(near(&mut rng), "new:1");
            if c.routing.insert(newcomer.clone(), now) != InsertResult::Inserted {
                continue;
            }
            let mut fast = c.handoff_keys(&newcomer, wall);
            fast.sort();
            let full = handoff_by_full_scan(&c, &newcomer.id, wall);
            assert_eq!(fast, full, "k = {}", c.params.k);
            handed += full.len();
            trials_with_some += usize::from(!full.is_empty());
        }
        // The comparison is only worth something if hand-offs happened.
        assert!(
            trials_with_some > 40 && handed > 100,
            "{trials_with_some} {handed}"
        );
    }

    #[test]
    fn a_large_hand_off_sends_a_batch_and_makes_the_rest_due() {
        let mut c = core(0x00);
        let now = SystemTime::now();
        for i in 0..(HANDOFF_MAX_RECORDS + 10) {
            let mut key = NodeId::hash(&i.to_be_bytes());
            key.0[0] = 0x80 | (key.0[0] & 0x7f);
            c.store_mut().put(record_at(key, now), false, now).unwrap();
        }
        // A first contact in bucket 159: it is the closest to every one of those keys.
        let effects = c.observe(Contact::new(NodeId([0xff; 20]), "a:1"), Instant::now(), now);
        let Some(Effect::Handoff { records, .. }) = effects.first() else {
            panic!("{effects:?}");
        };
        assert_eq!(records.len(), HANDOFF_MAX_RECORDS);
        assert_eq!(effects.last(), Some(&Effect::ReplicateDue));
        let due = c.store().iter().filter(|s| s.refreshed_at_ms == 0).count();
        // Its range opened too, so all of them are due; none is left out.
        assert_eq!(due, HANDOFF_MAX_RECORDS + 10);
    }

    proptest::proptest! {
        /// `neighbour` counts the nearer buckets from the contact's side and stops early; it
        /// must say what its definition says, counted over the whole table: a live contact
        /// with fewer than k live contacts in the buckets nearer this node than its own.
        #[test]
        fn neighbour_is_a_live_contact_with_fewer_than_k_live_ones_nearer(
            ids in proptest::collection::vec(proptest::array::uniform20(proptest::num::u8::ANY), 1..120),
            stale in proptest::collection::vec(proptest::bool::weighted(0.2), 120),
            k in 1usize..8,
        ) {
            let now = Instant::now();
            let mut c = core(0x10);
            c.params.k = k;
            c.routing = RoutingTable::new(c.id(), k, now);
            for (i, id) in ids.iter().enumerate() {
                let contact = Contact::new(NodeId(*id), format!("10.0.{}.{}:1", i / 200, i % 200));
                let _ = c.routing_mut().insert(contact, now);
                if stale[i] {
                    for _ in 0..crate::kad::routing::MAX_FAILURES {
                        c.routing.on_failure(&NodeId(*id));
                    }
                }
            }
            let me = c.id();
            let entries: Vec<_> = c
                .routing()
                .buckets()
                .iter()
                .flat_map(|b| b.entries.iter())
                .cloned()
                .collect();
            for e in &entries {
                let index = me.bucket_index(&e.contact.id).expect("not this node");
                let nearer = entries
                    .iter()
                    .filter(|o| !o.is_stale() && me.bucket_index(&o.contact.id) < Some(index))
                    .count();
                let expected = !e.is_stale() && nearer < k;
                proptest::prop_assert_eq!(c.neighbour(&e.contact.id).is_some(), expected);
            }
        }
    }

    #[test]
    fn a_stranger_s_stores_are_held_to_a_quota_and_neighbours_are_not() {
        use crate::kad::store::{EXPIRY_INDEX_BYTES, RECORD_OVERHEAD_BYTES, StoreError};
        let now = Instant::now();
        let wall = SystemTime::now();
        // Room for 10 records of "v" under key "k"; a quota of 30 %: 3 of them.
        let one = RECORD_OVERHEAD_BYTES + EXPIRY_INDEX_BYTES + 2;
        let limits = StoreLimits::new(1024, 100, 10 * one, 30);
        let mut c = core(0x10);
        c.store = Box::new(MemoryStore::new(limits));
        // k = 2, and two contacts next to this node: a sender in a far bucket (even once it
        // is learned) is not a neighbour.
        c.params.k = 2;
        c.routing = RoutingTable::new(c.id(), 2, now);
        let near = |last: u8| {
            let mut id = [0x10; 20];
            id[19] = last;
            NodeId(id)
        };
        let neighbour = Contact::new(near(0x11), "10.0.0.2:50051");
        let _ = c.routing_mut().insert(neighbour.clone(), now);
        let _ = c
            .routing_mut()
            .insert(Contact::new(near(0x12), "10.0.0.3:50051"), now);
        let ip = |last: u8| Some(IpAddr::from([10, 0, 0, last]));
        let mut key = 0u8;
        let mut store_from = |c: &mut Core, sender: &Contact, source| {
            key += 1;
            let env = Envelope {
                sender: sender.clone(),
                network_id: "net".into(),
                body: Request::Store {
                    record: record_at(NodeId([key; 20]), wall),
                    cached: false,
                },
            };
            c.handle_from(env, source, now, wall).0.map(|_| ())
        };
        let over = Err(Rejection::Store(StoreError::OverQuota { max: 3 * one }));
        let stranger = Contact::new(NodeId([0xe0; 20]), "10.0.0.9:50051");
        for _ in 0..3 {
            assert_eq!(store_from(&mut c, &stranger, ip(9)), Ok(()));
        }
        assert_eq!(store_from(&mut c, &stranger, ip(9)), over);
        // Another id from the same address shares its quota; so does a forged neighbour's.
        let other_id = Contact::new(NodeId([0xe1; 20]), "10.0.0.9:50051");
        assert_eq!(store_from(&mut c, &other_id, ip(9)), over);
        let forged = Contact::new(neighbour.id, "10.0.0.9:50051");
        assert_eq!(store_from(&mut c, &forged, ip(9)), over);
        // Another address has a quota of its own.
        let second = Contact::new(NodeId([0xe2; 20]), "10.0.0.8:50051");
        assert_eq!(store_from(&mut c, &second, ip(8)), Ok(()));
        // The neighbour, from its own address, stores past any quota, up to the store's room.
        for _ in 0..6 {
            assert_eq!(store_from(&mut c, &neighbour, ip(2)), Ok(()));
        }
        assert_eq!(
            store_from(&mut c, &neighbour, ip(2)),
            Err(Rejection::Store(StoreError::FullBytes { max: 10 * one }))
        );
    }

    #[test]
    fn with_bound_ids_the_quota_counts_by_id() {
        use crate::kad::store::{EXPIRY_INDEX_BYTES, RECORD_OVERHEAD_BYTES};
        let (now, wall) = (Instant::now(), SystemTime::now());
        let one = RECORD_OVERHEAD_BYTES + EXPIRY_INDEX_BYTES + 2;
        let mut c = core(0x10).with_authenticated_ids(true);
        c.store = Box::new(MemoryStore::new(StoreLimits::new(1024, 100, 10 * one, 10)));
        // k = 1 and a contact next to this node: the senders below are no neighbours.
        c.params.k = 1;
        c.routing = RoutingTable::new(c.id(), 1, now);
        let mut near = [0x10; 20];
        near[19] = 0x11;
        let _ = c
            .routing_mut()
            .insert(Contact::new(NodeId(near), "10.0.0.2:50051"), now);
        let source = Some(IpAddr::from([10, 0, 0, 9]));
        let stored = |c: &mut Core, sender: u8, key: u8| {
            let env = Envelope {
                sender: Contact::new(NodeId([sender; 20]), "10.0.0.9:50051"),
                network_id: "net".into(),
                body: Request::Store {
                    record: record_at(NodeId([key; 20]), wall),
                    cached: false,
                },
            };
            c.handle_from(env, source, now, wall).0.is_ok()
        };
        // Two ids behind one address (one host, two nodes): one record each.
        assert!(stored(&mut c, 0xe0, 1));
        assert!(!stored(&mut c, 0xe0, 2));
        assert!(stored(&mut c, 0xe1, 3));
    }
}
