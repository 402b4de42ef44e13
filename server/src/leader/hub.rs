//! The leader's view of connected agents: their streams, what each was sent,
//! their latest metrics and when each was last heard from. Soft state: rebuilt
//! from reconnecting agents after a failover, never replicated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use autoglm_client::proto::{self as pb, leader_message::Kind, LeaderMessage};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::decide::{latency_ewma, AgentContact};
use crate::api::convert::spec_to_proto;
use crate::scheduler::model::{NodeName, TaskId};
use crate::scheduler::placement::LiveNode;
use crate::scheduler::SchedulerState;

pub type Outbound = mpsc::Sender<Result<LeaderMessage, tonic::Status>>;

struct Session {
    id: u64,
    /// The agent process's `Register.instance`.
    instance: String,
    tx: Outbound,
    /// Ends the session's stream: the agent then reconnects and registers
    /// again, with whichever replica leads by then.
    end: CancellationToken,
    /// Attempts this agent runs or was told to run.
    sent: BTreeSet<(TaskId, u32)>,
}

struct Live {
    metrics: LiveNode,
    /// The heartbeat's per-GPU readings, for metrics and the dashboard.
    gpus: Vec<pb::GpuSample>,
    at: Instant,
}

/// A node's last heartbeat, as metrics show it.
pub struct NodeReading {
    pub node: NodeName,
    pub age: std::time::Duration,
    pub gpus: Vec<pb::GpuSample>,
}

#[derive(Default)]
struct Inner {
    next_session: u64,
    sessions: BTreeMap<NodeName, Session>,
    live: BTreeMap<NodeName, Live>,
    last_seen: BTreeMap<NodeName, Instant>,
    latency_ewma_ms: BTreeMap<NodeName, f64>,
    next_output_request: u64,
    /// Output requests sent to agents, waiting for their answer.
    output_waiters: BTreeMap<u64, oneshot::Sender<pb::OutputChunk>>,
}

/// How long an agent has to answer an output request.
const OUTPUT_ANSWER_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct AgentHub {
    inner: Mutex<Inner>,
}

