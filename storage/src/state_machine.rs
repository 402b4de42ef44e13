//! The replicated state machine store. The state itself lives in memory behind
//! an `RwLock` that the server reads for queries; snapshots are the state
//! encoded whole, kept in a file beside the database ([`snapshot_file`]),
//! never in it, and restored on open.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::snapshot_file::{self, Meta};
use crate::{codec, io_err, StoredTypeConfig};

/// The application state replicated through Raft. `apply` must be
/// deterministic: everything it needs (time, seeds) arrives in the request.
pub trait StateMachine<C: StoredTypeConfig>:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Applies one client request committed at `log_id`.
    fn apply(&mut self, log_id: &LogId<u64>, request: &C::D) -> C::R;

    /// The response recorded for entries that carry no request (blank and
    /// membership entries).
    fn no_request_response() -> C::R;

    /// The state as snapshot version 1 encoded it, as versions 2 and 3 did,
    /// and as versions 4, 5 and 6 did; snapshots of every version still restore.
    type V1: DeserializeOwned + Into<Self>;
    type V3: DeserializeOwned + Into<Self>;
    type V4: DeserializeOwned + Into<Self>;
    type V5: DeserializeOwned + Into<Self>;
    type V6: DeserializeOwned + Into<Self>;

    /// Encodes a snapshot of `applied`: in the current version, unless the
    /// state says members that read only an older one may still be in the
    /// cluster.
    fn encode_snapshot(applied: &Applied<Self>) -> Result<Vec<u8>, postcard::Error> {
        codec::encode_snapshot(applied)
    }

    /// Rebuilds what the state derives rather than stores (indexes, counts)
    /// after it has been decoded from a snapshot.
    fn restored(&mut self) {}

    /// The copy a snapshot is encoded from. It may leave out what
    /// [`Self::restored`] rebuilds: the copy is taken while `apply` waits.
    fn copy_for_snapshot(&self) -> Self {
        self.clone()
    }
}

/// Decodes a snapshot of the current or a previous format version.
pub fn decode_snapshot<C: StoredTypeConfig, S: StateMachine<C>>(
    bytes: &[u8],
) -> Result<Applied<S>, codec::DecodeError> {
    fn upgraded<P: Into<S>, S>(old: Applied<P>) -> Applied<S> {
        Applied {
            last_applied: old.last_applied,
            membership: old.membership,
            state: old.state.into(),
        }
    }
    let mut applied: Applied<S> = match codec::snapshot_body(bytes)? {
        (codec::SnapshotLayout::V1, body) => upgraded(codec::decode::<Applied<S::V1>>(body)?),
        (codec::SnapshotLayout::V3, body) => upgraded(codec::decode::<Applied<S::V3>>(body)?),
        (codec::SnapshotLayout::V4, body) => upgraded(codec::decode::<Applied<S::V4>>(body)?),
        (codec::SnapshotLayout::V5, body) => upgraded(codec::decode::<Applied<S::V5>>(body)?),
        (codec::SnapshotLayout::V6, body) => upgraded(codec::decode::<Applied<S::V6>>(body)?),
        (codec::SnapshotLayout::Current, body) => codec::decode(body)?,
    };
    applied.state.restored();
    Ok(applied)
}

/// The state machine plus what Raft needs to know about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(bound(serialize = "S: Serialize", deserialize = "S: DeserializeOwned"))]
pub struct Applied<S> {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, openraft::BasicNode>,
    pub state: S,
}

/// Read access to the applied state for the server's queries.
pub struct SharedState<S>(Arc<RwLock<Applied<S>>>);

