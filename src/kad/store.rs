//! Record storage behind the [`RecordStore`] trait, with an in-memory default.
//!
//! Records carry a version (last writer wins) and a wall-clock expiry, so that replication,
//! caching and catching up never bring back an older value over a newer one, nor a deleted
//! key: a delete is a tombstone record that lives until it expires.
//!
//! No write costs work in proportion to the store: records are kept in key order (a
//! `BTreeMap`), so the records of one k-bucket's range or of one node's neighbourhood are a
//! range scan ([`RecordStore::range`]), and records that expire are indexed by their expiry,
//! so making room or expiring takes only the records that are due.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::{Key, NodeId};

/// A value with its replication metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub value: Vec<u8>,
    /// Last-writer-wins version: the coordinating node's hybrid logical clock, in microseconds
    /// since the Unix epoch (its wall clock, moved past every version of the key it saw).
    pub version: u64,
    /// Wall-clock expiry in milliseconds since the Unix epoch; [`NEVER`]: until deleted.
    pub expires_at_ms: u64,
    pub tombstone: bool,
    pub publisher: NodeId,
    /// The key as the user wrote it (informational; the DHT key is its SHA-1).
    pub user_key: String,
}

impl Record {
    /// The record without its value: what a survey needs (version, expiry, tombstone), and
    /// all that a FIND_VALUE with `omit_value` is answered with.
    pub fn metadata(&self) -> Record {
        Record {
            key: self.key,
            value: Vec::new(),
            version: self.version,
            expires_at_ms: self.expires_at_ms,
            tombstone: self.tombstone,
            publisher: self.publisher,
            user_key: self.user_key.clone(),
        }
    }

    /// Whether the record has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at_ms <= unix_ms(now)
    }

    /// Total order used to settle conflicts: higher version wins; at equal versions a tombstone
    /// wins, then the larger value, so every replica settles on the same record.
    fn precedence(&self) -> (u64, bool, &[u8]) {
        (self.version, self.tombstone, &self.value)
    }

    /// Whether this record wins over `other` (the order every replica settles conflicts by).
    pub fn supersedes(&self, other: &Record) -> bool {
        self.precedence() > other.precedence()
    }

    /// Whether two records are the same write (possibly with different expiry).
    fn same_write(&self, other: &Record) -> bool {
        self.precedence() == other.precedence()
    }
}

/// `Record::expires_at_ms` of a record that lives until it is deleted.
pub const NEVER: u64 = u64::MAX;

/// When a tombstone written at `now_ms` may expire: after `grace_ms`, and not before any copy
/// it deletes (`copies`: the expiry of every copy the delete saw) could expire; [`NEVER`] when
/// one of them never does. A holder the delete missed then finds the tombstone in place
/// whenever its copy would come back.
pub fn tombstone_expiry(now_ms: u64, grace_ms: u64, copies: impl IntoIterator<Item = u64>) -> u64 {
    copies
        .into_iter()
        .fold(now_ms.saturating_add(grace_ms), u64::max)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Microseconds since the Unix epoch.
pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

/// A stored record plus local bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub record: Record,
    /// A cache copy placed by a lookup (paper section 2.5): expires early, never replicated.
    pub cached: bool,
    /// When this node last received or sent a STORE for this record (wall clock, ms), used to
    /// skip replicating records a peer has just replicated to us (paper section 2.5).
    pub refreshed_at_ms: u64,
    /// The peer whose STORE brought this write here, if it counts against a quota
    /// ([`RecordStore::put_from`]); local bookkeeping, not persisted.
    pub owner: Option<Owner>,
}

/// A peer as the per-peer storage quota counts it: a digest of what proves who it is (its
/// node id where ids are bound to keys, else the IP address its connection came from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner(pub u64);

impl Owner {
    /// The owner for these identifying bytes (a node id, an IP address).
    pub fn of(identity: &[u8]) -> Owner {
        let digest = NodeId::hash(identity);
        Owner(u64::from_be_bytes(
            digest.0[..8].try_into().expect("8 bytes"),
        ))
    }
}

