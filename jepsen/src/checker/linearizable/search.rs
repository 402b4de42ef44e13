//! The Wing–Gong/Lowe search over one partition, and the per-partition driver.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};

/// A sequential specification: the state machine the history must agree with.
pub trait Model: Sync {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug + Sync;
    type Output: Debug + Sync;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. `output` is what the operation returned,
    /// or `None` when it is indeterminate (it may have taken effect or not).
    /// Returns the new state, or `None` when the operation cannot be
    /// linearized at this point (its output disagrees with the state). For an
    /// indeterminate operation that would leave the state unchanged, returning
    /// `None` is a useful pruning: not taking effect is always allowed.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Partition of an operation: operations in different partitions act on
    /// independent state and are checked separately. Default: one partition.
    fn partition<'a>(&self, _input: &'a Self::Input) -> &'a str {
        ""
    }

    /// One line describing an operation, for reports.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(out) => format!("{input:?} -> {out:?}"),
            None => format!("{input:?} -> ? (indeterminate)"),
        }
    }

    /// One line describing a state, for reports.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// The operation type of a model.
pub type OpOf<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// One operation of a history: what was asked, when, and what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation<I, O> {
    /// Caller's identifier, reported back in diagnostics (history index, line).
    pub id: u64,
    /// Invocation time (any monotonic unit; ns in our histories).
    pub call_ns: u64,
    /// Completion time; `None` means the operation never returned (+∞).
    pub return_ns: Option<u64>,
    pub input: I,
    /// `None`: indeterminate. The operation may take effect at any point after
    /// its call, or never; its `return_ns` is then ignored.
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation that completed with `output` at `return_ns`.
    pub fn completed(id: u64, call_ns: u64, return_ns: u64, input: I, output: O) -> Self {
        Operation {
            id,
            call_ns,
            return_ns: Some(return_ns),
            input,
            output: Some(output),
        }
    }

    /// An operation whose outcome is unknown (`info`, or no completion).
    pub fn indeterminate(id: u64, call_ns: u64, input: I) -> Self {
        Operation {
            id,
            call_ns,
            return_ns: None,
            input,
            output: None,
        }
    }
}

/// Result of the search over one partition, in indices of its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    NotLinearizable {
        /// Longest sequence of operations the search could linearize.
        prefix: Vec<usize>,
        /// The operation that had to be linearized next (its return came)
        /// but could not be, after that prefix.
        blocked: Option<usize>,
        /// Operations not in the prefix that were invoked before `blocked`
        /// returned: the candidates, none of which could follow the prefix.
        pending: Vec<usize>,
        /// The model state after the prefix, from `Model::describe_state`.
        state: String,
    },
    /// The deadline passed before the search finished.
    TimedOut,
    /// Stopped because another partition had already shown the history not
    /// linearizable.
    Abandoned,
}

/// One operation as shown in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    /// `Operation::id` (the index of the invocation in `history.jsonl`).
    pub id: u64,
    pub call_ns: u64,
    pub return_ns: Option<u64>,
    pub description: String,
}

/// Verdict on a partition or a whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        /// The partition (key) whose sub-history is not linearizable.
        key: String,
        /// Longest linearizable prefix found, in linearization order.
        longest_prefix: Vec<OpSummary>,
        /// The operation that could not be linearized after that prefix.
        blocked: Option<OpSummary>,
        /// Other operations that were candidates at that point.
        pending: Vec<OpSummary>,
        /// Model state after the prefix.
        state_after_prefix: String,
    },
    /// The time limit ran out before the search finished: not a proof either
    /// way; callers treat it as a failure.
    Unknown,
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Verdict on one partition (key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyReport {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Not decided (verdict `unknown`) because another key had already shown
    /// the history not linearizable, which settles it (as Porcupine does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// Operations checked in this partition.
    pub operations: usize,
    pub elapsed_ms: f64,
}

/// Verdict on a whole history: per key, and overall (the first key that is
/// not linearizable; else `Unknown` if any key, or any operation of the
/// history, could not be decided; else `Linearizable`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub keys: BTreeMap<String, KeyReport>,
    /// Operations checked, all partitions together.
    pub operations: usize,
    pub elapsed_ms: f64,
    /// Operations of the history that could not be read into the model (the
    /// overall verdict is then at best `Unknown`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malformed: Vec<String>,
}

impl Report {
    /// True only when every key was shown linearizable and nothing was malformed.
    pub fn is_linearizable(&self) -> bool {
        self.verdict.is_linearizable()
    }

    /// Recomputes the overall verdict from the keys and `malformed`.
    pub(crate) fn settle(&mut self) {
        let failed = self
            .keys
            .values()
            .find(|k| matches!(k.verdict, Verdict::NotLinearizable { .. }));
        self.verdict = if let Some(k) = failed {
            k.verdict.clone()
        } else if !self.malformed.is_empty()
            || self.keys.values().any(|k| k.verdict == Verdict::Unknown)
        {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        };
    }
}

