//! `sim` attempts on paused time: the modelled durations, the batch effect,
//! GPU slots, cancellation, and the load simulated GPUs report.

use std::time::Duration;

use autoglm_agent::executor::{AttemptKey, StopReason};
use autoglm_client::proto::AttemptStatus;
use tokio::time::Instant;

use crate::common::*;

/// Paused time jumps ahead whenever every task waits, so this is instant.
const WITHIN: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn duration_follows_the_model_with_the_batch_effect() {
    // prefill 0.05 ms/token, decode 20 ms/token, concurrency cap 2, speed 1.
    let (ex, mut rx) = executor(settings());
    let t0 = Instant::now();
    ex.start(assign(1, 1, &[], sim_spec(1000, 100, 0)));
    let first = next_report(&mut rx, WITHIN).await;
    assert_eq!(status(&first), AttemptStatus::Running);
    // Starts while task 1 runs: batch 2.
    ex.start(assign(2, 1, &[], sim_spec(1000, 100, 0)));
    let second = next_report(&mut rx, WITHIN).await;
    assert_eq!(
        (second.task_id, status(&second)),
        (2, AttemptStatus::Running)
    );

    // 1000 * 0.05 + 100 * 20 = 2050 ms
    let done = next_report(&mut rx, WITHIN).await;
    assert_eq!((done.task_id, status(&done)), (1, AttemptStatus::Succeeded));
    assert_eq!(done.duration_ms, 2050);
    assert_eq!(done.message, "simulated 2050 ms (batch 1)");
    assert_eq!(t0.elapsed(), Duration::from_millis(2050));

    // 50 + 2000 * (1 + (2 - 1) / 2) = 3050 ms
    let done = next_report(&mut rx, WITHIN).await;
    assert_eq!((done.task_id, status(&done)), (2, AttemptStatus::Succeeded));
    assert_eq!(done.duration_ms, 3050);
    assert_eq!(done.message, "simulated 3050 ms (batch 2)");
}

#[tokio::test(start_paused = true)]
async fn speed_factor_divides_and_fixed_service_time_wins() {
    let mut s = settings();
    s.sim.speed_factor = 2.0;
    let (ex, mut rx) = executor(s);
    ex.start(assign(1, 1, &[], sim_spec(1000, 100, 0)));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(done.duration_ms, 1025, "2050 / 2: {done:?}");

    ex.start(assign(2, 1, &[], sim_spec(1000, 100, 777)));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(done.duration_ms, 777);
}

#[tokio::test(start_paused = true)]
async fn gpu_slots_bound_concurrency_and_drive_telemetry() {
    let (ex, mut rx) = executor(settings()); // one slot per GPU
    let t0 = Instant::now();
    ex.start(assign(1, 1, &[0], sim_spec(0, 0, 1000)));
    ex.start(assign(2, 1, &[0], sim_spec(0, 0, 1000)));
    ex.start(assign(3, 1, &[1], sim_spec(0, 0, 1000)));
    let mut started = Vec::new();
    for _ in 0..2 {
        let r = next_report(&mut rx, WITHIN).await;
        assert_eq!(status(&r), AttemptStatus::Running);
        started.push(r.task_id);
    }
    started.sort();
    assert_eq!(started, vec![1, 3], "task 2 waits for GPU 0");
    assert_eq!(ex.running().len(), 3, "a waiting attempt counts as running");
    let load = ex.gpu_load();
    assert_eq!(load.per_gpu.get(&0).map(|u| u.attempts), Some(1));
    assert_eq!(load.per_gpu.get(&1).map(|u| u.attempts), Some(1));

    let mut events = Vec::new();
    for _ in 0..4 {
        let r = next_report(&mut rx, WITHIN).await;
        events.push((r.task_id, status(&r), t0.elapsed().as_millis()));
    }
    events.sort_by_key(|e| (e.2, e.0));
    assert_eq!(
        events,
        vec![
            (1, AttemptStatus::Succeeded, 1000),
            (2, AttemptStatus::Running, 1000),
            (3, AttemptStatus::Succeeded, 1000),
            (2, AttemptStatus::Succeeded, 2000),
        ]
    );
    ex.wait_idle().await;
    assert!(ex.gpu_load().per_gpu.is_empty());
}

#[tokio::test(start_paused = true)]
async fn stops_report_their_reason() {
    let (ex, mut rx) = executor(settings());
    ex.start(assign(1, 1, &[], sim_spec(0, 0, 60_000)));
    ex.start(assign(2, 1, &[], sim_spec(0, 0, 60_000)));
    for _ in 0..2 {
        assert_eq!(
            status(&next_report(&mut rx, WITHIN).await),
            AttemptStatus::Running
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ex.stop(AttemptKey::new(1, 1), StopReason::Cancelled(String::new())));
    let done = next_report(&mut rx, WITHIN).await;
    assert_eq!((done.task_id, done.message.as_str()), (1, "cancelled"));
    assert_eq!(done.duration_ms, 500);

    let stopped = ex.stop_all(StopReason::SelfFenced { no_leader_ms: 3000 });
    assert_eq!(stopped, vec![AttemptKey::new(2, 1)]);
    let done = next_report(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert_eq!(done.message, "self-fenced: no leader for 3000 ms");

    let mut spec = sim_spec(0, 0, 60_000);
    spec.attempt_timeout_ms = 1500;
    ex.start(assign(3, 1, &[], spec));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(done.message, "timed out after 1500 ms");
    assert_eq!(done.duration_ms, 1500);
}