/// Outcome of [`RecordStore::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The record was stored (new, newer, or the same write with a later expiry).
    Stored,
    /// A newer version is held; the record was not stored.
    Stale { current_version: u64 },
}

/// Why the store refused a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("value is {size} bytes, the maximum is {max}")]
    ValueTooLarge { size: usize, max: usize },
    #[error("store is full: {max} records")]
    Full { max: usize },
    #[error("store is full: {max} bytes of records (max_store_bytes)")]
    FullBytes { max: usize },
    #[error(
        "this peer's share of the store is used up: {max} bytes of records (peer_store_quota_pct)"
    )]
    OverQuota { max: usize },
    #[error("key is {size} bytes, the maximum is {max}")]
    KeyTooLong { size: usize, max: usize },
    #[error("record already expired")]
    Expired,
    /// The durable store could not write the record (it was not stored).
    #[error("cannot write to the data dir: {0}")]
    Io(String),
}

/// Where records live. Implementations must apply the version rules of [`Record`].
pub trait RecordStore: Send {
    fn get(&self, key: &Key, now: SystemTime) -> Option<&Stored>;
    /// Stores a record that no peer's quota pays for (this node's own writes, repairs).
    fn put(
        &mut self,
        record: Record,
        cached: bool,
        now: SystemTime,
    ) -> Result<PutOutcome, StoreError> {
        self.put_from(record, cached, None, now)
    }
    /// Stores a record that `owner`'s STORE brought, if any: a write that grows the store is
    /// refused ([`StoreError::OverQuota`]) when the records it brought would then take more
    /// than [`StoreLimits::max_owner_bytes`]. A write that does not grow the store (a
    /// tombstone over a value, the same write again) always fits.
    fn put_from(
        &mut self,
        record: Record,
        cached: bool,
        owner: Option<Owner>,
        now: SystemTime,
    ) -> Result<PutOutcome, StoreError>;
    /// Marks a record as refreshed (a STORE for it was just sent or received).
    fn touch(&mut self, key: &Key, now: SystemTime);
    /// Makes the record for `key` (not a cached copy) due for replication now, as if never
    /// refreshed; returns whether there was one.
    fn mark_due(&mut self, key: &Key) -> bool;
    /// Turns the record for `key` into a cached copy (never replicated nor handed off) that
    /// expires by `expires_at_ms` at the latest; returns whether there was such a record not
    /// cached already. For a copy this node handed over to the key's k closest nodes
    /// (`crate::kad::replication`); the same write stored again undoes it.
    fn demote(&mut self, key: &Key, expires_at_ms: u64) -> bool;
    /// Drops expired records; returns how many. Costs only the records that expired.
    fn expire(&mut self, now: SystemTime) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every stored record, borrowed, in key order (replication picks a few and clones
    /// those). Expired records not yet dropped are included.
    fn iter(&self) -> Box<dyn Iterator<Item = &Stored> + '_>;
    /// The stored records with keys from `lo` to `hi` (both included), in key order, as
    /// [`iter`](Self::iter) would give them; costs only what it returns.
    fn range(&self, lo: &Key, hi: &Key) -> Box<dyn Iterator<Item = &Stored> + '_>;
    /// Whether puts since the last [`flush`](Self::flush) still have to be made durable (a
    /// store that commits in batches). Their acknowledgements must wait for the flush.
    fn unflushed(&self) -> bool {
        false
    }
    /// Makes every put since the last flush durable, or undoes them all and says why.
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Limits of the in-memory store.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub max_value_bytes: usize,
    pub max_records: usize,
    /// Memory the records may take ([`record_bytes`] each) at most.
    pub max_bytes: usize,
    /// Memory the records one [`Owner`] brought may take at most.
    pub max_owner_bytes: usize,
}

impl StoreLimits {
    /// Limits with a quota per owner of `quota_pct` percent of `max_bytes` (100: no quota
    /// beyond `max_bytes`).
    pub fn new(
        max_value_bytes: usize,
        max_records: usize,
        max_bytes: usize,
        quota_pct: u8,
    ) -> Self {
        let max_owner_bytes = if quota_pct >= 100 {
            max_bytes
        } else {
            ((max_bytes as u128 * u128::from(quota_pct)) / 100) as usize
        };
        StoreLimits {
            max_value_bytes,
            max_records,
            max_bytes,
            max_owner_bytes,
        }
    }
}

/// Longest user key, in bytes (a client's, and one a peer's STORE carries).
pub const MAX_KEY_BYTES: usize = 1024;

/// What a record costs in memory beyond its value and user key: the record's fixed fields,
/// two heap allocations and its share of the key-ordered map. Measured with
/// `cargo run --release --example store_overhead`: 265 to 277 bytes per record (1,000,000
/// records of 0 and 100 bytes, x86-64, glibc); counted as 352 (what the hash map this store
/// used before took), which leaves room for the heap's fragmentation under overwrites.
pub const RECORD_OVERHEAD_BYTES: usize = 352;
/// What a record that expires costs on top: its entry in the expiry index. Measured with
/// `cargo run --release --example store_overhead -- 1000000 100 3600`: 53 bytes.
pub const EXPIRY_INDEX_BYTES: usize = 56;

/// The memory a stored record is counted as taking.
pub fn record_bytes(r: &Record) -> usize {
    let indexed = if r.expires_at_ms == NEVER {
        0
    } else {
        EXPIRY_INDEX_BYTES
    };
    r.value.len() + r.user_key.len() + RECORD_OVERHEAD_BYTES + indexed
}

/// The default store: records in key order, bounded in value size, record count and bytes.
pub struct MemoryStore {
    records: BTreeMap<Key, Stored>,
    /// `(expires_at_ms, key)` of every record that expires, soonest first.
    expiries: BTreeSet<(u64, Key)>,
    /// [`record_bytes`] of the records each owner brought (owners with none are absent).
    owners: HashMap<Owner, usize>,
    limits: StoreLimits,
    /// [`record_bytes`] of every record held.
    bytes: usize,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore {
            records: BTreeMap::new(),
            expiries: BTreeSet::new(),
            owners: HashMap::new(),
            limits,
            bytes: 0,
        }
    }

