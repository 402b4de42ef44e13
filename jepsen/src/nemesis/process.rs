//! Process faults: SIGKILL (restart on the same data dir at stop, or at
//! once for the fast variant), SIGSTOP/SIGCONT, and restarting a replica
//! under `faketime` with a skewed clock rate and offset.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{minority, pick, running, Active, Kind};
use crate::db::Db;

pub async fn kill(db: &Arc<Mutex<Db>>, kind: Kind, rng: &mut StdRng) -> Result<(Active, Value)> {
    let n = running(&*db.lock().await).len();
    let targets = match kind {
        Kind::KillOne => pick(db, rng, 1, false).await?,
        Kind::KillLeader | Kind::KillLeaderFast => pick(db, rng, 1, true).await?,
        Kind::KillMinority => pick(db, rng, minority(n).max(1), false).await?,
        _ => pick(db, rng, n, false).await?,
    };
    let mut db = db.lock().await;
    for name in &targets {
        db.kill_replica(name)?;
    }
    if kind == Kind::KillLeaderFast {
        // Back before any follower's election timeout (150 ms) can fire.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for name in &targets {
            db.start_replica(name, None)?;
        }
        return Ok((
            Active::default(),
            json!({"killed": targets, "restarted": true}),
        ));
    }
    Ok((
        Active {
            killed: targets.clone(),
            ..Default::default()
        },
        json!({"killed": targets}),
    ))
}

pub async fn pause(db: &Arc<Mutex<Db>>, kind: Kind, rng: &mut StdRng) -> Result<(Active, Value)> {
    let n = running(&*db.lock().await).len();
    let targets = match kind {
        Kind::PauseLeader => pick(db, rng, 1, true).await?,
        Kind::PauseMinority => pick(db, rng, minority(n).max(1), false).await?,
        _ => pick(db, rng, 1, false).await?,
    };
    let mut db = db.lock().await;
    for name in &targets {
        db.pause_replica(name, true)?;
    }
    Ok((
        Active {
            paused: targets.clone(),
            ..Default::default()
        },
        json!({"paused": targets}),
    ))
}

/// Restarts one replica with its clock offset by up to ±30 s and running at
/// 0.5–2× the real rate. Never a paused replica: restarting it would end
/// the pause early.
pub async fn skew(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let candidates: Vec<String> = {
        let db = db.lock().await;
        running(&db)
            .into_iter()
            .filter(|n| !db.is_paused(n))
            .collect()
    };
    let Some(target) = candidates.choose(rng).cloned() else {
        bail!("no running replica that is not paused");
    };
    let offset: i64 = rng.random_range(-30..=30);
    let rate: f64 = (rng.random_range(50..=200) as f64) / 100.0;
    let spec = format!("{offset:+}s x{rate}");
    let mut db = db.lock().await;
    db.kill_replica(&target)?;
    db.start_replica(&target, Some(spec.clone()))?;
    Ok((
        Active {
            skewed: vec![target.clone()],
            ..Default::default()
        },
        json!({"node": target, "faketime": spec}),
    ))
}
