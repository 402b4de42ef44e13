//! Nemeses: faults with a start and a stop, drawn from a seeded schedule
//! and recorded in the history as `nemesis` operations (`start` / `stop`,
//! with what exactly was done), so the report can shade their windows and
//! the cluster checker can prove each requested one ran.

mod agents;
mod disk;
mod membership;
mod network;
mod process;
mod upgrade;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::db::Db;
use crate::recorder::{Event, Recorder};

/// Every fault the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    PartitionOne,
    PartitionHalves,
    PartitionLeaderMinority,
    PartitionLeaderMajority,
    PartitionBridge,
    PartitionRing,
    KillOne,
    KillLeader,
    KillMinority,
    KillAll,
    KillLeaderFast,
    PauseOne,
    PauseLeader,
    PauseMinority,
    Clock,
    Loss,
    Membership,
    Upgrade,
    Disk,
    PartitionClient,
    PauseAgent,
    ClockAgent,
}

use Kind::*;

pub const ALL: &[Kind] = &[
    PartitionOne,
    PartitionHalves,
    PartitionLeaderMinority,
    PartitionLeaderMajority,
    PartitionBridge,
    PartitionRing,
    KillOne,
    KillLeader,
    KillMinority,
    KillAll,
    KillLeaderFast,
    PauseOne,
    PauseLeader,
    PauseMinority,
    Clock,
    Loss,
    Membership,
    Upgrade,
    Disk,
    PartitionClient,
    PauseAgent,
    ClockAgent,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            PartitionOne => "partition-one",
            PartitionHalves => "partition-halves",
            PartitionLeaderMinority => "partition-leader-minority",
            PartitionLeaderMajority => "partition-leader-majority",
            PartitionBridge => "partition-bridge",
            PartitionRing => "partition-ring",
            KillOne => "kill-one",
            KillLeader => "kill-leader",
            KillMinority => "kill-minority",
            KillAll => "kill-all",
            KillLeaderFast => "kill-leader-fast",
            PauseOne => "pause-one",
            PauseLeader => "pause-leader",
            PauseMinority => "pause-minority",
            Clock => "clock",
            Loss => "loss",
            Membership => "membership",
            Upgrade => "upgrade",
            Disk => "disk",
            PartitionClient => "partition-client",
            PauseAgent => "pause-agent",
            ClockAgent => "clock-agent",
        }
    }

    /// Faults that can be laid over another one without taking the quorum away.
    fn is_overlay(self) -> bool {
        matches!(self, Clock | Loss)
    }

    /// Bridge and ring need five replicas to differ from plain halves.
    fn min_nodes(self) -> usize {
        match self {
            PartitionBridge | PartitionRing => 5,
            _ => 3,
        }
    }
}

