//! `autoglm.v1.AgentService`: the agent's stream, served by the leader. A
//! follower redirects the agent to the leader and ends the stream.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto::agent_message::Kind as AgentKind;
use autoglm_client::proto::agent_service_server::AgentService;
use autoglm_client::proto::leader_message::Kind as LeaderKind;
use autoglm_client::proto::{self as pb, AgentMessage, LeaderMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::replica_status;
use crate::leader::hub::AgentHub;
use crate::leader::SchedulerSettings;
use crate::raft::group_commit::WriteResult;
use crate::replica::Replica;
use crate::scheduler::command::AttemptUpdate;
use crate::scheduler::limits::*;
use crate::scheduler::model::{Gpu, NodeCapacity};
use crate::scheduler::validate::{at_most, check_labels};
use crate::scheduler::{Command, Response as Applied};
use crate::security::{Principal, Via};

/// Messages buffered towards one agent.
const OUTBOUND_BUFFER: usize = 1024;

pub struct AgentApi {
    replica: Arc<Replica>,
    hub: Arc<AgentHub>,
    settings: SchedulerSettings,
}

impl AgentApi {
    pub fn new(replica: Arc<Replica>, hub: Arc<AgentHub>, settings: SchedulerSettings) -> Self {
        Self {
            replica,
            hub,
            settings,
        }
    }
}

fn capacity(r: &pb::Register) -> NodeCapacity {
    NodeCapacity {
        address: r.address.clone(),
        gpus: r
            .gpus
            .iter()
            .map(|g| Gpu {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mb: g.memory_mb,
            })
            .collect(),
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
        labels: r.labels.clone().into_iter().collect::<BTreeMap<_, _>>(),
        models_loaded: r.models_loaded.iter().cloned().collect(),
        slots_per_gpu: r.slots_per_gpu.max(1),
    }
}

/// Bounds on every string and list of a registration (the node's name is
/// bound by its certificate).
fn check_register(r: &pb::Register) -> Result<(), String> {
    at_most("register.node", r.node.len(), NODE_NAME_LEN_MAX)?;
    at_most("register.address", r.address.len(), ADDRESS_LEN_MAX)?;
    at_most("register.gpus", r.gpus.len(), NODE_GPUS_MAX)?;
    for g in &r.gpus {
        at_most("register.gpus.uuid", g.uuid.len(), NODE_NAME_LEN_MAX)?;
        at_most("register.gpus.model", g.model.len(), NODE_NAME_LEN_MAX)?;
        if g.memory_mb > GPU_MEMORY_MB_MAX {
            return Err(format!(
                "register.gpus.memory_mb: {} is over the limit of {GPU_MEMORY_MB_MAX}",
                g.memory_mb
            ));
        }
    }
    if r.cpu_millis > CPU_MILLIS_MAX || r.memory_mb > MEMORY_MB_MAX {
        return Err(format!(
            "register: cpu_millis at most {CPU_MILLIS_MAX}, memory_mb at most {MEMORY_MB_MAX}"
        ));
    }
    let labels = r.labels.clone().into_iter().collect();
    check_labels("register.labels", &labels)?;
    at_most(
        "register.models_loaded",
        r.models_loaded.len(),
        MODELS_LOADED_MAX,
    )?;
    for m in &r.models_loaded {
        at_most("register.models_loaded", m.len(), MODEL_NAME_LEN_MAX)?;
    }
    at_most("register.running", r.running.len(), RUNNING_REPORTED_MAX)
}

fn message(kind: LeaderKind) -> Result<LeaderMessage, Status> {
    Ok(LeaderMessage { kind: Some(kind) })
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<LeaderMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let principal = Principal::of(&request)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let stream: SessionStream = Box::pin(ReceiverStream::new(rx));
        if !self.replica.is_leader() {
            let leader_addr = self
                .replica
                .leader()
                .map(|(_, addr)| addr)
                .unwrap_or_default();
            let _ = tx
                .send(message(LeaderKind::Redirect(pb::Redirect { leader_addr })))
                .await;
            return Ok(Response::new(stream));
        }
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(AgentMessage {
                kind: Some(AgentKind::Register(r)),
            }) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be register",
                ))
            }
        };
        if register.node.is_empty() {
            return Err(Status::invalid_argument("register.node: required"));
        }
        check_register(&register).map_err(Status::invalid_argument)?;
        // An agent acts for the node its certificate names, and no other
        // (under --insecure, for whichever node it registers).
        if principal.via != Via::Insecure && principal.agent_node() != Some(register.node.as_str())
        {
            return Err(Status::permission_denied(format!(
                "register.node: {} is not the node this agent's certificate names ({})",
                crate::security::quote(&register.node),
                principal.agent_node().unwrap_or("none")
            )));
        }
        let node = register.node.clone();
        // Before the registration is proposed: a refused second process must
        // not change the node's capacity either.
        let alive = Duration::from_millis(2 * self.settings.heartbeat_interval_ms);
        if let Some(why) = self.hub.serving_another(&node, &register.instance, alive) {
            return Err(Status::already_exists(why));
        }
        let command = Command::RegisterNode {
            name: node.clone(),
            capacity: capacity(&register),
        };
        let applied = self
            .replica
            .propose_local(command, None)
            .await
            .map_err(replica_status)?;
        if let Applied::Rejected(reason) = applied {
            return Err(Status::invalid_argument(format!("register.{reason}")));
        }
        let running: BTreeSet<(u64, u32)> = register
            .running
            .iter()
            .map(|a| (a.task_id, a.attempt))
            .collect();
        let (session, end) = self
            .hub
            .attach(&node, &register.instance, tx.clone(), running);
        let registered = pb::Registered {
            heartbeat_interval_ms: self.settings.heartbeat_interval_ms,
            node_ttl_ms: self.settings.node_ttl_ms,
        };
        let _ = tx.send(message(LeaderKind::Registered(registered))).await;
        tracing::info!(node = %node, "agent session started");

        let (replica, hub) = (self.replica.clone(), self.hub.clone());
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = tx.closed() => break,
                    _ = end.cancelled() => break,
                };
                match next {
                    Ok(Some(AgentMessage {
                        kind: Some(AgentKind::Heartbeat(hb)),
                    })) => {
                        hub.heartbeat(&node, &hb);
                        // The answer renews the agent's lease, but only while a
                        // quorum still follows us: a cut-off leader must let
                        // its agents fence themselves.
                        if leading_with_quorum(&replica, registered.node_ttl_ms / 2) {
                            let _ = tx.try_send(message(LeaderKind::Registered(registered)));
                        }
                    }
                    Ok(Some(AgentMessage {
                        kind: Some(AgentKind::Report(report)),
                    })) => {
                        // Queued here, in the order the agent sent them (an
                        // attempt's `running` before its end); answered in
                        // the background, so one agent's reports share
                        // entries instead of waiting for each other's commit.
                        if let Some(report) = queue_report(&replica, &node, report) {
                            let (replica, hub, node, tx) =
                                (replica.clone(), hub.clone(), node.clone(), tx.clone());
                            tokio::spawn(async move {
                                report.answered(&replica, &hub, &node, &tx).await;
                            });
                        }
                    }
                    Ok(Some(AgentMessage {
                        kind: Some(AgentKind::Output(chunk)),
                    })) => hub.output_arrived(chunk),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            hub.detach(&node, session);
            tracing::info!(node = %node, "agent session ended");
        });
        Ok(Response::new(stream))
    }
}