    /// The bytes the records are counted as taking ([`record_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bytes the records `owner` brought are counted as taking.
    pub fn owner_bytes(&self, owner: &Owner) -> usize {
        self.owners.get(owner).copied().unwrap_or(0)
    }

    /// Whether the store has room for `record` (which replaces any entry for its key): a new
    /// key needs a free record slot, and a write that grows the store needs room in bytes,
    /// and within its owner's quota if it has one.
    pub fn room_for(&self, record: &Record, owner: Option<Owner>) -> Result<(), StoreError> {
        let existing = self.records.get(&record.key);
        if existing.is_none() && self.records.len() >= self.limits.max_records {
            return Err(StoreError::Full {
                max: self.limits.max_records,
            });
        }
        let freed = existing.map_or(0, |s| record_bytes(&s.record));
        let needed = record_bytes(record);
        if needed <= freed {
            return Ok(());
        }
        if self.bytes - freed + needed > self.limits.max_bytes {
            return Err(StoreError::FullBytes {
                max: self.limits.max_bytes,
            });
        }
        if let Some(owner) = owner {
            let own_freed = existing
                .filter(|s| s.owner == Some(owner))
                .map_or(0, |_| freed);
            if self.owner_bytes(&owner) - own_freed + needed > self.limits.max_owner_bytes {
                return Err(StoreError::OverQuota {
                    max: self.limits.max_owner_bytes,
                });
            }
        }
        Ok(())
    }

