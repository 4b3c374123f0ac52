//! [`Store`] over one `redb` database: an embedded, pure-Rust B-tree store with checksummed,
//! atomic commits (one fsync each, `Durability::Immediate`), no background threads, and a
//! `StorageBackend` trait through which the simulation supplies its own disk.
//!
//! Tables (keys and values in `record.rs`'s layout):
//! - `meta`: `format` -> [`FORMAT_VERSION`]
//! - `sessions`: client id -> session record
//! - `entries`: (client id, key) -> message entry; `entry_states`: (client id, key) -> state
//!   (apart, so a state change does not rewrite the message)
//! - `incoming_ids`: (client id, packet id) -> () for QoS 2 messages not yet released
//! - `retained`: topic -> message

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadableDatabase, ReadableTable, StorageBackend, Table, TableDefinition,
    WriteTransaction,
};

use super::record::{self, RecordError};
use super::{Store, StoreError};
use crate::core::{Snapshot, StoreOp, StoredSession};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "tern.redb";

/// The layout of the tables; a store of another version is refused, never misread.
pub const FORMAT_VERSION: u64 = 1;

/// redb's page cache (its default is 1 GiB, outside the broker's memory budget). The store is
/// read once at start and written at the end of its B-trees, so a small cache is enough.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const ENTRY_STATES: TableDefinition<(&str, u64), u32> = TableDefinition::new("entry_states");
const INCOMING_IDS: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming_ids");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// Opens the database again: redb refuses every operation after an I/O error until it is
/// closed and opened again, which a full disk needs (the store goes on once there is room).
type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send>;

