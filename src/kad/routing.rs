//! The routing table: 160 k-buckets in least-recently-seen order (paper sections 2.2 and 4.1).
//!
//! Implementation notes (departures from the paper):
//! - The table is a flat array of 160 buckets rather than the paper's split-on-demand tree
//!   (section 4.2). The contents are the same for a node's own half of the tree; buckets far
//!   from the node are not split further, which the paper calls optional. The paper's
//!   relaxed split (section 2.4: keep every contact in a subtree of at least k nodes around
//!   this node) is kept, for a subtree of at least 3k nodes, by letting a bucket hold up
//!   to [`NEIGHBOURHOOD_BUCKET_FACTOR`] × k contacts while the buckets closer to this node
//!   hold fewer than that many live ones between them; the paper sets no cap. When the k
//!   closest to a key straddle two subtrees, a node on one side otherwise knew only k of the
//!   other side, the oldest, and a lookup needed one more round to reach the newest through a
//!   node over there. A bucket that grew while its neighbourhood was sparse is not trimmed
//!   when the neighbourhood fills up; it shrinks as its contacts fail.
//!
//!   5,000 simulated nodes, 30 % churn, 1,000 lookups (`kademlia simulate --nodes 5000
//!   --churn 0.3 --lookups 1000 --keys 200 --idle-minutes 0 --seed S`, S = 1 to 3; a seed
//!   does not make a run repeat exactly): lookups of 5 rounds or more were 24 to 30 in four
//!   runs without it, 5 to 12 in four runs with it (rounds p99 5 without; 4 in two of the
//!   four with it, 5 in the other two). After a 10-minute idle phase (`--idle-minutes 10`)
//!   it made no difference (43 and 44): another cause sets that tail.
//!
//!   The subtree kept whole was k nodes at first (a bucket held up to 2k while the closer
//!   buckets held fewer than k); with 3k, the nodes near a lookup's target, which answer its
//!   last rounds, know more of the target's k closest, so the lookup's first fan-out to the
//!   k closest names fewer nodes it had not seen. `kademlia simulate --nodes 10000 --churn
//!   0.3 --lookups 1000 --keys 200 --idle-minutes 10 --seed S`, S = 1 to 3, one run each but
//!   where noted:
//!
//!   | subtree kept whole | k (before) | 2k | 3k |
//!   |---|---|---|---|
//!   | lookups of 5 rounds (of 1,000) | 11, 16, 15 | 9 and 11, 6, 6 | 4, 1, 4 |
//!   | rounds p99 | 5, 5, 5 | 4 and 5, 4, 4 | 4, 4, 4 |
//!   | lookups of 2 rounds | 122, 129, 114 | 164 and 160, 184, 166 | 235, 229, 203 |
//!   | RPCs per lookup | 27.0-27.1 | 26.9-27.1 | 26.9-27.0 |
//!   | idle messages per node per minute after the churn | 1.99 (seed 2) | 1.92-2.12 | 2.01-2.18 |
//!   | peak memory (seed 2) | 1,315 MB | 1,337 MB | 1,367 MB |
//!
//!   Before the churn the idle traffic is the same (0.64-0.69), and every run found 99.9 % or
//!   more of its lookups' k closest and lost no key.
//! - A full bucket keeps its contacts spread over its range: a newcomer whose quarter of the
//!   range (the two bits of its distance below the bucket's own) holds fewer than k/4 live
//!   contacts takes the place of the least-recently seen contact of a quarter holding more
//!   than k/2 ([`SPREAD_SPARSE`], [`SPREAD_CROWDED`]); that contact, alive, waits first in
//!   line in the replacement cache. The paper keeps old contacts over any newcomer. But a
//!   joining node fills each far bucket from one refresh lookup, whose answers are the k
//!   closest to one random id: in a 10,000-node simulation 16 to 20 of a far bucket's 20
//!   contacts shared the 3 bits below the bucket's own (about 2.5 would if spread), and a
//!   lookup's first hops then gained 1 or 2 bits instead of about 4 (ranks 1,435 -> 334 ->
//!   79 among the live nodes by distance to the target). `kademlia simulate --nodes 10000
//!   --churn 0.3 --lookups 1000 --keys 200 --idle-minutes 10 --seed 1`: lookups of 5
//!   rounds or more 55 -> 8 of 1,000 (rounds p99 5 -> 4), RPCs per lookup 28.0 -> 27.0,
//!   idle messages per node per minute the same (0.69 before the churn, 1.74 -> 1.80 after
//!   it), messages in all +8 % (the pings that prove a sender before it takes a place).
//!   The price: a newcomer can push out a live old contact, which the paper's rule never
//!   allows; at most until no quarter holds more than k/2, so a node keeps at least that
//!   many of its old contacts in every bucket, and a host that grinds ids for sparse
//!   quarters gains at most k/2 places in a bucket.
//! - A failed RPC removes a contact at once when the replacement cache has someone to take
//!   its place. Otherwise the contact stays: after [`MAX_FAILURES`] consecutive failures it is
//!   flagged stale (section 4.1), left out of lookups and FIND_NODE answers, and restored the
//!   moment it is heard from again. So a node whose own network goes down for a while does
//!   not void its k-buckets, as the paper requires.
//! - Empty buckets whose range should hold nodes, judging by the density of this node's
//!   neighbourhood, are refreshed more often than the paper's hourly refresh (see
//!   [`RoutingTable::gap_buckets`]): nodes that join together can leave blind spots.
//! - A network neighbourhood (/24, /64) holds a capped number of contacts per bucket and per
//!   table ([`super::diversity`]); the paper has no such caps.
//! - Periodic refresh (section 2.3) treats the buckets closer than the closest neighbour as
//!   one range: a lookup for any id in them asks the same nodes, so one lookup refreshes them
//!   all. Refreshing each of them separately cost 150 lookups per node per refresh interval
//!   that found nothing new, enough to swamp a slow network (see `node::flow`).

use std::collections::VecDeque;
use std::time::Instant;

use super::diversity::{DiversityLimits, subnet_of};
use super::id::{Distance, ID_BITS, NodeId, bit_position};
use super::message::Contact;

/// Consecutive failed RPCs after which a contact is stale (paper section 4.1: "fails to
/// respond to 5 RPCs in a row").
pub const MAX_FAILURES: u32 = 5;

/// How many times k contacts a bucket next to this node's neighbourhood may hold, and how
/// many times k live contacts the buckets closer to this node hold at most while it may (see
/// [`RoutingTable::has_room`] and the module notes): the paper keeps every contact of a
/// subtree of at least k nodes around this node; this keeps those of one of at least 3k.
/// A range the size of the node's own closer buckets rarely holds more than that, and the
/// cap bounds the memory that made-up ids in it could take.
pub const NEIGHBOURHOOD_BUCKET_FACTOR: usize = 3;

/// A quarter of a full bucket's range with fewer live contacts than this share of k (1/4)
/// takes one from a crowded quarter (see [`SPREAD_CROWDED`] and the module notes).
pub const SPREAD_SPARSE: (usize, usize) = (1, 4);

/// A quarter of a full bucket's range with more live contacts than this share of k (1/2)
/// gives its least-recently seen one up for a newcomer in a sparse quarter.
pub const SPREAD_CROWDED: (usize, usize) = (1, 2);

/// One contact in a bucket.
#[derive(Clone, Debug)]
pub struct Entry {
    pub contact: Contact,
    pub last_seen: Instant,
    pub failures: u32,
    /// The contact has answered an RPC of ours at least once (not merely sent us requests).
    pub answered: bool,
}

impl Entry {
    /// Failed [`MAX_FAILURES`] RPCs in a row: kept (no replacement is at hand) but not used.
    pub fn is_stale(&self) -> bool {
        self.failures >= MAX_FAILURES
    }
}

