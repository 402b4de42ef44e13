//! Group flush of the log. openraft 0.9 calls `append` from its core task
//! and waits for it to return; durability is reported separately, through
//! the append's callback. So `append` only writes its batch into sled and
//! queues the callback here; one thread flushes sled once for every append
//! queued meanwhile and then fires their callbacks, in order. Under load one
//! fsync covers many appends, and the Raft core never waits on the disk.
//!
//! Nothing is acknowledged before it is flushed: a callback fires only after
//! a flush that began after its batch was written.

use std::sync::{mpsc, Arc};

use openraft::storage::LogFlushed;

use crate::watermark::WatermarkWriter;
use crate::StoredTypeConfig;

enum Request<C: StoredTypeConfig> {
    /// Entries up to `last` were written; report them once flushed.
    Appended {
        last: Option<u64>,
        callback: LogFlushed<C>,
    },
    /// Flush everything written so far, then answer.
    Sync(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Cheap to clone. When the last clone is dropped, the thread is stopped and
/// joined, so the database is closed once the log store is.
pub struct Flusher<C: StoredTypeConfig> {
    inner: Arc<Inner<C>>,
}

struct Inner<C: StoredTypeConfig> {
    tx: Option<mpsc::Sender<Request<C>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<C: StoredTypeConfig> Drop for Inner<C> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<C: StoredTypeConfig> Clone for Flusher<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C: StoredTypeConfig> Flusher<C> {
    pub fn start(db: sled::Db, watermark: WatermarkWriter) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request<C>>();
        let thread = std::thread::Builder::new()
            .name("log flush".into())
            .spawn(move || run(&db, &watermark, &rx))?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    fn send(&self, request: Request<C>) -> Result<(), mpsc::SendError<Request<C>>> {
        match &self.inner.tx {
            Some(tx) => tx.send(request),
            None => Err(mpsc::SendError(request)),
        }
    }

    /// Queues `callback` for the next flush. A stopped flusher (only at
    /// shutdown) reports the entries as not written.
    pub fn appended(&self, last: Option<u64>, callback: LogFlushed<C>) {
        if let Err(mpsc::SendError(Request::Appended { callback, .. })) =
            self.send(Request::Appended { last, callback })
        {
            callback.log_io_completed(Err(std::io::Error::other("the log flusher has stopped")));
        }
    }

    /// Flushes everything written so far, after every append queued before.
    pub async fn sync(&self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Sync(tx))
            .map_err(|_| "the log flusher has stopped".to_string())?;
        rx.await
            .map_err(|_| "the log flusher has stopped".to_string())?
    }
}

fn run<C: StoredTypeConfig>(
    db: &sled::Db,
    watermark: &WatermarkWriter,
    rx: &mpsc::Receiver<Request<C>>,
) {
    while let Ok(first) = rx.recv() {
        // Everything queued by now is covered by one flush.
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let flushed = db.flush().map(|_| ()).map_err(|e| e.to_string());
        if flushed.is_ok() {
            if let Some(last) = group
                .iter()
                .filter_map(|r| match r {
                    Request::Appended { last, .. } => *last,
                    Request::Sync(_) => None,
                })
                .max()
            {
                // Durable and about to be acknowledged: the log must reach it.
                watermark.acknowledged(last);
            }
        }
        for request in group {
            match request {
                Request::Appended { callback, .. } => {
                    callback.log_io_completed(flushed.clone().map_err(std::io::Error::other))
                }
                Request::Sync(answer) => {
                    let _ = answer.send(flushed.clone());
                }
            }
        }
    }
}
