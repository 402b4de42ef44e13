//! Fault-injection tests of Open-AutoGLM in the manner of Jepsen.
//!
//! # Layout
//! - [`net`]: one network namespace per host on a bridge; setup/teardown.
//! - [`db`]: replica and agent processes inside those namespaces.
//! - [`nemesis`]: faults (partitions, kills, pauses, clock skew, packet
//!   loss, membership changes) on a seeded schedule.
//! - [`workload`]: client processes (task queue, zombie workers, register)
//!   recording a [`history`] through the [`recorder`].
//! - [`monitor`]: Raft status samples of every replica.
//! - [`checker`]: queue, linearizability and cluster checkers.
//! - [`run`]: one test from setup to verdict; [`report`]: what it leaves in
//!   `store/<test>/<time>/`.

pub mod checker;
pub mod control;
pub mod credentials;
pub mod db;
pub mod final_read;
pub mod history;
pub mod monitor;
pub mod nemesis;
pub mod net;
pub mod recheck;
pub mod recorder;
pub mod report;
pub mod run;
pub mod sh;
pub mod workload;