/// A k-bucket: up to k entries, least-recently seen at the front; plus a replacement cache of
/// contacts seen while the bucket was full (most recent at the back).
#[derive(Clone, Debug, Default)]
pub struct Bucket {
    pub entries: VecDeque<Entry>,
    pub replacements: VecDeque<Entry>,
    /// Last time a lookup targeted an id in this bucket's range (for refresh).
    pub last_lookup: Option<Instant>,
}

impl Bucket {
    /// Puts `entry` in the replacement cache as its freshest contact (once), keeping the
    /// `k` freshest.
    fn cache(&mut self, entry: Entry, k: usize) {
        self.replacements
            .retain(|e| e.contact.id != entry.contact.id);
        self.replacements.push_back(entry);
        while self.replacements.len() > k {
            self.replacements.pop_front();
        }
    }

    /// No lookup has targeted this bucket's range within `interval`.
    pub fn lookup_due(&self, now: Instant, interval: std::time::Duration) -> bool {
        self.last_lookup
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }
}

/// What happened when a contact was seen.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertResult {
    /// A new contact went into its bucket.
    Inserted,
    /// A known contact moved to the tail (its address is updated if it changed).
    Updated,
    /// A known contact moved to the tail and reports a higher incarnation: it restarted.
    Restarted,
    /// The bucket is full: the contact waits in the replacement cache; the caller may ping
    /// `lru` and report the outcome with [`RoutingTable::on_ping_result`] (`Core::observe`
    /// does unless `lru` was heard from lately).
    Full { lru: Contact },
    /// The contact is this node: never stored.
    IsSelf,
    /// Its network neighbourhood already has as many contacts in the bucket or the table as
    /// allowed (see [`super::diversity`]): not stored, not cached.
    Crowded,
}

/// The k-buckets of one node.
pub struct RoutingTable {
    local: NodeId,
    k: usize,
    buckets: Vec<Bucket>,
    diversity: DiversityLimits,
}

impl RoutingTable {
    pub fn new(local: NodeId, k: usize, now: Instant) -> Self {
        let bucket = Bucket {
            last_lookup: Some(now),
            ..Bucket::default()
        };
        RoutingTable {
            local,
            k,
            buckets: vec![bucket; ID_BITS],
            diversity: DiversityLimits::NONE,
        }
    }

    /// The same table with caps on contacts per network neighbourhood.
    pub fn with_diversity(mut self, limits: DiversityLimits) -> Self {
        self.diversity = limits;
        self
    }

    /// Whether a contact at `addr` (new to bucket `index`, or moving there from another
    /// address) would exceed the caps of [`super::diversity`].
    fn crowded(&self, index: usize, id: &NodeId, addr: &str) -> bool {
        let Some(net) = subnet_of(addr) else {
            return false;
        };
        let same = |e: &&Entry| e.contact.id != *id && subnet_of(&e.contact.addr) == Some(net);
        let DiversityLimits {
            per_bucket,
            per_table,
        } = self.diversity;
        (per_bucket > 0 && self.buckets[index].entries.iter().filter(same).count() >= per_bucket)
            || (per_table > 0 && self.entries().filter(same).count() >= per_table)
    }

