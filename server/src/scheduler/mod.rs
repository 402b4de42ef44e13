//! The scheduler's pure core: the replicated state and `apply`. No I/O, no
//! clock, no randomness: time and seeds arrive inside each [`Proposal`],
//! stamped by the leader, so every replica computes the same state from the
//! same log.

pub mod acl;
mod attempts;
pub mod breaker;
pub mod cache;
pub mod command;
pub mod config_store;
pub mod counts;
pub mod digested;
pub mod fit;
pub mod format;
pub mod gang;
pub mod jobs;
pub mod layouts;
pub mod limits;
pub mod model;
mod nodes;
pub mod placement;
pub mod queue;
pub mod requests;
pub mod reservations;
pub mod settings;
pub mod state;
pub mod validate;

pub use attempts::backoff_ms;
pub use command::{Command, Proposal, Response};
pub use state::SchedulerState;
#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod breaker_tests;
#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod gang_tests;
#[cfg(test)]
pub(crate) mod tests;
