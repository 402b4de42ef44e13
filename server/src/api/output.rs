//! `TaskOutput`: an exec attempt's whole output, read from the agent of the
//! node it ran on (`OutputRequest` on the agent's session) and relayed to the
//! caller, who needs no route to the node. Only the leader holds the agent
//! sessions, so a follower answers UNAVAILABLE with the leader's address; a
//! caller that loses the stream in a failover resumes at the new leader from
//! the bytes it has.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

use super::replica_status;
use crate::leader::hub::AgentHub;
use crate::replica::{Replica, ReplicaError};
use crate::scheduler::model::{Payload, Task, TaskId};
use crate::scheduler::SchedulerState;

pub type OutputStream = Pin<Box<dyn Stream<Item = Result<pb::TaskOutputChunk, Status>> + Send>>;

/// Bytes asked of an agent at a time.
const CHUNK_BYTES: u32 = 256 * 1024;
/// How often a followed attempt's agent is asked again when it had nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Which attempt a request names, and the node it ran (or runs) on.
struct Target {
    task: TaskId,
    attempt: u32,
    node: String,
}

/// Where attempt `attempt` (0: the latest) of task `id` runs or ran.
fn target(state: &SchedulerState, id: TaskId, attempt: u32) -> Result<Target, Status> {
    let task = state
        .tasks
        .get(&id)
        .ok_or_else(|| Status::not_found(format!("task_id: {id} does not exist")))?;
    if !matches!(task.spec.payload, Payload::Exec { .. }) {
        return Err(Status::failed_precondition(format!(
            "task_id: {id} is not an exec task; only exec attempts keep their output"
        )));
    }
    let attempt = match attempt {
        0 if task.attempt == 0 => {
            return Err(Status::failed_precondition(format!(
                "task_id: {id} has not run yet"
            )))
        }
        0 => task.attempt,
        n if n > task.attempt => {
            return Err(Status::invalid_argument(format!(
                "attempt: task {id} has had {} attempt(s)",
                task.attempt
            )))
        }
        n => n,
    };
    let node = node_of(task, attempt).ok_or_else(|| {
        Status::not_found(format!(
            "attempt: attempt {attempt} of task {id} is no longer in its history"
        ))
    })?;
    Ok(Target {
        task: id,
        attempt,
        node,
    })
}

fn node_of(task: &Task, attempt: u32) -> Option<String> {
    match &task.placement {
        Some(p) if p.attempt == attempt => Some(p.node.clone()),
        _ => task
            .history
            .iter()
            .find(|a| a.attempt == attempt)
            .map(|a| a.node.clone()),
    }
}

/// Whether the attempt still holds its node in the replicated state: its
/// output may not exist yet, or may still grow.
fn placed(state: &SchedulerState, t: &Target) -> bool {
    state.tasks.get(&t.task).is_some_and(|task| {
        task.placement
            .as_ref()
            .is_some_and(|p| p.attempt == t.attempt && task.state.is_placed())
    })
}

fn not_leader(replica: &Replica) -> Option<Status> {
    match replica.leader() {
        Some((id, _)) if id == replica.id => None,
        Some((leader_id, leader_addr)) => Some(replica_status(ReplicaError::NotLeader {
            leader_id,
            leader_addr,
        })),
        None => Some(replica_status(ReplicaError::NoLeader)),
    }
}

pub fn task_output(
    replica: Arc<Replica>,
    hub: Arc<AgentHub>,
    req: pb::TaskOutputRequest,
) -> Result<OutputStream, Status> {
    if let Some(status) = not_leader(&replica) {
        return Err(status);
    }
    let t = target(&replica.state.read().state, req.task_id, req.attempt)?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut offset = req.offset;
        let chunk = |offset: u64, data: Vec<u8>| pb::TaskOutputChunk {
            attempt: t.attempt,
            node: t.node.clone(),
            offset,
            data,
        };
        if tx.send(Ok(chunk(offset, Vec::new()))).await.is_err() {
            return;
        }
        loop {
            let asked = hub
                .read_output(&t.node, t.task, t.attempt, offset, CHUNK_BYTES)
                .await;
            let still_placed = placed(&replica.state.read().state, &t);
            let more = match asked {
                Ok(c) if !c.data.is_empty() => {
                    let len = c.data.len() as u64;
                    if tx.send(Ok(chunk(offset, c.data))).await.is_err() {
                        return;
                    }
                    offset += len;
                    continue;
                }
                // Not there (yet): an attempt still being started has none.
                Ok(c) if !c.error.is_empty() => {
                    if req.follow && still_placed {
                        Ok(())
                    } else {
                        Err(Status::not_found(c.error))
                    }
                }
                Ok(c) => match req.follow && c.running {
                    true => Ok(()),
                    false => return,
                },
                // The node's agent is away: this leader stepped down, or the
                // agent is reconnecting. A follower answers where the leader is.
                Err(why) => match not_leader(&replica) {
                    Some(status) => Err(status),
                    None if req.follow && still_placed => Ok(()),
                    None => Err(Status::unavailable(why)),
                },
            };
            if let Err(status) = more {
                let _ = tx.send(Err(status)).await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
