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
//! Older store formats are read and converted in place once they verified
//! ([`migrate`]): format 1 had no checksums, format 2 kept the snapshot in a
//! sled tree; format 3 keeps it in a file beside the database
//! ([`crate::snapshot_file`]).

use std::path::{Path, PathBuf};

use openraft::{LogId, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{codec, snapshot_file, watermark, OpenError, StoredTypeConfig};

pub(crate) const LOG_TREE: &str = "log";
pub(crate) const META_TREE: &str = "meta";
/// Where formats 1 and 2 kept the snapshot.
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
pub const STORE_FORMAT: u8 = 3;

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

    if format >= 3 {
        verify_snapshot_file(dir, &mut v)?;
    } else {
        verify_snapshot_tree(&checker, db, &mut v)?;
    }
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

/// The snapshot of a format 1 or 2 store, in its sled tree.
fn verify_snapshot_tree(
    checker: &Checker,
    db: &sled::Db,
    v: &mut Verified,
) -> Result<(), OpenError> {
    let tree = checker.sled(db.open_tree(SNAPSHOT_TREE))?;
    let meta = checker.sled(tree.get(SNAPSHOT_META_KEY))?;
    let data = checker.sled(tree.get(SNAPSHOT_DATA_KEY))?;
    match (meta, data) {
        (None, None) => Ok(()),
        (Some(meta), Some(data)) => {
            let meta: snapshot_file::Meta = checker.decode(&meta, None, "the snapshot's meta")?;
            check_snapshot_data(&checker.db_file, &meta, &data, v)
        }
        _ => Err(checker.damage(None, "the snapshot's meta and data are not both there")),
    }
}

/// The snapshot of a format 3 store, in its own file.
fn verify_snapshot_file(dir: &Path, v: &mut Verified) -> Result<(), OpenError> {
    match read_snapshot_file(dir)? {
        None => Ok(()),
        Some((meta, data)) => check_snapshot_data(&snapshot_file::path(dir), &meta, &data, v),
    }
}

/// The snapshot file, its failures as damage or as a newer layout.
fn read_snapshot_file(dir: &Path) -> Result<Option<(snapshot_file::Meta, Vec<u8>)>, OpenError> {
    let file = snapshot_file::path(dir);
    snapshot_file::read(dir).map_err(|e| match e {
        snapshot_file::ReadError::Newer(version) => OpenError::Incompatible {
            path: file.display().to_string(),
            reason: format!(
                "snapshot file layout {version} is newer than this build reads; run the newer build"
            ),
        },
        e => Damage {
            file,
            index: None,
            problem: format!("the snapshot file is {e}"),
        }
        .into(),
    })
}

/// Where a verified store of `format` keeps its snapshot, and the state
/// bytes there (none for a store without a snapshot).
pub(crate) fn stored_snapshot_data(
    db: &sled::Db,
    dir: &Path,
    format: u8,
) -> Result<(PathBuf, Option<Vec<u8>>), OpenError> {
    if format >= 3 {
        let data = read_snapshot_file(dir)?.map(|(_, data)| data);
        return Ok((snapshot_file::path(dir), data));
    }
    let data = db
        .open_tree(SNAPSHOT_TREE)
        .and_then(|t| t.get(SNAPSHOT_DATA_KEY))
        .map_err(|source| OpenError::Sled {
            path: dir.display().to_string(),
            source,
        })?;
    Ok((dir.join("db"), data.map(|d| d.to_vec())))
}

/// The state bytes' version and checksum (decoding them whole is left to
/// the restore, which does it once).
fn check_snapshot_data(
    file: &Path,
    meta: &snapshot_file::Meta,
    data: &[u8],
    v: &mut Verified,
) -> Result<(), OpenError> {
    let index = meta.last_log_id.map(|id| id.index);
    codec::snapshot_body(data).map_err(|e| match e {
        codec::DecodeError::Version(v) if v.contains("newer") => OpenError::Incompatible {
            path: file.display().to_string(),
            reason: format!("{v}; run the newer build"),
        },
        e => Damage {
            file: file.to_path_buf(),
            index,
            problem: format!("the snapshot: {e}"),
        }
        .into(),
    })?;
    v.snapshot_index = index;
    v.snapshot_bytes = data.len() as u64;
    Ok(())
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

/// Converts a verified store of an older format to the current one, a step
/// per format, each durable before the next.
pub(crate) fn migrate(db: &sled::Db, dir: &Path, from: u8) -> Result<(), sled::Error> {
    if from < 2 {
        add_checksums(db)?;
    }
    if from < 3 {
        move_snapshot_to_file(db, dir)?;
    }
    Ok(())
}

/// Format 1 → 2: every record gets its checksum, in one transaction over the
/// three trees.
fn add_checksums(db: &sled::Db) -> Result<(), sled::Error> {
    use sled::transaction::ConflictableTransactionError;
    use sled::Transactional;
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
            m.insert(FORMAT_KEY, &[2])?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(migration_error)?;
    db.flush()?;
    Ok(())
}

/// Format 2 → 3: the snapshot moves from its sled tree into its file. The
/// file is durable before the tree is emptied and the format raised (one
/// transaction); a crash in between leaves a format-2 store whose next open
/// moves it again.
fn move_snapshot_to_file(db: &sled::Db, dir: &Path) -> Result<(), sled::Error> {
    use sled::transaction::ConflictableTransactionError;
    use sled::Transactional;
    let meta_tree = db.open_tree(META_TREE)?;
    let snapshots = db.open_tree(SNAPSHOT_TREE)?;
    if let (Some(meta), Some(data)) = (
        snapshots.get(SNAPSHOT_META_KEY)?,
        snapshots.get(SNAPSHOT_DATA_KEY)?,
    ) {
        let meta: snapshot_file::Meta = codec::decode_record(&meta)
            .map_err(|e| sled::Error::Unsupported(format!("the snapshot's meta: {e}")))?;
        snapshot_file::write(dir, &meta, &data)?;
    }
    (&meta_tree, &snapshots)
        .transaction(|(m, s)| {
            s.remove(SNAPSHOT_META_KEY)?;
            s.remove(SNAPSHOT_DATA_KEY)?;
            m.insert(FORMAT_KEY, &[3])?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(migration_error)?;
    db.flush()?;
    Ok(())
}

fn migration_error(e: sled::transaction::TransactionError<()>) -> sled::Error {
    match e {
        sled::transaction::TransactionError::Storage(e) => e,
        sled::transaction::TransactionError::Abort(()) => {
            sled::Error::Unsupported("migration aborted".into())
        }
    }
}