/// Checks a history against `model`: partitions it with `Model::partition`,
/// searches the partitions in parallel, all within `limit` together. The
/// first partition found not linearizable settles the history: the searches
/// still running are abandoned.
pub fn check<M: Model>(model: &M, ops: &[OpOf<M>], limit: Duration) -> Report {
    let start = Instant::now();
    let deadline = start
        .checked_add(limit)
        .unwrap_or(start + Duration::from_secs(86_400 * 365));

    let mut parts: BTreeMap<&str, Vec<&OpOf<M>>> = BTreeMap::new();
    for op in ops {
        parts
            .entry(model.partition(&op.input))
            .or_default()
            .push(op);
    }
    let mut parts: Vec<(&str, Vec<&OpOf<M>>)> = parts.into_iter().collect();
    // Largest first, for a better spread over the threads.
    parts.sort_by_key(|(_, p)| std::cmp::Reverse(p.len()));

    let results: Mutex<Vec<(String, KeyReport)>> = Mutex::new(Vec::with_capacity(parts.len()));
    let next = AtomicUsize::new(0);
    let settled = AtomicBool::new(false);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(parts.len())
        .max(1);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((key, part)) = parts.get(i) else {
            break;
        };
        let t0 = Instant::now();
        let outcome = search(model, part, deadline, &settled);
        let abandoned = outcome == Outcome::Abandoned;
        if matches!(outcome, Outcome::NotLinearizable { .. }) {
            settled.store(true, Ordering::Relaxed);
        }
        let verdict = verdict_of(model, key, part, outcome);
        let report = KeyReport {
            verdict,
            abandoned,
            operations: part.len(),
            elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
        };
        results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.to_string(), report));
    };
    if threads <= 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }

    let mut report = Report {
        verdict: Verdict::Linearizable,
        keys: results
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .collect(),
        operations: ops.len(),
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        malformed: Vec::new(),
    };
    report.settle();
    report
}

/// Searches one partition (all of `ops`, whatever their partition) until
/// `deadline`.
pub fn check_operations<M: Model>(model: &M, ops: &[OpOf<M>], deadline: Instant) -> Outcome {
    let refs: Vec<&OpOf<M>> = ops.iter().collect();
    search(model, &refs, deadline, &AtomicBool::new(false))
}

fn verdict_of<M: Model>(model: &M, key: &str, ops: &[&OpOf<M>], outcome: Outcome) -> Verdict {
    let summary = |i: usize| {
        let op = ops[i];
        OpSummary {
            id: op.id,
            call_ns: op.call_ns,
            return_ns: op.output.as_ref().and(op.return_ns),
            description: model.describe(&op.input, op.output.as_ref()),
        }
    };
    match outcome {
        Outcome::Linearizable => Verdict::Linearizable,
        Outcome::TimedOut | Outcome::Abandoned => Verdict::Unknown,
        Outcome::NotLinearizable {
            prefix,
            blocked,
            pending,
            state,
        } => Verdict::NotLinearizable {
            key: key.to_string(),
            longest_prefix: prefix.into_iter().map(summary).collect(),
            blocked: blocked.map(summary),
            pending: pending.into_iter().map(summary).collect(),
            state_after_prefix: state,
        },
    }
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// The history as a doubly linked list of call and return entries in time
/// order, node 0 being the head; entries are lifted out as operations are
/// linearized and put back on backtrack (dancing links).
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Operation of each node.
    op: Vec<u32>,
    is_call: Vec<bool>,
    /// Return node of each operation, NIL when it has none.
    ret_of: Vec<u32>,
}

