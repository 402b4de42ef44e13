//! The leader loops themselves. Each reads the replicated state, decides, and
//! proposes; none mutates anything but through the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::hub::AgentHub;
use super::runtime::Runtime;
use super::SchedulerSettings;
use crate::replica::{wall_clock_ms, Replica};
use crate::scheduler::command::{Command, RequeueReason};
use crate::scheduler::model::{Liveness, TaskId, TaskState};
use crate::scheduler::placement::{place, policy_by_name, preemption_victims, Policy};

/// How often dispatch, liveness and timers run.
const DISPATCH_INTERVAL: Duration = Duration::from_millis(50);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(250);
const TIMER_INTERVAL: Duration = Duration::from_millis(200);
/// A node is not migrated from again within this long.
const MIGRATION_COOLDOWN: Duration = Duration::from_secs(10);

pub fn start(
    replica: Arc<Replica>,
    hub: Arc<AgentHub>,
    settings: SchedulerSettings,
    token: CancellationToken,
) {
    let since = Instant::now();
    spawn_every(
        token.clone(),
        Duration::from_millis(settings.placement_interval_ms.max(1)),
        {
            let (replica, hub, settings) = (replica.clone(), hub.clone(), settings.clone());
            let mut placer = Placer {
                policy: None,
                rng: rand::rngs::StdRng::from_os_rng(),
                migrated: BTreeMap::new(),
                in_flight: Arc::new(AtomicBool::new(false)),
            };
            move || {
                if since.elapsed() >= Duration::from_millis(settings.election_grace_ms) {
                    placer.round(&replica, &hub);
                }
            }
        },
    );
    spawn_every(token.clone(), DISPATCH_INTERVAL, {
        let (replica, hub) = (replica.clone(), hub.clone());
        move || hub.dispatch(&replica.state.read().state)
    });
    spawn_every(token.clone(), LIVENESS_INTERVAL, {
        let (replica, hub, settings) = (replica.clone(), hub.clone(), settings.clone());
        move || liveness(&replica, &hub, &settings, since)
    });
    spawn_every(token.clone(), TIMER_INTERVAL, {
        let replica = replica.clone();
        move || timeouts(&replica)
    });
    spawn_every(
        token,
        Duration::from_millis(settings.gc_interval_ms.max(1)),
        move || {
            let cutoff = wall_clock_ms().saturating_sub(settings.job_retention_ms);
            propose(
                &replica,
                Command::CollectGarbage {
                    finished_before_ms: cutoff,
                },
            );
        },
    );
}

/// Runs `tick` every `period` until cancelled.
fn spawn_every(
    token: CancellationToken,
    period: Duration,
    mut tick: impl FnMut() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = interval.tick() => tick(),
            }
        }
    });
}

/// Proposes in the background; a failure (lost leadership) is logged, and the
/// next leader decides again from the replicated state.
fn propose(replica: &Arc<Replica>, command: Command) {
    let replica = replica.clone();
    tokio::spawn(async move {
        if let Err(e) = replica.propose_local(command, None).await {
            tracing::debug!("leader proposal not committed: {e}");
        }
    });
}

struct Placer {
    policy: Option<Box<dyn Policy>>,
    rng: rand::rngs::StdRng,
    migrated: BTreeMap<String, Instant>,
    /// Set while this placer's proposals are uncommitted: a round on a state
    /// that does not show them yet would propose the same tasks again.
    in_flight: Arc<AtomicBool>,
}

