//! [`DurableStore`]: the in-memory store, committed to the data dir in batches.
//!
//! A put changes the in-memory copy at once and marks the key unflushed; [`flush`] commits
//! every unflushed key in one redb write transaction with `Durability::Immediate` (an fsync).
//! The driver flushes after each batch of peer requests and holds their answers until the
//! flush, and flushes a coordinator's own copy before counting it towards a write's quorum:
//! nothing is acknowledged that is not on disk. One fsync then covers every STORE that
//! arrived together (group commit) instead of one each. If the commit fails, every put of the
//! batch is undone in memory and the held answers become errors (`StoreError::Io`).
//!
//! [`flush`]: RecordStore::flush
//!
//! Implementation notes:
//! - Reads are served from the in-memory copy, loaded from disk when the node starts: the data
//!   dir makes records durable, it does not let a node hold more than `max_records`.
//! - When a record was last refreshed (`Stored::refreshed_at_ms`, used to skip replicating a
//!   record a peer has just replicated here) is not persisted; a restarted node counts its
//!   records as refreshed at start, so a restart does not set off a burst of replication.
//! - Expired records are deleted from disk by the periodic expiry and when the node starts, so
//!   the data dir does not grow without bound (redb reuses the freed pages).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{ReadError, codec};
use crate::kad::store::{MemoryStore, Owner, PutOutcome, StoreError, Stored, unix_ms};
use crate::kad::{Key, NodeId, Record, RecordStore, StoreLimits};

/// Records by key (20 bytes), encoded by [`codec::encode_record`].
pub(super) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// The memory store plus its copy on disk.
pub struct DurableStore {
    mem: MemoryStore,
    db: Arc<Database>,
    /// Keys put since the last flush, with their entry before the first of those puts.
    undo: HashMap<Key, Option<Stored>>,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("records", &self.mem.len())
            .finish()
    }
}

impl DurableStore {
    /// Loads every record from `db`, deleting those expired at `now`.
    pub(super) fn load(
        db: Arc<Database>,
        limits: StoreLimits,
        now: SystemTime,
    ) -> Result<Self, ReadError> {
        let mut mem = MemoryStore::new(limits);
        let now_ms = unix_ms(now);
        let mut expired = Vec::new();
        {
            let txn = db.begin_read()?;
            let table = match txn.open_table(RECORDS) {
                Ok(t) => t,
                // A data dir that never held a record.
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(DurableStore::new(mem, db));
                }
                Err(e) => return Err(e.into()),
            };
            for entry in table.iter()? {
                let (k, v) = entry?;
                let damaged = |key: &str, why: &dyn std::fmt::Display| {
                    ReadError::Damaged(format!("the record for key {key} is damaged: {why}"))
                };
                let key: [u8; 20] = k.value().try_into().map_err(|_| {
                    let why = format!("a key of {} bytes, not 20", k.value().len());
                    damaged(&hex(k.value()), &why)
                })?;
                let key = NodeId(key);
                let stored = codec::decode_record(key, v.value(), now_ms)
                    .map_err(|e| damaged(&key.to_hex(), &e))?;
                if stored.record.expired(now) {
                    expired.push(key);
                } else {
                    mem.insert_loaded(stored);
                }
            }
        }
        let store = DurableStore::new(mem, db);
        store.delete(&expired)?;
        Ok(store)
    }

    fn new(mem: MemoryStore, db: Arc<Database>) -> Self {
        DurableStore {
            mem,
            db,
            undo: HashMap::new(),
        }
    }

    /// Writes the current entry of every unflushed key in one transaction.
    fn commit(&self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            for key in self.undo.keys() {
                match self.mem.entry(key) {
                    Some(s) => table.insert(&key.0[..], &codec::encode_record(s)[..])?,
                    None => table.remove(&key.0[..])?,
                };
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn delete(&self, keys: &[Key]) -> Result<(), redb::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            for k in keys {
                table.remove(&k.0[..])?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl RecordStore for DurableStore {
    fn get(&self, key: &Key, now: SystemTime) -> Option<&Stored> {
        self.mem.get(key, now)
    }

    fn put_from(
        &mut self,
        record: Record,
        cached: bool,
        owner: Option<Owner>,
        now: SystemTime,
    ) -> Result<PutOutcome, StoreError> {
        let key = record.key;
        // Make room the way the memory store would, but deleting from disk too.
        if self.mem.room_for(&record, owner).is_err() {
            self.expire(now);
        }
        let before = self.mem.entry(&key).cloned();
        let outcome = self.mem.put_from(record, cached, owner, now)?;
        if outcome == PutOutcome::Stored {
            self.undo.entry(key).or_insert(before);
        }
        Ok(outcome)
    }

    fn touch(&mut self, key: &Key, now: SystemTime) {
        self.mem.touch(key, now);
    }

    fn mark_due(&mut self, key: &Key) -> bool {
        self.mem.mark_due(key)
    }

    fn demote(&mut self, key: &Key, expires_at_ms: u64) -> bool {
        let before = self.mem.entry(key).cloned();
        let demoted = self.mem.demote(key, expires_at_ms);
        if demoted {
            self.undo.entry(*key).or_insert(before);
        }
        demoted
    }

    fn expire(&mut self, now: SystemTime) -> usize {
        let expired = self.mem.drain_expired(now);
        if let Err(e) = self.delete(&expired) {
            // They stay on disk, expired: the next start deletes them.
            tracing::warn!(error = %e, count = expired.len(), "cannot delete expired records from the data dir");
        }
        expired.len()
    }

    fn len(&self) -> usize {
        self.mem.len()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Stored> + '_> {
        self.mem.iter()
    }

    fn range(&self, lo: &Key, hi: &Key) -> Box<dyn Iterator<Item = &Stored> + '_> {
        self.mem.range(lo, hi)
    }

    fn unflushed(&self) -> bool {
        !self.undo.is_empty()
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.undo.is_empty() {
            return Ok(());
        }
        let result = self.commit();
        let undo = std::mem::take(&mut self.undo);
        result.map_err(|e| {
            tracing::error!(records = undo.len(), error = %e, "cannot persist records: undoing them");
            for (key, before) in undo {
                self.mem.restore(key, before);
            }
            StoreError::Io(e.to_string())
        })
    }
}