/// Parses `--nemesis`: kinds, groups (`partition`, `kill`, `pause`) or `all`.
pub fn parse(spec: &str, nodes: usize) -> Result<Vec<Kind>> {
    let mut out = BTreeSet::new();
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let group: Vec<Kind> = match word {
            "all" => ALL.to_vec(),
            "none" => vec![],
            "partition" | "kill" | "pause" => ALL
                .iter()
                .copied()
                .filter(|k| k.name().starts_with(word))
                .collect(),
            _ => match ALL.iter().find(|k| k.name() == word) {
                Some(k) => vec![*k],
                None => bail!(
                    "--nemesis: unknown fault '{word}' (known: all, partition, kill, pause, {})",
                    ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        for k in group {
            if k.min_nodes() > nodes {
                if word == k.name() {
                    bail!(
                        "--nemesis: {} needs at least {} nodes",
                        k.name(),
                        k.min_nodes()
                    );
                }
                continue;
            }
            out.insert(k);
        }
    }
    Ok(out.into_iter().collect())
}

/// Timing of the schedule.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Fault-free stretch between two faults.
    pub quiet: (Duration, Duration),
    /// How long a fault lasts.
    pub fault: (Duration, Duration),
    /// Chance that an overlay (clock, loss) joins a fault.
    pub overlay_chance: f64,
}

impl ScheduleSettings {
    /// Long runs: faults of 4–12 s between fault-free stretches of 3–8 s.
    pub fn long() -> Self {
        Self {
            quiet: (Duration::from_secs(3), Duration::from_secs(8)),
            fault: (Duration::from_secs(4), Duration::from_secs(12)),
            overlay_chance: 0.3,
        }
    }

    /// Smoke tests: shorter, so a minute holds every requested fault.
    pub fn short() -> Self {
        Self {
            quiet: (Duration::from_secs(2), Duration::from_secs(4)),
            fault: (Duration::from_secs(3), Duration::from_secs(7)),
            overlay_chance: 0.3,
        }
    }
}

/// A fault in effect: what `stop` must undo.
#[derive(Debug, Clone, Default)]
pub struct Active {
    /// Hosts with iptables rules installed.
    pub filtered: Vec<crate::net::Host>,
    /// Replicas killed, to restart.
    pub killed: Vec<String>,
    /// Replicas paused, to resume.
    pub paused: Vec<String>,
    /// Replicas running under faketime, to restart normally.
    pub skewed: Vec<String>,
    /// Replica removed from the membership and wiped, to add back.
    pub removed: Option<String>,
    /// Agents paused, to resume.
    pub paused_agents: Vec<String>,
    /// Agents running under faketime, to restart normally.
    pub skewed_agents: Vec<String>,
}

/// Runs faults until `duration` has passed, then stops the last one.
pub async fn run_schedule(
    db: Arc<Mutex<Db>>,
    recorder: Arc<Recorder>,
    kinds: Vec<Kind>,
    settings: ScheduleSettings,
    duration: Duration,
    rng: &mut StdRng,
) {
    let started = tokio::time::Instant::now();
    let end = started + duration;
    let mut unrun: Vec<Kind> = kinds.clone();
    unrun.shuffle(rng);
    let mut succeeded = BTreeSet::new();
    let main: Vec<Kind> = kinds.iter().copied().filter(|k| !k.is_overlay()).collect();
    let overlays: Vec<Kind> = kinds.iter().copied().filter(|k| k.is_overlay()).collect();
    loop {
        // Until every requested fault has run once, stretches take their
        // shortest lengths, so a short run holds all of them.
        let first_round = !unrun.is_empty();
        let quiet = if first_round {
            settings.quiet.0
        } else {
            between(rng, settings.quiet)
        };
        tokio::time::sleep(quiet).await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        // Never-run kinds first, so every requested fault happens.
        let first = unrun.pop().or_else(|| {
            if main.is_empty() || (!overlays.is_empty() && rng.random_bool(0.2)) {
                overlays.choose(rng).copied()
            } else {
                main.choose(rng).copied()
            }
        });
        let Some(first) = first else { break };
        let mut step = vec![first];
        if !first.is_overlay() && rng.random_bool(settings.overlay_chance) {
            if let Some(o) = overlays.choose(rng) {
                step.push(*o);
                unrun.retain(|k| k != o);
            }
        }
        let mut active = Vec::new();
        for kind in &step {
            let started = start(&db, &recorder, *kind, rng).await;
            if started.is_some() {
                succeeded.insert(*kind);
            } else if !succeeded.contains(kind) && !unrun.contains(kind) {
                // Never applied yet (no leader at the time, say): it goes
                // back to the front, so every requested fault happens.
                unrun.push(*kind);
            }
            active.push((*kind, started));
        }
        let fault = if first_round {
            settings.fault.0
        } else {
            between(rng, settings.fault)
        };
        let hold = fault.min(
            end.saturating_duration_since(tokio::time::Instant::now()) + Duration::from_secs(1),
        );
        tokio::time::sleep(hold).await;
        for (kind, a) in active.into_iter().rev() {
            if let Some(a) = a {
                stop(&db, &recorder, kind, a).await;
            }
        }
    }
}

fn between(rng: &mut StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
}

fn event(kind: Kind) -> Event<'static> {
    Event {
        process: "nemesis",
        node: "",
        f: kind.name(),
        key: None,
    }
}

/// Starts one fault; `None` when it could not be applied (recorded as `fail`).
async fn start(
    db: &Arc<Mutex<Db>>,
    recorder: &Recorder,
    kind: Kind,
    rng: &mut StdRng,
) -> Option<Active> {
    let e = event(kind);
    recorder.invoke(&e, json!({"phase": "start"}));
    let result = match kind {
        PartitionOne
        | PartitionHalves
        | PartitionLeaderMinority
        | PartitionLeaderMajority
        | PartitionBridge
        | PartitionRing => network::partition(db, kind, rng).await,
        Loss => network::loss(db, rng).await,
        KillOne | KillLeader | KillMinority | KillAll | KillLeaderFast => {
            process::kill(db, kind, rng).await
        }
        PauseOne | PauseLeader | PauseMinority => process::pause(db, kind, rng).await,
        Clock => process::skew(db, rng).await,
        Membership => membership::remove(db, rng).await,
        Upgrade => upgrade::step(db, rng).await,
        Disk => disk::damage_one(db, rng).await,
        PartitionClient => network::partition_client(db, rng).await,
        PauseAgent => agents::pause(db, rng).await,
        ClockAgent => agents::skew(db, rng).await,
    };
    match result {
        Ok((active, detail)) => {
            recorder.ok(&e, with_phase("start", detail));
            Some(active)
        }
        Err(err) => {
            recorder.fail(&e, format!("{err:#}"));
            None
        }
    }
}

