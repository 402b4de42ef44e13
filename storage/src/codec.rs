//! The binary encoding of stored records and snapshots: postcard, a compact
//! serde format, framed with a CRC-32 so damage on disk is found on read
//! instead of decoded into wrong values. One place, so every format is
//! versioned here.

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    #[error("{0}")]
    Version(String),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record of {0} bytes is too short to hold its checksum")]
    Truncated(usize),
}

/// Encodes a value. Fails only for types serde cannot express in postcard
/// (unknown-length sequences), which none of ours are.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Encodes a value as a checksummed record: the CRC-32 of the body (4 bytes,
/// little endian), then the body.
pub fn encode_record<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::new();
    append_record(&mut out, value)?;
    Ok(out)
}

/// [`encode_record`] written at the end of `out`, so a large record is
/// never copied from one buffer to another.
fn append_record<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    postcard::to_io(value, &mut *out)?;
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The body of a checksummed record, once its checksum matches.
pub fn verified_body(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let (crc, body) = bytes
        .split_first_chunk::<4>()
        .ok_or(DecodeError::Truncated(bytes.len()))?;
    let stored = u32::from_le_bytes(*crc);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(body)
}

/// Decodes a record written by [`encode_record`], checksum first.
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode(verified_body(bytes)?)
}

/// Snapshots start with this tag and a version byte. Untagged snapshots are
/// version 1 (before the tag existed); their first byte is an `Option` tag
/// (0 or 1), which can never be the tag's first byte. Version 2 is the tag,
/// then the body; version 3 the tag, then a checksummed record; versions 4,
/// 5, 6 and 7 (current) as 3, each with the state in its next layout (the
/// state machine says what changed).
const SNAPSHOT_TAG: &[u8; 4] = b"AGLS";
pub const SNAPSHOT_VERSION: u8 = 7;

/// The oldest version a snapshot is still written in, while a cluster may
/// hold members of a build that reads no newer one.
pub const SNAPSHOT_VERSION_OLDEST_WRITTEN: u8 = 3;

/// Encodes a snapshot in the current version.
pub fn encode_snapshot<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    encode_snapshot_as(SNAPSHOT_VERSION, value)
}

/// Encodes a snapshot tagged as `version` (3 or later: checksummed); the
/// caller passes the state in that version's layout.
pub fn encode_snapshot_as<T: Serialize>(
    version: u8,
    value: &T,
) -> Result<Vec<u8>, postcard::Error> {
    debug_assert!((SNAPSHOT_VERSION_OLDEST_WRITTEN..=SNAPSHOT_VERSION).contains(&version));
    let mut out = SNAPSHOT_TAG.to_vec();
    out.push(version);
    append_record(&mut out, value)?;
    Ok(out)
}

/// The layout of a snapshot's state, which changed five times: versions
/// 1, 2-3, 4, 5, 6 and 7 each hold their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotLayout {
    V1,
    V3,
    V4,
    V5,
    V6,
    Current,
}

/// A snapshot's layout and body, its checksum verified where it has one, or
/// `Err` naming an unknown version or the damage.
pub fn snapshot_body(bytes: &[u8]) -> Result<(SnapshotLayout, &[u8]), DecodeError> {
    match bytes.strip_prefix(SNAPSHOT_TAG.as_slice()) {
        None => Ok((SnapshotLayout::V1, bytes)),
        Some([2, body @ ..]) => Ok((SnapshotLayout::V3, body)),
        Some([3, record @ ..]) => Ok((SnapshotLayout::V3, verified_body(record)?)),
        Some([4, record @ ..]) => Ok((SnapshotLayout::V4, verified_body(record)?)),
        Some([5, record @ ..]) => Ok((SnapshotLayout::V5, verified_body(record)?)),
        Some([6, record @ ..]) => Ok((SnapshotLayout::V6, verified_body(record)?)),
        Some([SNAPSHOT_VERSION, record @ ..]) => {
            Ok((SnapshotLayout::Current, verified_body(record)?))
        }
        Some([v, ..]) => Err(DecodeError::Version(format!(
            "snapshot format version {v} is newer than this build reads ({SNAPSHOT_VERSION})"
        ))),
        Some([]) => Err(DecodeError::Version(
            "snapshot: truncated after its tag".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_is_found() {
        let record = encode_record(&("entry", 42u64, vec![7u8; 100])).unwrap();
        for i in 0..record.len() {
            let mut damaged = record.clone();
            damaged[i] ^= 0x10;
            assert!(
                decode_record::<(String, u64, Vec<u8>)>(&damaged).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        let back: (String, u64, Vec<u8>) = decode_record(&record).unwrap();
        assert_eq!(back.1, 42);
        assert!(matches!(
            decode_record::<u8>(&record[..3]),
            Err(DecodeError::Truncated(3))
        ));
    }

    #[test]
    fn snapshots_of_every_version_are_told_apart() {
        let current = encode_snapshot(&5u32).unwrap();
        let (layout, body) = snapshot_body(&current).unwrap();
        assert_eq!(layout, SnapshotLayout::Current);
        assert_eq!(decode::<u32>(body).unwrap(), 5);
        let mut v2 = b"AGLS\x02".to_vec();
        v2.extend(encode(&5u32).unwrap());
        assert_eq!(snapshot_body(&v2).unwrap().0, SnapshotLayout::V3);
        let v3 = encode_snapshot_as(3, &5u32).unwrap();
        let (layout, body) = snapshot_body(&v3).unwrap();
        assert_eq!(layout, SnapshotLayout::V3);
        assert_eq!(decode::<u32>(body).unwrap(), 5);
        let v4 = encode_snapshot_as(4, &5u32).unwrap();
        assert_eq!(snapshot_body(&v4).unwrap().0, SnapshotLayout::V4);
        let v5 = encode_snapshot_as(5, &5u32).unwrap();
        assert_eq!(snapshot_body(&v5).unwrap().0, SnapshotLayout::V5);
        let v6 = encode_snapshot_as(6, &5u32).unwrap();
        assert_eq!(snapshot_body(&v6).unwrap().0, SnapshotLayout::V6);
        assert_eq!(snapshot_body(&[1, 2]).unwrap().0, SnapshotLayout::V1);
        let mut damaged = current.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            snapshot_body(&damaged),
            Err(DecodeError::Checksum { .. })
        ));
        assert!(snapshot_body(b"AGLS\x09").is_err());
    }
}
