//! Where the core's durable state lives (see `core/durable.rs` for what and when).
//!
//! The core only produces [`StoreOp`] batches and rebuilds itself from a [`Snapshot`]; the
//! driver owns a [`Store`] and runs it. The trait is ours and small, so that a replicated
//! backend can implement it later; [`RedbStore`] keeps everything in one `redb` database file.

mod memory;
pub mod record;
mod redb_store;

use std::path::PathBuf;

pub use memory::MemoryStore;
pub use redb_store::{RedbStore, DATABASE_FILE, FORMAT_VERSION};

use crate::core::{Snapshot, StoreOp};

/// Durable storage for the broker's sessions, messages and retained messages.
pub trait Store: Send + 'static {
    /// Everything stored, read once at start.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies `batches` of ops, in order, as one atomic change, and returns only once it is
    /// durable (one fsync for all of them: group commit). On `StoreError::Full` nothing of
    /// them was applied and the same call may be tried again later.
    fn commit(&mut self, batches: &[Vec<StoreOp>]) -> Result<(), StoreError>;
}

/// Why the store cannot go on. Every one names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the store {path}: {source} (another tern may be using this data \
         directory, or the file is damaged: restore it from a backup or move it away to start empty)"
    )]
    Open { path: PathBuf, source: redb::Error },
    #[error(
        "the store {path} has format version {found}, this tern reads version {expected}: \
         run the tern version that wrote it, or move the file away to start empty"
    )]
    UnknownFormat {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "the store {path} is damaged ({detail}): restore it from a backup, or move it away \
         to start empty"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot read the store {path}: {source} (check the disk and the file's permissions)")]
    Read { path: PathBuf, source: redb::Error },
    #[error(
        "writing the store {path} failed: {source} (tern stops: what it acknowledged may not \
         be on disk; it recovers from the store at the next start)"
    )]
    Write { path: PathBuf, source: redb::Error },
    /// Not fatal: the commit is tried again, and new persistent work is refused meanwhile.
    #[error(
        "the disk of the store {path} is full: persistent sessions, their QoS 1/2 messages \
         and retained messages are refused until there is room (clean sessions and QoS 0 go on)"
    )]
    Full { path: PathBuf },
}

impl StoreError {
    /// The disk is full: the commit can succeed later, once there is room.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }
}