impl<S> Clone for SharedState<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> SharedState<S> {
    /// A poisoned lock means a panic inside `apply`, which is a bug; the state
    /// is still the last fully applied one, so readers carry on.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied<S>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied<S>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct StateMachineStore<C: StoredTypeConfig, S> {
    shared: SharedState<S>,
    snapshots: SnapshotWriter,
    snapshot_seq: Arc<AtomicU64>,
    _config: std::marker::PhantomData<C>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the snapshot file is {0}")]
    File(#[from] snapshot_file::ReadError),
    #[error("the snapshot does not decode: {0}")]
    Decode(codec::DecodeError),
}

impl<C, S> StateMachineStore<C, S>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    /// Restores the state from the snapshot file in `dir`, if there is one.
    pub(crate) fn new(dir: &Path) -> Result<Self, RestoreError> {
        let stored = snapshot_file::read(dir)?;
        let persisted = stored.as_ref().and_then(|(meta, _)| meta.last_log_id);
        let applied = match stored {
            Some((_, data)) => decode_snapshot::<C, S>(&data).map_err(RestoreError::Decode)?,
            None => Applied::default(),
        };
        Ok(Self {
            shared: SharedState(Arc::new(RwLock::new(applied))),
            snapshots: SnapshotWriter {
                dir: dir.to_path_buf(),
                persisted: Arc::new(Mutex::new(persisted)),
                stats: SnapshotStats::default(),
            },
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            _config: std::marker::PhantomData,
        })
    }

    /// The handle the server reads the state through.
    pub fn shared(&self) -> SharedState<S> {
        self.shared.clone()
    }

    /// The figures of this store's snapshot builds.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.snapshots.stats.clone()
    }
}

/// What this replica's snapshot builds took, for its metrics. Cheap to
/// clone; every clone sees the same figures.
#[derive(Clone, Default)]
pub struct SnapshotStats(Arc<SnapshotStatsInner>);

#[derive(Default)]
struct SnapshotStatsInner {
    built: AtomicU64,
    last_build_us: AtomicU64,
    last_copy_us: AtomicU64,
    last_bytes: AtomicU64,
}

impl SnapshotStats {
    /// Snapshots built since the process started.
    pub fn built(&self) -> u64 {
        self.0.built.load(Ordering::Relaxed)
    }

    /// The last build, from the copy to the file being synced.
    pub fn last_build(&self) -> Duration {
        Duration::from_micros(self.0.last_build_us.load(Ordering::Relaxed))
    }

    /// How long the last build's copy held up `apply`.
    pub fn last_copy(&self) -> Duration {
        Duration::from_micros(self.0.last_copy_us.load(Ordering::Relaxed))
    }

    /// Size of the last snapshot built, encoded.
    pub fn last_bytes(&self) -> u64 {
        self.0.last_bytes.load(Ordering::Relaxed)
    }

    fn record(&self, copy: Duration, total: Duration, bytes: usize) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.last_copy_us.store(us(copy), Ordering::Relaxed);
        self.0.last_build_us.store(us(total), Ordering::Relaxed);
        self.0.last_bytes.store(bytes as u64, Ordering::Relaxed);
        self.0.built.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes snapshots to the file, one at a time, and never replaces one with
/// a snapshot covering less of the log (a slow build finishing after an
/// installed snapshot).
#[derive(Clone)]
struct SnapshotWriter {
    dir: PathBuf,
    persisted: Arc<Mutex<Option<LogId<u64>>>>,
    stats: SnapshotStats,
}

impl SnapshotWriter {
    /// Persists `meta` and `data` and flushes before returning; hands `data`
    /// back for the snapshot openraft keeps.
    async fn persist(&self, meta: &Meta, data: Vec<u8>) -> Result<Vec<u8>, StorageError<u64>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let writer = self.clone();
        let meta_copy = meta.clone();
        // A large file is a long synchronous write: off the async workers.
        tokio::task::spawn_blocking(move || {
            let mut persisted = writer.persisted.lock().unwrap_or_else(|e| e.into_inner());
            if *persisted <= meta_copy.last_log_id {
                snapshot_file::write(&writer.dir, &meta_copy, &data)?;
                *persisted = meta_copy.last_log_id;
            }
            Ok::<_, std::io::Error>(data)
        })
        .await
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))
    }
}