    pub fn local_id(&self) -> NodeId {
        self.local
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Whether bucket `index` has room for one more contact: it holds fewer than k, or fewer
    /// than [`NEIGHBOURHOOD_BUCKET_FACTOR`] times k while the buckets closer to this node hold
    /// fewer than that many live contacts between them (the paper's relaxed split, widened:
    /// see the module notes). The closer buckets are counted only for a bucket that already
    /// holds k, so seeing a contact in a bucket with room (every RPC does) costs no scan of
    /// the table.
    fn has_room(&self, index: usize) -> bool {
        let len = self.buckets[index].entries.len();
        if len < self.k {
            return true;
        }
        let wide = self.k * NEIGHBOURHOOD_BUCKET_FACTOR;
        len < wide && self.live_nearer_than(index, wide) < wide
    }

    /// The live contacts in the buckets closer to this node than bucket `index`, counted up
    /// to `at_most`. Counted from `index` down, where the full buckets lie, so that for a far
    /// bucket it stops after a bucket or two instead of reading all the (mostly empty) ones
    /// below.
    fn live_nearer_than(&self, index: usize, at_most: usize) -> usize {
        let mut live = 0;
        for b in self.buckets[..index].iter().rev() {
            live += b.entries.iter().filter(|e| !e.is_stale()).count();
            if live >= at_most {
                return at_most;
            }
        }
        live
    }

    /// The live contact `id`, if it is within this node's neighbourhood: in a bucket no
    /// farther than the one where this node's k nearest live contacts end (so in a network of
    /// at most k + 1 nodes every live contact is a neighbour).
    pub fn neighbour(&self, id: &NodeId) -> Option<&Contact> {
        let index = self.local.bucket_index(id)?;
        if self.live_nearer_than(index, self.k) >= self.k {
            return None;
        }
        self.buckets[index]
            .entries
            .iter()
            .find(|e| e.contact.id == *id && !e.is_stale())
            .map(|e| &e.contact)
    }

    /// Records that `contact` answered at its address (see `Core::on_reply`). An address
    /// holds one node: another id known at the same address is gone (it restarted with a new
    /// id, or was never there), so it is removed, and one address cannot fill the table with
    /// made-up ids.
    pub fn insert(&mut self, contact: Contact, now: Instant) -> InsertResult {
        let Some(index) = self.local.bucket_index(&contact.id) else {
            return InsertResult::IsSelf;
        };
        let known_there = self.buckets[index]
            .entries
            .iter()
            .any(|e| e.contact.id == contact.id && e.contact.addr == contact.addr);
        if !known_there && self.crowded(index, &contact.id, &contact.addr) {
            return InsertResult::Crowded;
        }
        // Only `insert` brings an address into the table, and it leaves one id there per
        // address: a contact already waiting in the bucket's replacement cache at this address
        // has no alias to look for (most of a busy node's contacts for full buckets, heard
        // from on every RPC, are there).
        let cached_there = !known_there
            && self.buckets[index]
                .replacements
                .iter()
                .any(|e| e.contact.id == contact.id && e.contact.addr == contact.addr);
        if !known_there && !cached_there {
            let others: Vec<NodeId> = self
                .buckets
                .iter()
                .flat_map(|b| b.entries.iter().chain(&b.replacements))
                .filter(|e| e.contact.addr == contact.addr && e.contact.id != contact.id)
                .map(|e| e.contact.id)
                .collect();
            for other in others {
                self.forget(&other);
            }
        }
        let k = self.k;
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket
            .entries
            .iter()
            .position(|e| e.contact.id == contact.id)
        {
            let mut entry = bucket.entries.remove(pos).expect("position is valid");
            let restarted =
                contact.incarnation > entry.contact.incarnation && entry.contact.incarnation != 0;
            entry.contact = contact;
            entry.last_seen = now;
            entry.failures = 0;
            bucket.entries.push_back(entry);
            return if restarted {
                InsertResult::Restarted
            } else {
                InsertResult::Updated
            };
        }
        let entry = Entry {
            contact,
            last_seen: now,
            failures: 0,
            answered: false,
        };
        // A contact waiting in the replacement cache leaves it: it moves to the bucket, or
        // back to the cache's tail. A copy left behind would be promoted when the contact
        // itself fails.
        bucket
            .replacements
            .retain(|e| e.contact.id != entry.contact.id);
        if self.has_room(index) {
            self.buckets[index].entries.push_back(entry);
            return InsertResult::Inserted;
        }
        if let Some(pos) = self.spread_victim(index, &entry.contact.id) {
            // A quarter of the range with few contacts gains one; the least-recently seen of
            // the crowded quarter waits in the replacement cache (alive: first in line).
            let bucket = &mut self.buckets[index];
            let out = bucket.entries.remove(pos).expect("position is valid");
            bucket.entries.push_back(entry);
            bucket.cache(out, k);
            return InsertResult::Inserted;
        }
        let bucket = &mut self.buckets[index];
        bucket.cache(entry, k);
        let lru = bucket
            .entries
            .front()
            .expect("bucket is full")
            .contact
            .clone();
        InsertResult::Full { lru }
    }

    /// Outcome of pinging the least-recently-seen contact of a full bucket: if it answered it
    /// moves to the tail; if not it is evicted and the freshest replacement takes its place.
    pub fn on_ping_result(&mut self, lru: &NodeId, alive: bool, now: Instant) {
        if alive {
            let _ = self.insert_known(lru, now);
        } else {
            self.remove(lru);
        }
    }

    fn insert_known(&mut self, id: &NodeId, now: Instant) -> Option<()> {
        let bucket = &mut self.buckets[self.local.bucket_index(id)?];
        let pos = bucket.entries.iter().position(|e| e.contact.id == *id)?;
        let mut entry = bucket.entries.remove(pos)?;
        entry.last_seen = now;
        entry.failures = 0;
        bucket.entries.push_back(entry);
        Some(())
    }

    /// An RPC to `id` failed. The contact is replaced when a replacement is at hand, and
    /// otherwise kept, stale once it failed [`MAX_FAILURES`] times in a row (section 4.1).
    /// Returns true if the contact was removed.
    pub fn on_failure(&mut self, id: &NodeId) -> bool {
        let Some(index) = self.local.bucket_index(id) else {
            return false;
        };
        let bucket = &mut self.buckets[index];
        bucket.replacements.retain(|e| e.contact.id != *id);
        let Some(entry) = bucket.entries.iter_mut().find(|e| e.contact.id == *id) else {
            return false;
        };
        entry.failures = entry.failures.saturating_add(1);
        if bucket.replacements.is_empty() {
            return false;
        }
        self.remove(id)
    }

    /// Removes a contact from its bucket or its replacement cache.
    fn forget(&mut self, id: &NodeId) {
        if let Some(index) = self.local.bucket_index(id) {
            self.buckets[index]
                .replacements
                .retain(|e| e.contact.id != *id);
        }
        self.remove(id);
    }

    /// Removes a contact, promoting the freshest replacement into the freed slot.
    pub fn remove(&mut self, id: &NodeId) -> bool {
        let Some(index) = self.local.bucket_index(id) else {
            return false;
        };
        let bucket = &mut self.buckets[index];
        let before = bucket.entries.len();
        bucket.entries.retain(|e| e.contact.id != *id);
        let removed = bucket.entries.len() < before;
        if removed && let Some(r) = bucket.replacements.pop_back() {
            // Keep least-recently-seen order: the replacement goes where its last_seen puts it.
            let pos = bucket
                .entries
                .iter()
                .position(|e| e.last_seen > r.last_seen)
                .unwrap_or(bucket.entries.len());
            bucket.entries.insert(pos, r);
        }
        removed
    }

    /// The entry of contact `id`, if it is in a bucket (not a replacement).
    pub fn entry(&self, id: &NodeId) -> Option<&Entry> {
        let index = self.local.bucket_index(id)?;
        self.buckets[index]
            .entries
            .iter()
            .find(|e| e.contact.id == *id)
    }

    /// Whether a new contact `id` could enter its bucket now: the bucket has fewer than k
    /// contacts, or a stale one (which a newcomer waiting in the cache takes over once the
    /// stale one fails again), or `id` would take a place to spread the bucket's contacts
    /// over its range (see the module notes).
    pub fn has_room_for(&self, id: &NodeId) -> bool {
        self.local.bucket_index(id).is_some_and(|i| {
            let b = &self.buckets[i];
            self.has_room(i)
                || b.entries.iter().any(Entry::is_stale)
                || self.spread_victim(i, id).is_some()
        })
    }

    /// The quarter of bucket `index`'s range that `id` falls in: the two bits of its distance
    /// from this node just below the bucket's own bit (`None` for the buckets too small to
    /// have quarters).
    fn quarter(&self, index: usize, id: &NodeId) -> Option<usize> {
        if index < 2 {
            return None;
        }
        let d = self.local.distance(id);
        let bit = |b: usize| {
            let (byte, mask) = bit_position(b);
            usize::from(d.0[byte] & mask != 0)
        };
        Some(bit(index - 1) << 1 | bit(index - 2))
    }

    /// In full bucket `index`, the contact that a newcomer `id` takes the place of so that
    /// the bucket's contacts spread over its range (see the module notes): when `id`'s
    /// quarter holds fewer than [`SPREAD_SPARSE`] of k live contacts and another quarter more
    /// than [`SPREAD_CROWDED`] of k, the least-recently seen of the most crowded quarter.
    fn spread_victim(&self, index: usize, id: &NodeId) -> Option<usize> {
        let mine = self.quarter(index, id)?;
        let entries = &self.buckets[index].entries;
        let mut counts = [0usize; 4];
        for e in entries.iter().filter(|e| !e.is_stale()) {
            counts[self.quarter(index, &e.contact.id)?] += 1;
        }
        let (crowded, most) = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .map(|(q, n)| (q, *n))?;
        if counts[mine] * SPREAD_SPARSE.1 >= self.k * SPREAD_SPARSE.0
            || most * SPREAD_CROWDED.1 <= self.k * SPREAD_CROWDED.0
        {
            return None;
        }
        entries
            .iter()
            .position(|e| !e.is_stale() && self.quarter(index, &e.contact.id) == Some(crowded))
    }

    /// The entry of contact `id` in its bucket or its replacement cache (every contact in
    /// either answered this node at its address: see `Core::on_reply`).
    pub fn proven(&self, id: &NodeId) -> Option<&Entry> {
        let bucket = &self.buckets[self.local.bucket_index(id)?];
        bucket
            .entries
            .iter()
            .chain(&bucket.replacements)
            .find(|e| e.contact.id == *id)
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.local
            .bucket_index(id)
            .is_some_and(|i| self.buckets[i].entries.iter().any(|e| e.contact.id == *id))
    }

    /// Up to `count` live (not stale) contacts closest to `target`, closest first: what
    /// FIND_NODE answers and lookups use.
    pub fn closest(&self, target: &NodeId, count: usize) -> Vec<Contact> {
        self.closest_where(target, count, |e| !e.is_stale())
    }

    /// Where a lookup for `target` starts: the live [`closest`](Self::closest) contacts, or,
    /// when every contact is stale, the closest stale ones that answered us before, so that a
    /// node whose network came back finds its peers again (an answer makes a contact live).
    /// A contact that never answered (known only from requests it sent, perhaps with an
    /// address nobody can reach) is not worth a lookup's wait; the background stale probe
    /// still tries it.
    pub fn lookup_seeds(&self, target: &NodeId, count: usize) -> Vec<Contact> {
        let live = self.closest(target, count);
        if live.is_empty() {
            self.closest_where(target, count, |e| e.is_stale() && e.answered)
        } else {
            live
        }
    }

    /// The bucket that holds this node's k-th closest live contact: its distance to this node
    /// is at least 2^index. `None` with fewer than k live contacts (then this node knows of
    /// no more than k other nodes, and each of them is one of any key's k closest). Nodes lie
    /// about as densely around a key as around this node, so a contact nearer a key than
    /// 2^index is likely one of the key's k closest: a replica of its record.
    fn neighbourhood_bucket(&self) -> Option<usize> {
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.entries.iter().filter(|e| !e.is_stale()).count();
            if seen >= self.k {
                return Some(index);
            }
        }
        None
    }

