//! The leader loops themselves. Each reads the replicated state, decides, and
//! proposes; none mutates anything but through the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::decide;
use super::hub::AgentHub;
use super::runtime::Runtime;
use super::SchedulerSettings;
use crate::metrics::Events;
use crate::replica::{wall_clock_ms, Replica};
use crate::scheduler::command::{Command, RequeueReason};
use crate::scheduler::model::NodeName;
use crate::scheduler::placement::{policy_by_name, Policy};
use crate::scheduler::SchedulerState;

/// How often dispatch, liveness and timers run.
const DISPATCH_INTERVAL: Duration = Duration::from_millis(50);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(decide::LIVENESS_INTERVAL_MS);
const TIMER_INTERVAL: Duration = Duration::from_millis(decide::TIMER_INTERVAL_MS);

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
    /// When this leader last migrated an attempt off each node (wall ms).
    migrated: BTreeMap<NodeName, u64>,
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
        let started = Instant::now();
        let (commands, decided) = {
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
            let now_ms = wall_clock_ms();
            let commands = decide::placement_round(
                state,
                &live,
                policy.as_mut(),
                &runtime,
                now_ms,
                &mut self.rng,
                &mut self.migrated,
            );
            let decided: Vec<Decided> = commands
                .iter()
                .map(|c| Decided::of(c, state, now_ms))
                .collect();
            (commands, decided)
        };
        replica
            .events
            .placement_round
            .observe(started.elapsed().as_secs_f64());
        if commands.is_empty() {
            return;
        }
        self.in_flight.store(true, Ordering::Release);
        let (replica, in_flight) = (replica.clone(), self.in_flight.clone());
        tokio::spawn(async move {
            for (c, decided) in commands.into_iter().zip(decided) {
                match replica.propose_local(c, None).await {
                    Ok(_) => decided.count(&replica.events),
                    Err(e) => tracing::debug!("placement proposal not committed: {e}"),
                }
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

/// What one placement command does, counted in the metrics and logged once
/// committed.
#[derive(Default)]
struct Decided {
    placements: u64,
    retries: u64,
    preemptions: u64,
    migrations: u64,
    /// Seconds from ready to placed, of first attempts.
    waits: Vec<f64>,
    /// One per attempt placed or taken away, for the log.
    moves: Vec<Move>,
}

/// An attempt placed on a node, or taken off it (`requeued` names why).
struct Move {
    job: u64,
    task: u64,
    attempt: u32,
    node: NodeName,
    gpus: Vec<u32>,
    requeued: Option<RequeueReason>,
}

impl Move {
    fn log(&self) {
        let Move {
            job,
            task,
            attempt,
            node,
            ..
        } = self;
        match self.requeued {
            None => tracing::debug!(job, task, attempt, node, gpus = ?self.gpus, "attempt placed"),
            Some(reason) => tracing::info!(
                job,
                task,
                attempt,
                node,
                reason = reason.as_str(),
                "attempt taken off its node"
            ),
        }
    }
}

impl Decided {
    fn of(command: &Command, state: &SchedulerState, now_ms: u64) -> Self {
        let mut d = Decided::default();
        match command {
            Command::Assign { assignments } => {
                for a in assignments {
                    d.placements += 1;
                    d.moves.push(Move {
                        job: state.tasks.get(&a.task).map_or(0, |t| t.job_id),
                        task: a.task,
                        attempt: a.attempt,
                        node: a.node.clone(),
                        gpus: a.gpus.clone(),
                        requeued: None,
                    });
                    if a.attempt > 1 {
                        d.retries += 1;
                    } else if let Some(task) = state.tasks.get(&a.task) {
                        d.waits
                            .push(now_ms.saturating_sub(task.queued_ms) as f64 / 1000.0);
                    }
                }
            }
            Command::Requeue {
                task,
                attempt,
                reason,
            } => {
                match reason {
                    RequeueReason::Preempted => d.preemptions += 1,
                    RequeueReason::Migrated => d.migrations += 1,
                    RequeueReason::NodeLost => {}
                }
                if let Some(t) = state.tasks.get(task) {
                    d.moves.push(Move {
                        job: t.job_id,
                        task: *task,
                        attempt: *attempt,
                        node: t
                            .placement
                            .as_ref()
                            .map(|p| p.node.clone())
                            .unwrap_or_default(),
                        gpus: Vec::new(),
                        requeued: Some(*reason),
                    });
                }
            }
            _ => {}
        }
        d
    }

    fn count(&self, events: &Events) {
        events.placements.inc_by(self.placements);
        events.retries.inc_by(self.retries);
        events.preemptions.inc_by(self.preemptions);
        events.migrations.inc_by(self.migrations);
        for w in &self.waits {
            events.submit_to_assign.observe(*w);
        }
        for m in &self.moves {
            m.log();
        }
    }
}

/// Liveness on a monotonic clock that starts with this leadership.
fn liveness(replica: &Arc<Replica>, hub: &AgentHub, settings: &SchedulerSettings, since: Instant) {
    let commands = decide::liveness(
        &replica.state.read().state,
        |node| hub.contact(node, since),
        since.elapsed().as_millis() as u64,
        0,
        settings.node_ttl_ms,
    );
    for c in commands {
        propose(replica, c);
    }
}

fn timeouts(replica: &Arc<Replica>) {
    let expired = {
        let state = &replica.state.read().state;
        let expired = decide::timed_out_attempts(state, wall_clock_ms());
        for c in &expired {
            if let Command::AttemptTimedOut { task, attempt } = c {
                let t = state.tasks.get(task);
                let job = t.map_or(0, |t| t.job_id);
                let node = t
                    .and_then(|t| t.placement.as_ref())
                    .map(|p| p.node.as_str());
                tracing::info!(job, task, attempt, node, "attempt timed out");
            }
        }
        expired
    };
    for c in expired {
        propose(replica, c);
    }
}
