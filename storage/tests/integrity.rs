//! Damaged stores are refused at open, each with a [`Damage`] naming the file
//! (and the log index where there is one); never a silent start, never a
//! panic. The damage is the one operators meet: a truncated file (half, all,
//! the last 4 KB), flipped bytes, a flipped or deleted blob.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoglm_storage::damage::{flip_bytes, set_len};
use autoglm_storage::watermark;
use autoglm_storage::{OpenError, StoreOptions};
use common::{Kv, KvConfig, Put};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

const ENTRIES: u64 = 400;

fn entry(index: u64, value_bytes: usize) -> Entry<KvConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Put {
            key: format!("k{index}"),
            value: format!("{index}:{}", "x".repeat(value_bytes)),
        }),
    }
}

fn open(dir: &Path) -> Result<autoglm_storage::Opened<KvConfig, Kv>, OpenError> {
    autoglm_storage::open::<KvConfig, Kv>(dir, &StoreOptions::default())
}

/// A store of `ENTRIES` committed entries (values of `value_bytes`), closed,
/// its watermark written.
fn filled(value_bytes: usize) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut log = open(tmp.path()).unwrap().log;
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        for chunk in (1..=ENTRIES).collect::<Vec<_>>().chunks(20) {
            let batch = chunk
                .iter()
                .map(|i| entry(*i, value_bytes))
                .collect::<Vec<_>>();
            log.blocking_append(batch).await.unwrap();
        }
        let last = LogId::new(CommittedLeaderId::new(1, 1), ENTRIES);
        log.save_committed(Some(last)).await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while watermark::read(tmp.path())
        .unwrap()
        .and_then(|w| w.acknowledged)
        != Some(ENTRIES)
    {
        assert!(
            Instant::now() < deadline,
            "watermark never reached {ENTRIES}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tmp
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("db")
}

fn refused(dir: &Path, case: &str) -> String {
    match open(dir) {
        Err(OpenError::Damaged(d)) => {
            let line = d.to_string();
            assert!(!line.contains('\n'), "{case}: more than one line: {line}");
            assert!(
                line.contains(&dir.display().to_string()),
                "{case}: the line names no file: {line}"
            );
            assert!(
                line.contains("docs/operations.md"),
                "{case}: no recovery step: {line}"
            );
            println!("{case}: {line}");
            line
        }
        Err(other) => panic!("{case}: refused, but not as damage: {other}"),
        Ok(opened) => panic!(
            "{case}: opened a damaged store silently: {:?}",
            opened.verified
        ),
    }
}

/// Damage that may land on space sled no longer uses (a superseded page):
/// the store must either refuse, or open with every entry intact.
fn refused_or_intact(dir: &Path, case: &str) {
    match open(dir) {
        Ok(opened) => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let mut log = opened.log;
            let entries = rt.block_on(log.try_get_log_entries(1..=ENTRIES)).unwrap();
            assert_eq!(
                entries.len() as u64,
                ENTRIES,
                "{case}: opened without refusing, and entries are missing"
            );
            println!("{case}: hit unused space; every entry intact");
        }
        Err(_) => {
            refused(dir, case);
        }
    }
}

