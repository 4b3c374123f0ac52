//! A [`Store`] in memory: the reference for what applying ops means. The core's tests restart
//! brokers from it, and the redb store is checked against it (same ops, same snapshot).

use std::collections::BTreeMap;

use super::{Store, StoreError};
use crate::codec::ByteStr;
use crate::core::{
    EntryRecord, EntryState, SessionRecord, Snapshot, StoreOp, StoredMessage, StoredSession,
};
use crate::types::PacketId;

#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    sessions: BTreeMap<ByteStr, SessionRecord>,
    entries: BTreeMap<(ByteStr, u64), EntryRecord>,
    incoming: BTreeMap<(ByteStr, PacketId), ()>,
    retained: BTreeMap<ByteStr, StoredMessage>,
    /// Commits so far.
    pub commits: u64,
}

impl MemoryStore {
    pub fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::PutSession(record) => {
                self.sessions
                    .insert(record.client_id.clone(), record.clone());
            }
            StoreOp::DeleteSession { client_id } => {
                self.sessions.remove(client_id);
                self.entries.retain(|(id, _), _| id != client_id);
                self.incoming.retain(|(id, _), _| id != client_id);
            }
            StoreOp::PutEntry {
                client_id,
                key,
                entry,
            } => {
                self.entries
                    .insert((client_id.clone(), *key), entry.clone());
            }
            StoreOp::SetEntryState {
                client_id,
                key,
                state,
            } => {
                if let Some(entry) = self.entries.get_mut(&(client_id.clone(), *key)) {
                    entry.state = *state;
                }
            }
            StoreOp::DeleteEntry { client_id, key } => {
                self.entries.remove(&(client_id.clone(), *key));
            }
            StoreOp::PutIncomingId {
                client_id,
                packet_id,
            } => {
                self.incoming.insert((client_id.clone(), *packet_id), ());
            }
            StoreOp::DeleteIncomingId {
                client_id,
                packet_id,
            } => {
                self.incoming.remove(&(client_id.clone(), *packet_id));
            }
            StoreOp::PutRetained(message) => {
                self.retained.insert(message.topic.clone(), message.clone());
            }
            StoreOp::DeleteRetained { topic } => {
                self.retained.remove(topic);
            }
        }
    }

    /// What a load would return.
    pub fn snapshot(&self) -> Snapshot {
        let mut sessions: BTreeMap<ByteStr, StoredSession> = self
            .sessions
            .iter()
            .map(|(id, record)| {
                let session = StoredSession {
                    record: record.clone(),
                    entries: Vec::new(),
                    incoming_ids: Vec::new(),
                };
                (id.clone(), session)
            })
            .collect();
        // As strict as the database, which refuses to load these: a core that wrote one
        // must fail its tests, not only the real broker's next start.
        for ((id, key), entry) in &self.entries {
            let session = sessions.get_mut(id);
            let session =
                session.unwrap_or_else(|| panic!("entry {key} of {id:?}, who has no session"));
            session.entries.push((*key, entry.clone()));
        }
        for (id, packet_id) in self.incoming.keys() {
            let session = sessions.get_mut(id);
            let session =
                session.unwrap_or_else(|| panic!("QoS 2 id of {id:?}, who has no session"));
            session.incoming_ids.push(*packet_id);
        }
        Snapshot {
            sessions: sessions.into_values().collect(),
            retained: self.retained.values().cloned().collect(),
        }
    }

    /// Stored entries in the given state, for tests.
    pub fn entries_in(&self, state: fn(&EntryState) -> bool) -> usize {
        self.entries.values().filter(|e| state(&e.state)).count()
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(self.snapshot())
    }

    fn commit(&mut self, batches: &[Vec<StoreOp>]) -> Result<(), StoreError> {
        for op in batches.iter().flatten() {
            self.apply(op);
        }
        self.commits += 1;
        Ok(())
    }
}
