//! `autoglm-jepsen check <run dir>`: runs every checker again on a stored
//! run, without a cluster: the history (`history.jsonl`), the monitor's
//! samples (`status.jsonl`), the replicas' final state (`final.json`), the
//! run's arguments (`results.json`) and the hosts' logs. For a checker that
//! changed since the run, or a history from elsewhere; writes nothing.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::checker::cluster::{self, ClusterReport, FinalStatus};
use crate::checker::linearizable::{self, Report as LinearizableReport};
use crate::checker::queue::{self, FinalState, QueueReport};
use crate::history::Op;
use crate::monitor::Sample;

/// The verdicts of a re-check.
pub struct Rechecked {
    pub valid: bool,
    /// What `results.json` said when the run ended.
    pub stored_valid: Option<bool>,
    pub cluster: ClusterReport,
    pub queue: Option<QueueReport>,
    pub linearizable: Option<LinearizableReport>,
}

#[derive(Deserialize)]
struct Finals {
    tasks: FinalState,
    status: Vec<FinalStatus>,
}

#[derive(Deserialize)]
struct StoredSummary {
    valid: Option<bool>,
    arguments: Arguments,
}

#[derive(Deserialize)]
struct Arguments {
    nemesis: Vec<String>,
    queue: bool,
    register: bool,
}

fn json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, line)| {
            serde_json::from_str(&line?)
                .with_context(|| format!("{}: line {}", path.display(), i + 1))
        })
        .collect()
}

fn json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    serde_json::from_slice(&bytes).with_context(|| path.display().to_string())
}

pub fn recheck(dir: &Path, linearizable_limit: Duration) -> Result<Rechecked> {
    let history: Vec<Op> = json_lines(&dir.join("history.jsonl"))?;
    let samples: Vec<Sample> = json_lines(&dir.join("status.jsonl"))?;
    let finals: Finals = json(&dir.join("final.json"))?;
    let stored: StoredSummary = json(&dir.join("results.json"))?;
    let cluster = cluster::check(
        &samples,
        &finals.status,
        &history,
        &stored.arguments.nemesis,
        &crate::db::log_files_under(dir),
    );
    let queue = stored
        .arguments
        .queue
        .then(|| queue::check(&history, &finals.tasks));
    let linearizable = stored
        .arguments
        .register
        .then(|| linearizable::check_config_register(&history, linearizable_limit));
    let valid = cluster.valid
        && queue.as_ref().is_none_or(|q| q.valid)
        && linearizable.as_ref().is_none_or(|l| l.is_linearizable());
    Ok(Rechecked {
        valid,
        stored_valid: stored.valid,
        cluster,
        queue,
        linearizable,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A stored run of one acknowledged submission, with `final_tasks` as
    /// what the replica held at the end.
    fn stored_run(final_tasks: serde_json::Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ops = [
            json!({"index": 0, "time_ns": 1, "process": "c0", "node": "n1", "type": "invoke", "f": "submit", "value": {"id": "t1"}}),
            json!({"index": 1, "time_ns": 2, "process": "c0", "node": "n1", "type": "ok", "f": "submit", "value": {"id": "t1"}}),
        ];
        let history: String = ops.iter().map(|o| format!("{o}\n")).collect();
        std::fs::write(dir.path().join("history.jsonl"), history).unwrap();
        std::fs::write(dir.path().join("status.jsonl"), "").unwrap();
        let finals = json!({
            "tasks": {"n1": final_tasks},
            "status": [{"node": "n1", "id": 1, "applied": 5, "digest": 7}],
        });
        std::fs::write(dir.path().join("final.json"), finals.to_string()).unwrap();
        let summary =
            json!({"valid": true, "arguments": {"nemesis": [], "queue": true, "register": false}});
        std::fs::write(dir.path().join("results.json"), summary.to_string()).unwrap();
        dir
    }

    #[test]
    fn a_stored_run_is_checked_again_and_a_lost_task_found() {
        let task = json!({"id": 1, "job_id": 1, "name": "t1", "state": "succeeded", "attempt": 1,
            "attempts": [{"attempt": 1, "node": "a1", "result": "succeeded"}]});
        let whole = stored_run(json!([task]));
        let r = recheck(whole.path(), Duration::from_secs(1)).unwrap();
        assert!(r.valid, "{:?}", r.queue);
        assert_eq!(r.stored_valid, Some(true));

        let lost = stored_run(json!([]));
        let r = recheck(lost.path(), Duration::from_secs(1)).unwrap();
        assert!(!r.valid);
        assert_eq!(r.queue.unwrap().lost.len(), 1);
    }
}
