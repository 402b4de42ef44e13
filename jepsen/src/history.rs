//! The history of a test: every operation a client, a zombie worker, the
//! membership driver or the nemesis performed, as an invocation followed by
//! its completion. Written as one JSON object per line (`history.jsonl`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an operation ended, or that it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation was sent.
    Invoke,
    /// It took effect; `value` holds what it returned.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may or may not have taken effect, at any time after its
    /// invocation. The process issues nothing more under this name.
    Info,
}

/// One event of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the test started (monotonic clock of the harness).
    pub time_ns: u64,
    /// Who performed it: `c<N>` for clients, `zombie<N>`, `member`, `nemesis`.
    /// A client whose operation ended `info` continues under a new name.
    pub process: String,
    /// Node the operation was sent to (`n1`…), empty when not one node.
    #[serde(default)]
    pub node: String,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// Operation: `submit`, `read`, `write`, `cas`, `report`, `add-learner`,
    /// `promote`, `remove`, `start`/`stop` (nemesis)…
    pub f: String,
    /// Key of register operations; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Arguments on invoke, results on completion.
    #[serde(default)]
    pub value: Value,
    /// Error text of `fail` and `info` completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    pub fn is_invoke(&self) -> bool {
        self.kind == OpType::Invoke
    }
}

/// An invocation paired with its completion (absent when none was recorded:
/// indeterminate, like `info`).
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub completion: Option<&'a Op>,
}

/// Pairs every invocation with the next completion of the same process.
pub fn pairs(ops: &[Op]) -> Vec<Pair<'_>> {
    let mut open: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<Pair<'_>> = Vec::new();
    for op in ops {
        if op.is_invoke() {
            open.insert(&op.process, out.len());
            out.push(Pair {
                invoke: op,
                completion: None,
            });
        } else if let Some(at) = open.remove(op.process.as_str()) {
            out[at].completion = Some(op);
        }
    }
    out
}

/// Reads a `history.jsonl` file.
pub fn read_jsonl(text: &str) -> Result<Vec<Op>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}