pub struct RedbStore {
    /// `None` after a commit failed for a full disk: opened again at the next commit.
    db: Option<Database>,
    open: Opener,
    /// Named in every error.
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The open tables of one write transaction.
struct Tables<'txn> {
    sessions: Table<'txn, &'static str, &'static [u8]>,
    entries: Table<'txn, (&'static str, u64), &'static [u8]>,
    states: Table<'txn, (&'static str, u64), u32>,
    incoming: Table<'txn, (&'static str, u16), ()>,
    retained: Table<'txn, &'static str, &'static [u8]>,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DATABASE_FILE);
        let file = path.clone();
        let open = move || {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&file)
        };
        RedbStore::checked(Box::new(open), path)
    }

    /// Opens (or creates) a store on the backend `backend` makes (called again to reopen the
    /// database after a full disk); `name` stands for it in errors.
    pub fn with_backend<B: StorageBackend>(
        backend: impl Fn() -> B + Send + 'static,
        name: PathBuf,
    ) -> Result<RedbStore, StoreError> {
        let open = move || {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(backend())
        };
        RedbStore::checked(Box::new(open), name)
    }

    /// Makes the tables of a new store, or checks the format version of an existing one.
    fn checked(open: Opener, path: PathBuf) -> Result<RedbStore, StoreError> {
        let db = open().map_err(|source| StoreError::Open {
            path: path.clone(),
            source: source.into(),
        })?;
        let store = RedbStore {
            db: Some(db),
            open,
            path,
        };
        let db = store.database()?;
        let txn = db.begin_write().map_err(|e| store.write_error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| store.write_error(e))?;
            let found = meta
                .get("format")
                .map_err(|e| store.write_error(e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT_VERSION)
                        .map_err(|e| store.write_error(e))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::UnknownFormat {
                        path: store.path.clone(),
                        found,
                        expected: FORMAT_VERSION,
                    })
                }
            }
        }
        // Every table exists from the start, so reading never meets a missing one.
        store.tables(&txn)?;
        txn.commit().map_err(|e| store.write_error(e))?;
        Ok(store)
    }

    fn write_error(&self, source: impl Into<redb::Error>) -> StoreError {
        let source = source.into();
        if is_full(&source) {
            return StoreError::Full {
                path: self.path.clone(),
            };
        }
        StoreError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn database(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Full {
            path: self.path.clone(),
        })
    }

    /// Opens the database again after a full disk closed it.
    fn reopen(&mut self) -> Result<(), StoreError> {
        let db = (self.open)().map_err(|source| self.write_error(source))?;
        self.db = Some(db);
        Ok(())
    }

    fn try_commit(&self, batches: &[Vec<StoreOp>]) -> Result<(), StoreError> {
        let txn = self
            .database()?
            .begin_write()
            .map_err(|e| self.write_error(e))?;
        {
            let mut tables = self.tables(&txn)?;
            for op in batches.iter().flatten() {
                apply(&mut tables, op).map_err(|e| self.write_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.write_error(e))
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    fn tables<'txn>(&self, txn: &'txn WriteTransaction) -> Result<Tables<'txn>, StoreError> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS).map_err(|x| self.write_error(x))?,
            entries: txn.open_table(ENTRIES).map_err(|x| self.write_error(x))?,
            states: txn
                .open_table(ENTRY_STATES)
                .map_err(|x| self.write_error(x))?,
            incoming: txn
                .open_table(INCOMING_IDS)
                .map_err(|x| self.write_error(x))?,
            retained: txn.open_table(RETAINED).map_err(|x| self.write_error(x))?,
        })
    }

    /// An I/O error is the disk's or the permissions', not damage to the data.
    fn read_error(&self, source: impl Into<redb::Error>) -> StoreError {
        match source.into() {
            source @ redb::Error::Io(_) => StoreError::Read {
                path: self.path.clone(),
                source,
            },
            source => self.corrupt(source.to_string()),
        }
    }

    fn load_sessions(
        &self,
        txn: &redb::ReadTransaction,
    ) -> Result<BTreeMap<String, StoredSession>, StoreError> {
        let bad = |what: &str, id: &str, error: RecordError| {
            self.corrupt(format!("{what} of client {id:?}: {error}"))
        };
        let mut sessions = BTreeMap::new();
        for row in txn
            .open_table(SESSIONS)
            .map_err(|x| self.read_error(x))?
            .iter()
            .map_err(|x| self.read_error(x))?
        {
            let (id, value) = row.map_err(|x| self.read_error(x))?;
            let record = record::decode_session(value.value())
                .map_err(|err| bad("session", id.value(), err))?;
            let session = StoredSession {
                record,
                entries: Vec::new(),
                incoming_ids: Vec::new(),
            };
            sessions.insert(id.value().to_owned(), session);
        }
        let states = txn
            .open_table(ENTRY_STATES)
            .map_err(|x| self.read_error(x))?;
        for row in txn
            .open_table(ENTRIES)
            .map_err(|x| self.read_error(x))?
            .iter()
            .map_err(|x| self.read_error(x))?
        {
            let (key, value) = row.map_err(|x| self.read_error(x))?;
            let (id, key) = key.value();
            let state = states
                .get((id, key))
                .map_err(|x| self.read_error(x))?
                .ok_or_else(|| self.corrupt(format!("entry {key} of client {id:?} has no state")))?
                .value();
            let state = record::decode_state(state).map_err(|err| bad("entry state", id, err))?;
            let entry =
                record::decode_entry(value.value(), state).map_err(|err| bad("entry", id, err))?;
            let session = sessions.get_mut(id).ok_or_else(|| {
                self.corrupt(format!("entry {key} of client {id:?}, who has no session"))
            })?;
            session.entries.push((key, entry));
        }
        for row in txn
            .open_table(INCOMING_IDS)
            .map_err(|x| self.read_error(x))?
            .iter()
            .map_err(|x| self.read_error(x))?
        {
            let (key, _) = row.map_err(|x| self.read_error(x))?;
            let (id, packet_id) = key.value();
            let packet_id = crate::types::PacketId::new(packet_id)
                .ok_or_else(|| self.corrupt(format!("packet id 0 of client {id:?}")))?;
            let session = sessions.get_mut(id).ok_or_else(|| {
                self.corrupt(format!("QoS 2 id of client {id:?}, who has no session"))
            })?;
            session.incoming_ids.push(packet_id);
        }
        Ok(sessions)
    }
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = self
            .database()?
            .begin_read()
            .map_err(|x| self.read_error(x))?;
        let sessions = self.load_sessions(&txn)?.into_values().collect();
        let mut retained = Vec::new();
        for row in txn
            .open_table(RETAINED)
            .map_err(|x| self.read_error(x))?
            .iter()
            .map_err(|x| self.read_error(x))?
        {
            let (topic, value) = row.map_err(|x| self.read_error(x))?;
            let message = record::decode_message(value.value()).map_err(|err| {
                self.corrupt(format!("retained message on {:?}: {err}", topic.value()))
            })?;
            retained.push(message);
        }
        Ok(Snapshot { sessions, retained })
    }

    fn commit(&mut self, batches: &[Vec<StoreOp>]) -> Result<(), StoreError> {
        if self.db.is_none() {
            self.reopen()?;
        }
        let result = self.try_commit(batches);
        if matches!(result, Err(StoreError::Full { .. })) {
            // redb refuses everything after an I/O error until it is opened again: close it
            // now (the failed transaction left the last commit as it was), open at the retry.
            self.db = None;
        }
        result
    }
}