    /// Inserts or replaces the entry for `key`, keeping the byte count and the expiry index.
    fn set(&mut self, key: Key, entry: Option<Stored>) {
        if let Some(s) = &entry {
            let bytes = record_bytes(&s.record);
            self.bytes += bytes;
            if let Some(owner) = s.owner {
                *self.owners.entry(owner).or_default() += bytes;
            }
            self.index_expiry(s.record.expires_at_ms, key);
        }
        let old = match entry {
            Some(s) => self.records.insert(key, s),
            None => self.records.remove(&key),
        };
        if let Some(old) = old {
            let bytes = record_bytes(&old.record);
            self.bytes -= bytes;
            if let Some(owner) = old.owner
                && let Some(held) = self.owners.get_mut(&owner)
            {
                *held -= bytes;
                if *held == 0 {
                    self.owners.remove(&owner);
                }
            }
            let now_indexed = self.records.get(&key).map(|s| s.record.expires_at_ms);
            if now_indexed != Some(old.record.expires_at_ms) {
                self.expiries.remove(&(old.record.expires_at_ms, key));
            }
        }
    }

    fn index_expiry(&mut self, expires_at_ms: u64, key: Key) {
        if expires_at_ms != NEVER {
            self.expiries.insert((expires_at_ms, key));
        }
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The entry for `key`, expired or not (for stores layered on this one).
    pub fn entry(&self, key: &Key) -> Option<&Stored> {
        self.records.get(key)
    }

    /// Puts back an entry as it was before a put that could not be persisted.
    pub fn restore(&mut self, key: Key, entry: Option<Stored>) {
        self.set(key, entry);
    }

    /// Inserts a record read back from disk, bypassing the limits (records already held are
    /// never dropped because a limit was lowered; new keys are refused while over it).
    pub fn insert_loaded(&mut self, s: Stored) {
        self.set(s.record.key, Some(s));
    }

    /// Drops expired records and returns their keys (soonest expired first); costs only them.
    pub fn drain_expired(&mut self, now: SystemTime) -> Vec<Key> {
        let now_ms = unix_ms(now);
        let mut expired = Vec::new();
        while let Some(&(at, key)) = self.expiries.first() {
            if at > now_ms {
                break;
            }
            self.set(key, None);
            expired.push(key);
        }
        expired
    }
}

impl RecordStore for MemoryStore {
    fn get(&self, key: &Key, now: SystemTime) -> Option<&Stored> {
        self.records.get(key).filter(|s| !s.record.expired(now))
    }

    fn put_from(
        &mut self,
        record: Record,
        cached: bool,
        owner: Option<Owner>,
        now: SystemTime,
    ) -> Result<PutOutcome, StoreError> {
        if record.value.len() > self.limits.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                size: record.value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        if record.expired(now) {
            return Err(StoreError::Expired);
        }
        if record.user_key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLong {
                size: record.user_key.len(),
                max: MAX_KEY_BYTES,
            });
        }
        let now_ms = unix_ms(now);
        let existing = self.records.get(&record.key);
        let live = existing.filter(|s| !s.record.expired(now));
        if let Some(current) = live {
            if current.record.same_write(&record) {
                // The same write, perhaps living longer: it replaces the entry (so that the
                // byte count and the expiry index follow a new expiry) if there is room.
                let mut longer = current.clone();
                longer.record.expires_at_ms =
                    current.record.expires_at_ms.max(record.expires_at_ms);
                longer.cached &= cached;
                longer.refreshed_at_ms = now_ms;
                self.room_for(&longer.record, longer.owner)?;
                self.set(record.key, Some(longer));
                return Ok(PutOutcome::Stored);
            }
            if record.precedence() <= current.record.precedence() {
                return Ok(PutOutcome::Stale {
                    current_version: current.record.version,
                });
            }
        }
        // Expired records are dropped to make room when there is none.
        if self.room_for(&record, owner).is_err() {
            self.expire(now);
            self.room_for(&record, owner)?;
        }
        let key = record.key;
        self.set(
            key,
            Some(Stored {
                record,
                cached,
                refreshed_at_ms: now_ms,
                owner,
            }),
        );
        Ok(PutOutcome::Stored)
    }

    fn touch(&mut self, key: &Key, now: SystemTime) {
        if let Some(s) = self.records.get_mut(key) {
            s.refreshed_at_ms = unix_ms(now);
        }
    }

    fn mark_due(&mut self, key: &Key) -> bool {
        match self.records.get_mut(key) {
            Some(s) if !s.cached => {
                s.refreshed_at_ms = 0;
                true
            }
            _ => false,
        }
    }

    fn demote(&mut self, key: &Key, expires_at_ms: u64) -> bool {
        let Some(s) = self.records.get(key).filter(|s| !s.cached) else {
            return false;
        };
        let mut demoted = s.clone();
        demoted.cached = true;
        demoted.record.expires_at_ms = demoted.record.expires_at_ms.min(expires_at_ms);
        self.set(*key, Some(demoted));
        true
    }

    fn expire(&mut self, now: SystemTime) -> usize {
        self.drain_expired(now).len()
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Stored> + '_> {
        Box::new(self.records.values())
    }

    fn range(&self, lo: &Key, hi: &Key) -> Box<dyn Iterator<Item = &Stored> + '_> {
        if lo > hi {
            return Box::new(std::iter::empty());
        }
        Box::new(self.records.range(*lo..=*hi).map(|(_, s)| s))
    }
}

