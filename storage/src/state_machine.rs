//! The replicated state machine store. The state itself lives in memory behind
//! an `RwLock` that the server reads for queries; snapshots are the state
//! encoded whole, kept in their own sled tree (never in the log tree) and
//! restored on open.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::integrity::{SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY, SNAPSHOT_TREE};
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

    /// The state as the previous snapshot format (version 1) encoded it;
    /// snapshots of that version still restore.
    type Previous: DeserializeOwned;
    fn upgrade(previous: Self::Previous) -> Self;

    /// Rebuilds what the state derives rather than stores (indexes, counts)
    /// after it has been decoded from a snapshot.
    fn restored(&mut self) {}
}

/// [`Applied`] around the previous version of the state.
#[derive(Deserialize)]
#[serde(bound = "P: DeserializeOwned")]
struct AppliedV1<P> {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    state: P,
}

/// Decodes a snapshot of the current or the previous format version.
pub fn decode_snapshot<C: StoredTypeConfig, S: StateMachine<C>>(
    bytes: &[u8],
) -> Result<Applied<S>, codec::DecodeError> {
    let mut applied: Applied<S> = match codec::snapshot_body(bytes)? {
        (codec::SnapshotLayout::V1, body) => {
            let old: AppliedV1<S::Previous> = codec::decode(body)?;
            Applied {
                last_applied: old.last_applied,
                membership: old.membership,
                state: S::upgrade(old.state),
            }
        }
        (codec::SnapshotLayout::Current, body) => codec::decode(body)?,
    };
    applied.state.restored();
    Ok(applied)
}

/// The state machine plus what Raft needs to know about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(bound = "S: Serialize + DeserializeOwned")]
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
    snapshots: sled::Tree,
    snapshot_seq: Arc<AtomicU64>,
    _config: std::marker::PhantomData<C>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Decode(codec::DecodeError),
}

type Meta = SnapshotMeta<u64, openraft::BasicNode>;

impl<C, S> StateMachineStore<C, S>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    pub(crate) fn new(db: &sled::Db) -> Result<Self, RestoreError> {
        let snapshots = db.open_tree(SNAPSHOT_TREE)?;
        let applied = match snapshots.get(SNAPSHOT_DATA_KEY)? {
            Some(data) => decode_snapshot::<C, S>(&data).map_err(RestoreError::Decode)?,
            None => Applied::default(),
        };
        Ok(Self {
            shared: SharedState(Arc::new(RwLock::new(applied))),
            snapshots,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            _config: std::marker::PhantomData,
        })
    }

    /// The handle the server reads the state through.
    pub fn shared(&self) -> SharedState<S> {
        self.shared.clone()
    }

    fn stored_snapshot(&self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        let read = |k| {
            self.snapshots
                .get(k)
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
        };
        let (Some(meta), Some(data)) = (read(SNAPSHOT_META_KEY)?, read(SNAPSHOT_DATA_KEY)?) else {
            return Ok(None);
        };
        let meta: Meta = codec::decode_record(&meta)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

/// Persists meta and data in one atomic batch and flushes before returning.
async fn persist_snapshot(
    tree: &sled::Tree,
    meta: &Meta,
    data: &[u8],
) -> Result<(), StorageError<u64>> {
    let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
    let meta_bytes =
        codec::encode_record(meta).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
    let mut batch = sled::Batch::default();
    batch.insert(SNAPSHOT_META_KEY, meta_bytes);
    batch.insert(SNAPSHOT_DATA_KEY, data);
    // A large blob is a long synchronous write: off the async workers.
    let writer = tree.clone();
    tokio::task::spawn_blocking(move || writer.apply_batch(batch))
        .await
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
    tree.flush_async()
        .await
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
    Ok(())
}

/// Builds a snapshot from a copy of the state taken between two applies, so it
/// never races `apply`; encoding and writing happen off the apply path.
pub struct SnapshotBuilder<C: StoredTypeConfig, S> {
    copy: Applied<S>,
    snapshots: sled::Tree,
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
        // Encoding a large state takes long enough to starve the runtime's
        // few workers (and with them heartbeats): a blocking thread does it,
        // and the copy is dropped as soon as it is encoded.
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let data = codec::encode_snapshot(&copy)
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
        persist_snapshot(&self.snapshots, &meta, &data).await?;
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
        SnapshotBuilder {
            copy: self.shared.read().clone(),
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
        persist_snapshot(&self.snapshots, meta, &data).await?;
        *self.shared.write() = incoming;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        self.stored_snapshot()
    }
}
