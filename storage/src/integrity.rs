//! Integrity of a replica's store. A replica that silently forgets entries it
//! acknowledged breaks Raft's assumptions (one more failure and committed data
//! is gone), so a store is verified before anything is served from it:
//! - every record carries a CRC-32 ([`crate::codec`]), checked on every read;
//! - at open, [`verify`] reads the whole store: checksums, a contiguous log,
//!   vote and committed index consistent with the log, a readable snapshot;
//! - a small watermark file beside the database remembers how far the log was
//!   durably committed. sled recovers a truncated or damaged file by rolling
//!   back to an earlier consistent point, silently; a log that ends before the
//!   watermark is how that shows.
//!
//! Store format 1 (before checksums) is read and converted in place once it
//! verified ([`migrate`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use openraft::{LogId, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{codec, StoredTypeConfig};

pub(crate) const LOG_TREE: &str = "log";
pub(crate) const META_TREE: &str = "meta";
pub(crate) const SNAPSHOT_TREE: &str = "snapshot";
pub(crate) const VOTE_KEY: &[u8] = b"vote";
pub(crate) const COMMITTED_KEY: &[u8] = b"committed";
pub(crate) const LAST_PURGED_KEY: &[u8] = b"last_purged";
pub(crate) const IDENTITY_KEY: &[u8] = b"identity";
pub(crate) const SNAPSHOT_META_KEY: &[u8] = b"meta";
pub(crate) const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// The store format: its own key in the meta tree, a single raw byte so it
/// reads the same in every format. Absent means format 1 (no checksums).
const FORMAT_KEY: &[u8] = b"format";
pub const STORE_FORMAT: u8 = 2;

/// The watermark file, beside sled's own files in the database directory.
pub const WATERMARK_FILE: &str = "watermark";
/// How often the watermark is rewritten at most: it may lag the log (which
/// only weakens the check), never lead it.
const WATERMARK_PERIOD: Duration = Duration::from_millis(100);

/// Why a store cannot be trusted: the file, the log index where known, what is
/// wrong. Printed as the one line a replica exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: PathBuf,
    pub index: Option<u64>,
    pub problem: String,
}

/// Where an operator reads what to do about it.
pub const RECOVERY_STEP: &str =
    "move the data dir aside and add this replica back as a new member, \
     or restore it from a backup (docs/operations.md, \"Damaged data dir\")";

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damaged store {}: ", self.file.display())?;
        if let Some(index) = self.index {
            write!(f, "log index {index}: ")?;
        }
        write!(f, "{}; {RECOVERY_STEP}", self.problem)
    }
}

impl std::error::Error for Damage {}

/// What a verified store holds, for `verify`'s report and the start log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub format: u8,
    pub entries: u64,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub last_purged: Option<u64>,
    pub committed: Option<u64>,
    pub vote_term: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub snapshot_bytes: u64,
    pub watermark: Option<u64>,
}

impl Verified {
    /// The highest index the store can vouch for: in the log, purged, or
    /// covered by the snapshot.
    fn known_index(&self) -> Option<u64> {
        [self.last_index, self.last_purged, self.snapshot_index]
            .into_iter()
            .flatten()
            .max()
    }
}

struct Checker {
    db_file: PathBuf,
    framed: bool,
}

impl Checker {
    fn damage(&self, index: Option<u64>, problem: impl Into<String>) -> Damage {
        Damage {
            file: self.db_file.clone(),
            index,
            problem: problem.into(),
        }
    }

    fn sled<T>(&self, r: Result<T, sled::Error>) -> Result<T, Damage> {
        r.map_err(|e| self.damage(None, format!("sled cannot read it: {e}")))
    }

    /// Decodes a value of either format: checksummed (format 2) or bare.
    fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        index: Option<u64>,
        what: &str,
    ) -> Result<T, Damage> {
        let body = if self.framed {
            codec::verified_body(bytes).map_err(|e| self.damage(index, format!("{what}: {e}")))?
        } else {
            bytes
        };
        codec::decode(body).map_err(|e| self.damage(index, format!("{what} does not decode: {e}")))
    }

    fn meta<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
    ) -> Result<Option<T>, Damage> {
        let name = String::from_utf8_lossy(key);
        self.sled(tree.get(key))?
            .map(|bytes| self.decode(&bytes, None, &format!("the stored {name}")))
            .transpose()
    }
}