/// The test suite every [`RecordStore`] must pass (run against the memory store here and
/// against the durable store in `crate::storage`).
#[cfg(test)]
pub(crate) mod suite {
    use super::*;

    /// The limits every store under test is built with.
    pub const LIMITS: StoreLimits = StoreLimits {
        max_value_bytes: 16,
        max_records: 2,
        // Two records of up to 10 bytes each (a user key is empty here).
        max_bytes: 2 * (RECORD_OVERHEAD_BYTES + EXPIRY_INDEX_BYTES + 10),
        max_owner_bytes: RECORD_OVERHEAD_BYTES + EXPIRY_INDEX_BYTES + 10,
    };

    /// Runs every case against fresh stores from `make` (built with [`LIMITS`]).
    pub fn run_all(make: &mut dyn FnMut() -> Box<dyn RecordStore>) {
        newer_version_wins_older_is_refused(&mut *make());
        tombstone_blocks_older_values(&mut *make());
        same_write_extends_expiry(&mut *make());
        limits_are_enforced_with_clear_errors(&mut *make());
        bytes_are_bounded_and_a_delete_always_fits(&mut *make());
        expiry_is_wall_clock(&mut *make());
        touch_and_mark_due(&mut *make());
        ranges_are_in_key_order(&mut *make());
        expiry_takes_the_due_and_follows_a_longer_life(&mut *make());
        an_owner_is_held_to_its_quota(&mut *make());
        a_demoted_copy_is_a_cache_until_the_same_write_comes_again(&mut *make());
    }

    pub fn rec(key: u8, value: &[u8], version: u64, tombstone: bool, now: SystemTime) -> Record {
        Record {
            key: NodeId([key; 20]),
            value: value.to_vec(),
            version,
            expires_at_ms: unix_ms(now) + 60_000,
            tombstone,
            publisher: NodeId([0; 20]),
            user_key: String::new(),
        }
    }

