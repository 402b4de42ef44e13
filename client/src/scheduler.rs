//! Jobs, tasks and nodes through [`Client`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::client::{fresh_request_id, with_request_id, Retry};
use crate::proto::scheduler_service_client::SchedulerServiceClient;
use crate::proto::*;
use crate::{Client, ClientError, JobBuilder};

/// Makes an idempotency key unique to this process and call.
fn fresh_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "auto-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a stream that broke with `status` is opened again (on another
/// replica, from where it stopped): the replica went away or lost
/// leadership mid-stream, not a refusal.
fn resumes(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    )
}

/// Where a broken watch resumes. One entry can change many tasks (a cancel
/// cascade, a batch), all at one revision, and a stream can break between
/// them: resuming from the revision before the last one received and
/// skipping the tasks already delivered at it neither misses nor repeats a
/// change.
struct Cursor {
    last: u64,
    /// Tasks received at revision `last`.
    at_last: HashSet<u64>,
}

impl Cursor {
    fn new(from_revision: u64) -> Self {
        Self {
            last: from_revision,
            at_last: HashSet::new(),
        }
    }

    fn resume_from(&self) -> u64 {
        if self.at_last.is_empty() {
            self.last
        } else {
            self.last - 1
        }
    }

    /// Whether an event is new; records it when it is.
    fn accept(&mut self, revision: u64, task_id: u64) -> bool {
        if revision > self.last {
            self.last = revision;
            self.at_last.clear();
        } else if revision < self.last || self.at_last.contains(&task_id) {
            return false;
        }
        self.at_last.insert(task_id);
        true
    }
}

/// What a watch follows.
#[derive(Debug, Clone, Copy)]
pub enum Watch {
    Job(u64),
    Task(u64),
}

/// What an operator does to a node ([`Client::node_admin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// No new placements; running attempts finish.
    Drain,
    Undrain,
    /// Forget the node; its running attempts are requeued.
    Remove,
    /// Close its circuit breaker: it takes placements again at once.
    ResetBreaker,
}

impl Client {
    /// Submits a job. Retries across replicas reuse one idempotency key, so a
    /// retried submission never creates a second job. Over the admission
    /// limits it waits as told by the server and tries again until the deadline.
    pub async fn submit(&self, job: JobBuilder) -> Result<SubmitJobResponse, ClientError> {
        let mut request = job.build();
        if request.idempotency_key.is_empty() {
            request.idempotency_key = fresh_key();
        }
        let started = std::time::Instant::now();
        let id = fresh_request_id();
        loop {
            let req = request.clone();
            // The idempotency key makes a retry after an unknown outcome safe.
            let result = self
                .with_retry_on(Retry::Idempotent, |ch| {
                    let req = with_request_id(req.clone(), &id);
                    async move { SchedulerServiceClient::new(ch).submit_job(req).await }
                })
                .await;
            match result {
                Err(ClientError::Rpc(status)) if status.code() == Code::ResourceExhausted => {
                    let wait = status
                        .metadata()
                        .get(crate::RETRY_AFTER_METADATA)
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .map_or(Duration::from_millis(100), Duration::from_millis);
                    if started.elapsed() + wait > self.options().deadline {
                        return Err(ClientError::Rpc(status));
                    }
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    pub async fn get_job(&self, job_id: u64, stale: bool) -> Result<Job, ClientError> {
        let req = GetJobRequest { job_id, stale };
        self.with_retry_on(Retry::Idempotent, |ch| async move {
            SchedulerServiceClient::new(ch).get_job(req).await
        })
        .await
    }

    pub async fn get_task(&self, task_id: u64, stale: bool) -> Result<Task, ClientError> {
        let req = GetTaskRequest { task_id, stale };
        self.with_retry_on(Retry::Idempotent, |ch| async move {
            SchedulerServiceClient::new(ch).get_task(req).await
        })
        .await
    }

    pub async fn list_tasks(
        &self,
        request: ListTasksRequest,
    ) -> Result<ListTasksResponse, ClientError> {
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = request.clone();
            async move { SchedulerServiceClient::new(ch).list_tasks(req).await }
        })
        .await
    }

    pub async fn cancel_task(&self, task_id: u64) -> Result<CancelResponse, ClientError> {
        let id = fresh_request_id();
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = with_request_id(CancelTaskRequest { task_id }, &id);
            async move { SchedulerServiceClient::new(ch).cancel_task(req).await }
        })
        .await
    }

    pub async fn cancel_job(&self, job_id: u64) -> Result<CancelResponse, ClientError> {
        let id = fresh_request_id();
        self.with_retry_on(Retry::Idempotent, |ch| {
            let req = with_request_id(CancelJobRequest { job_id }, &id);
            async move { SchedulerServiceClient::new(ch).cancel_job(req).await }
        })
        .await
    }