    /// How many of `seeds` (the table's closest contacts to `key`) are likely replicas of its
    /// record: nearer the key than this node's k-th closest live contact lies to this node
    /// ([`Self::neighbourhood_bucket`]), or all of them when this node knows fewer than k.
    pub fn likely_replicas(&self, key: &NodeId, seeds: &[Contact]) -> usize {
        let radius = self.neighbourhood_bucket();
        seeds
            .iter()
            .filter(|c| {
                let d = c.id.distance(key).bucket_index();
                radius.is_none_or(|r| d.is_none_or(|d| d < r))
            })
            .count()
    }

    /// Whether this table holds every node it has heard of nearer `key` than the farthest of
    /// `seeds` (the table's closest contacts to `key`): the buckets that range falls in are
    /// not full, so no contact there was turned away (paper section 2.2: a node's table is
    /// complete where its buckets are not full). Then `seeds` are the key's k closest nodes
    /// as far as the network has told this node.
    pub fn covers(&self, key: &NodeId, seeds: &[Contact]) -> bool {
        // Nodes nearer `key` than the farthest seed share its id above bit `m`.
        let m = match seeds.get(self.k.saturating_sub(1)) {
            Some(c) if seeds.len() >= self.k => {
                c.id.distance(key).bucket_index().map_or(0, |b| b + 1)
            }
            _ => ID_BITS,
        };
        let not_full = |i: usize| self.buckets.get(i).is_none_or(|b| b.entries.len() < self.k);
        match self.local.bucket_index(key) {
            // Beyond `m` from this node: that range lies within the key's bucket.
            Some(b) if b >= m => not_full(b),
            // Within `m`: that range is this node's buckets below `m`.
            _ => (0..m).all(not_full),
        }
    }

    /// Where the refresh of bucket `index` (a lookup for `target`, an id in its range)
    /// starts. A non-empty bucket starts as any lookup. An empty bucket's range may be a blind
    /// spot that every node near this one shares (nodes that joined together and never heard
    /// from that range): a lookup seeded as usual asks only those neighbours, which are closer
    /// to the target than anyone farther away, and never leaves them. So an empty bucket is
    /// refreshed through the contacts of farther buckets, which see the range from outside.
    pub fn refresh_seeds(&self, index: usize, target: &NodeId, count: usize) -> Vec<Contact> {
        let empty = self.buckets.get(index).is_none_or(|b| b.entries.is_empty());
        let farther = if empty {
            self.closest_where(target, count, |e| {
                !e.is_stale() && self.local.bucket_index(&e.contact.id) > Some(index)
            })
        } else {
            Vec::new()
        };
        if farther.is_empty() {
            self.lookup_seeds(target, count)
        } else {
            farther
        }
    }

    fn closest_where(
        &self,
        target: &NodeId,
        count: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<Contact> {
        // The buckets fall into groups whose distances to `target` do not overlap. With `b`
        // the bucket `target` falls in: bucket b is nearest (below 2^b), then buckets 0..b
        // together (their contacts and the target differ first at bit b), then each bucket
        // above b in turn (bucket i: from 2^i). (With `target` this node's own id, bucket i
        // is simply at 2^i.) So only the groups up to the one that brings `count` matter.
        let mut all: Vec<(Distance, &Contact)> = Vec::with_capacity(count + self.k);
        let above = match self.local.bucket_index(target) {
            Some(b) => {
                self.distances_in(b, target, &keep, &mut all);
                if all.len() < count {
                    (0..b).for_each(|i| self.distances_in(i, target, &keep, &mut all));
                }
                b + 1
            }
            None => 0,
        };
        for index in above..self.buckets.len() {
            if all.len() >= count {
                break;
            }
            self.distances_in(index, target, &keep, &mut all);
        }
        if all.len() > count {
            all.select_nth_unstable_by_key(count, |(d, _)| *d);
            all.truncate(count);
        }
        all.sort_by_key(|(d, _)| *d);
        all.into_iter().map(|(_, c)| c.clone()).collect()
    }

    /// Every live contact.
    pub fn live(&self) -> impl Iterator<Item = &Contact> {
        self.entries().filter(|e| !e.is_stale()).map(|e| &e.contact)
    }

    /// Live contacts and those waiting in replacement caches (each answered this node at its
    /// address; a full bucket's spread sends live contacts there, see the module notes).
    pub fn live_or_waiting(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().chain(&b.replacements))
            .filter(|e| !e.is_stale())
            .map(|e| &e.contact)
    }

    /// `id` answered an RPC of ours (call after [`insert`](Self::insert)).
    pub fn mark_answered(&mut self, id: &NodeId) {
        let Some(index) = self.local.bucket_index(id) else {
            return;
        };
        if let Some(e) = self.buckets[index]
            .entries
            .iter_mut()
            .find(|e| e.contact.id == *id)
        {
            e.answered = true;
        }
    }

    /// Whether any contact, live or stale, ever answered an RPC of ours: this node has been
    /// part of a network with others (see `Outcome::nobody_answered`).
    pub fn any_answered(&self) -> bool {
        self.entries().any(|e| e.answered)
    }

    /// Adds bucket `index`'s contacts that `keep` keeps to `all`, with their distances to
    /// `target`.
    fn distances_in<'a>(
        &'a self,
        index: usize,
        target: &NodeId,
        keep: &impl Fn(&Entry) -> bool,
        all: &mut Vec<(Distance, &'a Contact)>,
    ) {
        let entries = self.buckets[index].entries.iter().filter(|e| keep(e));
        all.extend(entries.map(|e| (e.contact.id.distance(target), &e.contact)));
    }

    /// Every contact in the buckets, live or stale.
    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Every stale contact.
    pub fn stale(&self) -> impl Iterator<Item = &Contact> {
        self.entries().filter(|e| e.is_stale()).map(|e| &e.contact)
    }

    /// The stale contacts due for a probe in probe round `round`, backing off: a contact that
    /// has failed `n` RPCs more than [`MAX_FAILURES`] is probed in the rounds divisible by
    /// 2^n, but at least every 2^`max_doublings` rounds. Each failed probe adds a failure, so
    /// a departed contact is probed after 1, 2, 4, ... rounds, not every round forever.
    pub fn stale_due(&self, round: u64, max_doublings: u32) -> impl Iterator<Item = &Contact> {
        self.entries()
            .filter(move |e| {
                let extra = e.failures.saturating_sub(MAX_FAILURES);
                e.is_stale() && round.is_multiple_of(1 << extra.min(max_doublings).min(62))
            })
            .map(|e| &e.contact)
    }

    /// Number of live contacts.
    pub fn len(&self) -> usize {
        self.live().count()
    }

    /// Whether the table has no live contact.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of stale contacts (kept until they answer or a replacement appears).
    pub fn stale_len(&self) -> usize {
        self.stale().count()
    }

    /// Notes that a lookup for `target` ran, which refreshes the bucket it falls in. A target
    /// closer to this node than its closest neighbour refreshes every bucket down to 0 as
    /// well: a lookup for any id in them asks the same nodes (this node's neighbourhood).
    pub fn mark_lookup(&mut self, target: &NodeId, now: Instant) {
        let Some(i) = self.local.bucket_index(target) else {
            return;
        };
        let below_neighbours = self.lowest_nonempty().is_some_and(|low| i < low);
        let from = if below_neighbours { 0 } else { i };
        for b in &mut self.buckets[from..=i] {
            b.last_lookup = Some(now);
        }
    }

    /// The contact whose answer to a PING stands for the refresh of bucket `index`: its
    /// least-recently seen entry, when the bucket is full and that entry is live. A full
    /// bucket has no room for what a refresh lookup would find (that goes to the replacement
    /// cache), so its refresh needs only to show that the bucket still holds live contacts,
    /// and the least-recently seen is the likeliest to have left. A bucket with room, or
    /// whose oldest entry already failed, is refreshed by a lookup as in the paper.
    pub fn refresh_probe(&self, index: usize) -> Option<Contact> {
        let bucket = self.buckets.get(index)?;
        if self.has_room(index) {
            return None;
        }
        let lru = bucket.entries.front()?;
        (lru.failures == 0).then(|| lru.contact.clone())
    }

