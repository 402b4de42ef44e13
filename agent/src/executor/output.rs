//! Each exec attempt's whole output (stdout and stderr, interleaved as they
//! arrive), kept in a file on the node, where reports and the replicated
//! state keep only a tail. Bounded per attempt (`output.attempt_bytes_max`)
//! and in total (`output.total_bytes_max`: the oldest attempts' files go
//! first). Secret env values are replaced line by line before anything is
//! written, so the files never hold them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use autoglm_client::security::REDACTED;
use memchr::memmem;

use super::AttemptKey;
use crate::config::OutputConfig;

/// A line longer than this is written (scrubbed) before its newline comes,
/// so a process that never prints one is not buffered without bound.
const LINE_BYTES_MAX: usize = 64 * 1024;

/// Where the output files live and how much they may take.
#[derive(Debug, Clone)]
pub struct OutputStore {
    dir: PathBuf,
    attempt_bytes_max: u64,
    total_bytes_max: u64,
}

impl OutputStore {
    /// `None` when keeping output is off (`output.dir` empty). Creates the
    /// directory, readable by the agent's user only.
    pub fn open(c: &OutputConfig) -> io::Result<Option<Self>> {
        if c.dir.is_empty() {
            return Ok(None);
        }
        let dir = PathBuf::from(&c.dir);
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Some(Self {
            dir,
            attempt_bytes_max: c.attempt_bytes_max,
            total_bytes_max: c.total_bytes_max,
        }))
    }

    /// The file of one attempt's output.
    pub fn path(&self, key: AttemptKey) -> PathBuf {
        self.dir
            .join(format!("task-{}-attempt-{}.out", key.task_id, key.attempt))
    }

    /// Up to `max` bytes of attempt `key`'s output from `offset` on; empty
    /// at the end. NotFound when the file is not here (never kept, or
    /// removed to make room).
    pub fn read(&self, key: AttemptKey, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = File::open(self.path(key))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(max.min(1 << 20));
        file.take(max as u64).read_to_end(&mut data)?;
        Ok(data)
    }

    /// Starts the file of attempt `key`, first removing the oldest files
    /// until this one fits in the total at its largest.
    pub fn create(&self, key: AttemptKey, secrets: &[String]) -> io::Result<OutputWriter> {
        self.make_room(self.attempt_bytes_max)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.path(key))?;
        Ok(OutputWriter {
            file,
            written: 0,
            cap: self.attempt_bytes_max,
            truncated: false,
            secrets: secrets
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            line: Vec::new(),
        })
    }

    fn make_room(&self, needed: u64) -> io::Result<()> {
        let mut files = output_files(&self.dir)?;
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        // Oldest first.
        files.sort_by_key(|f| f.1);
        for (path, _, len) in files {
            if total + needed <= self.total_bytes_max {
                break;
            }
            fs::remove_file(&path)?;
            total -= len;
        }
        Ok(())
    }
}

/// (path, modified, length) of every output file in `dir`.
fn output_files(dir: &Path) -> io::Result<Vec<(PathBuf, std::time::SystemTime, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "out") {
            let meta = entry.metadata()?;
            out.push((path, meta.modified()?, meta.len()));
        }
    }
    Ok(out)
}

/// Appends one attempt's output to its file, scrubbed, up to its cap.
pub struct OutputWriter {
    file: File,
    written: u64,
    cap: u64,
    truncated: bool,
    secrets: Vec<Vec<u8>>,
    /// The current line, until its newline arrives.
    line: Vec<u8>,
}

impl OutputWriter {
    /// Takes the next bytes of output. A write error ends the file where it
    /// is: the attempt runs on, its report still carries the tail.
    pub fn push(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            self.line.extend_from_slice(&bytes[..=end]);
            self.write_line()?;
            bytes = &bytes[end + 1..];
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() >= LINE_BYTES_MAX {
            self.write_line()?;
        }
        Ok(())
    }

    /// Writes what is left of an unfinished last line.
    pub fn finish(mut self) -> io::Result<()> {
        self.write_line()?;
        self.file.flush()
    }

    fn write_line(&mut self) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        for secret in &self.secrets {
            line = replace_all(&line, secret, REDACTED.as_bytes());
        }
        if self.truncated || line.is_empty() {
            return Ok(());
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        if line.len() > room {
            self.file.write_all(&line[..room])?;
            self.file.write_all(
                format!(
                    "\n[autoglm: output cut at {} bytes (output.attempt_bytes_max)]\n",
                    self.cap
                )
                .as_bytes(),
            )?;
            self.written = self.cap;
            self.truncated = true;
        } else {
            self.file.write_all(&line)?;
            self.written += line.len() as u64;
        }
        Ok(())
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut last = 0;
    for at in memmem::find_iter(haystack, needle) {
        if at < last {
            continue; // overlaps the previous match
        }
        out.extend_from_slice(&haystack[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&haystack[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, attempt: u64, total: u64) -> OutputStore {
        OutputStore::open(&OutputConfig {
            dir: dir.to_str().unwrap().into(),
            attempt_bytes_max: attempt,
            total_bytes_max: total,
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn keeps_every_byte_with_secrets_replaced_even_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1 << 20, 1 << 30);
        let key = AttemptKey::new(7, 2);
        let mut w = s.create(key, &["hunter2".into()]).unwrap();
        w.push(b"line 1\npassword: hun").unwrap();
        w.push(b"ter2 ok\nno newline at the end").unwrap();
        w.finish().unwrap();
        let text = fs::read_to_string(s.path(key)).unwrap();
        assert_eq!(
            text,
            format!("line 1\npassword: {REDACTED} ok\nno newline at the end")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(s.path(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the agent's user reads it");
    }

    #[test]
    fn reads_from_any_offset_and_says_when_a_file_is_not_here() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1 << 20, 1 << 30);
        let key = AttemptKey::new(3, 1);
        let mut w = s.create(key, &[]).unwrap();
        w.push(b"abcdef\n").unwrap();
        w.finish().unwrap();
        assert_eq!(s.read(key, 2, 3).unwrap(), b"cde");
        assert_eq!(s.read(key, 5, 100).unwrap(), b"f\n");
        assert!(s.read(key, 7, 100).unwrap().is_empty());
        let missing = s.read(AttemptKey::new(3, 2), 0, 10).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn an_attempt_stops_at_its_cap_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 10, 1 << 30);
        let key = AttemptKey::new(1, 1);
        let mut w = s.create(key, &[]).unwrap();
        for _ in 0..100 {
            w.push(b"0123456789abcdef\n").unwrap();
        }
        w.finish().unwrap();
        let text = fs::read_to_string(s.path(key)).unwrap();
        assert!(
            text.starts_with("0123456789\n[autoglm: output cut at 10 bytes"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn the_oldest_files_go_first_when_the_total_would_pass_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 100, 250);
        for task in 1..=4 {
            let mut w = s.create(AttemptKey::new(task, 1), &[]).unwrap();
            w.push(&[b'x'; 100]).unwrap();
            w.finish().unwrap();
            // Modification times must differ for "oldest" to mean something.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let kept: Vec<bool> = (1..=4)
            .map(|t| s.path(AttemptKey::new(t, 1)).exists())
            .collect();
        assert_eq!(kept, [false, false, true, true]);
    }

    #[test]
    fn overlapping_and_repeated_secrets_are_all_replaced() {
        assert_eq!(replace_all(b"aaaa", b"aa", b"X"), b"XX");
        assert_eq!(replace_all(b"abcab", b"ab", b"-"), b"-c-");
        assert_eq!(replace_all(b"none", b"zz", b"-"), b"none");
    }
}
