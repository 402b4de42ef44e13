//! Checkers: each reads the history (and the final state read from the
//! cluster) and returns a verdict.

pub mod cluster;
pub mod linearizable;
pub mod queue;
