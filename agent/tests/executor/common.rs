//! Helpers shared by the executor tests.

use std::collections::HashMap;
use std::time::Duration;

use autoglm_agent::executor::{ExecRights, Executor, ExecutorSettings, SimModel};
use autoglm_client::proto::{
    task_spec::Payload, Assign, AttemptReport, AttemptStatus, ExecPayload, HttpPayload, SimPayload,
    TaskSpec,
};
use tokio::sync::mpsc::UnboundedReceiver;

pub fn settings() -> ExecutorSettings {
    ExecutorSettings {
        address: String::new(),
        slots_per_gpu: 1,
        output_tail_bytes: 4096,
        http_timeout: Duration::from_secs(10),
        sim: SimModel {
            speed_factor: 1.0,
            prefill_ms_per_token: 0.05,
            decode_ms_per_token: 20.0,
            concurrency_cap: 2,
        },
        // Any program, as the test's own user: these tests are about running
        // processes; the rights themselves are tested in exec.rs.
        exec: ExecRights::Enabled {
            allow: None,
            run_as: None,
        },
        output: None,
    }
}

pub fn executor(settings: ExecutorSettings) -> (Executor, UnboundedReceiver<AttemptReport>) {
    Executor::new(settings, Default::default()).expect("executor")
}

pub fn assign(task_id: u64, attempt: u32, gpus: &[u32], spec: TaskSpec) -> Assign {
    Assign {
        task_id,
        attempt,
        spec: Some(spec),
        gpus: gpus.to_vec(),
        secret_env: Vec::new(),
    }
}

pub fn exec_spec(argv: &[&str]) -> TaskSpec {
    TaskSpec {
        name: "exec".into(),
        payload: Some(Payload::Exec(ExecPayload {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: HashMap::new(),
            cwd: String::new(),
            secret_env: HashMap::new(),
        })),
        ..Default::default()
    }
}

pub fn sh(script: &str) -> TaskSpec {
    exec_spec(&["sh", "-c", script])
}

pub fn http_spec(method: &str, path: &str, body: &str) -> TaskSpec {
    TaskSpec {
        name: "http".into(),
        payload: Some(Payload::Http(HttpPayload {
            method: method.into(),
            path: path.into(),
            headers: HashMap::from([("x-test".to_string(), "yes".to_string())]),
            body: body.into(),
        })),
        ..Default::default()
    }
}

pub fn sim_spec(input_tokens: u32, max_output_tokens: u32, service_ms: u64) -> TaskSpec {
    TaskSpec {
        name: "sim".into(),
        input_tokens,
        max_output_tokens,
        payload: Some(Payload::Sim(SimPayload { service_ms })),
        ..Default::default()
    }
}

/// The next report, failing the test after `within` (real or paused time).
pub async fn next_report(
    rx: &mut UnboundedReceiver<AttemptReport>,
    within: Duration,
) -> AttemptReport {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("a report in time")
        .expect("report channel open")
}

/// RUNNING, then the final report, of one attempt.
pub async fn run_to_end(
    rx: &mut UnboundedReceiver<AttemptReport>,
    within: Duration,
) -> AttemptReport {
    let running = next_report(rx, within).await;
    assert_eq!(running.status, AttemptStatus::Running as i32, "{running:?}");
    let done = next_report(rx, within).await;
    assert_eq!(
        (done.task_id, done.attempt),
        (running.task_id, running.attempt)
    );
    done
}

pub fn status(r: &AttemptReport) -> AttemptStatus {
    AttemptStatus::try_from(r.status).expect("known status")
}
