//! Linearizability checker, in the manner of Porcupine.
//!
//! # Algorithm
//! A history is a set of operations, each with a call time, a return time, an
//! input and an output. It is linearizable when some total order of the
//! operations respects real time (an operation that returned before another
//! was called comes first) and, replayed through a sequential [`Model`],
//! produces every recorded output.
//!
//! The search is Wing & Gong's, with Lowe's memoization, as in Porcupine:
//! 1. The history is split into independent partitions with
//!    [`Model::partition`] (P-compositionality: one key of a store), each
//!    checked on its own, in parallel threads.
//! 2. Each partition becomes a doubly linked list of call and return
//!    entries in time order. The depth-first search walks the list from its
//!    head: at a call entry it tries to linearize that operation next (the
//!    model accepts its output from the current state); if it does, both of
//!    its entries are lifted out of the list, (operation, previous state) is
//!    pushed on a stack and the walk restarts at the head. Reaching a return
//!    entry means that operation's deadline passed without it being
//!    linearized: the search pops the last choice, puts its entries back and
//!    tries the next call after it.
//! 3. A cache of the configurations already explored — (bitset of the
//!    linearized operations, model state), hashed with Zobrist keys — prunes
//!    every path that reaches a known configuration again.
//!
//! Indeterminate operations (`info`, or no completion) have no return entry
//! (return time +∞): they may be linearized anywhere after their call, and
//! the search succeeds as soon as every operation with a known output is
//! linearized, so an indeterminate operation may also never take effect.
//!
//! # Complexity
//! Deciding linearizability is NP-complete. The search is exponential in the
//! number of mutually concurrent operations in the worst case, but bounded
//! by the number of distinct (set of linearized operations, state) pairs,
//! each visited once; real histories with bounded concurrency are usually
//! decided in milliseconds. Memory grows with the cache.
//!
//! # Verdicts
//! Every search stops at the deadline given by the caller's time limit (all
//! partitions together). A partition whose search did not finish is
//! [`Verdict::Unknown`]: neither a proof nor a counterexample. Callers treat
//! it as a failure. [`Verdict::NotLinearizable`] carries the partition key,
//! the longest prefix the search could linearize, the operation that could
//! not follow it and the model state after it.

pub mod models;
pub mod parse;
pub mod search;

use std::time::Duration;

use crate::history::Op;

pub use models::{
    CasInput, CasOutput, CasRegister, ConfigCommand, ConfigInput, ConfigOutput, ConfigRegister,
    KvInput, KvOutput, KvStore, Versioned,
};
pub use parse::{config_register_operations, parse_etcd_log, parse_kv_edn, ParseError};
pub use search::{
    check, check_operations, KeyReport, Model, OpOf, OpSummary, Operation, Outcome, Report, Verdict,
};

/// Checks the config-store register operations of a history (`read`,
/// `write` and `cas` ops with a `key`; see [`config_register_operations`]),
/// each key on its own, within `limit` in all. Operations whose values
/// cannot be read are listed in `Report::malformed` and make the overall
/// verdict at best `Unknown`.
pub fn check_config_register(ops: &[Op], limit: Duration) -> Report {
    let (operations, malformed) = config_register_operations(ops);
    let mut report = check(&ConfigRegister, &operations, limit);
    report.malformed = malformed;
    report.settle();
    report
}
