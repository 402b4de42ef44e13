//! Membership changes: remove a voter (the leader a third of the time),
//! and only once the new membership is committed, kill it and wipe its data
//! dir. At stop it comes back empty, under a new Raft id (ids are never
//! reused for another data dir), as a learner that catches up, then a voter.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use autoglm_client::proto::{Member, Role};
use autoglm_client::Client;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{pick, Active};
use crate::db::Db;

/// Membership changes wait for a learner to catch up: a patient client.
fn admin_client(endpoints: Vec<String>) -> Result<Client> {
    crate::control::client(endpoints, Duration::from_secs(10), Duration::from_secs(5))
}

pub async fn remove(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let with_leader = rng.random_bool(1.0 / 3.0);
    let target = pick(db, rng, 1, with_leader).await?.remove(0);
    let (id, endpoints) = {
        let db = db.lock().await;
        (db.replica(&target)?.id, db.endpoints())
    };
    let client = admin_client(endpoints)?;
    let status = client.status().await?;
    if status.voters.len() < 3 {
        bail!(
            "only {} voters: removing one would leave no fault tolerance",
            status.voters.len()
        );
    }
    let (log_index, new_id) = remove_and_wipe(db, &client, &target, id).await?;
    Ok((
        Active {
            removed: Some(target.clone()),
            ..Default::default()
        },
        json!({"node": target, "removed_id": id, "log_index": log_index, "next_id": new_id}),
    ))
}

/// Removes replica `id` (host `target`) from the membership, then, once that
/// is committed, kills it and wipes its data dir; [`add_back`] brings it
/// back. Returns the removal's log index and the host's next Raft id.
pub async fn remove_and_wipe(
    db: &Arc<Mutex<Db>>,
    client: &Client,
    target: &str,
    id: u64,
) -> Result<(u64, u64)> {
    let change = client.remove(vec![id]).await.context("remove")?;
    if change.voters.iter().any(|m| m.id == id) {
        bail!("replica {id} is still a voter after its removal");
    }
    // Committed: the rest of the cluster no longer needs this data dir.
    let mut db = db.lock().await;
    db.kill_replica(target)?;
    Ok((change.log_index, db.wipe_replica(target)?))
}

/// Starts the wiped replica, adds it as a learner, waits for it to catch
/// up, and promotes it. Safe to call again after a partial failure.
pub async fn add_back(db: &Arc<Mutex<Db>>, active: &Active) -> Result<Value> {
    let target = active.removed.clone().context("nothing was removed")?;
    let (id, addr, endpoints) = {
        let mut db = db.lock().await;
        if !db.replica(&target)?.is_running() {
            db.start_replica(&target, None)?;
        }
        let r = db.replica(&target)?;
        (r.id, r.addr(), db.endpoints())
    };
    let client = admin_client(endpoints)?;
    let status = client.status().await?;
    if status.voters.iter().any(|m| m.id == id) && !status.joint {
        return Ok(json!({"node": target, "id": id, "already": "voter"}));
    }
    if !status.learners.iter().any(|m| m.id == id) {
        client
            .add_learner(
                Member {
                    id,
                    addr: addr.clone(),
                },
                false,
            )
            .await
            .context("add learner")?;
    }
    let change = client.promote(vec![id]).await.context("promote")?;
    let voters: Vec<u64> = change.voters.iter().map(|m| m.id).collect();
    if !voters.contains(&id) {
        bail!("replica {id} is not a voter after its promotion");
    }
    // The promoted replica must answer as a member before the next fault.
    let leader_seen = client
        .status_of(&addr)
        .await
        .map(|s| s.role != Role::Uninitialized as i32);
    Ok(json!({"node": target, "id": id, "voters": voters, "member": leader_seen.unwrap_or(false)}))
}
