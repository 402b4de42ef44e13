//! Writes the seed corpora of the fuzz targets (`fuzz/`): valid inputs of
//! each kind, so the fuzzer starts from messages that get deep. The seeds are
//! committed under `fuzz/seeds/`; rerun this after a format changes:
//!
//! `cargo run -p autoglm-server --example fuzz_seeds -- fuzz/seeds`

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use autoglm_client::proto::{self as pb, task_spec::Payload};
use autoglm_server::raft::TypeConfig;
use autoglm_server::scheduler::model::{Payload as CorePayload, Resources, RetryPolicy, TaskSpec};
use autoglm_server::scheduler::{Command, Proposal, SchedulerState};
use openraft::{Entry, EntryPayload, LogId, Vote};
use prost::Message;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn task(name: &str, payload: Payload) -> pb::TaskSpec {
    pb::TaskSpec {
        name: name.into(),
        payload: Some(payload),
        ..Default::default()
    }
}

fn submissions() -> Vec<pb::SubmitJobRequest> {
    let sim = task("prep", Payload::Sim(pb::SimPayload { service_ms: 10 }));
    let mut exec = task(
        "train",
        Payload::Exec(pb::ExecPayload {
            argv: vec!["python3".into(), "train.py".into()],
            env: [("EPOCHS".to_string(), "3".to_string())].into(),
            cwd: "/work".into(),
            secret_env: [("HF_TOKEN".to_string(), "hf_x".to_string())].into(),
        }),
    );
    exec.resources = Some(pb::Resources {
        gpus: 2,
        gpu_memory_mb: 40_000,
        cpu_millis: 2_000,
        memory_mb: 8_000,
    });
    exec.labels = [("gpu".to_string(), "h100".to_string())].into();
    exec.priority = Some(80);
    exec.retry = Some(pb::RetryPolicy {
        max_attempts: 3,
        backoff_base_ms: 100,
        backoff_factor: 2.0,
        backoff_max_ms: 10_000,
        jitter: 0.2,
    });
    exec.depends_on = vec![pb::Dependency {
        task: "prep".into(),
        condition: pb::EdgeCondition::OnSuccess as i32,
    }];
    let mut http = task(
        "report",
        Payload::Http(pb::HttpPayload {
            method: "POST".into(),
            path: "/v1/completions".into(),
            headers: [("x".to_string(), "y".to_string())].into(),
            body: "{\"prompt\":\"hi\"}".into(),
        }),
    );
    http.model = "llama-3-8b".into();
    http.depends_on = vec![pb::Dependency {
        task: "train".into(),
        condition: pb::EdgeCondition::Always as i32,
    }];
    let mut cached = sim.clone();
    cached.cache = Some(pb::CacheOptions {
        key: "prep-v1".into(),
        ttl_ms: 3_600_000,
        refresh: false,
    });
    vec![
        pb::SubmitJobRequest {
            client_id: "c".into(),
            idempotency_key: String::new(),
            tasks: vec![sim.clone()],
        },
        pb::SubmitJobRequest {
            client_id: "team".into(),
            idempotency_key: "nightly-1".into(),
            tasks: vec![sim, exec, http],
        },
        pb::SubmitJobRequest {
            client_id: "c".into(),
            idempotency_key: "cached-1".into(),
            tasks: vec![cached],
        },
    ]
}

fn core_spec() -> TaskSpec {
    TaskSpec {
        name: "t".into(),
        model: None,
        input_tokens: 10,
        max_output_tokens: 10,
        resources: Resources {
            gpus: 1,
            gpu_memory_mb: 1_000,
            cpu_millis: 100,
            memory_mb: 100,
        },
        priority: 50,
        labels: BTreeMap::new(),
        attempt_timeout_ms: 60_000,
        retry: RetryPolicy::default(),
        payload: CorePayload::Sim { service_ms: 10 },
        depends_on: Vec::new(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds DIR (e.g. fuzz/seeds)")?;
    let dir = Path::new(&dir);

    for (i, s) in submissions().iter().enumerate() {
        write(dir, "submit_job", &format!("job-{i}"), &s.encode_to_vec())?;
    }

    write(
        dir,
        "job_yaml",
        "one",
        b"tasks:\n  - name: hello\n    sim_ms: 5\n",
    )?;
    write(
        dir,
        "job_yaml",
        "dag",
        br#"idempotency_key: nightly
tasks:
  - name: prep
    exec: [python, prep.py]
    cpu_millis: 2000
  - name: train
    exec: [python, train.py]
    env: {EPOCHS: "3"}
    secret_env: {WANDB_API_KEY: "k"}
    gpus: 2
    gpu_memory_mb: 40000
    priority: 80
    labels: {gpu: h100}
    timeout_ms: 3600000
    max_attempts: 3
    after: [prep]
  - name: notify-failure
    sim_ms: 10
    after_failure: [train]
  - name: report
    http: {method: POST, path: /v1/completions, body: '{"prompt":"summarize"}'}
    model: llama-3-8b
    after_any: [train]
"#,
    )?;

    for (i, (k, v)) in [
        ("placement/policy", "least-outstanding"),
        ("placement/dispatch_threshold", "0.85"),
        ("limits/payload_bytes_max", "abc"),
        ("security/secret_env_patterns", "*_TOKEN,HF_*"),
        ("kv/app/setting", "any value"),
        ("admission/rate_per_second", "18446744073709551616"),
    ]
    .iter()
    .enumerate()
    {
        write(
            dir,
            "config_values",
            &format!("setting-{i}"),
            format!("{k}\0{v}").as_bytes(),
        )?;
    }

    let submit = Proposal::new(
        1_000,
        3,
        Command::SubmitOwnedJob {
            owner: "alice".into(),
            client_id: "c".into(),
            idempotency_key: "k".into(),
            tasks: vec![core_spec()],
            secret_env: BTreeMap::from([("t".to_string(), BTreeSet::new())]),
        },
        Some(7),
    );
    let log_id = |index| LogId::new(openraft::CommittedLeaderId::new(2, 1), index);
    let append: openraft::raft::AppendEntriesRequest<TypeConfig> =
        openraft::raft::AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(4)),
            entries: vec![
                Entry {
                    log_id: log_id(5),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(6),
                    payload: EntryPayload::Normal(submit.clone()),
                },
            ],
            leader_commit: Some(log_id(4)),
        };
    write(
        dir,
        "raft_message",
        "append",
        &postcard::to_stdvec(&append)?,
    )?;
    let vote = openraft::raft::VoteRequest::new(Vote::new(3, 2), Some(log_id(6)));
    write(dir, "raft_message", "vote", &postcard::to_stdvec(&vote)?)?;
    let forwarded = (submit.command.clone(), Some(7u128));
    write(
        dir,
        "raft_message",
        "propose",
        &postcard::to_stdvec(&forwarded)?,
    )?;
    let mut state = SchedulerState::default();
    state.apply(1, &submit);
    let snapshot = autoglm_storage::Applied {
        last_applied: Some(log_id(1)),
        membership: Default::default(),
        state,
    };
    write(
        dir,
        "raft_message",
        "snapshot-v2",
        &autoglm_storage::codec::encode_snapshot(&snapshot)?,
    )?;
    println!("seeds written under {}", dir.display());
    Ok(())
}