impl AgentHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches an agent's stream, replacing (and ending) an older one for
    /// the same node. `running` is what the agent says it runs;
    /// reconciliation starts from it. The session must end its stream when
    /// the returned token is cancelled.
    pub fn attach(
        &self,
        node: &str,
        instance: &str,
        tx: Outbound,
        running: BTreeSet<(TaskId, u32)>,
    ) -> (u64, CancellationToken) {
        let mut inner = self.lock();
        inner.next_session += 1;
        let id = inner.next_session;
        let end = CancellationToken::new();
        let old = inner.sessions.insert(
            node.to_string(),
            Session {
                id,
                instance: instance.to_string(),
                tx,
                end: end.clone(),
                sent: running,
            },
        );
        if let Some(old) = old {
            old.end.cancel();
        }
        inner.last_seen.insert(node.to_string(), Instant::now());
        (id, end)
    }

    /// Why `instance` may not open a session for `node` now: another agent
    /// process serves it and was heard within `alive`. The same process
    /// (same non-empty instance) reconnecting is never refused.
    pub fn serving_another(&self, node: &str, instance: &str, alive: Duration) -> Option<String> {
        let inner = self.lock();
        let current = inner.sessions.get(node)?;
        if !instance.is_empty() && current.instance == instance {
            return None;
        }
        let heard = inner.last_seen.get(node)?.elapsed();
        (heard < alive).then(|| {
            format!(
                "register.node: {node} is served by another agent process, heard {} ms ago; \
                 one process per node (two would run its attempts twice)",
                heard.as_millis()
            )
        })
    }

    pub fn detach(&self, node: &str, session: u64) {
        let mut inner = self.lock();
        if inner.sessions.get(node).is_some_and(|s| s.id == session) {
            inner.sessions.remove(node);
        }
    }

    pub fn heartbeat(&self, node: &str, hb: &pb::Heartbeat) {
        let n = hb.gpus.len().max(1) as f64;
        let gpu_util = hb.gpus.iter().map(|g| g.util).sum::<f64>() / n;
        let gpu_mem_used = hb
            .gpus
            .iter()
            .map(|g| {
                if g.memory_total_mb == 0 {
                    0.0
                } else {
                    g.memory_used_mb as f64 / g.memory_total_mb as f64
                }
            })
            .sum::<f64>()
            / n;
        let mut inner = self.lock();
        let latency_ewma_ms = inner.latency_ewma_ms.get(node).copied();
        let metrics = LiveNode {
            gpu_util,
            gpu_mem_used,
            cpu_util: hb.cpu_util,
            mem_util: hb.mem_util,
            net_latency_ms: 0.0,
            age_ms: 0,
            latency_ewma_ms,
        };
        inner.live.insert(
            node.to_string(),
            Live {
                metrics,
                gpus: hb.gpus.clone(),
                at: Instant::now(),
            },
        );
        inner.last_seen.insert(node.to_string(), Instant::now());
    }

    /// Records that an attempt ended on its agent (no cancel needed) and its
    /// duration, for the latency EWMA.
    pub fn finished(&self, node: &str, task: TaskId, attempt: u32, duration_ms: u64) {
        let mut inner = self.lock();
        if let Some(session) = inner.sessions.get_mut(node) {
            session.sent.remove(&(task, attempt));
        }
        let previous = inner.latency_ewma_ms.get(node).copied();
        inner
            .latency_ewma_ms
            .insert(node.to_string(), latency_ewma(previous, duration_ms));
    }

    /// What the hub knows of `node`'s agent, its times in milliseconds
    /// since `epoch` (earlier contact counts as at `epoch`).
    pub fn contact(&self, node: &str, epoch: Instant) -> AgentContact {
        let inner = self.lock();
        AgentContact {
            last_seen_ms: inner
                .last_seen
                .get(node)
                .map(|at| at.saturating_duration_since(epoch).as_millis() as u64),
            connected: inner.sessions.contains_key(node),
        }
    }

    /// Each node's last heartbeat readings and their age.
    pub fn readings(&self) -> Vec<NodeReading> {
        let inner = self.lock();
        inner
            .live
            .iter()
            .map(|(node, l)| NodeReading {
                node: node.clone(),
                age: l.at.elapsed(),
                gpus: l.gpus.clone(),
            })
            .collect()
    }

    /// Live metrics with their current age, for placement.
    pub fn live_view(&self) -> BTreeMap<NodeName, LiveNode> {
        let inner = self.lock();
        inner
            .live
            .iter()
            .map(|(n, l)| {
                let mut m = l.metrics.clone();
                m.age_ms = l.at.elapsed().as_millis() as u64;
                m.latency_ewma_ms = inner.latency_ewma_ms.get(n).copied();
                (n.clone(), m)
            })
            .collect()
    }

    /// Sends each connected agent the attempts the state places on its node
    /// and cancels the ones it should no longer run. A message that does not
    /// fit in the stream's buffer is retried on the next round.
    pub fn dispatch(&self, state: &SchedulerState) {
        let mut inner = self.lock();
        for (node, session) in inner.sessions.iter_mut() {
            let desired: BTreeSet<(TaskId, u32)> = state
                .placed
                .get(node)
                .into_iter()
                .flatten()
                .map(|id| (*id, state.tasks[id].attempt))
                .collect();
            for (task, attempt) in desired.difference(&session.sent.clone()) {
                let t = &state.tasks[task];
                let gpus = t
                    .placement
                    .as_ref()
                    .map(|p| p.gpus.clone())
                    .unwrap_or_default();
                // The assigned agent gets every value; it is told which are
                // secret so that it keeps them out of what it reports.
                let msg = Kind::Assign(pb::Assign {
                    task_id: *task,
                    attempt: *attempt,
                    spec: Some(spec_to_proto(&t.spec, &Default::default())),
                    gpus,
                    secret_env: state.secret_env_names(t).into_iter().collect(),
                });
                if session
                    .tx
                    .try_send(Ok(LeaderMessage { kind: Some(msg) }))
                    .is_ok()
                {
                    session.sent.insert((*task, *attempt));
                }
            }
            for (task, attempt) in session.sent.clone().difference(&desired) {
                let reason = match state.tasks.get(task) {
                    Some(t) if t.state.is_terminal() => t
                        .outcome
                        .as_ref()
                        .map_or("finished".into(), |o| o.reason.clone()),
                    Some(t) if t.attempt != *attempt => {
                        format!("attempt {} superseded by {}", attempt, t.attempt)
                    }
                    Some(_) => "no longer placed on this node".into(),
                    None => "task forgotten".into(),
                };
                let msg = Kind::Cancel(pb::Cancel {
                    task_id: *task,
                    attempt: *attempt,
                    reason,
                });
                if session
                    .tx
                    .try_send(Ok(LeaderMessage { kind: Some(msg) }))
                    .is_ok()
                {
                    session.sent.remove(&(*task, *attempt));
                }
            }
        }
    }

    /// Asks `node`'s agent for part of an attempt's kept output. `Err` when
    /// the node has no session with this leader or does not answer in time.
    pub async fn read_output(
        &self,
        node: &str,
        task: TaskId,
        attempt: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<pb::OutputChunk, String> {
        let (id, tx, answer) = {
            let mut inner = self.lock();
            let tx = inner
                .sessions
                .get(node)
                .map(|s| s.tx.clone())
                .ok_or_else(|| format!("node {node} is not connected to the leader"))?;
            inner.next_output_request += 1;
            let id = inner.next_output_request;
            let (done, answer) = oneshot::channel();
            inner.output_waiters.insert(id, done);
            (id, tx, answer)
        };
        let request = pb::OutputRequest {
            request_id: id,
            task_id: task,
            attempt,
            offset,
            max_bytes,
        };
        let ended = || format!("node {node}'s session ended");
        let message = LeaderMessage {
            kind: Some(Kind::OutputRequest(request)),
        };
        let answered = match tx.send(Ok(message)).await {
            Err(_) => Err(ended()),
            Ok(()) => match tokio::time::timeout(OUTPUT_ANSWER_WAIT, answer).await {
                Ok(Ok(chunk)) => Ok(chunk),
                Ok(Err(_)) => Err(ended()),
                Err(_) => Err(format!(
                    "node {node} did not send the output within {} s",
                    OUTPUT_ANSWER_WAIT.as_secs()
                )),
            },
        };
        self.lock().output_waiters.remove(&id);
        answered
    }

    /// An agent's answer to [`Self::read_output`].
    pub fn output_arrived(&self, chunk: pb::OutputChunk) {
        if let Some(waiter) = self.lock().output_waiters.remove(&chunk.request_id) {
            let _ = waiter.send(chunk);
        }
    }

    /// Forgets every agent when leadership ends, and ends their streams: an
    /// agent left attached to a replica that steps down and is elected again
    /// would never be dispatched to (found by jepsen, see docs/jepsen.md).
    pub fn clear(&self) {
        let mut inner = self.lock();
        // Session ids stay unique across terms: a cancelled session's
        // `detach` must never remove a newer session.
        let (next_session, next_output_request) = (inner.next_session, inner.next_output_request);
        let old = std::mem::take(&mut *inner);
        inner.next_session = next_session;
        inner.next_output_request = next_output_request;
        for session in old.sessions.values() {
            session.end.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound() -> Outbound {
        mpsc::channel(4).0
    }

    #[test]
    fn losing_leadership_ends_every_session() {
        let hub = AgentHub::default();
        let (_, a) = hub.attach("a", "", outbound(), BTreeSet::new());
        let (_, b) = hub.attach("b", "", outbound(), BTreeSet::new());
        assert!(!a.is_cancelled() && !b.is_cancelled());
        hub.clear();
        assert!(a.is_cancelled() && b.is_cancelled());
    }

    #[test]
    fn a_new_session_ends_the_old_one_and_ids_stay_unique() {
        let hub = AgentHub::default();
        let (first, _) = hub.attach("a", "", outbound(), BTreeSet::new());
        hub.clear();
        let (second, old) = hub.attach("a", "", outbound(), BTreeSet::new());
        assert_ne!(first, second);
        // The first session's late detach must not remove the second.
        hub.detach("a", first);
        assert!(hub.lock().sessions.contains_key("a"));
        let (_, newer) = hub.attach("a", "", outbound(), BTreeSet::new());
        assert!(old.is_cancelled());
        assert!(!newer.is_cancelled());
    }

    #[test]
    fn only_the_serving_process_reopens_a_live_session() {
        let hub = AgentHub::default();
        let alive = Duration::from_secs(60);
        assert_eq!(
            hub.serving_another("a", "p1", alive),
            None,
            "no session yet"
        );
        hub.attach("a", "p1", outbound(), BTreeSet::new());
        assert_eq!(
            hub.serving_another("a", "p1", alive),
            None,
            "its own reconnect"
        );
        for other in ["p2", ""] {
            let why = hub.serving_another("a", other, alive).unwrap();
            assert!(why.contains("another agent process"), "{why}");
        }
        // Silent for longer than `alive`: a restarted process takes over.
        assert_eq!(hub.serving_another("a", "p2", Duration::ZERO), None);
        assert_eq!(hub.serving_another("b", "p2", alive), None);
    }
}