fn leading_with_quorum(replica: &Replica, within_ms: u64) -> bool {
    let metrics = replica.raft.metrics().borrow().clone();
    let single_voter = metrics.membership_config.membership().voter_ids().count() == 1;
    metrics.state == openraft::ServerState::Leader
        && (single_voter
            || metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < within_ms))
}

/// A report queued for the log, waiting for its answer.
struct QueuedReport<F> {
    report: Report,
    answer: F,
}

/// What an agent reported about one attempt.
#[derive(Clone, Copy)]
struct Report {
    job: u64,
    task: u64,
    attempt: u32,
    /// For the log: running, succeeded, failed.
    status: &'static str,
    exit_code: Option<i32>,
    duration_ms: u64,
    finished: bool,
}

/// Turns an agent's report into a `ReportAttempt` and queues it; `None` for
/// a status that reports nothing, or when this replica takes no writes.
fn queue_report(
    replica: &Replica,
    node: &str,
    r: pb::AttemptReport,
) -> Option<QueuedReport<impl std::future::Future<Output = WriteResult> + Send + 'static>> {
    let update = match pb::AttemptStatus::try_from(r.status) {
        Ok(pb::AttemptStatus::Running) => AttemptUpdate::Running,
        Ok(pb::AttemptStatus::Succeeded) => AttemptUpdate::Succeeded {
            exit_code: r.exit_code,
            output_tail: r.output_tail.clone(),
        },
        Ok(pb::AttemptStatus::Failed) => AttemptUpdate::Failed {
            exit_code: r.exit_code,
            message: r.message.clone(),
            output_tail: r.output_tail.clone(),
        },
        _ => return None,
    };
    let finished = !matches!(update, AttemptUpdate::Running);
    let status = match update {
        AttemptUpdate::Running => "running",
        AttemptUpdate::Succeeded { .. } => "succeeded",
        AttemptUpdate::Failed { .. } => "failed",
    };
    let job = replica
        .state
        .read()
        .state
        .tasks
        .get(&r.task_id)
        .map_or(0, |t| t.job_id);
    let command = Command::ReportAttempt {
        task: r.task_id,
        attempt: r.attempt,
        node: node.to_string(),
        update,
    };
    match replica.enqueue_local(command, None) {
        Ok(answer) => Some(QueuedReport {
            report: Report {
                job,
                task: r.task_id,
                attempt: r.attempt,
                status,
                exit_code: r.exit_code,
                duration_ms: r.duration_ms,
                finished,
            },
            answer,
        }),
        Err(e) => {
            tracing::warn!(
                node,
                job,
                task = r.task_id,
                attempt = r.attempt,
                "report not queued: {e}"
            );
            None
        }
    }
}

