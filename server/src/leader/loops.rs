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
use crate::replica::{wall_clock_ms, Replica};
use crate::scheduler::command::Command;
use crate::scheduler::model::NodeName;
use crate::scheduler::placement::{policy_by_name, Policy};

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
        let commands = {
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
            decide::placement_round(
                state,
                &live,
                policy.as_mut(),
                &runtime,
                wall_clock_ms(),
                &mut self.rng,
                &mut self.migrated,
            )
        };
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
    let expired = decide::timed_out_attempts(&replica.state.read().state, wall_clock_ms());
    for c in expired {
        propose(replica, c);
    }
}