impl Entries {
    fn new<I, O>(ops: &[&Operation<I, O>]) -> Entries {
        // (time, 0 = call / 1 = return, op): at equal times calls come first,
        // so the operations count as concurrent.
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call_ns, 0, i as u32));
            if let (Some(_), Some(ret)) = (&op.output, op.return_ns) {
                events.push((ret.max(op.call_ns), 1, i as u32));
            }
        }
        events.sort_unstable();
        let n = events.len() + 1;
        let mut e = Entries {
            next: (1..=n as u32).collect(),
            prev: (0..n as u32).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![NIL; n],
            is_call: vec![false; n],
            ret_of: vec![NIL; ops.len()],
        };
        e.next[n - 1] = NIL;
        e.prev[0] = NIL;
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let node = k + 1;
            e.op[node] = op;
            e.is_call[node] = kind == 0;
            if kind == 1 {
                e.ret_of[op as usize] = node as u32;
            }
        }
        e
    }

    fn unlink(&mut self, n: u32) {
        let (p, x) = (self.prev[n as usize], self.next[n as usize]);
        self.next[p as usize] = x;
        if x != NIL {
            self.prev[x as usize] = p;
        }
    }

    fn relink(&mut self, n: u32) {
        let (p, x) = (self.prev[n as usize], self.next[n as usize]);
        self.next[p as usize] = n;
        if x != NIL {
            self.prev[x as usize] = n;
        }
    }

    /// Removes a call entry and its return entry.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let ret = self.ret_of[self.op[call as usize] as usize];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes `lift(call)`.
    fn unlift(&mut self, call: u32) {
        let ret = self.ret_of[self.op[call as usize] as usize];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Memo of the configurations already explored: (set of linearized
/// operations, state). Keyed by a Zobrist hash of the set combined with the
/// state's hash.
struct Cache<S> {
    map: FxHashMap<u64, Vec<Configuration<S>>>,
}

/// Bitset of the linearized operations, and the state they led to.
type Configuration<S> = (Box<[u64]>, S);

impl<S: Clone + Eq + Hash> Cache<S> {
    /// Adds the configuration; false when it was already there.
    fn insert(&mut self, set_hash: u64, bits: &[u64], state: &S) -> bool {
        let mut h = FxHasher::default();
        state.hash(&mut h);
        let key = set_hash ^ splitmix64(h.finish());
        let bucket = self.map.entry(key).or_default();
        if bucket.iter().any(|(b, s)| **b == *bits && s == state) {
            return false;
        }
        bucket.push((bits.into(), state.clone()));
        true
    }
}

/// The search proper (Lowe's refinement of Wing & Gong, as in Porcupine).
/// Gives up when `settled` is set: another partition decided the history.
fn search<M: Model>(
    model: &M,
    ops: &[&OpOf<M>],
    deadline: Instant,
    settled: &AtomicBool,
) -> Outcome {
    if Instant::now() >= deadline {
        return Outcome::TimedOut;
    }
    let mut entries = Entries::new(ops);
    let zobrist: Vec<u64> = (0..ops.len() as u64)
        .map(|i| splitmix64(i ^ 0x6a09_e667_f3bc_c908))
        .collect();
    let mut bits = vec![0u64; ops.len().div_ceil(64).max(1)];
    let mut set_hash = 0u64;
    let mut cache: Cache<M::State> = Cache {
        map: FxHashMap::default(),
    };
    // Operations that must be linearized: every one with a known output.
    let mut remaining = ops.iter().filter(|op| op.output.is_some()).count();

    let mut state = model.init();
    // (call node, state before it) for each linearized operation.
    let mut stack: Vec<(u32, M::State)> = Vec::new();

    let mut best_prefix: Vec<u32> = Vec::new();
    let mut best_state = state.clone();
    let mut best_blocked: Option<u32> = None;
    let mut blocked_seen = false;

    let mut entry = entries.next[HEAD as usize];
    let mut steps: u64 = 0;
    loop {
        if remaining == 0 {
            return Outcome::Linearizable;
        }
        steps += 1;
        if steps & 511 == 0 {
            if settled.load(Ordering::Relaxed) {
                return Outcome::Abandoned;
            }
            if Instant::now() >= deadline {
                return Outcome::TimedOut;
            }
        }
        if entry != NIL && entries.is_call[entry as usize] {
            let i = entries.op[entry as usize] as usize;
            let op = ops[i];
            if let Some(next) = model.step(&state, &op.input, op.output.as_ref()) {
                bits[i / 64] |= 1 << (i % 64);
                set_hash ^= zobrist[i];
                if cache.insert(set_hash, &bits, &next) {
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    entries.lift(entry);
                    if op.output.is_some() {
                        remaining -= 1;
                    }
                    if stack.len() > best_prefix.len() {
                        best_prefix.clear();
                        best_prefix.extend(stack.iter().map(|(n, _)| entries.op[*n as usize]));
                        best_state = state.clone();
                        blocked_seen = false;
                    }
                    entry = entries.next[HEAD as usize];
                    continue;
                }
                bits[i / 64] &= !(1 << (i % 64));
                set_hash ^= zobrist[i];
            }
            entry = entries.next[entry as usize];
        } else {
            // A return entry (or the end of the list): the operations before
            // it cannot be continued from here; backtrack.
            if !blocked_seen && stack.len() == best_prefix.len() {
                blocked_seen = true;
                best_blocked = (entry != NIL).then(|| entries.op[entry as usize]);
            }
            let Some((call, before)) = stack.pop() else {
                break;
            };
            state = before;
            let i = entries.op[call as usize] as usize;
            bits[i / 64] &= !(1 << (i % 64));
            set_hash ^= zobrist[i];
            entries.unlift(call);
            if ops[i].output.is_some() {
                remaining += 1;
            }
            entry = entries.next[call as usize];
        }
    }

    // Not linearizable: report the longest prefix and what blocked it.
    let in_prefix = {
        let mut v = vec![false; ops.len()];
        for &i in &best_prefix {
            v[i as usize] = true;
        }
        v
    };
    let pending = match best_blocked {
        Some(b) => {
            let limit = ops[b as usize].return_ns.unwrap_or(u64::MAX);
            (0..ops.len())
                .filter(|&i| !in_prefix[i] && i != b as usize && ops[i].call_ns <= limit)
                .collect()
        }
        None => (0..ops.len()).filter(|&i| !in_prefix[i]).collect(),
    };
    Outcome::NotLinearizable {
        prefix: best_prefix.into_iter().map(|i| i as usize).collect(),
        blocked: best_blocked.map(|i| i as usize),
        pending,
        state: model.describe_state(&best_state),
    }
}
