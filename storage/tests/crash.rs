//! Crash safety: a child process appends entries and saves votes, printing each
//! one only after the store acknowledged it, and is killed with SIGKILL at a
//! random moment. After every kill the store must reopen cleanly and hold every
//! acknowledged entry and the last acknowledged vote.
//!
//! The child is this same test binary, re-run with `CRASH_CHILD_DIR` set.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use autoglm_storage::{LogStore, StoreOptions};
use common::{Kv, KvConfig, Put};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "CRASH_CHILD_DIR";
const KILLS: usize = 20;

fn entry(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Put {
            key: format!("k{index}"),
            value: format!("v{term}-{index}"),
        }),
    }
}

fn open(dir: &std::path::Path) -> LogStore<KvConfig> {
    autoglm_storage::open::<KvConfig, Kv>(dir, &StoreOptions::default())
        .expect("store reopens")
        .log
}

/// The child: writes forever, one acknowledgement line per durable write.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut log = open(std::path::Path::new(&dir));
        let state = log.get_log_state().await.unwrap();
        let mut next = state.last_log_id.map_or(1, |id| id.index + 1);
        let mut term = log
            .read_vote()
            .await
            .unwrap()
            .map_or(1, |v| v.leader_id.term);
        let mut out = std::io::stdout().lock();
        loop {
            if next % 7 == 0 {
                term += 1;
                log.save_vote(&Vote::new(term, 1)).await.unwrap();
                writeln!(out, "vote {term}").unwrap();
            }
            let batch: Vec<_> = (next..next + 1 + next % 5)
                .map(|i| entry(term, i))
                .collect();
            let last = batch.last().unwrap().log_id.index;
            log.blocking_append(batch).await.unwrap();
            writeln!(out, "entries {next} {last} {term}").unwrap();
            out.flush().unwrap();
            next = last + 1;
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // (first index, last index, term) of every acknowledged append, and the last vote.
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    let mut acked_vote = 0u64;

    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["vote", term] => acked_vote = term.parse().unwrap(),
                ["entries", first, last, term] => acked.push((
                    first.parse().unwrap(),
                    last.parse().unwrap(),
                    term.parse().unwrap(),
                )),
                _ => {} // libtest's own output
            }
        }

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut log = open(dir.path());
            let vote = log.read_vote().await.unwrap();
            let stored_term = vote.map_or(0, |v| v.leader_id.term);
            assert!(
                stored_term >= acked_vote,
                "kill {kill}: vote {stored_term} < acknowledged {acked_vote}"
            );
            let last_acked = acked.last().map_or(0, |a| a.1);
            let stored = log.try_get_log_entries(1..=last_acked).await.unwrap();
            assert_eq!(
                stored.len() as u64,
                last_acked,
                "kill {kill}: acknowledged entries missing"
            );
            for (first, last, term) in &acked {
                for index in *first..=*last {
                    let e = &stored[(index - 1) as usize];
                    assert_eq!(
                        e.log_id,
                        entry(*term, index).log_id,
                        "kill {kill}: entry {index} differs"
                    );
                }
            }
        });
        println!(
            "kill {kill}: {} entries and vote {acked_vote} acknowledged, all present",
            acked.last().map_or(0, |a| a.1)
        );
    }
    assert!(
        acked.len() > KILLS,
        "the child acknowledged too few writes to test anything"
    );
}