/// Reads the whole store in `dir` (an open sled database `db`) and checks it;
/// writes nothing. `Err` names the first damage found.
pub fn verify<C: StoredTypeConfig>(db: &sled::Db, dir: &Path) -> Result<Verified, Damage> {
    let mut checker = Checker {
        db_file: dir.join("db"),
        framed: true,
    };
    let meta = checker.sled(db.open_tree(META_TREE))?;
    let format = match checker.sled(meta.get(FORMAT_KEY))? {
        None => 1,
        Some(bytes) => match bytes.as_ref() {
            [v] if *v <= STORE_FORMAT => *v,
            [v] => {
                return Err(checker.damage(
                    None,
                    format!("store format {v} is newer than this build reads ({STORE_FORMAT})"),
                ))
            }
            _ => return Err(checker.damage(None, "the store format record is unreadable")),
        },
    };
    checker.framed = format >= 2;
    let mut v = Verified {
        format,
        ..Default::default()
    };

    let vote: Option<Vote<u64>> = checker.meta(&meta, VOTE_KEY)?;
    v.vote_term = vote.map(|vote| vote.leader_id.term);
    v.committed = checker
        .meta::<LogId<u64>>(&meta, COMMITTED_KEY)?
        .map(|id| id.index);
    v.last_purged = checker
        .meta::<LogId<u64>>(&meta, LAST_PURGED_KEY)?
        .map(|id| id.index);
    checker.meta::<crate::DataDirIdentity>(&meta, IDENTITY_KEY)?;

    verify_snapshot(&checker, db, &mut v)?;
    verify_log::<C>(&checker, db, &mut v)?;

    let known = v.known_index();
    if let Some(committed) = v.committed {
        if known.is_none_or(|known| known < committed) {
            return Err(checker.damage(
                Some(committed),
                format!(
                    "the committed index is {committed} but the log ends at {}: committed entries are missing",
                    describe(known)
                ),
            ));
        }
    }
    v.watermark = read_watermark(dir).map_err(|problem| Damage {
        file: dir.join(WATERMARK_FILE),
        index: None,
        problem,
    })?;
    if let Some(mark) = v.watermark {
        if known.is_none_or(|known| known < mark) {
            return Err(checker.damage(
                Some(mark),
                format!(
                    "this replica had durably stored entries up to index {mark} but its log now ends at {}: \
                     entries it acknowledged are gone (the file was truncated or rolled back)",
                    describe(known)
                ),
            ));
        }
    }
    Ok(v)
}

fn describe(index: Option<u64>) -> String {
    index.map_or("nothing (an empty store)".into(), |i| i.to_string())
}

fn verify_snapshot(checker: &Checker, db: &sled::Db, v: &mut Verified) -> Result<(), Damage> {
    let tree = checker.sled(db.open_tree(SNAPSHOT_TREE))?;
    let meta = checker.sled(tree.get(SNAPSHOT_META_KEY))?;
    let data = checker.sled(tree.get(SNAPSHOT_DATA_KEY))?;
    match (meta, data) {
        (None, None) => Ok(()),
        (Some(meta), Some(data)) => {
            let meta: SnapshotMeta<u64, openraft::BasicNode> =
                checker.decode(&meta, None, "the snapshot's meta")?;
            let index = meta.last_log_id.map(|id| id.index);
            codec::snapshot_body(&data)
                .map_err(|e| checker.damage(index, format!("the snapshot: {e}")))?;
            v.snapshot_index = index;
            v.snapshot_bytes = data.len() as u64;
            Ok(())
        }
        _ => Err(checker.damage(None, "the snapshot's meta and data are not both there")),
    }
}

