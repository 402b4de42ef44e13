//! How long the verification at open costs: fills a store with ENTRIES log
//! entries of BYTES bytes each (committed, watermark written), closes it,
//! then opens it again, which reads and checks all of it, and prints the time.
//!
//! cargo run --release -p autoglm-storage --example verify_time -- 100000 200

// declare_raft_types! names the default snapshot type `Cursor` unqualified.
use std::io::Cursor;
use std::time::{Duration, Instant};

use autoglm_storage::{StateMachine, StoreOptions};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    Config:
        D = String,
        R = (),
);

/// A state machine that keeps nothing: the example measures the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Nothing;

impl StateMachine<Config> for Nothing {
    fn apply(&mut self, _log_id: &LogId<u64>, _request: &String) {}
    fn no_request_response() {}
    type V1 = Nothing;
    type V3 = Nothing;
    type V4 = Nothing;
    type V5 = Nothing;
    type V6 = Nothing;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let bytes: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let filled = Instant::now();
    rt.block_on(async {
        let opened =
            autoglm_storage::open::<Config, Nothing>(dir.path(), &StoreOptions::default())?;
        let mut log = opened.log;
        log.save_vote(&Vote::new(1, 1)).await?;
        let id = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
        let mut next = 1;
        while next <= entries {
            let last = (next + 999).min(entries);
            let batch: Vec<Entry<Config>> = (next..=last)
                .map(|i| Entry {
                    log_id: id(i),
                    payload: EntryPayload::Normal("x".repeat(bytes)),
                })
                .collect();
            log.blocking_append(batch).await?;
            next = last + 1;
        }
        log.save_committed(Some(id(entries))).await?;
        log.watermark().sync();
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!(
        "filled {entries} entries of {bytes} bytes in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    // Let sled finish its own background flush before the store is closed.
    std::thread::sleep(Duration::from_millis(200));
    let opened_at = Instant::now();
    let opened = autoglm_storage::open::<Config, Nothing>(dir.path(), &StoreOptions::default())?;
    let took = opened_at.elapsed();
    assert_eq!(opened.verified.last_index, Some(entries));
    println!(
        "open (verify) {} entries: {:.0} ms, {:.0} entries/s",
        opened.verified.entries,
        took.as_secs_f64() * 1e3,
        entries as f64 / took.as_secs_f64()
    );
    Ok(())
}
