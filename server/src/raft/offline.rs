//! Operations on a stopped replica's store, run by `autoglm-server verify`,
//! `restore` and `recover` (docs/operations.md). Restore and recover share
//! one path: a state in, a new single-voter cluster out.

use std::path::{Path, PathBuf};

use autoglm_storage::seed::{self, SeedError};
use autoglm_storage::{backup, Damage, OpenError, Verified};
use serde::Serialize;

use super::bootstrap::store_dir;
use super::TypeConfig;
use crate::config::ServerConfig;
use crate::scheduler::SchedulerState;

/// Exit code of a replica, or an offline check, that finds its store damaged.
pub const EXIT_DAMAGED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Damaged(Damage),
    #[error("{0}")]
    Failed(String),
}

impl From<OpenError> for OfflineError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Damaged(d) => Self::Damaged(d),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl From<SeedError> for OfflineError {
    fn from(e: SeedError) -> Self {
        match e {
            SeedError::Open(open) => open.into(),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl OfflineError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Damaged(_) => EXIT_DAMAGED,
            Self::Failed(_) => 1,
        }
    }
}

/// Runs the start-up checks on the store in `data_dir`, plus a full decode of
/// its snapshot.
pub fn verify(data_dir: &Path) -> Result<Verified, OfflineError> {
    Ok(autoglm_storage::verify_dir::<TypeConfig, SchedulerState>(
        &store_dir(data_dir),
    )?)
}

/// What a new single-voter cluster starts from.
#[derive(Debug, Serialize)]
pub struct Seeded {
    pub data_dir: PathBuf,
    pub node_id: u64,
    pub addr: String,
    pub last_index: u64,
    pub digest: String,
    /// Restore: the cluster and replica the backup came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<u64>,
    /// Recover: entries after the survivor's committed index, not kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_entries: Option<u64>,
    /// Recover: where the survivor's old store was moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_store: Option<PathBuf>,
}

impl Seeded {
    fn new(config: &ServerConfig, addr: String, last_index: u64, state: &SchedulerState) -> Self {
        Self {
            data_dir: config.data_dir.clone(),
            node_id: config.node_id,
            addr,
            last_index,
            digest: format!("{:016x}", state.digest()),
            from_cluster: None,
            taken_by: None,
            dropped_entries: None,
            old_store: None,
        }
    }
}

/// The address other replicas will reach this one at: `advertise`, or the
/// configured listen address when it names a host.
fn member_addr(config: &ServerConfig, advertise: Option<&str>) -> Result<String, OfflineError> {
    let addr = advertise.unwrap_or(&config.listen);
    let unspecified = addr
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified());
    if unspecified || addr.is_empty() {
        return Err(OfflineError::Failed(format!(
            "--advertise: required, the listen address {addr} is not one other replicas can dial"
        )));
    }
    Ok(addr.to_string())
}

/// Makes the replica of `config` a new single-voter cluster holding the
/// state in the backup file `backup`. Its data dir must hold no store.
pub fn restore(
    config: &ServerConfig,
    backup: &Path,
    advertise: Option<&str>,
) -> Result<Seeded, OfflineError> {
    let addr = member_addr(config, advertise)?;
    let bytes = std::fs::read(backup)
        .map_err(|e| OfflineError::Failed(format!("--backup {}: {e}", backup.display())))?;
    let (header, applied) = backup::decode_backup::<TypeConfig, SchedulerState>(&bytes)
        .map_err(|e| OfflineError::Failed(format!("--backup {}: {e}", backup.display())))?;
    let dir = store_dir(&config.data_dir);
    let last = seed::seed_single_voter::<TypeConfig, SchedulerState>(
        &dir,
        &applied,
        config.node_id,
        &addr,
    )?;
    Ok(Seeded {
        from_cluster: Some(header.cluster_name),
        taken_by: Some(header.taken_by),
        ..Seeded::new(config, addr, last.index, &applied.state)
    })
}

/// Turns the store of a survivor of quorum loss into a new single-voter
/// cluster: its snapshot plus its log up to its committed index. The old
/// store is kept beside the new one.
pub async fn recover(
    config: &ServerConfig,
    advertise: Option<&str>,
    now_ms: u64,
) -> Result<Seeded, OfflineError> {
    let addr = member_addr(config, advertise)?;
    let dir = store_dir(&config.data_dir);
    if !dir.join("db").is_file() {
        return Err(OfflineError::Failed(format!(
            "{}: no store to recover from",
            dir.display()
        )));
    }
    let replayed = seed::replay_committed::<TypeConfig, SchedulerState>(&dir).await?;
    let old = seed::sibling(&dir, &format!("before-recover-{now_ms}"));
    std::fs::rename(&dir, &old)
        .map_err(|e| OfflineError::Failed(format!("moving {} aside: {e}", dir.display())))?;
    let last = seed::seed_single_voter::<TypeConfig, SchedulerState>(
        &dir,
        &replayed.applied,
        config.node_id,
        &addr,
    )?;
    Ok(Seeded {
        dropped_entries: Some(replayed.dropped_entries),
        old_store: Some(old),
        ..Seeded::new(config, addr, last.index, &replayed.applied.state)
    })
}