impl Report {
    /// A failure is news to an operator; a start or a success is routine.
    fn log(&self, node: &str) {
        let (job, task, attempt, status) = (self.job, self.task, self.attempt, self.status);
        let exit_code = self.exit_code;
        if status == "failed" {
            tracing::info!(node, job, task, attempt, exit_code, "attempt {status}");
        } else {
            tracing::debug!(node, job, task, attempt, exit_code, "attempt {status}");
        }
    }
}

impl<F: std::future::Future<Output = WriteResult>> QueuedReport<F> {
    async fn answered(
        self,
        replica: &Replica,
        hub: &AgentHub,
        node: &str,
        tx: &crate::leader::hub::Outbound,
    ) {
        let r = self.report;
        match replica.written(self.answer.await) {
            Ok(Applied::Stale { current_attempt }) => {
                let stale = pb::Stale {
                    task_id: r.task,
                    attempt: r.attempt,
                    current_attempt,
                };
                let _ = tx.send(message(LeaderKind::Stale(stale))).await;
                hub.finished(node, r.task, r.attempt, r.duration_ms);
            }
            Ok(_) => {
                r.log(node);
                if r.finished {
                    hub.finished(node, r.task, r.attempt, r.duration_ms);
                }
            }
            // Leadership lost: the agent reconnects and reports again to the new leader.
            Err(e) => tracing::warn!(
                node,
                job = r.job,
                task = r.task,
                attempt = r.attempt,
                "report not committed: {e}"
            ),
        }
    }
}