#[test]
fn an_undamaged_store_verifies_and_keeps_every_entry() {
    let tmp = filled(100);
    let opened = open(tmp.path()).unwrap();
    assert_eq!(opened.verified.last_index, Some(ENTRIES));
    assert_eq!(opened.verified.committed, Some(ENTRIES));
    assert_eq!(
        opened.verified.watermark.and_then(|w| w.committed),
        Some(ENTRIES)
    );
    assert_eq!(
        opened.verified.watermark.and_then(|w| w.acknowledged),
        Some(ENTRIES)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut log = opened.log;
    let entries = rt.block_on(log.try_get_log_entries(1..=ENTRIES)).unwrap();
    assert_eq!(entries.len() as u64, ENTRIES);
}

#[test]
fn a_truncated_database_is_refused() {
    for (case, cut) in [("half", 2u64), ("all", 0), ("last 4 KB", 1)] {
        let tmp = filled(100);
        let db = db_file(tmp.path());
        let len = std::fs::metadata(&db).unwrap().len();
        let new_len = match cut {
            2 => len / 2,
            0 => 0,
            _ => len.saturating_sub(4096),
        };
        set_len(&db, new_len).unwrap();
        if cut == 1 {
            refused_or_intact(tmp.path(), case);
        } else {
            refused(tmp.path(), case);
        }
    }
}

#[test]
fn flipped_bytes_in_the_database_are_refused() {
    let tmp = filled(100);
    let db = db_file(tmp.path());
    let len = std::fs::metadata(&db).unwrap().len();
    flip_bytes(&db, len / 2, 64).unwrap();
    refused_or_intact(tmp.path(), "64 flipped bytes");
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let blobs = dir.join("blobs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_flipped_or_deleted_blob_is_refused() {
    // Values this large go to sled's blob files.
    let tmp = filled(64 * 1024);
    let blobs = blob_files(tmp.path());
    assert!(!blobs.is_empty(), "no blob files were written");
    flip_bytes(&blobs[blobs.len() / 2], 100, 64).unwrap();
    refused(tmp.path(), "flipped blob");

    // A blob sled has superseded but not yet removed holds no live entry:
    // deleting it harms nothing (seen once in a full run), so the store
    // must refuse or have every entry.
    let tmp = filled(64 * 1024);
    let blobs = blob_files(tmp.path());
    std::fs::remove_file(&blobs[blobs.len() / 2]).unwrap();
    refused_or_intact(tmp.path(), "deleted blob");
}

#[test]
fn a_log_that_ends_before_its_watermark_is_refused() {
    let tmp = filled(100);
    // As if sled had rolled back the last entries: remove them behind the
    // store's back.
    {
        let db = sled::open(tmp.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        for i in ENTRIES - 11..=ENTRIES {
            log.remove(i.to_be_bytes()).unwrap();
        }
        db.open_tree("meta").unwrap().remove("committed").unwrap();
        db.flush().unwrap();
    }
    let line = refused(tmp.path(), "rolled back 12 entries");
    assert!(line.contains("acknowledged entries up to"), "{line}");
    assert!(line.contains(&format!("index {ENTRIES}")), "{line}");
    assert!(
        line.contains(&format!("ends at {}", ENTRIES - 12)),
        "{line}"
    );
}

#[test]
fn a_hole_in_the_log_is_refused_with_its_index() {
    let tmp = filled(100);
    {
        let db = sled::open(tmp.path()).unwrap();
        db.open_tree("log")
            .unwrap()
            .remove(200u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let line = refused(tmp.path(), "hole at 200");
    assert!(line.contains("log index 200"), "{line}");
}

#[test]
fn a_store_of_format_1_is_read_and_converted() {
    let tmp = tempfile::tempdir().unwrap();
    {
        // Format 1: bare postcard records, no format key, no watermark.
        let db = sled::open(tmp.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        for i in 1..=10u64 {
            log.insert(i.to_be_bytes(), postcard::to_stdvec(&entry(i, 10)).unwrap())
                .unwrap();
        }
        let meta = db.open_tree("meta").unwrap();
        meta.insert(
            "vote",
            postcard::to_stdvec(&Vote::<u64>::new(1, 1)).unwrap(),
        )
        .unwrap();
        let committed = LogId::new(CommittedLeaderId::<u64>::new(1, 1), 10);
        meta.insert("committed", postcard::to_stdvec(&committed).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let opened = open(tmp.path()).unwrap();
    assert_eq!(opened.verified.format, 1);
    assert_eq!(opened.verified.last_index, Some(10));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut log = opened.log.clone();
    let entries = rt.block_on(log.try_get_log_entries(1..=10)).unwrap();
    assert_eq!(entries[9], entry(10, 10));
    assert_eq!(rt.block_on(log.read_vote()).unwrap(), Some(Vote::new(1, 1)));
    drop(log);
    drop(opened);
    let again = open(tmp.path()).unwrap();
    assert_eq!(
        again.verified.format,
        autoglm_storage::integrity::STORE_FORMAT
    );
    assert_eq!(again.verified.last_index, Some(10));
}

#[test]
fn an_intact_record_this_build_cannot_decode_is_a_newer_format_not_damage() {
    let tmp = filled(100);
    {
        let db = sled::open(tmp.path()).unwrap();
        // A whole record (its checksum holds) whose body no format of this
        // build decodes: what a newer build's entry looks like here.
        let body = [0xffu8; 12];
        let mut record = crc32fast::hash(&body).to_le_bytes().to_vec();
        record.extend_from_slice(&body);
        db.open_tree("log")
            .unwrap()
            .insert((ENTRIES + 1).to_be_bytes(), record)
            .unwrap();
        db.flush().unwrap();
    }
    match open(tmp.path()) {
        Err(OpenError::Incompatible { reason, .. }) => {
            assert!(reason.contains("newer build"), "{reason}")
        }
        Err(other) => panic!("not reported as a newer format: {other}"),
        Ok(_) => panic!("an undecodable entry was accepted"),
    }
}

#[test]
fn a_truncated_uncommitted_tail_lowers_the_watermark_first() {
    let tmp = filled(100);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut log = open(tmp.path()).unwrap().log;
        // Only entries up to 380 count as committed here (Raft never
        // truncates committed ones); a new leader replaces 391 onwards.
        let committed = LogId::new(CommittedLeaderId::new(1, 1), ENTRIES - 20);
        log.save_committed(Some(committed)).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), ENTRIES - 9))
            .await
            .unwrap();
    });
    let mark = watermark::read(tmp.path()).unwrap().unwrap();
    assert_eq!(mark.acknowledged, Some(ENTRIES - 10));
    let opened = open(tmp.path()).expect("a legitimately shorter log is not damage");
    assert_eq!(opened.verified.last_index, Some(ENTRIES - 10));
}

/// A store holding `ENTRIES` entries, all applied and snapshotted (the
/// snapshot in its file), closed.
fn snapshotted() -> tempfile::TempDir {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;
    let tmp = filled(100);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opened = open(tmp.path()).unwrap();
        let mut log = opened.log;
        let mut sm = opened.state_machine;
        let entries = log.try_get_log_entries(1..=ENTRIES).await.unwrap();
        sm.apply(entries).await.unwrap();
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await;
        assert_eq!(snapshot.unwrap().meta.last_log_id.unwrap().index, ENTRIES);
    });
    tmp
}

#[test]
fn a_snapshot_lives_in_its_file_and_restores_from_it() {
    let tmp = snapshotted();
    let file = autoglm_storage::snapshot_file::path(tmp.path());
    assert!(file.is_file(), "no snapshot file at {}", file.display());
    let opened = open(tmp.path()).unwrap();
    assert_eq!(opened.verified.snapshot_index, Some(ENTRIES));
    let file_len = std::fs::metadata(&file).unwrap().len();
    assert!(
        opened.verified.snapshot_bytes > 0 && opened.verified.snapshot_bytes < file_len,
        "{} state bytes in a file of {file_len}",
        opened.verified.snapshot_bytes
    );
    let state = opened.state_machine.shared();
    let applied = state.read();
    assert_eq!(applied.last_applied.map(|id| id.index), Some(ENTRIES));
    assert_eq!(applied.state.0.len() as u64, ENTRIES);
}

#[test]
fn a_damaged_or_cut_snapshot_file_is_refused_naming_it() {
    let file = |dir: &Path| autoglm_storage::snapshot_file::path(dir);
    let tmp = snapshotted();
    let len = std::fs::metadata(file(tmp.path())).unwrap().len();
    flip_bytes(&file(tmp.path()), len / 2, 16).unwrap();
    let line = refused(tmp.path(), "flipped snapshot state");
    assert!(line.contains("raft-snapshot"), "{line}");

    let tmp = snapshotted();
    flip_bytes(&file(tmp.path()), 8, 4).unwrap();
    let line = refused(tmp.path(), "flipped snapshot meta");
    assert!(line.contains("raft-snapshot"), "{line}");

    let tmp = snapshotted();
    set_len(&file(tmp.path()), len - 4096).unwrap();
    let line = refused(tmp.path(), "cut snapshot file");
    assert!(line.contains("raft-snapshot"), "{line}");
}

#[test]
fn a_store_of_format_2_moves_its_snapshot_into_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let last = LogId::new(CommittedLeaderId::<u64>::new(1, 1), 10);
    let applied = autoglm_storage::Applied {
        last_applied: Some(last),
        membership: Default::default(),
        state: Kv([("k".to_string(), "v".to_string())].into()),
    };
    let meta = openraft::SnapshotMeta::<u64, openraft::BasicNode> {
        last_log_id: Some(last),
        last_membership: Default::default(),
        snapshot_id: "1-10-0".into(),
    };
    {
        // Format 2: checksummed records, the snapshot in the "snapshot" tree.
        let db = sled::open(tmp.path()).unwrap();
        let meta_tree = db.open_tree("meta").unwrap();
        meta_tree.insert("format", &[2u8]).unwrap();
        meta_tree
            .insert("vote", record(&Vote::<u64>::new(1, 1)))
            .unwrap();
        meta_tree.insert("committed", record(&last)).unwrap();
        meta_tree.insert("last_purged", record(&last)).unwrap();
        let snapshots = db.open_tree("snapshot").unwrap();
        snapshots.insert("meta", record(&meta)).unwrap();
        snapshots
            .insert(
                "data",
                autoglm_storage::codec::encode_snapshot(&applied).unwrap(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let opened = open(tmp.path()).unwrap();
    assert_eq!(opened.verified.format, 2);
    assert_eq!(opened.verified.snapshot_index, Some(10));
    assert_eq!(opened.state_machine.shared().read().state, applied.state);
    assert!(autoglm_storage::snapshot_file::path(tmp.path()).is_file());
    drop(opened);
    let again = open(tmp.path()).unwrap();
    assert_eq!(
        again.verified.format,
        autoglm_storage::integrity::STORE_FORMAT
    );
    assert_eq!(again.verified.snapshot_index, Some(10));
    assert_eq!(again.state_machine.shared().read().state, applied.state);
    assert!(again.db.open_tree("snapshot").unwrap().is_empty());
}

fn record<T: serde::Serialize>(value: &T) -> Vec<u8> {
    autoglm_storage::codec::encode_record(value).unwrap()
}
