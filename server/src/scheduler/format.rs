//! Versions of the log-entry format, so replicas of two builds can share one
//! log during a rolling upgrade.
//!
//! Every proposal carries the format version it is written in
//! ([`super::Proposal`]'s encoding starts with a tag and the version). A build
//! reads every version up to [`ENTRY_FORMAT_MAX`]; a leader writes the
//! cluster's *active* version, the setting [`super::settings::ENTRY_FORMAT`],
//! which an operator raises only once every replica runs a build that reads
//! it (the API checks each member before it proposes the change). So during
//! a rolling upgrade the new build writes what the old one reads, and after
//! it the new format is switched on at once, everywhere.
//!
//! | version | written by | layout |
//! |---|---|---|
//! | 1 | releases before versioning | at_ms, seed, command, request (no tag) |
//! | 2 | releases up to 2026-11-29 | tag, 2, at_ms, seed, command, request |
//! | 3 | releases up to 2026-11-30 | as 2; the command may be a `Batch` (group commit) |
//! | 4 | releases up to 2026-12-01 | as 3; `apply` records each attempt's GPUs, start and exit code, which snapshots carry from version 4 on (`layouts.rs`) |
//! | 5 | releases up to 2026-12-01 | as 4; the command may be `ResetNodeBreaker`, and `apply` runs the nodes' circuit breakers, which snapshots carry from version 5 on |
//! | 6 | releases up to 2026-12-04 | as 5; the command may be `SubmitJobWithCache` (the result cache), which snapshots carry from version 6 on |
//! | 7 | this release | as 6; the command may be `SubmitJobWithGangs` (gang groups), which snapshots carry from version 7 on |
//! | 8 | builds with the `format-next` feature (the rolling-upgrade test's build B) | as 7, then `proposed_by` |

/// The tag that starts a versioned proposal: a first field no unversioned
/// proposal can have (its first field is a wall-clock time in ms).
pub const VERSIONED_TAG: u64 = u64::MAX;

/// The first version that carries the tag.
pub const ENTRY_FORMAT_TAGGED: u16 = 2;

/// What a cluster writes while its active version was never set: clusters
/// initialized before 2026-11-30, until an operator raises it. `Init` sets
/// a new cluster's version to the newest every first member reads.
pub const ENTRY_FORMAT_DEFAULT: u16 = 2;

/// The first version whose command may be a `Batch`.
pub const ENTRY_FORMAT_BATCH: u16 = 3;

/// The first version under which `apply` records an attempt's GPUs, start
/// and exit code. The entries themselves read as version 3; what changes is
/// the state, whose snapshots older builds cannot read.
pub const ENTRY_FORMAT_ATTEMPT_DETAIL: u16 = 4;

/// The first version under which `apply` runs the nodes' circuit breakers
/// (`breaker.rs`) and which may carry `ResetNodeBreaker`.
pub const ENTRY_FORMAT_BREAKER: u16 = 5;

/// The first version which may carry `SubmitJobWithCache` (`cache.rs`).
pub const ENTRY_FORMAT_RESULT_CACHE: u16 = 6;

/// The first version which may carry `SubmitJobWithGangs` (`gang.rs`).
pub const ENTRY_FORMAT_GANG: u16 = 7;

/// The first version whose proposals carry `proposed_by`.
#[cfg(feature = "format-next")]
pub const ENTRY_FORMAT_PROPOSED_BY: u16 = 8;

/// The newest entry format this build reads and may write.
#[cfg(not(feature = "format-next"))]
pub const ENTRY_FORMAT_MAX: u16 = 7;
#[cfg(feature = "format-next")]
pub const ENTRY_FORMAT_MAX: u16 = 8;

/// The highest version the setting may ever name, in any build: `apply`
/// must not depend on the build, or replicas of two builds would disagree on
/// whether a write was valid.
pub const ENTRY_FORMAT_LIMIT: u16 = 1000;

/// The version a leader of this build writes when the cluster's active
/// version is `active`.
pub fn entry_format_to_write(active: u64) -> u16 {
    (active.clamp(ENTRY_FORMAT_DEFAULT as u64, ENTRY_FORMAT_MAX as u64)) as u16
}
