//! Rolling upgrade: stop replicas gracefully (SIGTERM) one at a time and
//! start them again on the upgrade build
//! (`--upgrade-bin-dir`: `autoglm-server` built with the `format-next`
//! feature, which reads and writes log-entry format 8, a proposal with one
//! more field). While any replica runs the old build, leaders of either build
//! write the format both read; once every replica runs the new build, the
//! nemesis raises the cluster's entry format to 8, as an operator would
//! (docs/operations.md, "Upgrade"). Later steps restart upgraded replicas on
//! the same build: a rolling restart.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{running, Active};
use crate::db::Db;

/// The entry format the upgrade build adds (server/src/scheduler/format.rs).
const NEW_ENTRY_FORMAT: &str = "8";
const ENTRY_FORMAT_KEY: &str = "cluster/entry_format";

pub async fn step(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let (old, all_upgraded, upgraded, endpoints) = {
        let db = db.lock().await;
        let up: Vec<String> = running(&db)
            .into_iter()
            .filter(|n| !db.is_paused(n))
            .collect();
        let is_upgraded = |n: &String| db.replicas.get(n).is_some_and(|r| r.upgraded);
        (
            up.iter()
                .filter(|n| !is_upgraded(n))
                .cloned()
                .collect::<Vec<_>>(),
            db.replicas.values().all(|r| r.upgraded),
            up.iter()
                .filter(|n| is_upgraded(n))
                .cloned()
                .collect::<Vec<_>>(),
            db.endpoints(),
        )
    };
    if let Some(target) = old.choose(rng) {
        let mut db = db.lock().await;
        db.stop_replica(target)?;
        db.mark_upgraded(target)?;
        db.start_replica(target, None)?;
        return Ok((
            Active::default(),
            json!({"node": target, "action": "upgrade"}),
        ));
    }
    if all_upgraded {
        let client =
            crate::control::client(endpoints, Duration::from_secs(10), Duration::from_secs(3))?;
        let current = client.config_get(ENTRY_FORMAT_KEY, false).await?;
        if current.entry.map(|e| e.value).as_deref() != Some(NEW_ENTRY_FORMAT) {
            client
                .config_put(ENTRY_FORMAT_KEY, NEW_ENTRY_FORMAT)
                .await
                .context("raise the entry format")?;
            return Ok((
                Active::default(),
                json!({"action": "raise-entry-format", "entry_format": NEW_ENTRY_FORMAT}),
            ));
        }
    }
    let target = upgraded
        .choose(rng)
        .context("no running replica to restart")?;
    let mut db = db.lock().await;
    db.stop_replica(target)?;
    db.start_replica(target, None)?;
    Ok((
        Active::default(),
        json!({"node": target, "action": "restart"}),
    ))
}
