//! The data dir: where a node with `data_dir` set keeps its records, its identity and its
//! contacts, so that a restart (a crash, a rolling update, `docker compose restart`) loses
//! nothing it acknowledged.
//!
//! One file, `kademlia.redb`, holds everything. [redb](https://docs.rs/redb) is an embedded,
//! pure-Rust, ACID key-value store (copy-on-write B-trees, checksummed pages, a stable file
//! format since 1.0): a committed transaction survives a crash at any point, the file cannot
//! be left half-written, and it takes an exclusive file lock, so two nodes cannot share a data
//! dir. It was chosen over an LSM engine (fjall) because the node's write rate is bounded by
//! the network, not the disk, and one file with one lock is simpler to operate and back up.
//!
//! Fsync policy: accepted records are committed with `Durability::Immediate` before they are
//! acknowledged, those that arrive together in one transaction (see [`records`]); contacts are saved when they changed, after joining and at
//! most once per maintenance tick, and on shutdown (losing the last few to a crash only costs
//! a slower rejoin).
//!
//! Errors name the path and say what to do: a data dir locked by another process, a file
//! that is not a redb database or is damaged, a format version this binary does not know, an
//! identity that differs from a pinned `node_id`. A node never starts empty over data it
//! cannot read.

mod codec;
mod records;

pub use records::DurableStore;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::kad::{Contact, NodeId, StoreLimits};

/// The database file inside the data dir.
pub const DB_FILE: &str = "kademlia.redb";
/// The layout of the tables and entries this binary reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Settings and identity: "format" (u32 LE), "node_id" (20 bytes).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Contacts by id, encoded by [`codec::encode_contact`].
const CONTACTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("contacts");

/// Why a data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("data dir {path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error(
        "data dir {path} is in use by another process (its {DB_FILE} is locked): give each node its own data_dir"
    )]
    Locked { path: PathBuf },
    #[error(
        "data dir {path} cannot be read ({why}): it is damaged or not a kademlia data dir; the node will not start empty over it (restore it from a backup, or move it aside to start afresh)"
    )]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "data dir {path} has format version {found}, this binary reads version {FORMAT_VERSION}: run the release that wrote it, or move the dir aside to start afresh"
    )]
    Incompatible { path: PathBuf, found: String },
    #[error(
        "data dir {path} belongs to node {stored}, but node_id asks for {configured}: unset node_id, or use another data_dir"
    )]
    IdMismatch {
        path: PathBuf,
        stored: String,
        configured: String,
    },
}

/// An open data dir (it holds the database's lock until dropped).
pub struct DataDir {
    path: PathBuf,
    db: Arc<Database>,
    id: NodeId,
    contacts: Vec<Contact>,
    /// The records read at open, handed to the node's driver once.
    store: Mutex<Option<DurableStore>>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir").field("path", &self.path).finish()
    }
}

