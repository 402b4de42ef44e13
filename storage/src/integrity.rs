//! Integrity of a replica's store. A replica that silently forgets entries it
//! acknowledged breaks Raft's assumptions (one more failure and committed data
//! is gone), so a store is verified before anything is served from it:
//! - every record carries a CRC-32 ([`crate::codec`]), checked on every read;
//! - at open, [`verify`] reads the whole store: checksums, a contiguous log,
//!   vote and committed index consistent with the log, a readable snapshot;
//! - the watermark ([`crate::watermark`]), a file beside the database,
//!   remembers how far the log was acknowledged. sled recovers a truncated or
//!   damaged file by rolling back to an earlier consistent point, silently; a
//!   log that ends before the watermark is how that shows.
//!
//! Store format 1 (before checksums) is read and converted in place once it
//! verified ([`migrate`]).

use std::path::{Path, PathBuf};

use openraft::{LogId, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{codec, watermark, OpenError, StoredTypeConfig};

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
    pub watermark: Option<crate::watermark::Watermark>,
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
    fn damage(&self, index: Option<u64>, problem: impl Into<String>) -> OpenError {
        Damage {
            file: self.db_file.clone(),
            index,
            problem: problem.into(),
        }
        .into()
    }

    /// Intact, but written by a build this one cannot read: not damage, and
    /// not a reason to wipe anything.
    fn too_new(&self, index: Option<u64>, what: String) -> OpenError {
        let at = index.map_or(String::new(), |i| format!(" (log index {i})"));
        OpenError::Incompatible {
            path: self.db_file.display().to_string(),
            reason: format!(
                "{what}{at} passes its checksum but this build cannot decode it: it was written \
                 by a newer build; run that build (docs/operations.md, \"Upgrade\")"
            ),
        }
    }

    fn sled<T>(&self, r: Result<T, sled::Error>) -> Result<T, OpenError> {
        r.map_err(|e| self.damage(None, format!("sled cannot read it: {e}")))
    }

    /// Decodes a value of either format: checksummed (format 2) or bare.
    fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        index: Option<u64>,
        what: &str,
    ) -> Result<T, OpenError> {
        if !self.framed {
            return codec::decode(bytes)
                .map_err(|e| self.damage(index, format!("{what} does not decode: {e}")));
        }
        let body =
            codec::verified_body(bytes).map_err(|e| self.damage(index, format!("{what}: {e}")))?;
        codec::decode(body).map_err(|_| self.too_new(index, what.to_string()))
    }

    fn meta<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
    ) -> Result<Option<T>, OpenError> {
        let name = String::from_utf8_lossy(key);
        self.sled(tree.get(key))?
            .map(|bytes| self.decode(&bytes, None, &format!("the stored {name}")))
            .transpose()
    }
}

/// Reads the whole store in `dir` (an open sled database `db`) and checks it;
/// writes nothing. `Err` names the first damage found.
pub fn verify<C: StoredTypeConfig>(db: &sled::Db, dir: &Path) -> Result<Verified, OpenError> {
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
                return Err(OpenError::Incompatible {
                    path: checker.db_file.display().to_string(),
                    reason: format!(
                        "store format {v} is newer than this build reads ({STORE_FORMAT}); run the newer build"
                    ),
                })
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
    v.watermark = watermark::read(dir).map_err(|problem| Damage {
        file: dir.join(watermark::FILE),
        index: None,
        problem,
    })?;
    if let Some(mark) = v.watermark.and_then(|w| w.acknowledged) {
        if known.is_none_or(|known| known < mark) {
            return Err(checker.damage(
                Some(mark),
                format!(
                    "this replica had acknowledged entries up to index {mark} but its log now ends at {}: \
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

fn verify_snapshot(checker: &Checker, db: &sled::Db, v: &mut Verified) -> Result<(), OpenError> {
    let tree = checker.sled(db.open_tree(SNAPSHOT_TREE))?;
    let meta = checker.sled(tree.get(SNAPSHOT_META_KEY))?;
    let data = checker.sled(tree.get(SNAPSHOT_DATA_KEY))?;
    match (meta, data) {
        (None, None) => Ok(()),
        (Some(meta), Some(data)) => {
            let meta: SnapshotMeta<u64, openraft::BasicNode> =
                checker.decode(&meta, None, "the snapshot's meta")?;
            let index = meta.last_log_id.map(|id| id.index);
            codec::snapshot_body(&data).map_err(|e| match e {
                codec::DecodeError::Version(v) if v.contains("newer") => OpenError::Incompatible {
                    path: checker.db_file.display().to_string(),
                    reason: format!("{v}; run the newer build"),
                },
                e => checker.damage(index, format!("the snapshot: {e}")),
            })?;
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
) -> Result<(), OpenError> {
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