    /// Counts bucket `index` as refreshed at `now` (its probe went out, see
    /// [`refresh_probe`](Self::refresh_probe)).
    pub fn mark_refreshed(&mut self, index: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(index) {
            b.last_lookup = Some(now);
        }
    }

    /// Buckets to refresh: not looked up within `interval` (paper section 2.3), from one
    /// below the closest non-empty bucket to one past the farthest. The buckets closer than
    /// that are one range as far as lookups go (see [`mark_lookup`](Self::mark_lookup)), and
    /// farther ones cover ranges with no known nodes, whose refresh is the farthest one's.
    /// An empty table has nothing to refresh through.
    pub fn stale_buckets(&self, now: Instant, interval: std::time::Duration) -> Vec<usize> {
        let (Some(low), Some(high)) = (self.lowest_nonempty(), self.highest_nonempty()) else {
            return Vec::new();
        };
        (low.saturating_sub(1)..=(high + 1).min(ID_BITS - 1))
            .filter(|i| self.buckets[*i].lookup_due(now, interval))
            .collect()
    }

    /// Empty buckets below the farthest non-empty one, not touched by a lookup within
    /// `interval`, whose range should hold nodes (see [`populated_from`](Self::populated_from)):
    /// likely blind spots rather than empty ranges of the id space.
    pub fn gap_buckets(&self, now: Instant, interval: std::time::Duration) -> Vec<usize> {
        let (Some(from), Some(high)) = (self.populated_from(), self.highest_nonempty()) else {
            return Vec::new();
        };
        (from..high)
            .filter(|i| self.buckets[*i].entries.is_empty())
            .filter(|i| self.buckets[*i].lookup_due(now, interval))
            .collect()
    }

    /// The closest bucket whose range should hold two nodes or more, judging by how densely
    /// nodes sit around this one: if the m closest live contacts lie within distance d (bucket
    /// b), a bucket i spans 2^i ids and should hold about m * 2^i / d, at least m * 2^(i-b-1).
    /// Closer buckets may well be empty in a healthy network, and a node with fewer than two
    /// contacts cannot judge.
    pub fn populated_from(&self) -> Option<usize> {
        let closest = self.closest(&self.local, self.k);
        let m = closest.len();
        if m < 2 {
            return None;
        }
        let b = self.local.bucket_index(&closest[m - 1].id)?;
        // m * 2^(i-b-1) >= 2  <=>  i >= b + 2 - log2(m)
        let log2_m = m.ilog2() as usize;
        Some(
            (b + 2)
                .saturating_sub(log2_m)
                .max(self.lowest_nonempty()? + 1),
        )
    }

    /// Index of the farthest non-empty bucket.
    pub fn highest_nonempty(&self) -> Option<usize> {
        self.buckets.iter().rposition(|b| !b.entries.is_empty())
    }

    /// Index of the closest non-empty bucket (the node's nearest neighbour's bucket).
    pub fn lowest_nonempty(&self) -> Option<usize> {
        self.buckets.iter().position(|b| !b.entries.is_empty())
    }

    /// All buckets (for the RoutingTable RPC).
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn c(id: NodeId) -> Contact {
        Contact::new(id, format!("{}:1", id.to_hex()))
    }

    /// `n` contacts in bucket 10, closer to `me` than the buckets the tests fill: with `n` at
    /// least [`NEIGHBOURHOOD_BUCKET_FACTOR`] × k, those buckets hold k contacts, not the
    /// neighbourhood's 3k.
    fn with_neighbours(t: &mut RoutingTable, me: NodeId, n: usize, rng: &mut StdRng) {
        for _ in 0..n {
            let _ = t.insert(c(me.random_in_bucket(10, rng)), Instant::now());
        }
    }

    /// A random id in bucket `index` of `me` whose distance falls in quarter `q` of the
    /// bucket's range (see [`RoutingTable::spread_victim`]).
    fn in_quarter(me: NodeId, index: usize, q: usize, rng: &mut StdRng) -> NodeId {
        let t = RoutingTable::new(me, 1, Instant::now());
        loop {
            let id = me.random_in_bucket(index, rng);
            if t.quarter(index, &id) == Some(q) {
                return id;
            }
        }
    }

    #[test]
    fn never_adds_itself() {
        let me = NodeId([1; 20]);
        let mut t = RoutingTable::new(me, 20, Instant::now());
        assert_eq!(t.insert(c(me), Instant::now()), InsertResult::IsSelf);
        assert!(t.is_empty());
    }

    #[test]
    fn one_public_subnet_gets_two_places_per_bucket_and_ten_per_table() {
        use crate::kad::diversity::DiversityLimits;
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(5);
        let limits = DiversityLimits {
            per_bucket: 2,
            per_table: 10,
        };
        let mut t = RoutingTable::new(me, 20, now).with_diversity(limits);
        let at = |id: NodeId, host: &str| Contact::new(id, format!("{host}:50051"));
        // Bucket 150: two from 8.8.8.0/24, the third is refused; another /24 is welcome.
        let ids: Vec<NodeId> = (0..4).map(|_| me.random_in_bucket(150, &mut rng)).collect();
        assert_eq!(t.insert(at(ids[0], "8.8.8.1"), now), InsertResult::Inserted);
        assert_eq!(t.insert(at(ids[1], "8.8.8.2"), now), InsertResult::Inserted);
        assert_eq!(t.insert(at(ids[2], "8.8.8.3"), now), InsertResult::Crowded);
        assert_eq!(t.insert(at(ids[3], "8.8.9.3"), now), InsertResult::Inserted);
        // A known contact is still refreshed.
        assert_eq!(t.insert(at(ids[0], "8.8.8.1"), now), InsertResult::Updated);
        // Across buckets: ten from one /24 at most.
        let mut inserted = 2;
        for b in 100..120 {
            for j in 0..2 {
                let id = me.random_in_bucket(b, &mut rng);
                if t.insert(at(id, &format!("8.8.8.{}", 2 * b + j)), now) == InsertResult::Inserted
                {
                    inserted += 1;
                }
            }
        }
        assert_eq!(inserted, 10);
        // Private and loopback addresses, and names, are not capped.
        for i in 0..5 {
            let id = me.random_in_bucket(140, &mut rng);
            assert_eq!(
                t.insert(at(id, &format!("127.0.0.{i}")), now),
                InsertResult::Inserted
            );
            let id = me.random_in_bucket(141, &mut rng);
            assert_eq!(
                t.insert(at(id, &format!("10.0.0.{i}")), now),
                InsertResult::Inserted
            );
        }
    }

