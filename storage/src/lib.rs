//! Durable Raft storage for Open-AutoGLM: openraft's `RaftLogStorage` and
//! `RaftStateMachine` (storage-v2) on one sled database per replica.
//!
//! # Layout
//! - [`log_store`]: the Raft log, the vote, the committed and last-purged log ids.
//!   Every append and vote is flushed to disk before openraft hears it is durable.
//! - [`state_machine`]: the in-memory replicated state, generic over
//!   [`StateMachine`], with snapshots kept in their own sled tree.
//! - [`identity`]: which cluster and replica a data directory belongs to.
//! - [`codec`]: the compact binary encoding (postcard) of everything stored.
//!
//! Why sled trees rather than files: one database gives atomic batches and one
//! flush for the log, the metadata and the snapshot together.

// openraft's storage traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod identity;
pub mod log_store;
pub mod state_machine;

use std::io::Cursor;
use std::path::Path;

use openraft::{BasicNode, Entry, RaftTypeConfig};

pub use identity::{DataDirIdentity, IdentityError};
pub use log_store::LogStore;
pub use state_machine::{Applied, SharedState, StateMachine, StateMachineStore};

/// What the stores need from a type config: binary snapshots held in memory and
/// openraft's own entry type, both serializable.
pub trait StoredTypeConfig:
    RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>, Entry = Entry<Self>, NodeId = u64, Node = BasicNode>
{
}

impl<C> StoredTypeConfig for C where
    C: RaftTypeConfig<
        SnapshotData = Cursor<Vec<u8>>,
        Entry = Entry<C>,
        NodeId = u64,
        Node = BasicNode,
    >
{
}

/// Wraps a storage failure the way openraft expects it.
pub(crate) fn io_err<E: std::error::Error + 'static>(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: E,
) -> openraft::StorageError<u64> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

/// Options for opening a replica's database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Upper bound of sled's page cache, in bytes. sled grows without one.
    pub cache_capacity_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Errors opening a data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the sled database in {path}: {source}")]
    Sled { path: String, source: sled::Error },
    #[error("the snapshot stored in {path} cannot be decoded: {source}")]
    Snapshot {
        path: String,
        source: codec::DecodeError,
    },
}

/// An opened replica database and the two openraft stores over it.
pub struct Opened<C: StoredTypeConfig, S> {
    pub db: sled::Db,
    pub log: LogStore<C>,
    pub state_machine: StateMachineStore<C, S>,
}

/// Opens (or creates) the database in `dir` and returns the log store and the
/// state-machine store over it. The state machine is restored from the last
/// snapshot; openraft re-applies the committed log after it.
pub fn open<C, S>(dir: &Path, options: &StoreOptions) -> Result<Opened<C, S>, OpenError>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    let path = dir.display().to_string();
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_capacity_bytes)
        .open()
        .map_err(|source| OpenError::Sled {
            path: path.clone(),
            source,
        })?;
    let log = LogStore::new(&db).map_err(|source| OpenError::Sled {
        path: path.clone(),
        source,
    })?;
    let sm = StateMachineStore::new(&db).map_err(|e| match e {
        state_machine::RestoreError::Sled(source) => OpenError::Sled {
            path: path.clone(),
            source,
        },
        state_machine::RestoreError::Decode(source) => OpenError::Snapshot {
            path: path.clone(),
            source,
        },
    })?;
    Ok(Opened {
        db,
        log,
        state_machine: sm,
    })
}
