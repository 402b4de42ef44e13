//! Register workload: read, write and compare-and-set on keys of the
//! configuration store. Reads are linearizable (`stale = false`). Keys are
//! retired every `key_lifetime` so that each key's sub-history stays small
//! enough for the linearizability search, as Jepsen's independent keys do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{client_for, write_outcome, Ctx};
use crate::credentials::WorkloadRole;
use crate::history::OpType;
use crate::recorder::Event;

pub struct RegisterSettings {
    pub processes: usize,
    /// Keys in use at once.
    pub keys: usize,
    pub key_lifetime: Duration,
    /// Pause between one process's operations.
    pub think: Duration,
}

/// Runs the register processes until the workload phase ends.
pub async fn run(ctx: Arc<Ctx>, settings: RegisterSettings, seed: u64) {
    let next_process = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let settings = Arc::new(settings);
    for slot in 0..settings.processes {
        let ctx = ctx.clone();
        let settings = settings.clone();
        let next_process = next_process.clone();
        tasks.spawn(process_slot(
            ctx,
            settings,
            next_process,
            seed ^ (slot as u64 + 1),
            slot,
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Key `k` of the generation current at `elapsed`.
fn key_name(elapsed_ns: u64, lifetime: Duration, k: usize) -> String {
    let generation = elapsed_ns / lifetime.as_nanos().max(1) as u64;
    format!("kv/jepsen/r{generation}-{k}")
}

/// One slot of concurrency: a process that ends in `info` is replaced by a
/// fresh one, as Jepsen requires (its operation may still take effect).
async fn process_slot(
    ctx: Arc<Ctx>,
    settings: Arc<RegisterSettings>,
    next_process: Arc<AtomicU64>,
    seed: u64,
    slot: usize,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (node, addr) = ctx.replicas[slot % ctx.replicas.len()].clone();
    let all: Vec<String> = ctx.replicas.iter().map(|(_, a)| a.clone()).collect();
    let Ok(client) = client_for(&addr, &all, WorkloadRole::Admin) else {
        return;
    };
    let mut process = format!("r{}", next_process.fetch_add(1, Ordering::Relaxed));
    // Last version this process saw per key, to aim its CAS at.
    let mut seen: std::collections::HashMap<String, u64> = Default::default();
    while !ctx.stopped() {
        ctx.pause(Duration::from_millis(
            rng.random_range(0..=settings.think.as_millis() as u64 * 2),
        ))
        .await;
        if ctx.stopped() {
            break;
        }
        let key = key_name(
            ctx.recorder.now_ns(),
            settings.key_lifetime,
            rng.random_range(0..settings.keys),
        );
        let e = Event {
            process: &process,
            node: &node,
            f: "",
            key: Some(&key),
        };
        let roll: f64 = rng.random();
        let indeterminate = if roll < 0.4 {
            let e = Event { f: "read", ..e };
            ctx.recorder.invoke(&e, serde_json::Value::Null);
            match client.config_get(&key, false).await {
                Ok(r) => {
                    let value = r.entry.map_or(serde_json::Value::Null, |en| {
                        seen.insert(key.clone(), en.version);
                        json!({"value": en.value, "version": en.version})
                    });
                    ctx.recorder.ok(&e, value);
                }
                // Reads have no effect: a failed read is simply a failure.
                Err(err) => ctx.recorder.fail(&e, err.to_string()),
            }
            false
        } else if roll < 0.7 {
            let value = rng.random_range(0..10).to_string();
            let e = Event { f: "write", ..e };
            ctx.recorder.invoke(&e, json!({ "value": value }));
            match client.config_put(&key, &value).await {
                Ok(en) => {
                    seen.insert(key.clone(), en.version);
                    ctx.recorder.ok(&e, json!({ "version": en.version }));
                    false
                }
                Err(err) => record_error(&ctx, &e, &err),
            }
        } else {
            let value = rng.random_range(0..10).to_string();
            let expected = seen.get(&key).copied().unwrap_or(0);
            let e = Event { f: "cas", ..e };
            ctx.recorder
                .invoke(&e, json!({ "expected_version": expected, "value": value }));
            match client.config_cas(&key, &value, expected).await {
                Ok(r) if r.succeeded => {
                    let version = r.entry.map_or(0, |en| en.version);
                    seen.insert(key.clone(), version);
                    ctx.recorder.ok(&e, json!({ "version": version }));
                    false
                }
                Ok(r) => {
                    if let Some(en) = r.entry {
                        seen.insert(key.clone(), en.version);
                    }
                    ctx.recorder.fail(&e, "version mismatch".into());
                    false
                }
                // Only a mismatch proves the CAS was not applied; any other
                // error leaves it unknown.
                Err(err) => {
                    ctx.recorder.info(&e, err.to_string());
                    true
                }
            }
        };
        if indeterminate {
            process = format!("r{}", next_process.fetch_add(1, Ordering::Relaxed));
        }
    }
}

/// Records a failed write; true when its outcome is unknown.
fn record_error(ctx: &Ctx, e: &Event<'_>, err: &autoglm_client::ClientError) -> bool {
    match write_outcome(err) {
        OpType::Fail => {
            ctx.recorder.fail(e, err.to_string());
            false
        }
        _ => {
            ctx.recorder.info(e, err.to_string());
            true
        }
    }
}
