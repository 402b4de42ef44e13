//! A new single-voter cluster from a given state: `restore` feeds it a
//! backup, `recover` a survivor's own store (like etcd's
//! `--force-new-cluster`). The new store holds a snapshot of the state under
//! a membership of one voter, its log purged up to the snapshot; started, the
//! replica elects itself and takes writes, and others join as learners.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, LogId, Membership, RaftLogReader, SnapshotMeta, StoredMembership, Vote};

use crate::integrity::{COMMITTED_KEY, LAST_PURGED_KEY, META_TREE, VOTE_KEY};
use crate::state_machine::Applied;
use crate::watermark::{self, Watermark};
use crate::{codec, snapshot_file, OpenError, StateMachine, StoreOptions, StoredTypeConfig};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{0} already holds a store; a new cluster is only made in an empty place")]
    NotEmpty(String),
    #[error("the state holds nothing applied: there is nothing to start a cluster from")]
    Empty,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("writing the new store in {path}: {reason}")]
    Write { path: String, reason: String },
}

/// What a survivor's store holds once its committed log is applied.
pub struct Replayed<S> {
    pub applied: Applied<S>,
    /// Entries after the committed index: the lost majority may or may not
    /// have committed them; they are not in the new cluster.
    pub dropped_entries: u64,
}

/// Opens (and verifies) the store in `dir`, applies its log up to its
/// committed index on top of its snapshot, and returns that state.
pub async fn replay_committed<C, S>(dir: &Path) -> Result<Replayed<S>, OpenError>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    let opened = crate::open::<C, S>(dir, &StoreOptions::default())?;
    let verified = opened.verified.clone();
    let mut sm = opened.state_machine;
    let mut log = opened.log;
    let from = verified.snapshot_index.map_or(0, |i| i + 1);
    // The committed id in the database is saved without a flush and may
    // trail; the watermark's (fsynced) may be ahead of it. Neither passes
    // the end of the log.
    let committed_known = verified
        .committed
        .max(verified.watermark.and_then(|w| w.committed))
        .map(|c| c.min(verified.last_index.unwrap_or(c)));
    let committed = committed_known.unwrap_or(0);
    let damage = |problem: String| {
        OpenError::from(crate::Damage {
            file: dir.join("db"),
            index: None,
            problem,
        })
    };
    if committed_known.is_some() && from <= committed {
        let entries = log
            .try_get_log_entries(from..=committed)
            .await
            .map_err(|e| damage(format!("reading the log to replay it: {e}")))?;
        sm.apply(entries)
            .await
            .map_err(|e| damage(format!("applying the log: {e}")))?;
    }
    let applied = sm.shared().read().clone();
    let last = verified.last_index.unwrap_or(0);
    Ok(Replayed {
        applied,
        dropped_entries: last.saturating_sub(committed.max(from.saturating_sub(1))),
    })
}

/// Writes a new store in `dir` (which must hold none): `applied` as its
/// snapshot, under a membership of one voter, `node_id` at `addr`. The store
/// is built beside `dir` and renamed into place, so a crash leaves either
/// nothing or all of it. Returns the log id the new cluster starts after.
pub fn seed_single_voter<C, S>(
    dir: &Path,
    applied: &Applied<S>,
    node_id: u64,
    addr: &str,
) -> Result<LogId<u64>, SeedError>
where
    C: StoredTypeConfig,
    S: StateMachine<C>,
{
    if dir.exists() {
        return Err(SeedError::NotEmpty(dir.display().to_string()));
    }
    let last = applied.last_applied.ok_or(SeedError::Empty)?;
    let building = sibling(dir, "seeding");
    let write_err = |reason: String| SeedError::Write {
        path: building.display().to_string(),
        reason,
    };
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| write_err(e.to_string()))?;
    }
    let membership = StoredMembership::new(
        Some(last),
        Membership::new(
            vec![BTreeSet::from([node_id])],
            BTreeMap::from([(node_id, BasicNode::new(addr))]),
        ),
    );
    let mut seeded = applied.clone();
    seeded.membership = membership.clone();
    let meta: SnapshotMeta<u64, BasicNode> = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership,
        snapshot_id: format!("seed-{}-{}", last.leader_id.term, last.index),
    };
    write_store::<C, S>(&building, node_id, &seeded, &meta).map_err(write_err)?;
    let mark = Watermark {
        acknowledged: Some(last.index),
        committed: Some(last.index),
    };
    watermark::write(&building, &mark).map_err(|e| write_err(e.to_string()))?;
    std::fs::rename(&building, dir).map_err(|e| write_err(e.to_string()))?;
    Ok(last)
}

/// `dir` with a suffix, in the same parent (so a rename stays atomic).
pub fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn write_store<C: StoredTypeConfig, S: StateMachine<C>>(
    path: &Path,
    node_id: u64,
    seeded: &Applied<S>,
    meta: &SnapshotMeta<u64, BasicNode>,
) -> Result<(), String> {
    fn record<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
        codec::encode_record(value).map_err(|e| e.to_string())
    }
    let text = |e: sled::Error| e.to_string();
    let last = meta.last_log_id.ok_or("a seed snapshot covers a log id")?;
    let db = sled::Config::new().path(path).open().map_err(text)?;
    let meta_tree = db.open_tree(META_TREE).map_err(text)?;
    let vote = Vote::<u64>::new(last.leader_id.term, node_id);
    let writes: [(&[u8], Vec<u8>); 3] = [
        (VOTE_KEY, record(&vote)?),
        (COMMITTED_KEY, record(&last)?),
        (LAST_PURGED_KEY, record(&last)?),
    ];
    for (key, value) in writes {
        meta_tree.insert(key, value).map_err(text)?;
    }
    let data = S::encode_snapshot(seeded).map_err(|e| e.to_string())?;
    snapshot_file::write(path, meta, &data).map_err(|e| e.to_string())?;
    crate::integrity::mark_current_format(&db).map_err(text)?;
    db.flush().map_err(text)?;
    Ok(())
}
