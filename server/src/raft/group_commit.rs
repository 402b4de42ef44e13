//! Group commit: writes proposed on the leader while earlier ones are still
//! being committed share one log entry ([`Command::Batch`]).
//!
//! openraft 0.9's core appends one entry per client write and waits for that
//! append to be flushed before it takes the next (`RaftCore::append_to_log`),
//! so a leader commits at most one entry per flush however many clients
//! wait. Here one entry at a time is handed to openraft; writes that arrive
//! while it commits queue, and the next entry carries all of them (up to
//! [`BATCH_WRITES_MAX`] writes and [`BATCH_BYTES_MAX`] bytes). An idle
//! cluster still writes each write alone at once: batches form only under
//! load, so grouping adds no wait of its own. One entry in flight measured
//! ~10% more writes/s than two or four on 2 cores (docs/benchmarks.md).
//!
//! Each write keeps its own request id and response; `apply` treats a batch
//! exactly as its writes one entry after another. Batches need entry format
//! 3, so a cluster whose active format is older gets one entry per write.

use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot};

use super::{NodeId, Raft, SharedState};
use crate::metrics::{Events, KindLabel};
use crate::replica::wall_clock_ms;
use crate::scheduler::command::BatchedWrite;
use crate::scheduler::requests::RequestId;
use crate::scheduler::{format, settings, Command, Proposal, Response};

/// Writes in one entry at most.
pub const BATCH_WRITES_MAX: usize = 256;
/// Encoded bytes of one batch's writes at most (a larger write goes alone):
/// an AppendEntries of openraft's 300 entries then stays under the gRPC
/// message limit.
pub const BATCH_BYTES_MAX: usize = 32 * 1024;

pub type WriteResult = Result<Response, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

struct Pending {
    write: BatchedWrite,
    bytes: usize,
    answer: oneshot::Sender<WriteResult>,
}

/// The queue in front of openraft's `client_write`. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Pending>,
    events: Events,
}

impl GroupCommit {
    /// Starts the task that forms entries; it ends when every handle is dropped.
    pub fn start(id: NodeId, raft: Raft, state: SharedState, events: Events) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(form_entries(Writer { id, raft, state }, rx));
        Self { tx, events }
    }

    /// Queues `command` for the next entry now, so writes queued one after
    /// another are applied in that order; the future answers what `apply`
    /// answered it.
    pub fn enqueue(
        &self,
        command: Command,
        request: Option<RequestId>,
    ) -> impl std::future::Future<Output = WriteResult> + Send + 'static {
        let bytes = postcard::experimental::serialized_size(&command).unwrap_or(usize::MAX);
        let kind = command.kind();
        self.events
            .proposals
            .get_or_create(&KindLabel { kind })
            .inc();
        let (commit_latency, proposed) = (self.events.commit_latency.clone(), Instant::now());
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            write: BatchedWrite { command, request },
            bytes,
            answer,
        };
        let queued = self.tx.send(pending).is_ok();
        async move {
            if !queued {
                return Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
            }
            let result = answered
                .await
                .unwrap_or(Err(RaftError::Fatal(openraft::error::Fatal::Stopped)));
            if result.is_ok() {
                commit_latency.observe(proposed.elapsed().as_secs_f64());
            }
            result
        }
    }
}

struct Writer {
    #[cfg_attr(not(feature = "format-next"), allow(dead_code))]
    id: NodeId,
    raft: Raft,
    state: SharedState,
}

async fn form_entries(writer: Writer, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => match rx.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < BATCH_WRITES_MAX {
            let Ok(next) = rx.try_recv() else { break };
            if bytes.saturating_add(next.bytes) > BATCH_BYTES_MAX {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        writer.commit(batch).await;
    }
}

impl Writer {
    /// Time and randomness enter the log here, on the leader, and nowhere else.
    fn proposal(&self, command: Command, request: Option<RequestId>, format: u16) -> Proposal {
        #[allow(unused_mut)] // build B fills in a field of its newer format
        let mut proposal = Proposal {
            format,
            ..Proposal::new(wall_clock_ms(), rand::random(), command, request)
        };
        #[cfg(feature = "format-next")]
        if proposal.format >= crate::scheduler::format::ENTRY_FORMAT_PROPOSED_BY {
            proposal.proposed_by = Some(self.id);
        }
        proposal
    }

    async fn commit(&self, mut batch: Vec<Pending>) {
        let active = settings::count_value(&self.state.read().state, &settings::ENTRY_FORMAT);
        let format = format::entry_format_to_write(active);
        if batch.len() == 1 || format < format::ENTRY_FORMAT_BATCH {
            // One entry per write, all handed to openraft in queue order
            // before any answer is awaited: the order holds and they still
            // pipeline through openraft's core.
            let mut sent = Vec::with_capacity(batch.len());
            for p in batch {
                let proposal = self.proposal(p.write.command, p.write.request, format);
                sent.push((p.answer, self.raft.client_write_ff(proposal).await));
            }
            for (answer, receiver) in sent {
                let result = match receiver {
                    Err(fatal) => Err(RaftError::Fatal(fatal)),
                    Ok(receiver) => match receiver.await {
                        Ok(Ok(written)) => Ok(written.data),
                        Ok(Err(e)) => Err(RaftError::APIError(e)),
                        Err(_) => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
                    },
                };
                let _ = answer.send(result);
            }
            return;
        }
        let (writes, answers): (Vec<BatchedWrite>, Vec<_>) =
            batch.drain(..).map(|p| (p.write, p.answer)).unzip();
        let count = writes.len();
        let result = self
            .raft
            .client_write(self.proposal(Command::Batch { writes }, None, format))
            .await
            .map(|w| w.data);
        match result {
            Ok(Response::Batch(responses)) if responses.len() == count => {
                for (answer, response) in answers.into_iter().zip(responses) {
                    let _ = answer.send(Ok(response));
                }
            }
            Ok(other) => {
                let unexpected =
                    Response::Rejected(format!("a batch of {count} writes was answered {other:?}"));
                for answer in answers {
                    let _ = answer.send(Ok(unexpected.clone()));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}