impl DataDir {
    /// Opens (creating if needed) the data dir at `path`, checks its format, settles the node's
    /// identity (the stored one; else `pinned`; else a random id) and reads every record.
    pub fn open(
        path: impl AsRef<Path>,
        pinned: Option<NodeId>,
        limits: StoreLimits,
    ) -> Result<DataDir, StorageError> {
        let path = path.as_ref().to_path_buf();
        let io = |why: String| StorageError::Io {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(&path).map_err(|e| io(format!("cannot create it: {e}")))?;
        let file = path.join(DB_FILE);
        let db = Database::create(&file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked { path: path.clone() },
            redb::DatabaseError::UpgradeRequired(v) => StorageError::Incompatible {
                path: path.clone(),
                found: format!("redb file format {v}"),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                io(format!("cannot open {DB_FILE}: {e}"))
            }
            e => StorageError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            },
        })?;
        let db = Arc::new(db);
        let refused = |e: ReadError| match e {
            ReadError::Refused(e) => e,
            ReadError::Damaged(why) => StorageError::Corrupt {
                path: path.clone(),
                why,
            },
        };
        let id = settle_identity(&db, &path, pinned).map_err(refused)?;
        let contacts = load_contacts(&db).map_err(refused)?;
        let store = DurableStore::load(db.clone(), limits, SystemTime::now()).map_err(refused)?;
        Ok(DataDir {
            path,
            db,
            id,
            contacts,
            store: Mutex::new(Some(store)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This node's id, kept across restarts.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Makes `id` this data dir's identity from now on (a node whose id derives from its key,
    /// `crate::net::tls`), keeping its records and contacts.
    pub fn set_id(&mut self, id: NodeId) -> Result<(), StorageError> {
        if id == self.id {
            return Ok(());
        }
        let io = |e: String| StorageError::Io {
            path: self.path.clone(),
            why: format!("cannot save the node id: {e}"),
        };
        let txn = self.db.begin_write().map_err(|e| io(e.to_string()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| io(e.to_string()))?;
            meta.insert("node_id", &id.0[..])
                .map_err(|e| io(e.to_string()))?;
        }
        txn.commit().map_err(|e| io(e.to_string()))?;
        tracing::warn!(path = %self.path.display(), old = %self.id, new = %id, "the data dir takes the id of the node's key");
        self.id = id;
        Ok(())
    }

    /// The contacts saved when the node last ran.
    pub fn saved_contacts(&self) -> &[Contact] {
        &self.contacts
    }

    /// The records read at open, for the node's driver. A data dir serves one node: `None`
    /// once taken.
    pub fn take_store(&self) -> Option<DurableStore> {
        self.store.lock().expect("not poisoned").take()
    }

    /// Replaces the saved contacts with `contacts`.
    pub fn save_contacts(&self, contacts: &[Contact]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(CONTACTS)?;
            table.retain(|_, _| false)?;
            for c in contacts {
                table.insert(&c.id.0[..], &codec::encode_contact(c)[..])?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// Why reading the data dir failed.
pub(super) enum ReadError {
    /// A finding that is its own error (another format version, another node's id).
    Refused(StorageError),
    /// Something in the file cannot be read: what (it becomes [`StorageError::Corrupt`]).
    Damaged(String),
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        ReadError::Damaged(e.into().to_string())
    }
}

/// Checks the format version (writing it into a new data dir) and returns the node's id.
fn settle_identity(
    db: &Database,
    path: &Path,
    pinned: Option<NodeId>,
) -> Result<NodeId, ReadError> {
    let txn = db.begin_write()?;
    let id = {
        let mut meta = txn.open_table(META)?;
        let format = meta.get("format")?.map(|v| v.value().to_vec());
        match format {
            None => {
                // A new data dir (a redb file with tables but no format would be someone
                // else's database).
                if meta.len()? > 0 || txn.list_tables()?.count() > 1 {
                    return Err(ReadError::Damaged(format!(
                        "{DB_FILE} has tables but no format version"
                    )));
                }
                meta.insert("format", &FORMAT_VERSION.to_le_bytes()[..])?;
            }
            Some(v) if v == FORMAT_VERSION.to_le_bytes() => {}
            Some(v) => {
                let found = match <[u8; 4]>::try_from(&v[..]) {
                    Ok(b) => u32::from_le_bytes(b).to_string(),
                    Err(_) => format!("{v:02x?}"),
                };
                return Err(ReadError::Refused(StorageError::Incompatible {
                    path: path.to_path_buf(),
                    found,
                }));
            }
        }
        let stored = meta.get("node_id")?.map(|v| v.value().to_vec());
        match stored {
            Some(bytes) => {
                let stored = NodeId(bytes.as_slice().try_into().map_err(|_| {
                    ReadError::Damaged(format!(
                        "the stored node id has {} bytes, not 20",
                        bytes.len()
                    ))
                })?);
                if let Some(p) = pinned.filter(|p| *p != stored) {
                    return Err(ReadError::Refused(StorageError::IdMismatch {
                        path: path.to_path_buf(),
                        stored: stored.to_hex(),
                        configured: p.to_hex(),
                    }));
                }
                stored
            }
            None => {
                let id = pinned.unwrap_or_else(|| NodeId::random(&mut rand::rng()));
                meta.insert("node_id", &id.0[..])?;
                id
            }
        }
    };
    txn.commit()?;
    Ok(id)
}

fn load_contacts(db: &Database) -> Result<Vec<Contact>, ReadError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(CONTACTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        // A damaged contact is skipped: contacts are hints, re-learned from the network.
        let Ok(id) = <[u8; 20]>::try_from(k.value()) else {
            continue;
        };
        if let Ok(c) = codec::decode_contact(NodeId(id), v.value()) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Shared handle to a node's data dir, as carried in [`crate::NodeConfig`].
pub type SharedDataDir = Arc<DataDir>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::RecordStore;
    use crate::kad::store::suite::{self, LIMITS, rec};
    use std::time::Duration;

    fn open(dir: &Path) -> Result<DataDir, StorageError> {
        DataDir::open(dir, None, LIMITS)
    }

    #[test]
    fn the_durable_store_passes_the_store_suite() {
        let mut dirs = Vec::new();
        suite::run_all(&mut || {
            let tmp = tempfile::tempdir().unwrap();
            let store = open(tmp.path()).unwrap().take_store().unwrap();
            dirs.push(tmp);
            Box::new(store)
        });
    }

    #[test]
    fn records_identity_and_contacts_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (id, contacts) = {
            let dir = open(tmp.path()).unwrap();
            let mut store = dir.take_store().unwrap();
            assert!(dir.take_store().is_none(), "one node per data dir");
            store
                .put(rec(1, b"kept", 5, false, now), false, now)
                .unwrap();
            let mut short = rec(2, b"short", 1, false, now);
            short.expires_at_ms = crate::kad::store::unix_ms(now) + 50;
            store.put(short, false, now).unwrap();
            store.flush().unwrap();
            // An unflushed put is not on disk (its acknowledgement waits for the flush).
            let unflushed = rec(1, b"unflushed", 6, false, now);
            store.put(unflushed, false, now).unwrap();
            assert!(store.unflushed());
            let contacts = vec![
                Contact::new(NodeId([7; 20]), "node-7:50051").with_incarnation(3),
                Contact::new(NodeId([8; 20]), "node-8:50051"),
            ];
            dir.save_contacts(&contacts).unwrap();
            (dir.id(), contacts)
        };
        std::thread::sleep(Duration::from_millis(60));
        let dir = open(tmp.path()).unwrap();
        assert_eq!(dir.id(), id);
        let mut saved = dir.saved_contacts().to_vec();
        saved.sort_by_key(|c| c.id);
        assert_eq!(saved, contacts);
        let store = dir.take_store().unwrap();
        let later = SystemTime::now();
        let kept = store.get(&NodeId([1; 20]), later).unwrap();
        assert_eq!(
            (kept.record.value.as_slice(), kept.record.version),
            (&b"kept"[..], 5)
        );
        // The expired one was dropped, from disk too; the unflushed write never got there.
        assert_eq!(store.len(), 1);
        drop((store, dir));
        let db = Database::open(tmp.path().join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(records::RECORDS).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn a_copy_handed_over_stays_a_cached_one_after_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let soon = crate::kad::store::unix_ms(now) + 60_000;
        {
            let dir = open(tmp.path()).unwrap();
            let mut store = dir.take_store().unwrap();
            store.put(rec(1, b"v", 5, false, now), false, now).unwrap();
            store.flush().unwrap();
            assert!(store.demote(&NodeId([1; 20]), soon));
            assert!(
                store.unflushed(),
                "the demotion is written with the next flush"
            );
            store.flush().unwrap();
        }
        let dir = open(tmp.path()).unwrap();
        let store = dir.take_store().unwrap();
        let held = store.get(&NodeId([1; 20]), now).unwrap();
        assert!(held.cached);
        assert_eq!(held.record.expires_at_ms, soon);
    }

    #[test]
    fn a_pinned_id_is_stored_and_must_match_later() {
        let tmp = tempfile::tempdir().unwrap();
        let pinned = NodeId([0xab; 20]);
        assert_eq!(
            DataDir::open(tmp.path(), Some(pinned), LIMITS)
                .unwrap()
                .id(),
            pinned
        );
        assert_eq!(open(tmp.path()).unwrap().id(), pinned);
        let err = DataDir::open(tmp.path(), Some(NodeId([1; 20])), LIMITS).unwrap_err();
        assert!(matches!(err, StorageError::IdMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&pinned.to_hex()), "{err}");
    }

    #[test]
    fn a_data_dir_in_use_is_refused_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = open(tmp.path()).unwrap();
        let err = open(tmp.path()).unwrap_err();
        assert!(matches!(err, StorageError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(DB_FILE);
        let junk = b"this is not a redb database, but someone's data".repeat(100);
        std::fs::write(&file, &junk).unwrap();
        let err = open(tmp.path()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        assert_eq!(std::fs::read(&file).unwrap(), junk, "never overwritten");
    }

    #[test]
    fn another_format_version_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path()).unwrap());
        {
            let db = Database::create(tmp.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", &99u32.to_le_bytes()[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let err = open(tmp.path()).unwrap_err();
        assert!(matches!(err, StorageError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("format version 99"), "{err}");
    }

    #[test]
    fn a_damaged_record_is_refused_naming_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path()).unwrap());
        {
            let db = Database::create(tmp.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(records::RECORDS)
                .unwrap()
                .insert(&[0x5a; 20][..], &b"short"[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let err = open(tmp.path()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&"5a".repeat(20)), "{err}");
    }
}