/// Runs `work`, which blocks for long, on this thread without holding up
/// the tasks queued on this async worker (a multi-threaded runtime moves
/// them to another worker first); elsewhere it simply runs it.
fn off_the_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Builds a snapshot from a copy of the state taken between two applies, so it
/// never races `apply`; encoding and writing happen off the apply path.
pub struct SnapshotBuilder<C: StoredTypeConfig, S> {
    copy: Applied<S>,
    /// How long taking the copy held up `apply`.
    copy_time: Duration,
    snapshots: SnapshotWriter,
    seq: u64,
    _config: std::marker::PhantomData<C>,
}

impl<C, S> RaftSnapshotBuilder<C> for SnapshotBuilder<C, S>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        let copy = std::mem::take(&mut self.copy);
        let seq = self.seq;
        let started = Instant::now();
        // Encoding a large state takes long enough to starve the runtime's
        // few workers (and with them heartbeats): a blocking thread does it,
        // and the copy is dropped as soon as it is encoded.
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let data = S::encode_snapshot(&copy)
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            let snapshot_id = match copy.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, seq),
                None => format!("empty-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: copy.last_applied,
                last_membership: copy.membership.clone(),
                snapshot_id,
            };
            Ok::<_, StorageError<u64>>((meta, data))
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))??;
        let encoded = started.elapsed();
        let data = self.snapshots.persist(&meta, data).await?;
        self.snapshots.stats.record(
            self.copy_time,
            self.copy_time + started.elapsed(),
            data.len(),
        );
        tracing::info!(
            index = meta.last_log_id.map(|id| id.index),
            bytes = data.len(),
            copy_ms = self.copy_time.as_millis() as u64,
            encode_ms = encoded.as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<C, S> RaftStateMachine<C> for StateMachineStore<C, S>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    type SnapshotBuilder = SnapshotBuilder<C, S>;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, openraft::BasicNode>,
        ),
        StorageError<u64>,
    > {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<u64>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.shared.write();
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => S::no_request_response(),
                EntryPayload::Normal(request) => applied.state.apply(&entry.log_id, request),
                EntryPayload::Membership(membership) => {
                    applied.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    S::no_request_response()
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let started = Instant::now();
        // Even with shared entries the copy takes a while at a million tasks;
        // it runs on this worker (it must not race `apply`), so the worker
        // first hands its other tasks (the Raft core among them) to another.
        let copy = off_the_worker(|| {
            let applied = self.shared.read();
            Applied {
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
                state: applied.state.copy_for_snapshot(),
            }
        });
        SnapshotBuilder {
            copy,
            copy_time: started.elapsed(),
            snapshots: self.snapshots.clone(),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
            _config: std::marker::PhantomData,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Decodes first, persists second, swaps the whole state last: a snapshot
    /// that does not decode changes nothing.
    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let started = Instant::now();
        // Decoding a large state is long: off the async workers, like encoding.
        let (decoded, data) = tokio::task::spawn_blocking(move || {
            let decoded = decode_snapshot::<C, S>(&data);
            (decoded, data)
        })
        .await
        .map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let mut incoming: Applied<S> =
            decoded.map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        // The meta is authoritative for what the snapshot covers.
        incoming.last_applied = meta.last_log_id;
        incoming.membership = meta.last_membership.clone();
        let decoded = started.elapsed();
        let data = self.snapshots.persist(meta, data).await?;
        tracing::info!(
            index = meta.last_log_id.map(|id| id.index),
            bytes = data.len(),
            decode_ms = decoded.as_millis() as u64,
            write_ms = (started.elapsed() - decoded).as_millis() as u64,
            "snapshot installed"
        );
        let replaced = std::mem::replace(&mut *self.shared.write(), incoming);
        // Freeing a large state takes as long as building it: not here.
        tokio::task::spawn_blocking(move || drop(replaced));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        let dir = self.snapshots.dir.clone();
        let read_err = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let stored = tokio::task::spawn_blocking(move || snapshot_file::read(&dir))
            .await
            .map_err(read_err)?
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