/// Whether a redb error is the disk being full.
fn is_full(error: &redb::Error) -> bool {
    match error {
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

fn apply(t: &mut Tables<'_>, op: &StoreOp) -> Result<(), redb::StorageError> {
    match op {
        StoreOp::PutSession(session) => {
            let value = record::encode_session(session);
            t.sessions
                .insert(session.client_id.as_str(), value.as_slice())?;
        }
        StoreOp::DeleteSession { client_id } => {
            let id = client_id.as_str();
            t.sessions.remove(id)?;
            t.entries
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
            t.states.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
            t.incoming
                .retain_in((id, 0)..=(id, u16::MAX), |_, _| false)?;
        }
        StoreOp::PutEntry {
            client_id,
            key,
            entry,
        } => {
            let value = record::encode_entry(entry);
            let row = (client_id.as_str(), *key);
            t.entries.insert(row, value.as_slice())?;
            t.states.insert(row, record::encode_state(entry.state))?;
        }
        StoreOp::SetEntryState {
            client_id,
            key,
            state,
        } => {
            t.states
                .insert((client_id.as_str(), *key), record::encode_state(*state))?;
        }
        StoreOp::DeleteEntry { client_id, key } => {
            t.entries.remove((client_id.as_str(), *key))?;
            t.states.remove((client_id.as_str(), *key))?;
        }
        StoreOp::PutIncomingId {
            client_id,
            packet_id,
        } => {
            t.incoming
                .insert((client_id.as_str(), packet_id.get()), ())?;
        }
        StoreOp::DeleteIncomingId {
            client_id,
            packet_id,
        } => {
            t.incoming.remove((client_id.as_str(), packet_id.get()))?;
        }
        StoreOp::PutRetained(message) => {
            let value = record::encode_message(message);
            t.retained
                .insert(message.topic.as_str(), value.as_slice())?;
        }
        StoreOp::DeleteRetained { topic } => {
            t.retained.remove(topic.as_str())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ByteStr, Properties, ProtocolVersion, SubscriptionOptions};
    use crate::core::{EntryRecord, EntryState, SessionRecord, StoredMessage};
    use crate::store::MemoryStore;
    use crate::types::{PacketId, QoS};
    use bytes::Bytes;

    /// A fresh directory under the system's temporary directory, removed at drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("tern-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn s(text: &str) -> ByteStr {
        ByteStr::new(text).unwrap()
    }

    fn message(topic: &str, payload: u64) -> StoredMessage {
        StoredMessage {
            topic: s(topic),
            payload: Bytes::from(payload.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
            publisher: s("p"),
            expires_at: None,
        }
    }

    /// Random ops over a few clients, keys and topics (SplitMix64: no dependency).
    fn random_ops(seed: u64, count: usize) -> Vec<StoreOp> {
        let mut state = seed;
        let mut next = move |below: u64| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % below
        };
        let clients = ["a", "b", "ab", ""];
        let mut ops = Vec::new();
        for _ in 0..count {
            let client_id = s(clients[next(4) as usize]);
            let key = next(6);
            let packet_id = PacketId::new(1 + next(3) as u16).unwrap();
            let op = match next(9) {
                0 => StoreOp::PutSession(SessionRecord {
                    client_id,
                    version: ProtocolVersion::V5,
                    expiry_secs: next(100) as u32,
                    expires_at: Some(next(1000)),
                    subscriptions: vec![(
                        s("t/#"),
                        SubscriptionOptions::new(QoS::AtLeastOnce),
                        None,
                    )],
                    pending_will: None,
                    login: Default::default(),
                }),
                1 => StoreOp::DeleteSession { client_id },
                2 | 3 => StoreOp::PutEntry {
                    client_id,
                    key,
                    entry: EntryRecord {
                        message: message("t", next(1000)),
                        qos: QoS::ExactlyOnce,
                        retain: false,
                        subscription_ids: vec![],
                        state: EntryState::Queued,
                    },
                },
                4 => StoreOp::SetEntryState {
                    client_id,
                    key,
                    state: EntryState::Sent(packet_id),
                },
                5 => StoreOp::DeleteEntry { client_id, key },
                6 => StoreOp::PutIncomingId {
                    client_id,
                    packet_id,
                },
                7 => StoreOp::PutRetained(message(["x", "y", "x/y"][next(3) as usize], next(9))),
                _ => StoreOp::DeleteRetained {
                    topic: s(["x", "y", "x/y"][next(3) as usize]),
                },
            };
            ops.push(op);
        }
        ops
    }

    // The reference store ignores a state change for an entry it does not have; so must the
    // real one (a state without an entry would fail the load). The core never does this, but
    // the comparison must not depend on it.
    fn consistent(ops: Vec<StoreOp>) -> Vec<StoreOp> {
        let mut have = std::collections::BTreeSet::new();
        let mut sessions = std::collections::BTreeSet::new();
        ops.into_iter()
            .filter(|op| match op {
                StoreOp::PutSession(r) => {
                    sessions.insert(r.client_id.clone());
                    true
                }
                StoreOp::DeleteSession { client_id } => {
                    sessions.remove(client_id);
                    have.retain(|(id, _)| id != client_id);
                    true
                }
                StoreOp::PutEntry { client_id, key, .. } => {
                    let keep = sessions.contains(client_id);
                    if keep {
                        have.insert((client_id.clone(), *key));
                    }
                    keep
                }
                StoreOp::SetEntryState { client_id, key, .. } => {
                    have.contains(&(client_id.clone(), *key))
                }
                StoreOp::DeleteEntry { client_id, key } => {
                    have.remove(&(client_id.clone(), *key));
                    true
                }
                StoreOp::PutIncomingId { client_id, .. } => sessions.contains(client_id),
                _ => true,
            })
            .collect()
    }

    #[test]
    fn the_database_loads_what_the_reference_store_holds_after_any_ops() {
        let dir = TempDir::new("differential");
        for seed in 0..20 {
            let ops = consistent(random_ops(seed, 300));
            let _ = std::fs::remove_dir_all(&dir.0);
            let mut db = RedbStore::open(&dir.0).unwrap();
            let mut reference = MemoryStore::default();
            for chunk in ops.chunks(17) {
                let batches: Vec<Vec<StoreOp>> = chunk.chunks(5).map(<[_]>::to_vec).collect();
                db.commit(&batches).unwrap();
                reference.commit(&batches).unwrap();
            }
            assert_eq!(db.load().unwrap(), reference.snapshot(), "seed {seed}");
            drop(db);
            // And again after closing and opening the file.
            let mut db = RedbStore::open(&dir.0).unwrap();
            assert_eq!(
                db.load().unwrap(),
                reference.snapshot(),
                "seed {seed}, reopened"
            );
        }
    }

    #[test]
    fn a_store_of_another_format_version_is_refused_with_its_path() {
        let dir = TempDir::new("format");
        let store = RedbStore::open(&dir.0).unwrap();
        let txn = store.db.as_ref().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
        drop(store);
        let error = RedbStore::open(&dir.0).unwrap_err();
        assert!(
            matches!(error, StoreError::UnknownFormat { found, .. } if found == FORMAT_VERSION + 1)
        );
        let text = error.to_string();
        assert!(
            text.contains(DATABASE_FILE) && text.contains("move the file away"),
            "{text}"
        );
    }

    #[test]
    fn a_damaged_record_fails_the_load_naming_the_client() {
        let dir = TempDir::new("damaged");
        let mut store = RedbStore::open(&dir.0).unwrap();
        let txn = store.db.as_ref().unwrap().begin_write().unwrap();
        txn.open_table(SESSIONS)
            .unwrap()
            .insert("victim", [record::RECORD_VERSION, 0, 9].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let error = store.load().unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{text}");
        assert!(
            text.contains("victim") && text.contains("damaged"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused() {
        let dir = TempDir::new("garbage");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join(DATABASE_FILE), vec![0x5a; 10_000]).unwrap();
        let error = RedbStore::open(&dir.0).unwrap_err();
        assert!(matches!(error, StoreError::Open { .. }), "{error}");
    }
}
