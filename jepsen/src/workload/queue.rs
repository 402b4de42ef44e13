//! Task-queue workload: client processes submit single-task jobs, each with
//! a unique id used as the task name and as the job's idempotency key. A
//! process whose submission ends `info` is replaced, and the new process
//! submits the same id once more with the same key, so a broken idempotency
//! check would show up as a duplicate task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::{JobBuilder, TaskBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{client_for, write_outcome, Ctx};
use crate::credentials::WorkloadRole;
use crate::history::OpType;
use crate::recorder::Event;

pub struct QueueSettings {
    pub processes: usize,
    /// Pause between one process's submissions.
    pub think: Duration,
}

/// The job a submission of task `id` sends: a sim task of 100–600 ms that
/// survives many lost attempts, so faults delay it but rarely fail it.
pub fn job(id: &str, service: Duration) -> JobBuilder {
    JobBuilder::new("jepsen").idempotency_key(id).task(
        TaskBuilder::sim(id, service)
            .gpus(1, 10_000)
            .max_attempts(30)
            .backoff(Duration::from_millis(100), 2.0, Duration::from_secs(2), 0.2),
    )
}

pub async fn run(ctx: Arc<Ctx>, settings: QueueSettings, seed: u64) {
    let next_id = Arc::new(AtomicU64::new(0));
    let next_process = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..settings.processes {
        tasks.spawn(process_slot(
            ctx.clone(),
            settings.think,
            next_id.clone(),
            next_process.clone(),
            seed ^ (0x5155_4555 + slot as u64),
            slot,
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn process_slot(
    ctx: Arc<Ctx>,
    think: Duration,
    next_id: Arc<AtomicU64>,
    next_process: Arc<AtomicU64>,
    seed: u64,
    slot: usize,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (node, addr) = ctx.replicas[slot % ctx.replicas.len()].clone();
    let all: Vec<String> = ctx.replicas.iter().map(|(_, a)| a.clone()).collect();
    let Ok(client) = client_for(&addr, &all, WorkloadRole::Submitter) else {
        return;
    };
    let mut process = format!("q{}", next_process.fetch_add(1, Ordering::Relaxed));
    // An id whose submission ended `info`: the next process submits it again.
    let mut retry: Option<(String, Duration)> = None;
    while !ctx.stopped() {
        ctx.pause(Duration::from_millis(
            rng.random_range(0..=think.as_millis() as u64 * 2),
        ))
        .await;
        if ctx.stopped() {
            break;
        }
        let (id, service) = retry.take().unwrap_or_else(|| {
            (
                format!("t{}", next_id.fetch_add(1, Ordering::Relaxed)),
                Duration::from_millis(rng.random_range(100..600)),
            )
        });
        let e = Event {
            process: &process,
            node: &node,
            f: "submit",
            key: None,
        };
        ctx.recorder.invoke(
            &e,
            json!({ "id": id, "service_ms": service.as_millis() as u64 }),
        );
        match client.submit(job(&id, service)).await {
            Ok(r) => {
                let task_id = r.task_ids.get(&id).copied().unwrap_or(0);
                ctx.recorder.ok(
                    &e,
                    json!({ "id": id, "job_id": r.job_id, "task_id": task_id, "duplicate": r.duplicate }),
                );
            }
            Err(err) => match write_outcome(&err) {
                OpType::Fail => ctx.recorder.fail(&e, err.to_string()),
                _ => {
                    ctx.recorder.info(&e, err.to_string());
                    process = format!("q{}", next_process.fetch_add(1, Ordering::Relaxed));
                    retry = Some((id, service));
                }
            },
        }
    }
}
