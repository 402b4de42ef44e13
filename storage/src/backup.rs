//! The backup file: what `autoglm cluster backup` writes and
//! `autoglm-server restore` reads. A tag, a version byte, then one
//! checksummed record holding a header (which cluster, when, up to which log
//! index, under which membership) and the state as a snapshot of the current
//! snapshot format, so every state version a snapshot reads, a backup reads.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::state_machine::{decode_snapshot, Applied};
use crate::{StateMachine, StoredTypeConfig};

const BACKUP_TAG: &[u8; 4] = b"AGLB";
pub const BACKUP_VERSION: u8 = 1;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub cluster_name: String,
    /// The replica that wrote it.
    pub taken_by: u64,
    /// Leader-stamped wall clock of the last applied entry is not known here;
    /// this is the serving replica's clock, for operators only.
    pub taken_at_ms: u64,
    pub last_log_id: openraft::LogId<u64>,
    pub membership: openraft::StoredMembership<u64, openraft::BasicNode>,
}

#[derive(Serialize, Deserialize)]
struct BackupRecord {
    header: BackupHeader,
    /// The state, encoded as a snapshot ([`StateMachine::encode_snapshot`]).
    snapshot: Vec<u8>,
}

/// Encodes a backup of `applied`. `None` when nothing was ever applied: there
/// is nothing to restore from.
pub fn encode_backup<C: StoredTypeConfig, S: StateMachine<C>>(
    cluster_name: &str,
    taken_by: u64,
    taken_at_ms: u64,
    applied: &Applied<S>,
) -> Result<Option<Vec<u8>>, postcard::Error> {
    let Some(last_log_id) = applied.last_applied else {
        return Ok(None);
    };
    let record = BackupRecord {
        header: BackupHeader {
            cluster_name: cluster_name.to_string(),
            taken_by,
            taken_at_ms,
            last_log_id,
            membership: applied.membership.clone(),
        },
        snapshot: S::encode_snapshot(applied)?,
    };
    let mut out = BACKUP_TAG.to_vec();
    out.push(BACKUP_VERSION);
    out.extend(codec::encode_record(&record)?);
    Ok(Some(out))
}

/// Decodes and checks a backup file: its tag, version and checksum, then the
/// state inside.
pub fn decode_backup<C: StoredTypeConfig, S: StateMachine<C>>(
    bytes: &[u8],
) -> Result<(BackupHeader, Applied<S>), DecodeError> {
    let rest = bytes
        .strip_prefix(BACKUP_TAG.as_slice())
        .ok_or_else(|| DecodeError::Version("not an Open-AutoGLM backup file".into()))?;
    let record = match rest {
        [BACKUP_VERSION, record @ ..] => record,
        [v, ..] => {
            return Err(DecodeError::Version(format!(
                "backup format version {v} is newer than this build reads ({BACKUP_VERSION})"
            )))
        }
        [] => {
            return Err(DecodeError::Version(
                "backup: truncated after its tag".into(),
            ))
        }
    };
    let record: BackupRecord = codec::decode_record(record)?;
    let applied = decode_snapshot::<C, S>(&record.snapshot)?;
    if applied.last_applied != Some(record.header.last_log_id) {
        return Err(DecodeError::Version(format!(
            "backup: the header says log index {} but the state was taken at {:?}",
            record.header.last_log_id.index,
            applied.last_applied.map(|id| id.index)
        )));
    }
    Ok((record.header, applied))
}