fn verify_log<C: StoredTypeConfig>(
    checker: &Checker,
    db: &sled::Db,
    v: &mut Verified,
) -> Result<(), Damage> {
    let log = checker.sled(db.open_tree(LOG_TREE))?;
    let mut last_term = 0;
    for item in log.iter() {
        let (key, bytes) = checker.sled(item)?;
        let index = match <[u8; 8]>::try_from(key.as_ref()) {
            Ok(k) => u64::from_be_bytes(k),
            Err(_) => return Err(checker.damage(None, "a log key is not an 8-byte index")),
        };
        let entry: C::Entry = checker.decode(&bytes, Some(index), "the entry")?;
        if entry.log_id.index != index {
            return Err(checker.damage(
                Some(index),
                format!(
                    "the entry stored here says it is entry {}",
                    entry.log_id.index
                ),
            ));
        }
        // After the purge point is recorded and before the purged entries
        // are deleted, the log may still start at or below it.
        let gap_after = match (v.last_index, v.last_purged) {
            (Some(prev), _) => (index != prev + 1).then_some(prev),
            (None, Some(purged)) => (index > purged + 1).then_some(purged),
            (None, None) => None,
        };
        if let Some(before) = gap_after {
            return Err(checker.damage(
                Some(before + 1),
                format!("the log jumps from entry {before} to {index}: entries are missing"),
            ));
        }
        let term = entry.log_id.leader_id.term;
        if term < last_term {
            return Err(checker.damage(
                Some(index),
                format!("term {term} follows term {last_term}: the log is out of order"),
            ));
        }
        last_term = term;
        v.first_index.get_or_insert(index);
        v.last_index = Some(index);
        v.entries += 1;
    }
    if v.vote_term.is_some_and(|vote| vote < last_term) {
        return Err(checker.damage(
            v.last_index,
            format!(
                "the stored vote is for term {} but the log holds entries of term {last_term}",
                v.vote_term.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// Marks a store written from scratch in the current format.
pub(crate) fn mark_current_format(db: &sled::Db) -> Result<(), sled::Error> {
    db.open_tree(META_TREE)?
        .insert(FORMAT_KEY, &[STORE_FORMAT])?;
    Ok(())
}

/// Converts a verified format-1 store to the current format: every record
/// gets its checksum, in one transaction over the three trees.
pub(crate) fn migrate(db: &sled::Db, from: u8) -> Result<(), sled::Error> {
    use sled::transaction::{ConflictableTransactionError, TransactionError};
    use sled::Transactional;
    if from >= STORE_FORMAT {
        return Ok(());
    }
    let frame = |bytes: &[u8]| {
        let mut out = crc32fast::hash(bytes).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    let meta = db.open_tree(META_TREE)?;
    let log = db.open_tree(LOG_TREE)?;
    let snapshots = db.open_tree(SNAPSHOT_TREE)?;
    let records = |tree: &sled::Tree, only: Option<&[u8]>| {
        tree.iter()
            .filter(|item| {
                item.as_ref()
                    .map_or(true, |(k, _)| only.is_none_or(|o| k.as_ref() == o))
            })
            .map(|item| item.map(|(k, v)| (k, frame(&v))))
            .collect::<Result<Vec<_>, _>>()
    };
    let meta_records = records(&meta, None)?;
    let log_records = records(&log, None)?;
    let snapshot_meta = records(&snapshots, Some(SNAPSHOT_META_KEY))?;
    (&meta, &log, &snapshots)
        .transaction(|(m, l, s)| {
            for (k, v) in &meta_records {
                m.insert(k, v.as_slice())?;
            }
            for (k, v) in &log_records {
                l.insert(k, v.as_slice())?;
            }
            for (k, v) in &snapshot_meta {
                s.insert(k, v.as_slice())?;
            }
            m.insert(FORMAT_KEY, &[STORE_FORMAT])?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => e,
            TransactionError::Abort(()) => sled::Error::Unsupported("migration aborted".into()),
        })?;
    db.flush()?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct WatermarkRecord {
    /// Highest log index known durably stored and committed.
    committed: u64,
}

/// The watermark in `dir`, if one was written; `Err` if it is unreadable.
pub fn read_watermark(dir: &Path) -> Result<Option<u64>, String> {
    match std::fs::read(dir.join(WATERMARK_FILE)) {
        Ok(bytes) => codec::decode_record::<WatermarkRecord>(&bytes)
            .map(|w| Some(w.committed))
            .map_err(|e| format!("unreadable: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("unreadable: {e}")),
    }
}

/// Writes the watermark whole: a temporary file, synced, then renamed.
pub(crate) fn write_watermark(dir: &Path, committed: u64) -> std::io::Result<()> {
    use std::io::Write;
    let bytes =
        codec::encode_record(&WatermarkRecord { committed }).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{WATERMARK_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(WATERMARK_FILE))
}

enum WatermarkMessage {
    Advance(u64),
    /// Write the latest value now and answer.
    Sync(mpsc::Sender<()>),
}

/// Moves the watermark forward from a background thread, at most every
/// [`WATERMARK_PERIOD`], always ending on the latest value it was given.
#[derive(Clone)]
pub struct WatermarkWriter {
    tx: mpsc::Sender<WatermarkMessage>,
}

impl std::fmt::Debug for WatermarkMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Advance(i) => write!(f, "Advance({i})"),
            Self::Sync(_) => f.write_str("Sync"),
        }
    }
}

impl WatermarkWriter {
    pub(crate) fn spawn(dir: PathBuf, start: Option<u64>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<WatermarkMessage>();
        std::thread::Builder::new()
            .name("watermark".into())
            .spawn(move || {
                let mut written = start;
                let mut latest = start;
                let write = |written: &mut Option<u64>, latest: Option<u64>| {
                    let Some(next) = latest.filter(|l| written.is_none_or(|w| w < *l)) else {
                        return;
                    };
                    match write_watermark(&dir, next) {
                        Ok(()) => *written = Some(next),
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the watermark")
                        }
                    }
                };
                while let Ok(first) = rx.recv() {
                    let mut syncs = Vec::new();
                    for message in std::iter::once(first).chain(rx.try_iter()) {
                        match message {
                            WatermarkMessage::Advance(i) => latest = latest.max(Some(i)),
                            WatermarkMessage::Sync(ack) => syncs.push(ack),
                        }
                    }
                    write(&mut written, latest);
                    if syncs.is_empty() {
                        std::thread::sleep(WATERMARK_PERIOD);
                    }
                    for ack in syncs {
                        let _ = ack.send(());
                    }
                }
            })?;
        Ok(Self { tx })
    }

    pub(crate) fn advance(&self, committed: u64) {
        // The thread ends only with the last sender; nothing to do if gone.
        let _ = self.tx.send(WatermarkMessage::Advance(committed));
    }

    /// Writes the latest value now; for a clean stop, so the watermark
    /// covers everything the store holds.
    pub fn sync(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(WatermarkMessage::Sync(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }
}