    pub async fn list_nodes(&self, stale: bool) -> Result<ListNodesResponse, ClientError> {
        let req = ListNodesRequest { stale };
        self.with_retry_on(Retry::Idempotent, |ch| async move {
            SchedulerServiceClient::new(ch).list_nodes(req).await
        })
        .await
    }

    /// Drains, undrains or removes a node, or resets its circuit breaker.
    pub async fn node_admin(
        &self,
        name: &str,
        action: NodeAction,
    ) -> Result<NodeResponse, ClientError> {
        let req = NodeRequest { name: name.into() };
        let id = fresh_request_id();
        self.with_retry(|ch| {
            let req = with_request_id(req.clone(), &id);
            async move {
                let mut c = SchedulerServiceClient::new(ch);
                match action {
                    NodeAction::Drain => c.drain_node(req).await,
                    NodeAction::Undrain => c.undrain_node(req).await,
                    NodeAction::Remove => c.remove_node(req).await,
                    NodeAction::ResetBreaker => c.reset_node_breaker(req).await,
                }
            }
        })
        .await
    }

    /// Streams task changes of a job or task until everything watched is
    /// terminal. When a replica goes away mid-stream the watch resumes on
    /// another from the last revision received, so no change is missed or
    /// repeated.
    pub fn watch(
        self: &std::sync::Arc<Self>,
        watched: Watch,
        from_revision: u64,
    ) -> ReceiverStream<Result<TaskEvent, ClientError>> {
        let (tx, rx) = mpsc::channel(256);
        let client = self.clone();
        tokio::spawn(async move {
            let mut cursor = Cursor::new(from_revision);
            loop {
                let from = cursor.resume_from();
                let opened = client
                    .with_retry_on(Retry::Idempotent, |ch| async move {
                        let mut c = SchedulerServiceClient::new(ch);
                        match watched {
                            Watch::Job(job_id) => {
                                c.watch_job(WatchJobRequest {
                                    job_id,
                                    from_revision: from,
                                })
                                .await
                            }
                            Watch::Task(task_id) => {
                                c.watch_task(WatchTaskRequest {
                                    task_id,
                                    from_revision: from,
                                })
                                .await
                            }
                        }
                    })
                    .await;
                let mut stream = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            let id = event.task.as_ref().map_or(0, |t| t.id);
                            if !cursor.accept(event.revision, id) {
                                continue;
                            }
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                        // The server ends the stream once everything is terminal.
                        Ok(None) => return,
                        Err(status) if resumes(&status) => break,
                        Err(status) => {
                            let _ = tx.send(Err(ClientError::Rpc(status))).await;
                            return;
                        }
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// Streams an exec attempt's output from `offset` (`attempt` 0: the
    /// latest), relayed by the leader from the node it ran on; with `follow`,
    /// until the attempt ends. When the leader goes away mid-stream it
    /// resumes at the new one, on the same attempt, from the bytes received,
    /// so no byte is missed or repeated.
    pub fn task_output(
        self: &std::sync::Arc<Self>,
        task_id: u64,
        attempt: u32,
        offset: u64,
        follow: bool,
    ) -> ReceiverStream<Result<TaskOutputChunk, ClientError>> {
        let (tx, rx) = mpsc::channel(16);
        let client = self.clone();
        tokio::spawn(async move {
            let (mut attempt, mut offset) = (attempt, offset);
            loop {
                let req = TaskOutputRequest {
                    task_id,
                    attempt,
                    offset,
                    follow,
                };
                let opened = client
                    .with_retry_on(Retry::Idempotent, |ch| async move {
                        SchedulerServiceClient::new(ch).task_output(req).await
                    })
                    .await;
                let mut stream = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(chunk)) => {
                            // A resumed stream stays on the attempt it began with.
                            attempt = chunk.attempt;
                            offset = chunk.offset + chunk.data.len() as u64;
                            if tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(status) if resumes(&status) => break,
                        Err(status) => {
                            let _ = tx.send(Err(ClientError::Rpc(status))).await;
                            return;
                        }
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn a_resumed_watch_neither_misses_nor_repeats_tasks_of_one_revision() {
        let mut cursor = Cursor::new(0);
        assert!(cursor.accept(5, 1) && cursor.accept(7, 1) && cursor.accept(7, 2));
        // The stream broke after tasks 1 and 2 of revision 7; task 3 also changed there.
        assert_eq!(cursor.resume_from(), 6);
        let delivered: Vec<u64> = [(7, 1), (7, 2), (7, 3), (9, 1)]
            .into_iter()
            .filter(|&(rev, id)| cursor.accept(rev, id))
            .map(|(_, id)| id)
            .collect();
        assert_eq!(delivered, vec![3, 1]);
        assert_eq!(Cursor::new(4).resume_from(), 4);
    }
}
