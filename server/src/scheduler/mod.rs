//! The scheduler's pure core: the replicated state and `apply`. No I/O, no
//! clock, no randomness: time arrives inside each [`Proposal`], stamped by the
//! leader, so every replica computes the same state from the same log.

pub mod command;
pub mod config_store;
pub mod state;

pub use command::{Command, Proposal, Response};
pub use state::SchedulerState;
