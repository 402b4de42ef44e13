//! Damaged disks: stop a replica (SIGTERM), damage its store (truncate the
//! database to half, to nothing or by its last 4 KB, flip 64 bytes in the
//! middle, or delete a blob file), and start it again. It must refuse to
//! start, with exit code 3: a replica that silently forgets entries it
//! acknowledged breaks Raft (docs/operations.md, "Damaged data dir"). The
//! offline check (`autoglm-server verify`) runs first: damage that hit only
//! dead space verifies clean, and then the replica simply restarts. A refused
//! replica is removed from the membership and wiped; at stop it rejoins
//! under a new id, as a learner then a voter, under load.
//!
//! The checker fails the run if a replica started on a store `verify` had
//! found damaged, or if `verify` itself crashed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{pick, Active};
use crate::db::Db;

/// Exit code of a replica (and of `verify`) that finds its store damaged.
pub const EXIT_DAMAGED: i32 = 3;

const DAMAGES: &[&str] = &[
    "truncate-half",
    "truncate-all",
    "cut-last-4k",
    "flip-64-bytes",
    "delete-blob",
];

fn damage(store: &Path, kind: &str, rng: &mut StdRng) -> Result<String> {
    use autoglm_storage::damage::{cut_tail, flip_bytes, set_len};
    let db = store.join("db");
    let len = std::fs::metadata(&db)
        .with_context(|| db.display().to_string())?
        .len();
    match kind {
        "truncate-half" => set_len(&db, len / 2)?,
        "truncate-all" => set_len(&db, 0)?,
        "cut-last-4k" => {
            cut_tail(&db, 4096)?;
        }
        "delete-blob" => {
            let blobs: Vec<_> = std::fs::read_dir(store.join("blobs"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            if blobs.is_empty() {
                // No large values yet: flip bytes instead.
                return damage(store, "flip-64-bytes", rng);
            }
            let victim = &blobs[rng.random_range(0..blobs.len())];
            std::fs::remove_file(victim)?;
            return Ok(format!("delete-blob {}", victim.display()));
        }
        _ => {
            let at = rng.random_range(len / 4..(len * 3 / 4).max(len / 4 + 1));
            flip_bytes(&db, at, 64)?;
            return Ok(format!("flip-64-bytes at {at} of {len}"));
        }
    }
    Ok(format!("{kind} ({len} bytes before)"))
}

pub async fn damage_one(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let target = pick(db, rng, 1, false).await?.remove(0);
    let kind = DAMAGES[rng.random_range(0..DAMAGES.len())];
    let (id, data_dir, bin, endpoints) = {
        let mut db = db.lock().await;
        db.stop_replica(&target)?;
        let r = db.replica(&target)?;
        (
            r.id,
            db.data_dir(&target)?,
            db.server_bin(&target)?,
            db.endpoints(),
        )
    };
    let done = damage(&data_dir.join("raft"), kind, rng)?;
    let verify = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&bin)
            .arg("verify")
            .arg("--data-dir")
            .arg(&data_dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("verify did not finish within 60 s")??;
    let verify_code = verify.status.code().unwrap_or(-1);
    let verify_line = String::from_utf8_lossy(&verify.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    if verify_code == 0 {
        // Only dead space was hit: the store is whole and simply restarts.
        db.lock().await.start_replica(&target, None)?;
        return Ok((
            Active::default(),
            json!({"node": target, "damage": done, "verify": 0, "harmless": true}),
        ));
    }
    // Any other verdict than "intact": the replica must refuse to start
    // (the checker fails the run if it does not).
    let (exit_code, line) = {
        let mut db = db.lock().await;
        db.start_replica(&target, None)?;
        let code = db.wait_replica_exit(&target, Duration::from_secs(20))?;
        let line = db.last_log_line(&target)?;
        (code, line)
    };
    let refused = exit_code == Some(EXIT_DAMAGED);
    // The damaged member goes; at stop it comes back wiped, under a new id.
    let client =
        crate::control::client(endpoints, Duration::from_secs(30), Duration::from_secs(5))?;
    let (log_index, new_id) = super::membership::remove_and_wipe(db, &client, &target, id)
        .await
        .context("remove the damaged member")?;
    Ok((
        Active {
            removed: Some(target.clone()),
            ..Default::default()
        },
        json!({
            "node": target, "damage": done, "verify": verify_code, "verify_line": verify_line,
            "refused": refused, "exit_code": exit_code, "line": line,
            "removed_id": id, "log_index": log_index, "next_id": new_id,
        }),
    ))
}