    #[test]
    fn full_bucket_asks_to_ping_lru_and_keeps_replacement() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut t = RoutingTable::new(me, 3, now);
        with_neighbours(&mut t, me, 3 * NEIGHBOURHOOD_BUCKET_FACTOR, &mut rng);
        // One quarter of the range: the contacts are spread as well as they can be.
        let ids: Vec<NodeId> = (0..4).map(|_| in_quarter(me, 100, 0, &mut rng)).collect();
        for id in &ids[..3] {
            assert_eq!(t.insert(c(*id), now), InsertResult::Inserted);
        }
        assert_eq!(
            t.insert(c(ids[3]), now),
            InsertResult::Full { lru: c(ids[0]) }
        );
        assert!(!t.contains(&ids[3]));
        // LRU answered: it stays, now most recent; the newcomer waits.
        t.on_ping_result(&ids[0], true, now);
        assert!(t.contains(&ids[0]));
        assert_eq!(t.buckets()[100].entries.back().unwrap().contact.id, ids[0]);
        // Next LRU (ids[1]) fails to answer: evicted, replacement promoted.
        assert_eq!(
            t.insert(c(ids[3]), now),
            InsertResult::Full { lru: c(ids[1]) }
        );
        t.on_ping_result(&ids[1], false, now);
        assert!(!t.contains(&ids[1]));
        assert!(t.contains(&ids[3]));
        assert_eq!(t.buckets()[100].entries.len(), 3);
    }

    #[test]
    fn a_full_bucket_crowded_in_one_quarter_gives_places_to_the_other_quarters() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(3);
        // k = 8: a quarter with fewer than 2 contacts is sparse, one with more than 4 crowded.
        let mut t = RoutingTable::new(me, 8, now);
        with_neighbours(&mut t, me, 8 * NEIGHBOURHOOD_BUCKET_FACTOR, &mut rng);
        let mut in_quarter = |q: usize| in_quarter(me, 100, q, &mut rng);
        // A join's refresh lookup fills a bucket with the k closest to one random id: all in
        // one quarter of the range.
        let crowd: Vec<NodeId> = (0..8).map(|_| in_quarter(0)).collect();
        for id in &crowd {
            assert_eq!(t.insert(c(*id), now), InsertResult::Inserted);
        }
        // A newcomer from an empty quarter takes the place of the crowd's least-recently
        // seen, which waits first in line in the replacement cache.
        let far = in_quarter(3);
        assert!(t.has_room_for(&far));
        assert_eq!(t.insert(c(far), now), InsertResult::Inserted);
        assert!(t.contains(&far) && !t.contains(&crowd[0]));
        assert_eq!(t.buckets()[100].entries.len(), 8);
        let waiting = &t.buckets()[100].replacements;
        assert_eq!(waiting.back().map(|e| e.contact.id), Some(crowd[0]));
        // Still known (re-bootstrap does not ping it as a stranger), no longer used.
        assert!(t.live_or_waiting().any(|c| c.id == crowd[0]));
        assert!(!t.live().any(|c| c.id == crowd[0]));
        // A second one from that quarter too; a third finds it no longer sparse: the paper's
        // rule (ping the least-recently seen, keep it if it answers).
        assert_eq!(t.insert(c(in_quarter(3)), now), InsertResult::Inserted);
        assert!(!t.contains(&crowd[1]));
        let third = in_quarter(3);
        assert!(!t.has_room_for(&third));
        assert_eq!(
            t.insert(c(third), now),
            InsertResult::Full { lru: c(crowd[2]) }
        );
        // Quarter 1 gets places while quarter 0 holds more than half of k...
        assert_eq!(t.insert(c(in_quarter(1)), now), InsertResult::Inserted);
        assert_eq!(t.insert(c(in_quarter(1)), now), InsertResult::Inserted);
        // ...which it no longer does (4 of 8): quarter 2's newcomer waits like any other.
        let q2 = in_quarter(2);
        assert!(matches!(t.insert(c(q2), now), InsertResult::Full { .. }));
        assert!(!t.contains(&q2));
        let quarters = t.buckets()[100].entries.iter().fold([0; 4], |mut n, e| {
            n[t.quarter(100, &e.contact.id).unwrap()] += 1;
            n
        });
        assert_eq!(quarters, [4, 2, 0, 2]);
    }

    #[test]
    fn a_bucket_next_to_a_neighbourhood_of_fewer_than_3k_holds_3k() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(11);
        // Nothing closer than bucket 100: it holds the rest of this node's 3k closest, all of
        // them up to 3k (the paper's relaxed split, section 2.4, for 3k nodes).
        let wide = 3 * NEIGHBOURHOOD_BUCKET_FACTOR;
        let ids: Vec<NodeId> = (0..=wide)
            .map(|_| in_quarter(me, 100, 0, &mut rng))
            .collect();
        // The first `room` of `ids` go in; the next finds bucket 100 full (all in one quarter
        // of its range, so none takes another's place to spread them).
        let holds = |t: &mut RoutingTable, room: usize| {
            for id in &ids[..room] {
                assert_eq!(t.insert(c(*id), now), InsertResult::Inserted);
            }
            assert_eq!(
                t.insert(c(ids[room]), now),
                InsertResult::Full { lru: c(ids[0]) }
            );
        };
        holds(&mut RoutingTable::new(me, 3, now), wide);
        // Fewer than 3k contacts closer than it: still up to 3k.
        let mut t = RoutingTable::new(me, 3, now);
        with_neighbours(&mut t, me, wide - 1, &mut rng);
        holds(&mut t, wide);
        // 3k contacts closer than it: bucket 100 is an ordinary k-bucket.
        let mut t = RoutingTable::new(me, 3, now);
        with_neighbours(&mut t, me, wide, &mut rng);
        holds(&mut t, 3);
        // Stale contacts closer than it do not count: the neighbourhood is what answers.
        let mut t = RoutingTable::new(me, 3, now);
        let near: Vec<NodeId> = (0..wide)
            .map(|_| me.random_in_bucket(10, &mut rng))
            .collect();
        for id in &near {
            let _ = t.insert(c(*id), now);
            for _ in 0..MAX_FAILURES {
                t.on_failure(id);
            }
        }
        holds(&mut t, wide);
    }

    #[test]
    fn seen_contact_moves_to_tail() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = RoutingTable::new(me, 20, now);
        let a = me.random_in_bucket(50, &mut rng);
        let b = me.random_in_bucket(50, &mut rng);
        let _ = t.insert(c(a), now);
        let _ = t.insert(c(b), now);
        assert_eq!(t.insert(c(a), now), InsertResult::Updated);
        let order: Vec<NodeId> = t.buckets()[50]
            .entries
            .iter()
            .map(|e| e.contact.id)
            .collect();
        assert_eq!(order, vec![b, a]);
    }

    #[test]
    fn higher_incarnation_means_restarted() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]), 20, now);
        let a = Contact::new(NodeId([5; 20]), "a:1").with_incarnation(100);
        assert_eq!(t.insert(a.clone(), now), InsertResult::Inserted);
        assert_eq!(t.insert(a.clone(), now), InsertResult::Updated);
        assert_eq!(
            t.insert(a.clone().with_incarnation(200), now),
            InsertResult::Restarted
        );
        assert_eq!(
            t.insert(a.with_incarnation(150), now),
            InsertResult::Updated
        );
    }

    #[test]
    fn repeated_failures_flag_a_contact_stale_without_removing_it() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut t = RoutingTable::new(me, 20, now);
        let a = NodeId([9; 20]);
        let target = NodeId([8; 20]);
        let _ = t.insert(c(a), now);
        t.mark_answered(&a);
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!t.on_failure(&a));
            assert_eq!(t.closest(&target, 20), vec![c(a)], "not stale yet");
        }
        // No replacement at hand: flagged, never removed (section 4.1).
        for _ in 0..3 {
            assert!(!t.on_failure(&a));
        }
        assert!(t.contains(&a));
        assert_eq!((t.len(), t.stale_len()), (0, 1));
        assert!(
            t.closest(&target, 20).is_empty(),
            "stale contacts are not handed out"
        );
        assert_eq!(
            t.lookup_seeds(&target, 20),
            vec![c(a)],
            "probed when nothing else is left"
        );
        // Heard from again: live.
        assert_eq!(t.insert(c(a), now), InsertResult::Updated);
        assert_eq!((t.len(), t.stale_len()), (1, 0));
    }

    #[test]
    fn stale_contacts_are_probed_less_often_as_their_probes_fail() {
        let mut t = RoutingTable::new(NodeId([0; 20]), 20, Instant::now());
        let a = NodeId([9; 20]);
        let _ = t.insert(c(a), Instant::now());
        for _ in 0..MAX_FAILURES - 1 {
            t.on_failure(&a);
        }
        let due = |t: &RoutingTable, round| t.stale_due(round, 3).count() == 1;
        assert!(!due(&t, 0), "not stale yet: lookups still use it, no probe");
        t.on_failure(&a);
        // Each probe fails: the rounds it is probed in spread out 1, 2, 4, then every 8.
        let mut probed = Vec::new();
        for round in 1..=40 {
            if due(&t, round) {
                probed.push(round);
                t.on_failure(&a);
            }
        }
        assert_eq!(probed, vec![1, 2, 4, 8, 16, 24, 32, 40]);
        // An answer makes it live again: no more probes.
        assert_eq!(t.insert(c(a), Instant::now()), InsertResult::Updated);
        assert!(!due(&t, 48));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_stale_contact_that_never_answered_is_no_lookup_seed() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]), 20, now);
        let bogus = NodeId([9; 20]);
        let _ = t.insert(c(bogus), now);
        assert!(!t.any_answered());
        assert_eq!(t.lookup_seeds(&bogus, 20), vec![c(bogus)], "live: tried");
        for _ in 0..MAX_FAILURES {
            assert!(!t.on_failure(&bogus));
        }
        assert_eq!(t.stale_len(), 1);
        assert!(t.lookup_seeds(&bogus, 20).is_empty());
        assert_eq!(t.stale().count(), 1, "still probed in the background");
    }

    #[test]
    fn a_failure_hands_the_slot_to_a_waiting_replacement() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut t = RoutingTable::new(me, 2, now);
        with_neighbours(&mut t, me, 2 * NEIGHBOURHOOD_BUCKET_FACTOR, &mut rng);
        let ids: Vec<NodeId> = (0..3).map(|_| me.random_in_bucket(90, &mut rng)).collect();
        for id in &ids {
            let _ = t.insert(c(*id), now);
        }
        assert!(!t.contains(&ids[2]), "waits in the replacement cache");
        assert!(t.on_failure(&ids[1]));
        assert!(!t.contains(&ids[1]));
        assert!(t.contains(&ids[2]));
    }

    #[test]
    fn an_empty_bucket_is_refreshed_through_farther_contacts() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(5);
        let mut t = RoutingTable::new(me, 20, now);
        let near: Vec<NodeId> = (0..20)
            .map(|_| me.random_in_bucket(150, &mut rng))
            .collect();
        let far: Vec<NodeId> = (0..3).map(|_| me.random_in_bucket(159, &mut rng)).collect();
        for id in near.iter().chain(&far) {
            let _ = t.insert(c(*id), now);
        }
        let target = me.random_in_bucket(158, &mut rng);
        // As any lookup: the 20 neighbours, which are closer to the target than bucket 159.
        let usual = t.lookup_seeds(&target, 20);
        assert!(usual.iter().all(|s| near.contains(&s.id)));
        // Bucket 158 is empty: its refresh asks the farther contacts.
        let seeds = t.refresh_seeds(158, &target, 20);
        assert_eq!(seeds.len(), 3);
        assert!(seeds.iter().all(|s| far.contains(&s.id)));
        // A non-empty bucket, or an empty one with nothing beyond it, starts as usual.
        let inside = me.random_in_bucket(150, &mut rng);
        assert_eq!(
            t.refresh_seeds(150, &inside, 20),
            t.lookup_seeds(&inside, 20)
        );
        let mut only_near = RoutingTable::new(me, 20, now);
        for id in &near {
            let _ = only_near.insert(c(*id), now);
        }
        let beyond = me.random_in_bucket(155, &mut rng);
        assert_eq!(
            only_near.refresh_seeds(155, &beyond, 20),
            only_near.lookup_seeds(&beyond, 20)
        );
        assert_eq!(only_near.refresh_seeds(155, &beyond, 20).len(), 20);
    }

    #[test]
    fn live_seeds_are_preferred_over_stale_ones() {
        let now = Instant::now();
        let me = NodeId([0; 20]);
        let mut t = RoutingTable::new(me, 20, now);
        let (near, far) = (NodeId([1; 20]), NodeId([0xf0; 20]));
        let _ = t.insert(c(near), now);
        let _ = t.insert(c(far), now);
        t.mark_answered(&near);
        for _ in 0..MAX_FAILURES {
            let _ = t.on_failure(&near);
        }
        assert_eq!(t.lookup_seeds(&near, 20), vec![c(far)]);
    }

    #[test]
    fn stale_buckets_respect_interval() {
        let t0 = Instant::now();
        let me = NodeId([0; 20]);
        let mut t = RoutingTable::new(me, 20, t0);
        let hour = std::time::Duration::from_secs(3600);
        assert!(t.stale_buckets(t0 + hour, hour).is_empty(), "nobody to ask");
        let _ = t.insert(c(NodeId([0xff; 20])), t0);
        assert!(t.stale_buckets(t0, hour).is_empty());
        let later = t0 + hour;
        assert_eq!(t.stale_buckets(later, hour), vec![158, 159]);
        t.mark_lookup(&NodeId([0xff; 20]), later);
        assert_eq!(t.stale_buckets(later, hour), vec![158]);
    }

    #[test]
    fn only_a_full_bucket_with_a_live_oldest_entry_is_refreshed_by_a_ping() {
        let t0 = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(9);
        let mut t = RoutingTable::new(me, 3, t0);
        with_neighbours(&mut t, me, 3 * NEIGHBOURHOOD_BUCKET_FACTOR, &mut rng);
        let ids: Vec<NodeId> = (0..3).map(|_| me.random_in_bucket(100, &mut rng)).collect();
        for id in &ids[..2] {
            let _ = t.insert(c(*id), t0);
        }
        assert_eq!(
            t.refresh_probe(100),
            None,
            "room left: a lookup may fill it"
        );
        assert_eq!(t.refresh_probe(99), None, "empty");
        let _ = t.insert(c(ids[2]), t0);
        assert_eq!(
            t.refresh_probe(100),
            Some(c(ids[0])),
            "the least-recently seen"
        );
        // Once the oldest entry has failed, a lookup finds the bucket's replacements.
        t.on_failure(&ids[0]);
        assert_eq!(t.refresh_probe(100), None);
        // A probe sent counts as the bucket's refresh.
        let hour = std::time::Duration::from_secs(3600);
        assert!(t.stale_buckets(t0 + hour, hour).contains(&100));
        t.mark_refreshed(100, t0 + hour);
        assert!(!t.stale_buckets(t0 + hour, hour).contains(&100));
    }

    #[test]
    fn buckets_closer_than_the_closest_neighbour_are_refreshed_by_one_lookup() {
        let t0 = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(11);
        let mut t = RoutingTable::new(me, 20, t0);
        for i in [152, 154, 155, 157, 158, 159] {
            let _ = t.insert(c(me.random_in_bucket(i, &mut rng)), t0);
        }
        let hour = std::time::Duration::from_secs(3600);
        let later = t0 + hour;
        // Not 160 lookups: buckets 0 to 150 are one range seen from the network.
        assert_eq!(
            t.stale_buckets(later, hour),
            (151..=159).collect::<Vec<_>>()
        );
        t.mark_lookup(&me.random_in_bucket(151, &mut rng), later);
        assert!(
            (0..=151).all(|i| !t.buckets()[i].lookup_due(later, hour)),
            "a lookup below the closest neighbour refreshes every bucket below it"
        );
        // A lookup inside the known range refreshes its own bucket only.
        t.mark_lookup(&me.random_in_bucket(156, &mut rng), later);
        assert_eq!(
            t.stale_buckets(later, hour),
            vec![152, 153, 154, 155, 157, 158, 159]
        );
    }

    #[test]
    fn the_neighbourhood_bucket_holds_the_kth_closest_live_contact() {
        let t0 = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut t = RoutingTable::new(me, 4, t0);
        for i in [140, 150, 150] {
            let _ = t.insert(c(me.random_in_bucket(i, &mut rng)), t0);
        }
        assert_eq!(t.neighbourhood_bucket(), None, "fewer than k contacts");
        let far = me.random_in_bucket(155, &mut rng);
        let _ = t.insert(c(far), t0);
        assert_eq!(t.neighbourhood_bucket(), Some(155));
        let _ = t.insert(c(me.random_in_bucket(152, &mut rng)), t0);
        assert_eq!(t.neighbourhood_bucket(), Some(152));
        // A stale contact does not count.
        let near = t.closest(&me, 1)[0].id;
        for _ in 0..MAX_FAILURES {
            t.on_failure(&near);
        }
        assert_eq!(t.neighbourhood_bucket(), Some(155));
        // For a key at this node's own id, the live seeds in buckets 140 and 150 lie nearer
        // than 2^155: likely replicas; the one in 155 does not.
        let seeds = t.lookup_seeds(&me, 4);
        assert_eq!(seeds.len(), 4);
        assert_eq!(t.likely_replicas(&me, &seeds), 3);
    }

    #[test]
    fn a_table_covers_a_key_where_the_buckets_around_its_k_closest_are_not_full() {
        let t0 = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(5);
        let mut t = RoutingTable::new(me, 4, t0);
        let covers = |t: &RoutingTable, key: &NodeId| t.covers(key, &t.lookup_seeds(key, 4));
        for _ in 0..3 {
            let _ = t.insert(c(me.random_in_bucket(150, &mut rng)), t0);
        }
        let far = me.random_in_bucket(159, &mut rng);
        let near = me.random_in_bucket(150, &mut rng);
        assert!(
            covers(&t, &far),
            "fewer than k contacts: every one is among any key's k closest"
        );
        assert!(covers(&t, &near));
        for _ in 0..4 {
            let _ = t.insert(c(me.random_in_bucket(159, &mut rng)), t0);
        }
        assert_eq!(t.buckets[159].entries.len(), 4);
        assert!(
            !covers(&t, &far),
            "the far key's k closest lie in a full bucket"
        );
        assert!(
            !covers(&t, &near),
            "the near key's 4th closest is in the full bucket: so may be nodes this table turned away"
        );
        let _ = t.insert(c(me.random_in_bucket(152, &mut rng)), t0);
        assert!(
            covers(&t, &near),
            "its 4 closest lie within buckets 0-152, none full"
        );
        assert!(!covers(&t, &far));
    }

    #[test]
    fn gaps_are_empty_buckets_where_the_neighbourhood_says_nodes_should_be() {
        let t0 = Instant::now();
        let me = NodeId([0; 20]);
        let mut rng = StdRng::seed_from_u64(9);
        let mut t = RoutingTable::new(me, 20, t0);
        // 20 neighbours within bucket 154 (the 20th closest is in 154): about 20 nodes per
        // 2^155 ids, so bucket 152 (2^152 ids) should hold 2 or more, bucket 150 fewer.
        for i in [146, 150, 151, 153, 153, 153, 153, 153] {
            let _ = t.insert(c(me.random_in_bucket(i, &mut rng)), t0);
        }
        for _ in 0..12 {
            let _ = t.insert(c(me.random_in_bucket(154, &mut rng)), t0);
        }
        let _ = t.insert(c(me.random_in_bucket(159, &mut rng)), t0);
        assert_eq!(t.populated_from(), Some(152));
        let minute = std::time::Duration::from_secs(60);
        assert!(
            t.gap_buckets(t0, minute).is_empty(),
            "looked up at creation"
        );
        let later = t0 + minute;
        assert_eq!(
            t.gap_buckets(later, minute),
            vec![152, 155, 156, 157, 158],
            "not 147-149: empty buckets that close are the rule"
        );
        t.mark_lookup(&me.random_in_bucket(158, &mut rng), later);
        assert!(!t.gap_buckets(later, minute).contains(&158));
        // Three contacts say little: a small network leaves most buckets empty.
        let mut small = RoutingTable::new(me, 20, t0);
        for i in [150, 153, 159] {
            let _ = small.insert(c(me.random_in_bucket(i, &mut rng)), t0);
        }
        assert_eq!(small.populated_from(), Some(160));
        assert!(small.gap_buckets(later, minute).is_empty());
    }

    proptest! {
        /// However contacts come, go, fail and come back at reused addresses, the table
        /// (entries and replacement caches) holds one id per address (what `insert`'s
        /// shortcut for cached contacts relies on) and each id once (a contact promoted
        /// from the replacement cache leaves it, so a failure cannot promote its own copy).
        #[test]
        fn the_table_holds_one_id_per_address(seed in any::<u64>(), n in 1usize..400) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let me = NodeId::random(&mut rng);
            // k = 2 fills buckets and their caches; 24 addresses are reused by new ids.
            let mut t = RoutingTable::new(me, 2, now);
            let mut seen: Vec<Contact> = Vec::new();
            for step in 0..n {
                let roll = rng.random_range(0..10);
                if roll < 5 || seen.is_empty() {
                    let id = NodeId::random(&mut rng);
                    let contact = Contact::new(id, format!("10.0.0.{}:1", rng.random_range(0..24)));
                    seen.push(contact.clone());
                    let _ = t.insert(contact, now);
                } else {
                    let old = seen[rng.random_range(0..seen.len())].clone();
                    match roll {
                        5..=7 => { let _ = t.insert(old, now); }
                        8 => { let _ = t.on_failure(&old.id); }
                        _ => t.on_ping_result(&old.id, step % 2 == 0, now),
                    }
                }
                let mut addrs: Vec<&str> = t
                    .buckets()
                    .iter()
                    .flat_map(|b| b.entries.iter().chain(&b.replacements))
                    .map(|e| &*e.contact.addr)
                    .collect();
                let all = addrs.len();
                addrs.sort_unstable();
                addrs.dedup();
                prop_assert_eq!(addrs.len(), all, "an address with two ids after step {}", step);
                let mut ids: Vec<NodeId> = t
                    .buckets()
                    .iter()
                    .flat_map(|b| b.entries.iter().chain(&b.replacements))
                    .map(|e| e.contact.id)
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), all, "an id twice in the table after step {}", step);
            }
        }

        #[test]
        fn contacts_land_in_bucket_of_their_distance(seed in any::<u64>(), n in 1usize..300) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let me = NodeId::random(&mut rng);
            let mut t = RoutingTable::new(me, 20, now);
            for _ in 0..n {
                let _ = t.insert(c(NodeId::random(&mut rng)), now);
            }
            for (i, b) in t.buckets().iter().enumerate() {
                prop_assert!(b.entries.len() <= 20 * NEIGHBOURHOOD_BUCKET_FACTOR);
                for e in &b.entries {
                    prop_assert_eq!(me.bucket_index(&e.contact.id), Some(i));
                }
            }
        }

        #[test]
        fn closest_is_sorted_and_truly_closest(seed in any::<u64>(), n in 1usize..200, count in 1usize..30) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let me = NodeId::random(&mut rng);
            let mut t = RoutingTable::new(me, 20, now);
            for _ in 0..n {
                let _ = t.insert(c(NodeId::random(&mut rng)), now);
            }
            // A random target (it falls in one of the farthest buckets), this node's own id,
            // or one in a bucket near it: every order of the buckets is checked.
            let target = match seed % 3 {
                0 => NodeId::random(&mut rng),
                1 => me,
                _ => me.random_in_bucket(150 + (seed as usize / 3) % 10, &mut rng),
            };
            let got = t.closest(&target, count);
            prop_assert_eq!(got.len(), count.min(t.len()));
            prop_assert!(got.windows(2).all(|w| w[0].id.distance(&target) < w[1].id.distance(&target)));
            let worst = got.last().map(|c| c.id.distance(&target));
            let all: Vec<Contact> = t.buckets().iter().flat_map(|b| b.entries.iter().map(|e| e.contact.clone())).collect();
            let closer_outside = all.iter().filter(|c| !got.contains(c)).any(|c| Some(c.id.distance(&target)) < worst);
            prop_assert!(!closer_outside);
        }
    }
}
