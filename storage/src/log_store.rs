//! The Raft log on sled. Keys of the `log` tree are big-endian log indexes, so
//! sled's byte order is log order. Vote, committed and last-purged ids live in
//! the `meta` tree.
//!
//! Durability: an append is reported written to openraft, and `save_vote`,
//! `truncate` and `purge` return, only after sled has flushed the whole
//! database (`flusher.rs`), because sled otherwise syncs only every 500 ms and
//! a `kill -9` would lose acknowledged entries.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::flusher::Flusher;
use crate::integrity::{COMMITTED_KEY, LAST_PURGED_KEY, LOG_TREE, META_TREE, VOTE_KEY};
use crate::watermark::WatermarkWriter;
use crate::{codec, io_err, StoredTypeConfig};

/// Sentinel for "nothing committed yet" in [`LogStore::committed_index`].
const NONE_INDEX: u64 = u64::MAX;

/// The log store. Cheap to clone: clones share the same trees, which is how
/// openraft's log reader is made.
pub struct LogStore<C: StoredTypeConfig> {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    committed: Arc<AtomicU64>,
    watermark: WatermarkWriter,
    flusher: Flusher<C>,
    _config: std::marker::PhantomData<C>,
}

impl<C: StoredTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            committed: self.committed.clone(),
            watermark: self.watermark.clone(),
            flusher: self.flusher.clone(),
            _config: std::marker::PhantomData,
        }
    }
}

impl<C: StoredTypeConfig> LogStore<C> {
    /// A store over a verified database.
    pub(crate) fn new(db: &sled::Db, watermark: WatermarkWriter) -> Result<Self, sled::Error> {
        let store = Self {
            db: db.clone(),
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
            committed: Arc::new(AtomicU64::new(NONE_INDEX)),
            flusher: Flusher::start(db.clone(), watermark.clone())?,
            watermark,
            _config: std::marker::PhantomData,
        };
        if let Ok(Some(id)) = store.read_meta::<LogId<u64>>(COMMITTED_KEY) {
            store.committed.store(id.index, Ordering::Relaxed);
        }
        Ok(store)
    }

    /// The writer of this store's watermark, to sync it at a clean stop.
    pub fn watermark(&self) -> WatermarkWriter {
        self.watermark.clone()
    }

    /// A handle that reads [`Self::committed_index`] from elsewhere.
    pub fn committed_watch(&self) -> CommittedIndex {
        CommittedIndex(self.committed.clone())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        let bytes = self
            .meta
            .get(key)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        bytes
            .map(|b| {
                codec::decode_record(&b)
                    .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
            })
            .transpose()
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = codec::encode_record(value)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Flushes everything written so far, after every append queued before.
    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError<u64>> {
        self.flusher
            .sync()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, std::io::Error::other(e)))
    }

    fn decode_entry(bytes: &[u8]) -> Result<C::Entry, StorageError<u64>> {
        codec::decode_record(bytes).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let last = self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        Ok(last
            .map(|(_, v)| Self::decode_entry(&v))
            .transpose()?
            .map(|e| e.log_id))
    }
}

/// Shared view of the committed index.
#[derive(Clone, Debug)]
pub struct CommittedIndex(Arc<AtomicU64>);

impl CommittedIndex {
    pub fn get(&self) -> Option<u64> {
        let index = self.0.load(Ordering::Relaxed);
        (index != NONE_INDEX).then_some(index)
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn start_key(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(key(*i)),
        Bound::Excluded(i) => Bound::Excluded(key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<C: StoredTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<u64>> {
        let range = (start_key(range.start_bound()), start_key(range.end_bound()));
        self.log
            .range(range)
            .map(|item| {
                let (_, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Self::decode_entry(&v)
            })
            .collect()
    }
}

impl<C: StoredTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let last_purged: Option<LogId<u64>> = self.read_meta(LAST_PURGED_KEY)?;
        let last_log_id = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write_meta(VOTE_KEY, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_meta(VOTE_KEY)
    }

    /// Not flushed: a lost committed id is re-learned from the leader, it only
    /// saves re-applying entries after a restart.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        match committed {
            Some(id) => {
                self.write_meta(COMMITTED_KEY, &id, ErrorSubject::Store)?;
                self.committed.store(id.index, Ordering::Relaxed);
                self.watermark.committed(id.index);
            }
            None => {
                self.meta
                    .remove(COMMITTED_KEY)
                    .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
                self.committed.store(NONE_INDEX, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        self.read_meta(COMMITTED_KEY)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            let bytes = codec::encode_record(&entry)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.insert(&key(entry.log_id.index), bytes);
            last = Some(entry.log_id.index);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.flusher.appended(last, callback);
        Ok(())
    }

    /// The one legitimate way for the log to shrink (a conflicting,
    /// uncommitted tail): the watermark is lowered first, durably.
    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Appends still queued are reported before the watermark moves down.
        self.flush(ErrorSubject::Logs).await?;
        self.watermark.lower(log_id.index.checked_sub(1));
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush(ErrorSubject::Logs).await
    }

    /// Records the purge point durably before deleting, so the last purged id
    /// survives even when the log ends up empty.
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write_meta(LAST_PURGED_KEY, &log_id, ErrorSubject::Logs)?;
        self.flush(ErrorSubject::Logs).await?;
        self.watermark.acknowledged(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=key(log_id.index)) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }
}
