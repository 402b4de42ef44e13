//! Damage done to a store's files on purpose, the way disks and operators do
//! it: for the damage tests and jepsen's disk fault. No replica calls these.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Truncates (or extends) the file to `len` bytes.
pub fn set_len(path: &Path, len: u64) -> std::io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_len(len)
}

/// Cuts the last `bytes` bytes off the file; its length before.
pub fn cut_tail(path: &Path, bytes: u64) -> std::io::Result<u64> {
    let len = std::fs::metadata(path)?.len();
    set_len(path, len.saturating_sub(bytes))?;
    Ok(len)
}

/// Inverts `count` bytes from offset `at` (fewer at the end of the file).
pub fn flip_bytes(path: &Path, at: u64, count: usize) -> std::io::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut bytes = vec![0u8; count.min(len.saturating_sub(at) as usize)];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut bytes)?;
    bytes.iter_mut().for_each(|b| *b ^= 0xff);
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&bytes)
}
