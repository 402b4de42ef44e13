//! The current snapshot, in a file beside the database (store format 3).
//!
//! Before, the snapshot was a value in sled: writing a state of hundreds of
//! megabytes went through the same page cache, I/O buffers and flushes as the
//! log, and every log append waited behind it long enough to stall the
//! leader's heartbeats into an election. A file keeps the two apart: the log
//! only shares the disk with it.
//!
//! Layout: the length of the meta record (4 bytes, little endian), the meta
//! record ([`codec::encode_record`] of the layout version and openraft's
//! `SnapshotMeta`), then the state exactly as [`codec::encode_snapshot`]
//! wrote it (tagged, versioned and checksummed on its own). It is replaced
//! whole: a temporary file, synced, renamed over the old one, the directory
//! synced, so a crash leaves the old snapshot or the new one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};

use crate::codec::{self, DecodeError};

/// The file, in the data directory.
pub const FILE: &str = "raft-snapshot";
/// Version of the file's layout.
const VERSION: u8 = 1;
/// A meta record is a log id and a membership: far below this. A larger
/// length is damage, not a reason to allocate it.
const MAX_META_BYTES: u32 = 1 << 20;

pub type Meta = SnapshotMeta<u64, BasicNode>;

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("unreadable: {0}")]
    Io(#[from] std::io::Error),
    #[error("its meta record: {0}")]
    Meta(DecodeError),
    #[error("its meta record is version {0}, newer than this build reads ({VERSION})")]
    Newer(u8),
    #[error("truncated: {0}")]
    Truncated(&'static str),
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The stored snapshot's meta and state bytes, `None` if there is none.
pub fn read(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, ReadError> {
    let mut file = match std::fs::File::open(path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut len = [0u8; 4];
    file.read_exact(&mut len)
        .map_err(|_| ReadError::Truncated("no meta length"))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_META_BYTES {
        return Err(ReadError::Meta(DecodeError::Version(format!(
            "a meta length of {len} bytes is not one this build writes"
        ))));
    }
    let mut record = vec![0u8; len as usize];
    file.read_exact(&mut record)
        .map_err(|_| ReadError::Truncated("the meta record is cut short"))?;
    let (version, meta): (u8, Meta) = codec::decode_record(&record).map_err(ReadError::Meta)?;
    if version > VERSION {
        return Err(ReadError::Newer(version));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(Some((meta, data)))
}

/// Replaces the stored snapshot with `meta` and `data`, durably, before it
/// returns. Blocking: call it off the async workers.
pub fn write(dir: &Path, meta: &Meta, data: &[u8]) -> std::io::Result<()> {
    let record = codec::encode_record(&(VERSION, meta)).map_err(std::io::Error::other)?;
    let len = u32::try_from(record.len()).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&len.to_le_bytes())?;
    file.write_all(&record)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path(dir))?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    fn meta(index: u64) -> Meta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("2-{index}-0"),
        }
    }

    #[test]
    fn a_written_snapshot_reads_back_and_a_later_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        write(dir.path(), &meta(10), b"first").unwrap();
        write(dir.path(), &meta(20), b"second state").unwrap();
        let (back, data) = read(dir.path()).unwrap().unwrap();
        assert_eq!(back, meta(20));
        assert_eq!(data, b"second state");
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn a_damaged_meta_or_a_cut_file_is_an_error_not_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &meta(10), b"state").unwrap();
        let mut bytes = std::fs::read(path(dir.path())).unwrap();
        bytes[6] ^= 0x40;
        std::fs::write(path(dir.path()), &bytes).unwrap();
        assert!(matches!(read(dir.path()), Err(ReadError::Meta(_))));
        std::fs::write(path(dir.path()), &bytes[..6]).unwrap();
        assert!(matches!(read(dir.path()), Err(ReadError::Truncated(_))));
    }
}
