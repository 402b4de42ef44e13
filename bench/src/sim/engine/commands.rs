//! The scheduler side: every command goes through the real
//! `SchedulerState::apply`, after the Raft commit delay (or after a failover
//! pause). Tracks what the metrics need from the responses: when tasks
//! could first run, where attempts were placed, the leader's latency EWMA.

use std::collections::{BTreeMap, BTreeSet};

use autoglm_server::leader::decide::latency_ewma;
use autoglm_server::scheduler::cache::{payload_sha256, CacheRequest};
use autoglm_server::scheduler::command::{AttemptUpdate, Command, Response};
use autoglm_server::scheduler::format::ENTRY_FORMAT_MAX;
use autoglm_server::scheduler::model::{
    Dependency, EdgeCondition, Payload, Resources, RetryPolicy, TaskId, TaskSpec,
};
use autoglm_server::scheduler::Proposal;
use rand::{Rng, RngCore};

use super::events::Ev;
use super::{Sim, TaskTrack};

pub const MODEL_NAME: &str = "llama-3-8b";
/// The `max_output_tokens` every simulated request asks for (trace max: 992).
pub const MAX_OUTPUT_TOKENS: u32 = 1_024;

impl Sim {
    /// Applies a command now, through the real state machine, in the entry
    /// format a new cluster writes.
    pub(super) fn apply_now(&mut self, command: &Command) -> Response {
        self.index += 1;
        let seed = self.rng.next_u64();
        let proposal = Proposal {
            format: ENTRY_FORMAT_MAX,
            ..Proposal::new(self.now / 1000, seed, command.clone(), None)
        };
        self.state.apply(self.index, &proposal)
    }

    /// Proposes a command: it is applied once committed, or after the
    /// failover pause if the leader is down (clients and agents retry).
    pub(super) fn propose(&mut self, command: Command, ran: Option<(usize, u64)>) {
        let at = self.now.max(self.paused_until) + self.cfg.commit_ms * 1000;
        self.push(at, Ev::Apply { command, ran });
    }

    fn task_spec(&self, job: usize, k: usize) -> TaskSpec {
        let t = &self.jobs[job].tasks[k];
        TaskSpec {
            name: format!("t{k}"),
            model: Some(MODEL_NAME.into()),
            input_tokens: t.input_tokens,
            // What a client asks for is a cap, not the length it will get:
            // policies must not see the true output length.
            max_output_tokens: MAX_OUTPUT_TOKENS,
            resources: Resources {
                gpus: 1,
                gpu_memory_mb: 1_000,
                cpu_millis: 0,
                memory_mb: 0,
            },
            priority: t.priority,
            labels: BTreeMap::new(),
            attempt_timeout_ms: self.cfg.attempt_timeout_ms,
            retry: RetryPolicy {
                max_attempts: self.cfg.max_attempts,
                backoff_base_ms: self.cfg.backoff_base_ms,
                ..RetryPolicy::default()
            },
            payload: Payload::Sim { service_ms: 0 },
            depends_on: t
                .deps
                .iter()
                .map(|d| Dependency {
                    task: format!("t{d}"),
                    condition: EdgeCondition::OnSuccess,
                })
                .collect(),
        }
    }

    pub(super) fn arrive(&mut self, j: usize) {
        self.arrivals_left -= 1;
        let n = self.jobs[j].tasks.len();
        self.offered += n as u64;
        if self.state.queue.len() >= self.cfg.queue_max {
            self.shed += n as u64;
            return;
        }
        let tasks: Vec<TaskSpec> = (0..n).map(|k| self.task_spec(j, k)).collect();
        let cache: BTreeMap<String, CacheRequest> = tasks
            .iter()
            .zip(&self.jobs[j].tasks)
            .filter_map(|(spec, t)| {
                let request = CacheRequest {
                    key: format!("request-{}", t.cache_key?),
                    ttl_ms: 0,
                    refresh: false,
                    payload_sha256: payload_sha256(&spec.payload),
                };
                Some((spec.name.clone(), request))
            })
            .collect();
        let command = if cache.is_empty() {
            Command::SubmitJob {
                client_id: "sim".into(),
                idempotency_key: format!("job-{j}"),
                tasks,
            }
        } else {
            Command::SubmitJobWithCache {
                owner: "sim".into(),
                client_id: "sim".into(),
                idempotency_key: format!("job-{j}"),
                tasks,
                secret_env: BTreeMap::new(),
                cache,
            }
        };
        self.propose(command, None);
    }

    pub(super) fn on_apply(&mut self, command: Command, ran: Option<(usize, u64)>) {
        // Release time of dependent tasks: when they were queued, read before
        // their first assignment changes it.
        if let Command::Assign { assignments } = &command {
            self.assign_in_flight = false;
            for a in assignments {
                if a.attempt == 1 {
                    let queued = self.state.tasks.get(&a.task).map(|t| t.queued_ms);
                    if let (Some(tr), Some(q)) = (self.tracks.get_mut(&a.task), queued) {
                        tr.release_us.get_or_insert(q * 1000);
                    }
                }
            }
        }
        let response = self.apply_now(&command);
        match (&command, &response) {
            (
                Command::SubmitJob {
                    idempotency_key, ..
                }
                | Command::SubmitJobWithCache {
                    idempotency_key, ..
                },
                Response::JobAccepted { tasks, .. } | Response::JobAcceptedAt { tasks, .. },
            ) => {
                let j: usize = idempotency_key[4..].parse().expect("job-N");
                let arrival = self.job_arrival_us[j];
                for (name, id) in tasks {
                    let k: usize = name[1..].parse().expect("tN");
                    let root = self.jobs[j].tasks[k].deps.is_empty();
                    self.tracks.insert(
                        *id,
                        TaskTrack {
                            job: j,
                            k,
                            release_us: root.then_some(arrival),
                            done: Vec::new(),
                        },
                    );
                    self.open.insert(*id);
                }
            }
            (Command::Assign { assignments }, Response::Changed(ids)) => {
                let ids: BTreeSet<TaskId> = ids.iter().copied().collect();
                for a in assignments.iter().filter(|a| ids.contains(&a.task)) {
                    let node = self.node_index[&a.node];
                    self.in_transit[node] += 1;
                    self.placements.push((self.now, node));
                    let delay = self.rng.random_range(0..=self.cfg.dispatch_ms * 1000);
                    self.push(
                        self.now + delay,
                        Ev::Start {
                            node,
                            task: a.task,
                            attempt: a.attempt,
                        },
                    );
                }
            }
            (
                Command::ReportAttempt {
                    update: AttemptUpdate::Succeeded { .. },
                    ..
                },
                Response::Changed(_),
            ) => {
                if let Some((node, ms)) = ran {
                    let name = self.nodes[node].name.clone();
                    let previous = self.ewma.get(&name).copied();
                    self.ewma.insert(name, latency_ewma(previous, ms));
                }
            }
            (
                Command::AttemptTimedOut { task, .. } | Command::Requeue { task, .. },
                Response::Changed(_),
            ) => {
                self.cancel_if_moved(*task);
            }
            (Command::SetNodeLiveness { .. }, Response::Changed(ids)) => {
                for id in ids.clone() {
                    self.cancel_if_moved(id);
                }
            }
            _ => {}
        }
        if !self.state.queue.is_empty() {
            self.ensure_tick();
        }
    }
}
