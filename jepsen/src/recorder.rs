//! Appends operations to the history as they happen, shared by every task
//! of the test. Times come from one monotonic clock started with the test.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::history::{Op, OpType};

pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

/// What is being recorded, minus the bookkeeping.
pub struct Event<'a> {
    pub process: &'a str,
    pub node: &'a str,
    pub f: &'a str,
    pub key: Option<&'a str>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the test began.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, e: &Event<'_>, kind: OpType, value: Value, error: Option<String>) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let op = Op {
            index: ops.len() as u64,
            time_ns: self.now_ns(),
            process: e.process.to_string(),
            node: e.node.to_string(),
            kind,
            f: e.f.to_string(),
            key: e.key.map(str::to_string),
            value,
            error,
        };
        ops.push(op);
    }

    pub fn invoke(&self, e: &Event<'_>, value: Value) {
        self.record(e, OpType::Invoke, value, None);
    }

    pub fn ok(&self, e: &Event<'_>, value: Value) {
        self.record(e, OpType::Ok, value, None);
    }

    pub fn fail(&self, e: &Event<'_>, error: String) {
        self.record(e, OpType::Fail, Value::Null, Some(error));
    }

    pub fn info(&self, e: &Event<'_>, error: String) {
        self.record(e, OpType::Info, Value::Null, Some(error));
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
