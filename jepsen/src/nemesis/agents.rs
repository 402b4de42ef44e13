//! Faults of the worker agents: an agent paused (SIGSTOP: its heartbeats
//! stop, its attempts hang, then it wakes up holding a lease that may have
//! run out) and an agent whose clock is skewed (restarted under faketime,
//! offset by up to ±30 s and running at 0.5–2× the real rate), so its lease
//! and heartbeat timers run fast or slow. The queue checker then shows
//! whether any attempt was lost, run twice at once, or accepted stale.

use std::sync::Arc;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::Active;
use crate::db::Db;

/// A random agent that is running and not paused.
async fn pick_agent(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<String> {
    let db = db.lock().await;
    let names: Vec<String> = db
        .agent_names()
        .into_iter()
        .filter(|n| !db.is_agent_paused(n))
        .collect();
    names.choose(rng).cloned().context("no agent to fault")
}

pub async fn pause(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let target = pick_agent(db, rng).await?;
    db.lock().await.pause_agent(&target, true)?;
    Ok((
        Active {
            paused_agents: vec![target.clone()],
            ..Default::default()
        },
        json!({"agent": target}),
    ))
}

pub async fn skew(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let target = pick_agent(db, rng).await?;
    let offset: i64 = rng.random_range(-30..=30);
    let rate: f64 = (rng.random_range(50..=200) as f64) / 100.0;
    let spec = format!("{offset:+}s x{rate}");
    db.lock().await.restart_agent(&target, Some(&spec))?;
    Ok((
        Active {
            skewed_agents: vec![target.clone()],
            ..Default::default()
        },
        json!({"agent": target, "faketime": spec}),
    ))
}
