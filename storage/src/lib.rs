//! Durable Raft storage for Open-AutoGLM: openraft's `RaftLogStorage` and
//! `RaftStateMachine` (storage-v2) on one sled database per replica.
//!
//! # Layout
//! - [`log_store`]: the Raft log, the vote, the committed and last-purged log ids.
//!   Every append and vote is flushed to disk before openraft hears it is durable.
//! - [`state_machine`]: the in-memory replicated state, generic over
//!   [`StateMachine`]; its snapshots live in a file beside the database
//!   ([`snapshot_file`]), so writing one never holds up the log.
//! - [`identity`]: which cluster and replica a data directory belongs to.
//! - [`codec`]: the compact binary encoding (postcard) of everything stored.
//!
//! Why sled trees for the log and its metadata: one database gives atomic
//! batches and one flush for both. The snapshot, a single large value
//! replaced whole, is a file: in sled it went through the log's buffers and
//! flushes and stalled them.

// openraft's storage traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod codec;
pub mod damage;
mod flusher;
pub mod identity;
pub mod integrity;
pub mod log_store;
mod panics;
pub mod seed;
pub mod snapshot_file;
pub mod state_machine;
pub mod watermark;

use std::io::Cursor;
use std::path::Path;

use openraft::{BasicNode, Entry, RaftTypeConfig};

pub use identity::{DataDirIdentity, IdentityError};
pub use integrity::{Damage, Verified};
pub use log_store::LogStore;
pub use state_machine::{Applied, SharedState, SnapshotStats, StateMachine, StateMachineStore};
pub use watermark::{Watermark, WatermarkWriter};

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
    /// The store is there but cannot be used as it is (locked, unreadable):
    /// nothing about its contents is known.
    #[error("cannot open the sled database in {path}: {source}")]
    Sled { path: String, source: sled::Error },
    /// The store's contents are damaged or incomplete; the replica must not
    /// serve from it.
    #[error(transparent)]
    Damaged(#[from] Damage),
    /// Intact, but written by a newer build: not damage.
    #[error("{path}: {reason}")]
    Incompatible { path: String, reason: String },
    #[error("cannot start the watermark writer for {path}: {source}")]
    Watermark {
        path: String,
        source: std::io::Error,
    },
}

/// An opened replica database and the two openraft stores over it.
pub struct Opened<C: StoredTypeConfig, S> {
    pub db: sled::Db,
    pub log: LogStore<C>,
    pub state_machine: StateMachineStore<C, S>,
    /// What the verification at open found.
    pub verified: Verified,
}

/// Opens (or creates) the database in `dir`, verifies all of it
/// ([`integrity::verify`]), brings it to the current format, and returns the
/// log store and the state-machine store over it. The state machine is
/// restored from the last snapshot; openraft re-applies the committed log
/// after it. A damaged store is [`OpenError::Damaged`], never a panic.
pub fn open<C, S>(dir: &Path, options: &StoreOptions) -> Result<Opened<C, S>, OpenError>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    let path = dir.display().to_string();
    let sled_err = |source| OpenError::Sled {
        path: path.clone(),
        source,
    };
    let (db, verified) = panics::as_damage(dir, || {
        let db = open_db(dir, options)?;
        let verified = integrity::verify::<C>(&db, dir)?;
        Ok((db, verified))
    })?;
    integrity::migrate(&db, dir, verified.format).map_err(sled_err)?;
    let sm = StateMachineStore::<C, S>::new(dir).map_err(|e| Damage {
        file: snapshot_file::path(dir),
        index: verified.snapshot_index,
        problem: e.to_string(),
    })?;
    let watermark =
        WatermarkWriter::spawn(dir.to_path_buf(), verified.watermark.unwrap_or_default()).map_err(
            |source| OpenError::Watermark {
                path: path.clone(),
                source,
            },
        )?;
    let log = LogStore::new(&db, watermark).map_err(sled_err)?;
    Ok(Opened {
        db,
        log,
        state_machine: sm,
        verified,
    })
}

/// Verifies the store in `dir` offline, the same checks as [`open`] plus a
/// full decode of the snapshot's state; writes nothing but what sled itself
/// writes when it opens a database.
pub fn verify_dir<C, S>(dir: &Path) -> Result<Verified, OpenError>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    if !dir.join("db").is_file() {
        return Err(Damage {
            file: dir.join("db"),
            index: None,
            problem: "there is no database here".into(),
        }
        .into());
    }
    panics::as_damage(dir, || {
        let db = open_db(dir, &StoreOptions::default())?;
        let verified = integrity::verify::<C>(&db, dir)?;
        let (file, data) = integrity::stored_snapshot_data(&db, dir, verified.format)?;
        if let Some(data) = data {
            state_machine::decode_snapshot::<C, S>(&data).map_err(|e| Damage {
                file,
                index: verified.snapshot_index,
                problem: format!("the snapshot's state does not decode: {e}"),
            })?;
        }
        Ok(verified)
    })
}

/// How long opening waits for a lock to be released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn is_lock(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Opens sled. Its I/O errors (a lock held by a running replica, no
/// permission) say nothing about the contents; anything else it reports is
/// damage.
fn open_db(dir: &Path, options: &StoreOptions) -> Result<sled::Db, OpenError> {
    let started = std::time::Instant::now();
    let opened = loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            .open();
        match &opened {
            // sled's I/O threads release a database closed a moment ago in
            // this process shortly after; a lock held by another running
            // replica is still there after the wait.
            Err(sled::Error::Io(e)) if is_lock(e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => break opened,
        }
    };
    opened.map_err(|source| match source {
        // A lock held by a running replica, or no permission: nothing is
        // known about the contents. Any other I/O error while sled
        // recovers the files (a missing blob, a short read) is damage.
        sled::Error::Io(ref e)
            if e.kind() == std::io::ErrorKind::PermissionDenied || is_lock(e) =>
        {
            OpenError::Sled {
                path: dir.display().to_string(),
                source,
            }
        }
        other => Damage {
            file: dir.join("db"),
            index: None,
            problem: format!("sled cannot recover it: {other}"),
        }
        .into(),
    })
}
