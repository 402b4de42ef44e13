use serde::{Deserialize, Serialize};

use super::config_store::ConfigEntry;

/// One entry of the Raft log: a command plus the leader's wall-clock time when
/// it proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub at_ms: u64,
    pub command: Command,
}

/// Every change to the replicated state. Append-only: new variants go last so
/// old logs still decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Write a configuration key; with `expected_version`, only if the key is
    /// at that version now (0: absent).
    ConfigPut {
        key: String,
        value: String,
        expected_version: Option<u64>,
    },
}

/// What `apply` answers. Domain outcomes are values, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// For log entries without a command (blank and membership entries).
    Empty,
    ConfigWritten(ConfigEntry),
    /// A compare-and-set that found another version; carries the current entry.
    ConfigVersionMismatch(Option<ConfigEntry>),
    /// The command was invalid; nothing changed.
    Rejected(String),
}
