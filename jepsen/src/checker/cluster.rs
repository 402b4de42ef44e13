//! Cluster checks: at most one leader per leader id; no replica's term ever goes
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
    /// Leadership that openraft's votes cannot produce: one leader id
    /// (term, Raft id) claimed by two hosts, or, within one term, a leader
    /// first seen after a leader with a higher Raft id (votes only rise).
    pub split_brain: Vec<String>,
    /// Terms in which replicas with different Raft ids led. openraft's
    /// default leader id is (term, node id), not the term alone: in one term
    /// a later candidate with a higher id may win after an earlier one, and
    /// the earlier leader's vote is then superseded as a lower term's would
    /// be ("every term may have more than one leader", openraft's
    /// `docs::data::vote`). Reported, not a violation; what would make it one
    /// (entries lost or applied differently) the queue, register and digest
    /// checks catch.
    #[serde(default)]
    pub terms_with_several_leaders: Vec<String>,
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
    // Per term, each leader's Raft id and when it was first seen leading.
    let mut leaders: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut hosts: BTreeMap<(u64, u64), BTreeSet<&str>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.role == "leader") {
        let first = leaders
            .entry(s.term)
            .or_default()
            .entry(s.id)
            .or_insert(s.time_ns);
        *first = (*first).min(s.time_ns);
        hosts.entry((s.term, s.id)).or_default().insert(&s.node);
    }
    r.terms_with_leader = leaders.len() as u64;
    for (term, first_seen) in &leaders {
        if first_seen.len() < 2 {
            continue;
        }
        let ids: Vec<&u64> = first_seen.keys().collect();
        r.terms_with_several_leaders
            .push(format!("term {term}: leaders {ids:?}"));
        for (id, seen) in first_seen {
            if let Some((higher, _)) = first_seen.iter().find(|(h, t)| *h > id && *t < seen) {
                r.split_brain.push(format!(
                    "term {term}: leader {id} first seen after leader {higher}, whose vote is higher"
                ));
            }
        }
    }
    for ((term, id), nodes) in &hosts {
        if nodes.len() > 1 {
            r.split_brain
                .push(format!("term {term}: Raft id {id} led on {nodes:?}"));
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