    fn newer_version_wins_older_is_refused(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        assert_eq!(
            s.put(rec(1, b"v2", 2, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(
            s.put(rec(1, b"v1", 1, false, now), false, now),
            Ok(PutOutcome::Stale { current_version: 2 })
        );
        assert_eq!(s.get(&NodeId([1; 20]), now).unwrap().record.value, b"v2");
        assert_eq!(
            s.put(rec(1, b"v3", 3, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(s.get(&NodeId([1; 20]), now).unwrap().record.value, b"v3");
    }

    fn tombstone_blocks_older_values(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, b"v1", 1, false, now), false, now).unwrap();
        s.put(rec(1, b"", 2, true, now), false, now).unwrap();
        assert_eq!(
            s.put(rec(1, b"v1", 1, false, now), false, now),
            Ok(PutOutcome::Stale { current_version: 2 })
        );
        assert!(s.get(&NodeId([1; 20]), now).unwrap().record.tombstone);
        // At equal versions the tombstone wins too.
        assert_eq!(
            s.put(rec(1, b"zz", 2, false, now), false, now),
            Ok(PutOutcome::Stale { current_version: 2 })
        );
    }

    fn a_demoted_copy_is_a_cache_until_the_same_write_comes_again(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        let r = rec(1, b"v", 5, false, now);
        s.put(r.clone(), false, now).unwrap();
        let soon = unix_ms(now) + 1_000;
        assert!(s.demote(&r.key, soon));
        let held = s.get(&r.key, now).unwrap();
        assert!(held.cached);
        assert_eq!(held.record.expires_at_ms, soon, "expires by the given time");
        assert!(!s.mark_due(&r.key), "a cached copy is never replicated");
        assert!(!s.demote(&r.key, soon), "already a cached copy");
        assert!(!s.demote(&NodeId([9; 20]), soon), "no such record");
        // A later limit does not lengthen its life.
        let mut short = rec(2, b"w", 5, false, now);
        short.expires_at_ms = unix_ms(now) + 500;
        s.put(short.clone(), false, now).unwrap();
        assert!(s.demote(&short.key, soon));
        assert_eq!(
            s.get(&short.key, now).unwrap().record.expires_at_ms,
            short.expires_at_ms
        );
        assert_eq!(
            s.expire(now + Duration::from_millis(1_001)),
            2,
            "both expired"
        );
        // The same write stored again (this node is among the k closest again) is a full copy
        // with its own expiry once more.
        s.put(r.clone(), false, now).unwrap();
        assert!(s.demote(&r.key, soon));
        assert_eq!(s.put(r.clone(), false, now), Ok(PutOutcome::Stored));
        let held = s.get(&r.key, now).unwrap();
        assert!(!held.cached);
        assert_eq!(held.record.expires_at_ms, r.expires_at_ms);
    }

    fn same_write_extends_expiry(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        let mut r = rec(1, b"v", 5, false, now);
        s.put(r.clone(), false, now).unwrap();
        r.expires_at_ms += 1000;
        assert_eq!(s.put(r.clone(), false, now), Ok(PutOutcome::Stored));
        assert_eq!(
            s.get(&r.key, now).unwrap().record.expires_at_ms,
            r.expires_at_ms
        );
    }

    fn limits_are_enforced_with_clear_errors(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        assert_eq!(
            s.put(rec(1, &[0; 17], 1, false, now), false, now),
            Err(StoreError::ValueTooLarge { size: 17, max: 16 })
        );
        s.put(rec(1, b"a", 1, false, now), false, now).unwrap();
        s.put(rec(2, b"b", 1, false, now), false, now).unwrap();
        assert_eq!(
            s.put(rec(3, b"c", 1, false, now), false, now),
            Err(StoreError::Full { max: 2 })
        );
        // Updating an existing key is still allowed when full.
        assert_eq!(
            s.put(rec(2, b"bb", 2, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
    }

    fn bytes_are_bounded_and_a_delete_always_fits(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, &[1; 10], 1, false, now), false, now).unwrap();
        // A second record that would take the store past max_bytes is refused.
        assert_eq!(
            s.put(rec(2, &[2; 11], 1, false, now), false, now),
            Err(StoreError::FullBytes {
                max: LIMITS.max_bytes
            })
        );
        s.put(rec(2, &[2; 10], 1, false, now), false, now).unwrap();
        // So is an update that grows a record past it...
        assert_eq!(
            s.put(rec(1, &[1; 12], 2, false, now), false, now),
            Err(StoreError::FullBytes {
                max: LIMITS.max_bytes
            })
        );
        assert_eq!(s.get(&NodeId([1; 20]), now).unwrap().record.value, [1; 10]);
        // ...but a tombstone, which shrinks it, is always taken, and frees room.
        assert_eq!(
            s.put(rec(1, b"", 3, true, now), false, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(
            s.put(rec(2, &[2; 16], 2, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
        // Keys longer than a client may send are refused from peers too.
        let mut long = rec(3, b"", 1, false, now);
        long.user_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            s.put(long, false, now),
            Err(StoreError::KeyTooLong {
                size: MAX_KEY_BYTES + 1,
                max: MAX_KEY_BYTES
            })
        );
    }

    fn expiry_is_wall_clock(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, b"a", 1, false, now), false, now).unwrap();
        let later = now + Duration::from_secs(61);
        assert!(s.get(&NodeId([1; 20]), later).is_none());
        assert_eq!(s.expire(later), 1);
        assert!(s.is_empty());
        assert_eq!(
            s.put(rec(1, b"a", 1, false, now), false, later),
            Err(StoreError::Expired)
        );
    }

    fn ranges_are_in_key_order(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(9, b"a", 1, false, now), false, now).unwrap();
        s.put(rec(3, b"b", 1, false, now), true, now).unwrap();
        let keys = |s: &dyn RecordStore, lo: u8, hi: u8| -> Vec<u8> {
            s.range(&NodeId([lo; 20]), &NodeId([hi; 20]))
                .map(|r| r.record.key.0[0])
                .collect()
        };
        assert_eq!(keys(s, 0, 255), [3, 9]);
        assert_eq!(keys(s, 3, 9), [3, 9]);
        assert_eq!(keys(s, 4, 9), [9]);
        assert_eq!(keys(s, 4, 8), Vec::<u8>::new());
        assert_eq!(keys(s, 9, 3), Vec::<u8>::new(), "an empty interval");
        let all: Vec<u8> = s.iter().map(|r| r.record.key.0[0]).collect();
        assert_eq!(all, [3, 9]);
    }

    fn expiry_takes_the_due_and_follows_a_longer_life(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        let soon = rec(1, b"a", 1, false, now);
        let mut later = rec(2, b"b", 1, false, now);
        later.expires_at_ms += 10_000;
        s.put(soon.clone(), false, now).unwrap();
        s.put(later.clone(), false, now).unwrap();
        // The same write with a longer life: it now expires with the other one.
        let mut longer = soon.clone();
        longer.expires_at_ms = later.expires_at_ms;
        s.put(longer, false, now).unwrap();
        let t = now + Duration::from_secs(61);
        assert_eq!(s.expire(t), 0, "neither is due at the first expiry");
        assert_eq!(s.len(), 2);
        assert_eq!(s.expire(now + Duration::from_secs(71)), 2);
        assert!(s.is_empty());
    }

    fn an_owner_is_held_to_its_quota(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        let (a, b) = (Some(Owner::of(b"a")), Some(Owner::of(b"b")));
        let over = Err(StoreError::OverQuota {
            max: LIMITS.max_owner_bytes,
        });
        assert_eq!(
            s.put_from(rec(1, &[1; 10], 1, false, now), false, a, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(
            s.put_from(rec(2, &[2; 1], 1, false, now), false, a, now),
            over
        );
        // A newer write of its own key within the quota replaces its record.
        assert_eq!(
            s.put_from(rec(1, &[3; 10], 2, false, now), false, a, now),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(
            s.put_from(rec(2, &[2; 10], 1, false, now), false, b, now),
            Ok(PutOutcome::Stored)
        );
        // A write that does not grow the store always fits: a delete of b's key by a.
        assert_eq!(
            s.put_from(rec(2, b"", 2, true, now), false, a, now),
            Ok(PutOutcome::Stored)
        );
        // Once a's records are gone, it has room again.
        s.expire(now + Duration::from_secs(61));
        assert_eq!(
            s.put_from(
                rec(3, &[3; 10], 1, false, now + Duration::from_secs(61)),
                false,
                a,
                now + Duration::from_secs(61)
            ),
            Ok(PutOutcome::Stored)
        );
        // Writes no peer brought count against no quota.
        assert_eq!(
            s.put(rec(4, &[4; 10], 1, false, now), false, now),
            Ok(PutOutcome::Stored)
        );
    }

    fn touch_and_mark_due(s: &mut dyn RecordStore) {
        let now = SystemTime::now();
        s.put(rec(1, b"a", 1, false, now), false, now).unwrap();
        s.put(rec(2, b"b", 1, false, now), true, now).unwrap();
        let key = NodeId([1; 20]);
        assert_eq!(s.get(&key, now).unwrap().refreshed_at_ms, unix_ms(now));
        // Cached copies are never due for replication.
        assert!(s.mark_due(&key));
        assert!(!s.mark_due(&NodeId([2; 20])));
        assert!(!s.mark_due(&NodeId([3; 20])));
        assert_eq!(s.get(&key, now).unwrap().refreshed_at_ms, 0);
        s.touch(&key, now);
        assert_eq!(s.get(&key, now).unwrap().refreshed_at_ms, unix_ms(now));
        assert_eq!(s.iter().count(), 2);
        assert_eq!(s.len(), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_outlives_every_copy_it_deletes_and_the_grace() {
        assert_eq!(tombstone_expiry(1_000, 500, []), 1_500);
        assert_eq!(tombstone_expiry(1_000, 500, [1_200, 9_000]), 9_000);
        assert_eq!(tombstone_expiry(1_000, 500, [1_200, NEVER]), NEVER);
        assert_eq!(tombstone_expiry(u64::MAX - 1, 500, []), NEVER);
    }

    #[test]
    fn a_record_that_never_expires_does_not() {
        let now = SystemTime::now();
        let mut s = MemoryStore::new(suite::LIMITS);
        let mut r = suite::rec(1, b"a", 1, false, now);
        r.expires_at_ms = NEVER;
        s.put(r, false, now).unwrap();
        let far = now + Duration::from_secs(100 * 365 * 86_400);
        assert_eq!(s.expire(far), 0);
        assert!(s.get(&NodeId([1; 20]), far).is_some());
    }

    /// The expiry index and the byte count always describe exactly the records held, through
    /// any mix of writes, overwrites, longer lives, deletes and expiries.
    #[test]
    fn the_expiry_index_and_byte_count_follow_every_change() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(5);
        let limits = StoreLimits {
            max_value_bytes: 64,
            max_records: 40,
            max_bytes: 40 * (RECORD_OVERHEAD_BYTES + EXPIRY_INDEX_BYTES + 64),
            max_owner_bytes: 10 * (RECORD_OVERHEAD_BYTES + EXPIRY_INDEX_BYTES + 64),
        };
        let mut s = MemoryStore::new(limits);
        let start = SystemTime::now();
        let mut now = start;
        for step in 0..5_000u64 {
            now += Duration::from_millis(rng.random_range(0..40));
            let mut r = suite::rec(rng.random_range(0..50), b"", step, false, now);
            r.value = vec![1; rng.random_range(0..64)];
            r.expires_at_ms = match rng.random_range(0..4) {
                0 => NEVER,
                _ => unix_ms(now) + rng.random_range(1..3_000),
            };
            r.tombstone = rng.random_bool(0.1);
            match rng.random_range(0..10) {
                0 => {
                    s.expire(now);
                }
                1 => {
                    // The same write again, living longer or shorter.
                    if let Some(mut same) = s.entry(&r.key).map(|e| e.record.clone()) {
                        same.expires_at_ms = r.expires_at_ms;
                        let _ = s.put(same, false, now);
                    }
                }
                _ => {
                    let _ = s.put(r, rng.random_bool(0.2), now);
                }
            }
            let indexed: BTreeSet<(u64, Key)> = s
                .records
                .values()
                .filter(|e| e.record.expires_at_ms != NEVER)
                .map(|e| (e.record.expires_at_ms, e.record.key))
                .collect();
            assert_eq!(s.expiries, indexed, "step {step}");
            let bytes: usize = s.records.values().map(|e| record_bytes(&e.record)).sum();
            assert_eq!(s.bytes, bytes, "step {step}");
        }
        // Expiring at the end of time leaves only what never expires.
        s.expire(now + Duration::from_secs(3600));
        assert!(s.records.values().all(|e| e.record.expires_at_ms == NEVER));
        assert!(s.expiries.is_empty());
    }

    #[test]
    fn the_memory_store_passes_the_store_suite() {
        suite::run_all(&mut || Box::new(MemoryStore::new(suite::LIMITS)));
    }
}
