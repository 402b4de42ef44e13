//! The watermark: a small file beside sled's files that says how far this
//! replica's log must reach. sled recovers a truncated or damaged file by
//! rolling back to an earlier consistent point, silently, and everything in
//! the database (the log, the vote, the committed id) rolls back together;
//! only something outside it can show the loss.
//!
//! It records two indexes:
//! - `acknowledged`: every entry up to it was flushed and reported durable to
//!   Raft, so it may count towards a quorum. The log must reach it, or the
//!   store lost entries it acknowledged. The only legitimate way for a log to
//!   shrink, Raft truncating a conflicting uncommitted tail, lowers it first,
//!   synchronously.
//! - `committed`: the highest index known committed, so quorum-loss recovery
//!   replays at least that far even when the committed id in the database
//!   (saved without a flush) trails.
//!
//! A background thread rewrites the file (temporary file, fsync, rename) at
//! most every [`PERIOD`], so it may trail the log by that much of commits
//! after a crash (which only weakens the check); a clean stop syncs it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec;

/// The file, in the database directory.
pub const FILE: &str = "watermark";
/// How often the file is rewritten at most.
const PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Every entry up to this index was flushed and acknowledged.
    pub acknowledged: Option<u64>,
    /// The highest index known committed.
    pub committed: Option<u64>,
}

/// Version of the file's layout: a checksummed record of (version,
/// [`Watermark`]). Version 1 was a bare committed index, which counted as
/// both.
const VERSION: u8 = 2;

/// The watermark in `dir`, if one was written; `Err` if it is unreadable.
pub fn read(dir: &Path) -> Result<Option<Watermark>, String> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let body = codec::verified_body(&bytes).map_err(|e| format!("unreadable: {e}"))?;
    if let Ok((VERSION, mark)) = codec::decode::<(u8, Watermark)>(body) {
        return Ok(Some(mark));
    }
    codec::decode::<u64>(body)
        .map(|committed| {
            Some(Watermark {
                acknowledged: Some(committed),
                committed: Some(committed),
            })
        })
        .map_err(|_| format!("unreadable: not a layout this build reads (up to version {VERSION})"))
}

/// Writes the watermark whole: a temporary file, synced, then renamed.
pub(crate) fn write(dir: &Path, mark: &Watermark) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = codec::encode_record(&(VERSION, mark)).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))
}

enum Message {
    Acknowledged(u64),
    Committed(u64),
    /// The log is about to end at `to` (`None`: empty): lower the
    /// acknowledged index to it, write at once, answer.
    Lower {
        to: Option<u64>,
        done: mpsc::Sender<()>,
    },
    /// Write the latest value now and answer.
    Sync(mpsc::Sender<()>),
}

/// Keeps the watermark file up to date from a background thread.
#[derive(Clone)]
pub struct WatermarkWriter {
    tx: mpsc::Sender<Message>,
}

impl WatermarkWriter {
    pub(crate) fn spawn(dir: PathBuf, start: Watermark) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Message>();
        std::thread::Builder::new()
            .name("watermark".into())
            .spawn(move || {
                let mut written = start;
                let mut wanted = start;
                while let Ok(first) = rx.recv() {
                    let mut answers = Vec::new();
                    for message in std::iter::once(first).chain(rx.try_iter()) {
                        match message {
                            Message::Acknowledged(i) => {
                                wanted.acknowledged = wanted.acknowledged.max(Some(i))
                            }
                            Message::Committed(i) => {
                                wanted.committed = wanted.committed.max(Some(i))
                            }
                            Message::Lower { to, done } => {
                                wanted.acknowledged = wanted.acknowledged.min(to);
                                answers.push(done);
                            }
                            Message::Sync(done) => answers.push(done),
                        }
                    }
                    if wanted != written {
                        match write(&dir, &wanted) {
                            Ok(()) => written = wanted,
                            Err(e) => tracing::warn!(
                                dir = %dir.display(), error = %e, "cannot write the watermark"
                            ),
                        }
                    }
                    if answers.is_empty() {
                        std::thread::sleep(PERIOD);
                    }
                    for done in answers {
                        let _ = done.send(());
                    }
                }
            })?;
        Ok(Self { tx })
    }

    // The thread ends only with the last sender: a failed send means the
    // store is gone, and there is nothing left to protect.

    pub(crate) fn acknowledged(&self, index: u64) {
        let _ = self.tx.send(Message::Acknowledged(index));
    }

    pub(crate) fn committed(&self, index: u64) {
        let _ = self.tx.send(Message::Committed(index));
    }

    /// Lowers the acknowledged index to `to` and waits until the file says
    /// so: call before deleting entries from the end of the log.
    pub(crate) fn lower(&self, to: Option<u64>) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Message::Lower { to, done }).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Writes the latest value now; for a clean stop, so the watermark
    /// covers everything the store holds.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Message::Sync(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }
}