impl Placer {
    fn round(&mut self, replica: &Arc<Replica>, hub: &AgentHub) {
        if self.in_flight.load(Ordering::Acquire) {
            return;
        }
        let live = hub.live_view();
        let mut commands = Vec::new();
        {
            let applied = replica.state.read();
            let state = &applied.state;
            let runtime = Runtime::read(state);
            if self
                .policy
                .as_ref()
                .is_none_or(|p| p.name() != runtime.policy)
            {
                self.policy = policy_by_name(&runtime.policy)
                    .or_else(|| policy_by_name(crate::scheduler::settings::DEFAULT_POLICY));
            }
            let Some(policy) = self.policy.as_mut() else {
                return;
            };
            let now = wall_clock_ms();
            let batch = place(
                state,
                &live,
                policy.as_mut(),
                &runtime.placement,
                now,
                &mut self.rng,
            );
            let placed: Vec<TaskId> = batch.iter().map(|a| a.task).collect();
            if !batch.is_empty() {
                commands.push(Command::Assign { assignments: batch });
            }
            // The highest queued task that fits nowhere may evict much lower priorities.
            let first_unplaced =
                crate::scheduler::placement::queue_order(state, runtime.placement.aging_ms, now)
                    .find(|t| !placed.contains(&t.id) && t.not_before_ms <= now);
            if let Some(task) = first_unplaced {
                for (victim, attempt) in preemption_victims(state, task, runtime.preemption_gap) {
                    commands.push(Command::Requeue {
                        task: victim,
                        attempt,
                        reason: RequeueReason::Preempted,
                    });
                }
            }
            for (node, l) in &live {
                let hot = l.gpu_mem_used > runtime.migration_threshold
                    || l.mem_util > runtime.migration_threshold;
                let cooled = self
                    .migrated
                    .get(node)
                    .is_none_or(|t| t.elapsed() > MIGRATION_COOLDOWN);
                if !(hot && cooled) {
                    continue;
                }
                let lowest = state
                    .placed
                    .get(node)
                    .into_iter()
                    .flatten()
                    .map(|id| &state.tasks[id])
                    .min_by_key(|t| (t.spec.priority, std::cmp::Reverse(t.id)));
                if let Some(t) = lowest {
                    commands.push(Command::Requeue {
                        task: t.id,
                        attempt: t.attempt,
                        reason: RequeueReason::Migrated,
                    });
                    self.migrated.insert(node.clone(), Instant::now());
                }
            }
        }
        if commands.is_empty() {
            return;
        }
        self.in_flight.store(true, Ordering::Release);
        let (replica, in_flight) = (replica.clone(), self.in_flight.clone());
        tokio::spawn(async move {
            for c in commands {
                if let Err(e) = replica.propose_local(c, None).await {
                    tracing::debug!("placement proposal not committed: {e}");
                }
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

fn liveness(replica: &Arc<Replica>, hub: &AgentHub, settings: &SchedulerSettings, since: Instant) {
    let ttl = Duration::from_millis(settings.node_ttl_ms);
    let mut commands = Vec::new();
    {
        let applied = replica.state.read();
        let remove_after =
            Duration::from_millis(Runtime::read(&applied.state).node_remove_after_ms);
        for node in applied.state.nodes.values() {
            // Never judge a node before a full TTL under this leadership.
            let seen = hub.last_seen(&node.name).map_or(since, |s| s.max(since));
            let silent = seen.elapsed() > ttl;
            // Registered and then silent for long (never heartbeating, or
            // gone for good): forgotten, so fake or dead nodes do not pile up.
            if seen.elapsed() > remove_after && !hub.is_connected(&node.name) {
                commands.push(Command::RemoveNode {
                    name: node.name.clone(),
                });
                continue;
            }
            match node.liveness {
                Liveness::Up if silent => commands.push(Command::SetNodeLiveness {
                    name: node.name.clone(),
                    up: false,
                }),
                Liveness::Down if !silent && hub.is_connected(&node.name) => {
                    commands.push(Command::SetNodeLiveness {
                        name: node.name.clone(),
                        up: true,
                    })
                }
                _ => {}
            }
        }
    }
    for c in commands {
        propose(replica, c);
    }
}

fn timeouts(replica: &Arc<Replica>) {
    let now = wall_clock_ms();
    let expired: Vec<Command> = {
        let applied = replica.state.read();
        applied
            .state
            .placed
            .values()
            .flatten()
            .map(|id| &applied.state.tasks[id])
            .filter(|t| matches!(t.state, TaskState::Assigned | TaskState::Running))
            .filter(|t| {
                t.placement
                    .as_ref()
                    .is_some_and(|p| p.assigned_ms.saturating_add(t.spec.attempt_timeout_ms) < now)
            })
            .map(|t| Command::AttemptTimedOut {
                task: t.id,
                attempt: t.attempt,
            })
            .collect()
    };
    for c in expired {
        propose(replica, c);
    }
}
