//! Cluster checks: at most one leader per term; no replica's term ever goes
//! backwards, nor its committed or applied index within one process, and a
//! restarted process still holds every entry its predecessor knew committed
//! (each Raft id on its own: a wiped replica comes back under a new id); every replica ends with the
//! same state digest at the same applied index; no process panicked; and
//! every fault that was asked for really happened; and every replica whose
//! store was damaged refused to start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::history::{pairs, Op, OpType};
use crate::monitor::Sample;

/// The replicas' final status, read once they all applied the same index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FinalStatus {
    pub node: String,
    pub id: u64,
    pub applied: Option<u64>,
    pub digest: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterReport {
    pub valid: bool,
    pub samples: u64,
    /// Terms in which two different replicas said they led.
    pub split_brain: Vec<String>,
    pub went_backwards: Vec<String>,
    pub digests_differ: Vec<String>,
    pub panics: Vec<String>,
    /// Requested faults that never started successfully.
    pub nemeses_not_run: Vec<String>,
    /// Replicas that started on a store `verify` had found damaged (the
    /// disk nemesis): they must refuse with exit code 3.
    #[serde(default)]
    pub damage_accepted: Vec<String>,
    /// Successful starts per fault.
    pub nemesis_runs: BTreeMap<String, u64>,
    /// Leaders seen, by term.
    pub terms_with_leader: u64,
}

pub fn check(
    samples: &[Sample],
    finals: &[FinalStatus],
    history: &[Op],
    requested: &[String],
    logs: &[PathBuf],
) -> ClusterReport {
    let mut r = ClusterReport {
        samples: samples.len() as u64,
        ..Default::default()
    };
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.role == "leader") {
        leaders.entry(s.term).or_default().insert(s.id);
    }
    r.terms_with_leader = leaders.len() as u64;
    for (term, ids) in &leaders {
        if ids.len() > 1 {
            r.split_brain.push(format!("term {term}: leaders {ids:?}"));
        }
    }
    // Per Raft id: the term never goes backwards, even across a crash (it
    // is flushed before any vote). Committed and applied indexes are
    // volatile: within one process they never go backwards; a restarted
    // process may start behind, but its log must still hold every entry the
    // previous one knew to be committed.
    let mut last: BTreeMap<u64, &Sample> = BTreeMap::new();
    let mut ordered: Vec<&Sample> = samples.iter().collect();
    ordered.sort_by_key(|s| s.time_ns);
    for s in ordered {
        if let Some(prev) = last.get(&s.id) {
            let at = |what: &str, a: u64, b: u64| {
                format!(
                    "replica {} ({}): {what} {a} → {b} at {:.3} s",
                    s.id,
                    s.node,
                    s.time_ns as f64 / 1e9
                )
            };
            let v = |x: Option<u64>| x.unwrap_or(0);
            if prev.term > s.term {
                r.went_backwards.push(at("term", prev.term, s.term));
            }
            if prev.incarnation == s.incarnation {
                if v(prev.committed) > v(s.committed) {
                    r.went_backwards
                        .push(at("committed", v(prev.committed), v(s.committed)));
                }
                if v(prev.applied) > v(s.applied) {
                    r.went_backwards
                        .push(at("applied", v(prev.applied), v(s.applied)));
                }
            } else if v(prev.committed) > v(s.last_log) {
                r.went_backwards.push(at(
                    "log after restart (committed before → last log index)",
                    v(prev.committed),
                    v(s.last_log),
                ));
            }
        }
        last.insert(s.id, s);
    }
    if finals.is_empty() {
        r.digests_differ
            .push("no final status could be read".into());
    }
    if let Some(first) = finals.first() {
        for f in finals {
            if f.applied != first.applied || f.digest != first.digest {
                r.digests_differ.push(format!(
                    "{} at {:?} has digest {:x}, {} at {:?} has {:x}",
                    f.node, f.applied, f.digest, first.node, first.applied, first.digest
                ));
            }
        }
    }
    for path in logs {
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines().filter(|l| l.contains("panicked at")) {
                r.panics.push(format!("{}: {line}", path.display()));
            }
        }
    }
    for p in pairs(history)
        .iter()
        .filter(|p| p.invoke.process == "nemesis")
    {
        let started = p.invoke.value.get("phase").and_then(|v| v.as_str()) == Some("start")
            && p.completion.is_some_and(|c| c.kind == OpType::Ok);
        if started {
            *r.nemesis_runs.entry(p.invoke.f.clone()).or_default() += 1;
            if let Some(c) = p.completion.filter(|_| p.invoke.f == "disk") {
                let harmless = c.value.get("harmless").and_then(|v| v.as_bool()) == Some(true);
                let refused = c.value.get("refused").and_then(|v| v.as_bool()) == Some(true);
                if !harmless && !refused {
                    r.damage_accepted.push(c.value.to_string());
                }
            }
        }
    }
    r.nemeses_not_run = requested
        .iter()
        .filter(|k| !r.nemesis_runs.contains_key(*k))
        .cloned()
        .collect();
    r.valid = r.split_brain.is_empty()
        && r.went_backwards.is_empty()
        && r.digests_differ.is_empty()
        && r.panics.is_empty()
        && r.nemeses_not_run.is_empty()
        && r.damage_accepted.is_empty();
    r
}