/// Undoes a fault; retried until it succeeds, since a fault left in place
/// would take the next ones beyond what the cluster must survive.
async fn stop(db: &Arc<Mutex<Db>>, recorder: &Recorder, kind: Kind, active: Active) {
    let e = event(kind);
    recorder.invoke(&e, json!({"phase": "stop"}));
    for attempt in 0..20 {
        let result = match kind {
            Membership => membership::add_back(db, &active).await,
            Disk if active.removed.is_some() => membership::add_back(db, &active).await,
            _ => heal(db, &active).await,
        };
        match result {
            Ok(detail) => {
                recorder.ok(&e, with_phase("stop", detail));
                return;
            }
            Err(err) if attempt == 19 => {
                recorder.info(&e, format!("could not undo: {err:#}"));
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Undoes every non-membership fault in `active`.
pub async fn heal(db: &Arc<Mutex<Db>>, active: &Active) -> Result<Value> {
    network::clear(&active.filtered)?;
    let mut db = db.lock().await;
    for name in &active.paused {
        if db.is_paused(name) {
            db.pause_replica(name, false)?;
        }
    }
    for name in &active.killed {
        if !db.replica(name)?.is_running() {
            db.start_replica(name, None)?;
        }
    }
    for name in &active.skewed {
        db.kill_replica(name)?;
        db.start_replica(name, None)?;
    }
    for name in &active.paused_agents {
        if db.is_agent_paused(name) {
            db.pause_agent(name, false)?;
        }
    }
    for name in &active.skewed_agents {
        db.restart_agent(name, None)?;
    }
    let healed = active.filtered.len()
        + active.paused.len()
        + active.killed.len()
        + active.skewed.len()
        + active.paused_agents.len()
        + active.skewed_agents.len();
    Ok(json!({ "healed": healed }))
}

fn with_phase(phase: &str, detail: Value) -> Value {
    let mut v = json!({"phase": phase});
    if let (Some(m), Value::Object(d)) = (v.as_object_mut(), detail) {
        m.extend(d);
    }
    v
}

/// Running replicas, in name order.
pub(crate) fn running(db: &Db) -> Vec<String> {
    db.replicas
        .iter()
        .filter(|(_, r)| r.is_running())
        .map(|(n, _)| n.clone())
        .collect()
}

/// Host name of the current leader, asked of every running replica.
pub async fn leader(db: &Arc<Mutex<Db>>) -> Option<String> {
    let (endpoints, names): (Vec<String>, Vec<(u64, String)>) = {
        let db = db.lock().await;
        (
            db.endpoints(),
            db.replicas
                .values()
                .map(|r| (r.id, r.host.name.clone()))
                .collect(),
        )
    };
    let statuses = crate::control::statuses(&endpoints, Duration::from_millis(400)).await;
    let best = statuses
        .iter()
        .flatten()
        .filter(|s| s.role == autoglm_client::proto::Role::Leader as i32)
        .max_by_key(|s| s.term)?;
    names
        .iter()
        .find(|(id, _)| *id == best.id)
        .map(|(_, n)| n.clone())
}

/// `count` distinct random replicas, the leader first when `with_leader`.
async fn pick(
    db: &Arc<Mutex<Db>>,
    rng: &mut StdRng,
    count: usize,
    with_leader: bool,
) -> Result<Vec<String>> {
    let mut names = running(&*db.lock().await);
    names.shuffle(rng);
    if with_leader {
        let Some(l) = leader(db).await else {
            bail!("no leader to target");
        };
        names.retain(|n| *n != l);
        names.insert(0, l);
    }
    names.truncate(count);
    if names.len() < count {
        bail!("only {} replicas running", names.len());
    }
    Ok(names)
}

/// Largest minority of `n` voters.
fn minority(n: usize) -> usize {
    (n - 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expand_and_skip_faults_the_cluster_is_too_small_for() {
        let partitions = parse("partition", 3).unwrap();
        assert!(partitions.contains(&PartitionHalves));
        assert!(!partitions.contains(&PartitionRing));
        assert!(parse("partition", 5).unwrap().contains(&PartitionRing));
        assert_eq!(parse("all", 5).unwrap().len(), ALL.len());
        assert_eq!(
            parse("kill-leader,loss", 3).unwrap(),
            vec![KillLeader, Loss]
        );
        assert!(parse("none", 3).unwrap().is_empty());
    }

    #[test]
    fn unknown_or_impossible_faults_are_refused_by_name() {
        let e = parse("kill-leader,flood", 3).unwrap_err().to_string();
        assert!(e.contains("'flood'"), "{e}");
        let e = parse("partition-ring", 3).unwrap_err().to_string();
        assert!(e.contains("5 nodes"), "{e}");
    }

    #[test]
    fn minorities_leave_a_quorum() {
        assert_eq!(minority(3), 1);
        assert_eq!(minority(5), 2);
        assert_eq!(minority(4), 1);
    }
}
