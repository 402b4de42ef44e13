//! What healing a partition costs: for each `partition-one` fault, whether
//! the isolated replica was a follower, how many leaders of new terms
//! appeared in the seconds after the heal (with pre-vote, an isolated
//! follower raises no term, so healing it should depose nobody), and the
//! longest gap between two acknowledged writes around the heal.

use serde::{Deserialize, Serialize};

use crate::history::{pairs, Op, OpType};
use crate::monitor::Sample;

/// How long after a heal new leaders and write gaps are looked for.
const AFTER_NS: u64 = 3_000_000_000;
/// How long before a heal the write gap is looked for.
const BEFORE_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heal {
    /// The replica that was cut off.
    pub isolated: String,
    /// Whether it was a follower when the partition started.
    pub was_follower: bool,
    /// Seconds from the start of the run to the heal.
    pub at_s: f64,
    /// Terms first seen with a leader within 3 s after the heal (or until
    /// the next fault starts, if sooner).
    pub leader_changes: u64,
    /// Longest time between two acknowledged writes from 1 s before the
    /// heal to the end of that window.
    pub write_gap_ms: f64,
}

/// The replica that `sees` (host → hosts it can reach) leaves alone: the
/// one that reaches no other replica.
fn isolated(value: &serde_json::Value) -> Option<String> {
    let sees = value.get("sees")?.as_object()?;
    sees.iter()
        .find(|(host, reach)| {
            host.starts_with('n')
                && reach.as_array().is_some_and(|r| {
                    r.iter()
                        .filter_map(|h| h.as_str())
                        .all(|h| h == host.as_str() || !h.starts_with('n'))
                })
        })
        .map(|(host, _)| host.clone())
}

pub fn heals(history: &[Op], samples: &[Sample]) -> Vec<Heal> {
    let nemesis: Vec<&Op> = history
        .iter()
        .filter(|o| o.process == "nemesis" && o.kind == OpType::Ok && o.f == "partition-one")
        .collect();
    // The next fault of any kind ends a heal's window: what follows is its doing.
    let fault_starts: Vec<u64> = history
        .iter()
        .filter(|o| o.process == "nemesis" && o.kind == OpType::Ok)
        .filter(|o| o.value.get("phase").and_then(|v| v.as_str()) == Some("start"))
        .map(|o| o.time_ns)
        .collect();
    let mut writes: Vec<u64> = pairs(history)
        .iter()
        .filter(|p| matches!(p.invoke.f.as_str(), "submit" | "write" | "cas"))
        .filter_map(|p| p.completion.filter(|c| c.kind == OpType::Ok))
        .map(|c| c.time_ns)
        .collect();
    writes.sort_unstable();
    let mut out = Vec::new();
    let mut started: Option<(&Op, String)> = None;
    for op in nemesis {
        match op.value.get("phase").and_then(|v| v.as_str()) {
            Some("start") => started = isolated(&op.value).map(|host| (op, host)),
            Some("stop") => {
                let Some((start, host)) = started.take() else {
                    continue;
                };
                let healed = op.time_ns;
                let end = fault_starts
                    .iter()
                    .copied()
                    .find(|t| *t > healed)
                    .map_or(healed + AFTER_NS, |next| next.min(healed + AFTER_NS));
                let was_follower = samples
                    .iter()
                    .filter(|s| s.node == host && s.time_ns <= start.time_ns)
                    .max_by_key(|s| s.time_ns)
                    .is_some_and(|s| s.role != "leader");
                let led_before: Vec<u64> = samples
                    .iter()
                    .filter(|s| s.role == "leader" && s.time_ns <= healed)
                    .map(|s| s.term)
                    .collect();
                let max_before = led_before.iter().copied().max().unwrap_or(0);
                let mut new_terms: Vec<u64> = samples
                    .iter()
                    .filter(|s| s.role == "leader")
                    .filter(|s| s.time_ns > healed && s.time_ns <= end)
                    .map(|s| s.term)
                    .filter(|t| *t > max_before)
                    .collect();
                new_terms.sort_unstable();
                new_terms.dedup();
                let from = healed.saturating_sub(BEFORE_NS);
                let to = end;
                let around: Vec<u64> = writes
                    .iter()
                    .copied()
                    .filter(|t| (from..=to).contains(t))
                    .collect();
                let mut edges = vec![from];
                edges.extend(around);
                edges.push(to);
                let gap = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
                out.push(Heal {
                    isolated: host,
                    was_follower,
                    at_s: healed as f64 / 1e9,
                    leader_changes: new_terms.len() as u64,
                    write_gap_ms: gap as f64 / 1e6,
                });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(
        index: u64,
        time_ms: u64,
        process: &str,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
    ) -> Op {
        Op {
            index,
            time_ns: time_ms * 1_000_000,
            process: process.into(),
            node: String::new(),
            kind,
            f: f.into(),
            key: None,
            value,
            error: None,
        }
    }

    fn sample(time_ms: u64, node: &str, role: &str, term: u64) -> Sample {
        Sample {
            time_ns: time_ms * 1_000_000,
            node: node.into(),
            id: node[1..].parse().unwrap(),
            role: role.into(),
            term,
            leader_id: None,
            committed: None,
            applied: None,
            last_log: None,
            digest: 0,
            incarnation: 1,
        }
    }

    #[test]
    fn a_heal_counts_new_leaders_and_the_longest_write_gap() {
        let sees = json!({"phase": "start", "sees": {
            "n1": ["n1", "n2", "a1"], "n2": ["n1", "n2"], "n3": ["n3", "a3"], "a3": ["n3"]}});
        let mut history = vec![
            op(0, 1_000, "nemesis", OpType::Ok, "partition-one", sees),
            op(
                1,
                2_000,
                "nemesis",
                OpType::Ok,
                "partition-one",
                json!({"phase": "stop"}),
            ),
        ];
        // Writes every 100 ms, except a 600 ms hole after the heal.
        let mut i = 2;
        for t in (1_000..5_500)
            .step_by(100)
            .filter(|t| !(2_100..2_700).contains(t))
        {
            history.push(op(i, t, "c1", OpType::Invoke, "write", json!(null)));
            history.push(op(i + 1, t + 5, "c1", OpType::Ok, "write", json!(null)));
            i += 2;
        }
        history.sort_by_key(|o| o.time_ns);
        let samples = vec![
            sample(900, "n1", "leader", 1),
            sample(900, "n3", "follower", 1),
            sample(2_500, "n2", "leader", 2),
            sample(2_600, "n2", "leader", 2),
        ];
        let heals = heals(&history, &samples);
        assert_eq!(heals.len(), 1);
        let h = &heals[0];
        assert_eq!(h.isolated, "n3");
        assert!(h.was_follower);
        assert_eq!(h.leader_changes, 1);
        assert!((h.write_gap_ms - 700.0).abs() < 1.0, "{h:?}");
    }
}
