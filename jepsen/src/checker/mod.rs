//! Checkers: each reads the history (and the final state read from the
//! cluster) and returns a verdict.

pub mod linearizable;
