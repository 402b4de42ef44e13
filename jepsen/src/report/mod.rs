//! The report of a run, in `store/<test>/<time>/`:
//! - `history.jsonl`: every operation;
//! - `results.json`: verdict per checker, seed, versions, arguments, numbers;
//! - `final.json`: the tasks each replica held at the end; `status.jsonl`:
//!   the monitor's samples;
//! - `index.html` with `latency.svg`, `throughput.svg`, `timeline.svg`;
//! - each host's logs under `<host>/`.

pub mod heals;
mod html;
pub mod metrics;
mod plots;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::checker::cluster::{ClusterReport, FinalStatus};
use crate::checker::linearizable::Report as LinearizableReport;
use crate::checker::queue::{FinalState, QueueReport};
use crate::history::Op;
use crate::monitor::Sample;
use crate::run::TestOptions;

/// What `results.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub test: String,
    pub valid: bool,
    pub seed: u64,
    pub versions: BTreeMap<String, String>,
    pub arguments: serde_json::Value,
    pub duration_s: f64,
    pub drain: serde_json::Value,
    pub operations: BTreeMap<String, BTreeMap<String, u64>>,
    pub unavailability: metrics::Unavailability,
    pub nemesis_windows: Vec<(String, f64, f64)>,
    /// What healing each `partition-one` cost (leader changes, write gap).
    #[serde(default)]
    pub heals: Vec<heals::Heal>,
    pub queue: Option<QueueReport>,
    pub linearizable: Option<LinearizableReport>,
    pub cluster: ClusterReport,
}

/// A finished run: the summary plus the raw material it came from.
pub struct Results {
    pub summary: Summary,
    pub history: Vec<Op>,
    pub samples: Vec<Sample>,
    pub finals: FinalState,
    pub statuses: Vec<FinalStatus>,
    pub logs: Vec<PathBuf>,
}

/// Everything a finished run produced, gathered for [`Results::new`].
pub struct Evidence {
    /// `git rev-parse --short HEAD` when the run started, if in a checkout.
    pub git: Option<String>,
    pub elapsed: Duration,
    pub drain: serde_json::Value,
    pub history: Vec<Op>,
    pub samples: Vec<Sample>,
    pub finals: FinalState,
    pub statuses: Vec<FinalStatus>,
    pub logs: Vec<PathBuf>,
    pub cluster: ClusterReport,
    pub queue: Option<QueueReport>,
    pub linearizable: Option<LinearizableReport>,
}

impl Results {
    pub fn new(opts: &TestOptions, e: Evidence) -> Self {
        let valid = e.cluster.valid
            && e.queue.as_ref().is_none_or(|q| q.valid)
            && e.linearizable.as_ref().is_none_or(|l| l.is_linearizable());
        let mut versions = BTreeMap::new();
        versions.insert("autoglm".into(), env!("CARGO_PKG_VERSION").to_string());
        if let Some(rev) = &e.git {
            versions.insert("git".into(), rev.clone());
        }
        let summary = Summary {
            test: opts.name.clone(),
            valid,
            seed: opts.seed,
            versions,
            arguments: serde_json::json!({
                "nodes": opts.nodes,
                "agents": opts.agents,
                "zombies": opts.zombies,
                "time_s": opts.time.as_secs_f64(),
                "nemesis": opts.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "queue": opts.queue,
                "register": opts.register,
                "linearizable_limit_s": opts.linearizable_limit.as_secs_f64(),
            }),
            duration_s: e.elapsed.as_secs_f64(),
            drain: e.drain,
            operations: metrics::by_outcome(&e.history),
            unavailability: metrics::unavailability(&e.history),
            nemesis_windows: metrics::nemesis_windows(&e.history),
            heals: heals::heals(&e.history, &e.samples),
            queue: e.queue,
            linearizable: e.linearizable,
            cluster: e.cluster,
        };
        Self {
            summary,
            history: e.history,
            samples: e.samples,
            finals: e.finals,
            statuses: e.statuses,
            logs: e.logs,
        }
    }
}

/// The checkout's commit, read when a run starts (HEAD may move during it).
pub fn git_rev() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}

/// Writes the report files into `dir`.
pub fn write(dir: &Path, results: &Results) -> Result<()> {
    let mut history = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    for op in &results.history {
        serde_json::to_writer(&mut history, op)?;
        history.write_all(b"\n")?;
    }
    history.flush()?;
    let mut status = std::io::BufWriter::new(std::fs::File::create(dir.join("status.jsonl"))?);
    for s in &results.samples {
        serde_json::to_writer(&mut status, s)?;
        status.write_all(b"\n")?;
    }
    status.flush()?;
    std::fs::write(
        dir.join("final.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "tasks": results.finals,
            "status": results.statuses,
        }))?,
    )?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&results.summary)?,
    )?;
    plots::latency(&dir.join("latency.svg"), &results.history)?;
    plots::throughput(&dir.join("throughput.svg"), &results.history)?;
    let step = plots::timeline(&dir.join("timeline.svg"), &results.history)?;
    let logs: Vec<String> = results
        .logs
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok())
        .map(|p| p.display().to_string())
        .collect();
    std::fs::write(
        dir.join("index.html"),
        html::render(&results.summary, &logs, step),
    )?;
    Ok(())
}
