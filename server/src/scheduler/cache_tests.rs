//! The result cache through `apply`: hits complete tasks without a node,
//! scoped by owner, key, model and payload; the TTL, the opt-out, the
//! bounds, dependents of a cached task, and snapshots.

use std::collections::BTreeMap;

use autoglm_storage::state_machine::decode_snapshot;

use super::cache::{payload_sha256, CacheRequest};
use super::command::{Assignment, AttemptUpdate, Command, Response};
use super::format::{ENTRY_FORMAT_BREAKER, ENTRY_FORMAT_RESULT_CACHE};
use super::model::{EdgeCondition, Payload, TaskId, TaskSpec, TaskState};
use super::settings;
use super::tests::{snapshot, spec, Harness};
use super::SchedulerState;
use crate::raft::TypeConfig;

/// Entry format 6, active as the cluster's setting too; one node.
fn cluster() -> Harness {
    let mut h = Harness::in_format(ENTRY_FORMAT_RESULT_CACHE);
    set(
        &mut h,
        settings::ENTRY_FORMAT,
        &ENTRY_FORMAT_RESULT_CACHE.to_string(),
    );
    h.node("gpu-1", 4, 1);
    h
}

fn set(h: &mut Harness, setting: settings::Setting, value: &str) {
    let r = h.apply(Command::SetConfig {
        key: setting.key.into(),
        value: value.into(),
        expected_version: None,
    });
    assert!(matches!(r, Response::ConfigWritten(_)), "{r:?}");
}

fn request(task: &TaskSpec, key: &str) -> CacheRequest {
    CacheRequest {
        key: key.into(),
        ttl_ms: 0,
        refresh: false,
        payload_sha256: payload_sha256(&task.payload),
    }
}

/// Submits `tasks` as `owner`, each named in `cache` with its request.
fn submit_as(
    h: &mut Harness,
    owner: &str,
    tasks: Vec<TaskSpec>,
    cache: BTreeMap<String, CacheRequest>,
) -> Response {
    h.apply(Command::SubmitJobWithCache {
        owner: owner.into(),
        client_id: "c".into(),
        idempotency_key: String::new(),
        tasks,
        secret_env: BTreeMap::new(),
        cache,
    })
}

/// One task "a" with cache key `key`; its id.
fn submit_keyed(h: &mut Harness, owner: &str, key: &str, payload_ms: u64) -> TaskId {
    submit_with(h, owner, key, payload_ms, |r| r)
}

fn submit_with(
    h: &mut Harness,
    owner: &str,
    key: &str,
    payload_ms: u64,
    adjust: impl FnOnce(CacheRequest) -> CacheRequest,
) -> TaskId {
    let mut task = spec("a", &[]);
    task.payload = Payload::Sim {
        service_ms: payload_ms,
    };
    let cache = BTreeMap::from([("a".to_string(), adjust(request(&task, key)))]);
    match submit_as(h, owner, vec![task], cache) {
        Response::JobAcceptedAt { tasks, .. } => tasks["a"],
        other => panic!("{other:?}"),
    }
}

/// Runs `task` on gpu-1 to success with `output`.
fn run_to_success(h: &mut Harness, task: TaskId, output: &str) {
    let r = h.apply(Command::Assign {
        assignments: vec![Assignment {
            task,
            attempt: 1,
            node: "gpu-1".into(),
            gpus: vec![0],
        }],
    });
    assert_eq!(r, Response::Changed(vec![task]));
    h.apply(Command::ReportAttempt {
        task,
        attempt: 1,
        node: "gpu-1".into(),
        update: AttemptUpdate::Succeeded {
            exit_code: Some(0),
            output_tail: output.into(),
        },
    });
    assert_eq!(h.state_of(task), TaskState::Succeeded);
}

fn served_by(h: &Harness, task: TaskId) -> Option<TaskId> {
    h.state.result_cache.tasks[&task].served_by
}

#[test]
fn a_repeated_key_completes_at_once_with_the_first_result_and_names_it() {
    let mut h = cluster();
    let first = submit_keyed(&mut h, "alice", "summarize-doc-7", 10);
    assert_eq!(h.state_of(first), TaskState::Queued);
    run_to_success(&mut h, first, "the summary");

    let second = submit_keyed(&mut h, "alice", "summarize-doc-7", 10);
    let task = &h.state.tasks[&second];
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.attempt, 0, "never reached a node");
    assert!(task.history.is_empty());
    let outcome = task.outcome.as_ref().unwrap();
    assert_eq!(outcome.reason, "cached");
    assert_eq!(outcome.output_tail, "the summary");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.message, format!("result of task {first}"));
    assert_eq!(served_by(&h, second), Some(first));
    assert_eq!(h.state.result_cache.hits_total, 1);
    assert!(h.state.jobs[&task.job_id].finished_ms.is_some());
}

#[test]
fn another_owner_model_payload_or_key_misses() {
    let mut h = cluster();
    let first = submit_keyed(&mut h, "alice", "k", 10);
    run_to_success(&mut h, first, "out");
    for (owner, key, payload_ms) in [("bob", "k", 10), ("alice", "k2", 10), ("alice", "k", 11)] {
        let t = submit_keyed(&mut h, owner, key, payload_ms);
        assert_eq!(
            h.state_of(t),
            TaskState::Queued,
            "{owner} {key} {payload_ms}"
        );
    }
    let mut other_model = spec("a", &[]);
    other_model.payload = Payload::Sim { service_ms: 10 };
    other_model.model = Some("llama".into());
    let cache = BTreeMap::from([("a".to_string(), request(&other_model, "k"))]);
    let Response::JobAcceptedAt { tasks, .. } =
        submit_as(&mut h, "alice", vec![other_model], cache)
    else {
        panic!()
    };
    assert_eq!(h.state_of(tasks["a"]), TaskState::Queued);
    assert_eq!(h.state.result_cache.hits_total, 0);
}

#[test]
fn a_failed_task_stores_nothing_and_a_result_older_than_the_ttl_is_not_taken() {
    let mut h = cluster();
    let failed = submit_keyed(&mut h, "alice", "k", 10);
    h.apply(Command::Assign {
        assignments: vec![Assignment {
            task: failed,
            attempt: 1,
            node: "gpu-1".into(),
            gpus: vec![0],
        }],
    });
    h.apply(Command::ReportAttempt {
        task: failed,
        attempt: 1,
        node: "gpu-1".into(),
        update: AttemptUpdate::Failed {
            exit_code: Some(1),
            message: "boom".into(),
            output_tail: String::new(),
        },
    });
    assert_eq!(h.state_of(failed), TaskState::Failed);
    assert!(h.state.result_cache.entries.is_empty());

    let first = submit_keyed(&mut h, "alice", "k", 10);
    run_to_success(&mut h, first, "out");
    h.advance(5_000);
    let strict = submit_with(&mut h, "alice", "k", 10, |r| CacheRequest {
        ttl_ms: 1_000,
        ..r
    });
    assert_eq!(
        h.state_of(strict),
        TaskState::Queued,
        "the result is too old for it"
    );
    let lenient = submit_keyed(&mut h, "alice", "k", 10);
    assert_eq!(h.state_of(lenient), TaskState::Succeeded);
}

#[test]
fn refresh_runs_anyway_and_replaces_the_entry() {
    let mut h = cluster();
    let first = submit_keyed(&mut h, "alice", "k", 10);
    run_to_success(&mut h, first, "old");
    let refresh = submit_with(&mut h, "alice", "k", 10, |r| CacheRequest {
        refresh: true,
        ..r
    });
    assert_eq!(
        h.state_of(refresh),
        TaskState::Queued,
        "opted out of reading"
    );
    run_to_success(&mut h, refresh, "new");
    let next = submit_keyed(&mut h, "alice", "k", 10);
    let outcome = h.state.tasks[&next].outcome.clone().unwrap();
    assert_eq!(outcome.output_tail, "new");
    assert_eq!(served_by(&h, next), Some(refresh));
    assert_eq!(h.state.result_cache.entries.len(), 1);
}

#[test]
fn entries_expire_with_the_maximum_age_and_stay_within_the_count() {
    let mut h = cluster();
    set(&mut h, settings::CACHE_MAX_AGE_MS, "2000");
    set(&mut h, settings::CACHE_MAX_ENTRIES, "2");
    for key in ["k1", "k2", "k3"] {
        let t = submit_keyed(&mut h, "alice", key, 10);
        run_to_success(&mut h, t, key);
    }
    let kept: Vec<&str> = h
        .state
        .result_cache
        .entries
        .keys()
        .map(|k| k.key.as_str())
        .collect();
    assert_eq!(kept, vec!["k2", "k3"], "the oldest went first");
    h.advance(3_000);
    let t = submit_keyed(&mut h, "alice", "k3", 10);
    assert_eq!(h.state_of(t), TaskState::Queued, "expired");
    assert!(h.state.result_cache.entries.is_empty());
    assert_eq!(h.state.result_cache.bytes(), 0);
}

#[test]
fn a_dependent_whose_upstream_finishes_is_served_from_the_cache_and_its_own_dependents_follow() {
    let mut h = cluster();
    let mut prep = spec("prep", &[]);
    prep.payload = Payload::Sim { service_ms: 1 };
    let mut embed = spec("embed", &[("prep", EdgeCondition::OnSuccess)]);
    embed.payload = Payload::Sim { service_ms: 2 };
    let report = spec("report", &[("embed", EdgeCondition::OnSuccess)]);
    let job = |h: &mut Harness| {
        let cache = BTreeMap::from([("embed".to_string(), request(&embed, "embed-v1"))]);
        match submit_as(
            h,
            "alice",
            vec![prep.clone(), embed.clone(), report.clone()],
            cache,
        ) {
            Response::JobAcceptedAt { tasks, .. } => tasks,
            other => panic!("{other:?}"),
        }
    };
    let first = job(&mut h);
    run_to_success(&mut h, first["prep"], "");
    run_to_success(&mut h, first["embed"], "vectors");
    let second = job(&mut h);
    assert_eq!(h.state_of(second["embed"]), TaskState::Waiting);
    run_to_success(&mut h, second["prep"], "");
    assert_eq!(h.state_of(second["embed"]), TaskState::Succeeded);
    assert_eq!(served_by(&h, second["embed"]), Some(first["embed"]));
    assert_eq!(h.state_of(second["report"]), TaskState::Queued);
}

#[test]
fn cache_requests_are_refused_below_their_entry_format_and_checked_field_by_field() {
    let mut h = Harness::in_format(ENTRY_FORMAT_BREAKER);
    h.node("gpu-1", 1, 1);
    let task = spec("a", &[]);
    let cache = BTreeMap::from([("a".to_string(), request(&task, "k"))]);
    let r = submit_as(&mut h, "alice", vec![task.clone()], cache);
    assert!(
        matches!(&r, Response::Rejected(m) if m.contains("entry format 6")),
        "{r:?}"
    );

    let mut h = cluster();
    for (cache, field) in [
        (
            BTreeMap::from([("b".to_string(), request(&task, "k"))]),
            "cache: unknown task",
        ),
        (
            BTreeMap::from([("a".to_string(), request(&task, ""))]),
            "tasks[0] (a).cache.key",
        ),
        (
            BTreeMap::from([(
                "a".to_string(),
                CacheRequest {
                    ttl_ms: u64::MAX,
                    ..request(&task, "k")
                },
            )]),
            "tasks[0] (a).cache.ttl_ms",
        ),
    ] {
        let r = submit_as(&mut h, "alice", vec![task.clone()], cache);
        assert!(
            matches!(&r, Response::Rejected(m) if m.contains(field)),
            "{field}: {r:?}"
        );
    }
    assert!(h.state.tasks.is_empty(), "nothing applied");
}

#[test]
fn snapshots_carry_the_cache_and_collecting_a_job_forgets_its_requests() {
    let mut h = cluster();
    let first = submit_keyed(&mut h, "alice", "k", 10);
    run_to_success(&mut h, first, "out");
    let second = submit_keyed(&mut h, "alice", "k", 10);
    let bytes = snapshot(&h.state);
    assert_eq!(bytes[4], 6, "the cache's format writes version 6");
    let back = decode_snapshot::<TypeConfig, SchedulerState>(&bytes).unwrap();
    assert_eq!(back.state.result_cache, h.state.result_cache);
    assert_eq!(back.state.digest(), h.state.digest());
    back.state.check_invariants().unwrap();
    // Lowering the format never writes a layout that would drop the cache:
    // a follower restored from it would diverge from its leader.
    set(&mut h, settings::ENTRY_FORMAT, "5");
    let lowered = snapshot(&h.state);
    assert_eq!(lowered[4], 6);

    h.advance(10_000);
    h.apply(Command::CollectGarbage {
        finished_before_ms: u64::MAX,
    });
    let left: Vec<TaskId> = h.state.result_cache.tasks.keys().copied().collect();
    // The newest job is never collected (its id must not be given again).
    assert_eq!(left, vec![second], "the first job's request went with it");
    assert_eq!(
        h.state.result_cache.entries.len(),
        1,
        "the result outlives its task"
    );
}

/// A reference model of the cache: the latest success per key, none older
/// than the maximum age, the oldest dropped first past the count.
struct Model {
    /// (owner, key, payload) -> (producer, stored at, output).
    entries: BTreeMap<(String, String, u64), (TaskId, u64, String)>,
    max_entries: usize,
    max_age_ms: u64,
}

impl Model {
    fn expire(&mut self, now: u64) {
        let max_age = self.max_age_ms;
        self.entries.retain(|_, e| now - e.1 <= max_age);
    }

    fn lookup(&mut self, key: &(String, String, u64), ttl_ms: u64, now: u64) -> Option<TaskId> {
        self.expire(now);
        let accept = if ttl_ms == 0 {
            self.max_age_ms
        } else {
            ttl_ms.min(self.max_age_ms)
        };
        self.entries
            .get(key)
            .filter(|e| now - e.1 <= accept)
            .map(|e| e.0)
    }

    fn store(&mut self, key: (String, String, u64), producer: TaskId, now: u64, output: String) {
        self.entries.insert(key, (producer, now, output));
        self.expire(now);
        while self.entries.len() > self.max_entries {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.1)
                .map(|(k, _)| k.clone())
                .expect("not empty");
            self.entries.remove(&oldest);
        }
    }
}

/// Random keyed submissions, runs, failures and waits against the model:
/// every hit and miss, and every hit's producer and output, as it predicts.
fn cache_matches_the_model(seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut h = cluster();
    let mut model = Model {
        entries: BTreeMap::new(),
        max_entries: rng.random_range(1..6),
        max_age_ms: rng.random_range(1_000..5_000),
    };
    set(
        &mut h,
        settings::CACHE_MAX_ENTRIES,
        &model.max_entries.to_string(),
    );
    set(
        &mut h,
        settings::CACHE_MAX_AGE_MS,
        &model.max_age_ms.to_string(),
    );
    // Failed runs must not quarantine the one node: the model has no breaker.
    set(&mut h, settings::BREAKER_FAILURES, "0");
    // Task -> its model key, for the tasks that wait to run.
    let mut queued: Vec<(TaskId, (String, String, u64))> = Vec::new();
    for step in 0..300 {
        match rng.random_range(0..10) {
            0..=4 => {
                let owner = ["alice", "bob"][rng.random_range(0..2)];
                let key = format!("k{}", rng.random_range(0..4));
                let payload_ms = rng.random_range(1..3);
                let ttl_ms = [0, rng.random_range(100..3_000)][rng.random_range(0..2)];
                let refresh = rng.random_bool(0.1);
                let id = submit_with(&mut h, owner, &key, payload_ms, |r| CacheRequest {
                    ttl_ms,
                    refresh,
                    ..r
                });
                let model_key = (owner.to_string(), key, payload_ms);
                let now = h.state.now_ms;
                let expected = if refresh {
                    None
                } else {
                    model.lookup(&model_key, ttl_ms, now)
                };
                let task = &h.state.tasks[&id];
                match expected {
                    Some(producer) => {
                        assert_eq!(task.state, TaskState::Succeeded, "seed {seed} step {step}");
                        assert_eq!(served_by(&h, id), Some(producer), "seed {seed} step {step}");
                        let output = &model.entries[&model_key].2;
                        assert_eq!(&task.outcome.as_ref().unwrap().output_tail, output);
                    }
                    None => {
                        assert_eq!(task.state, TaskState::Queued, "seed {seed} step {step}");
                        queued.push((id, model_key));
                    }
                }
            }
            5..=7 if !queued.is_empty() => {
                let (id, model_key) = queued.remove(rng.random_range(0..queued.len()));
                let output = format!("out-{id}-{}", rng.random_range(0..1_000));
                let ok = rng.random_bool(0.8);
                let assigned = h.apply(Command::Assign {
                    assignments: vec![Assignment {
                        task: id,
                        attempt: 1,
                        node: "gpu-1".into(),
                        gpus: vec![0],
                    }],
                });
                assert_eq!(
                    assigned,
                    Response::Changed(vec![id]),
                    "seed {seed} step {step}"
                );
                let update = if ok {
                    AttemptUpdate::Succeeded {
                        exit_code: Some(0),
                        output_tail: output.clone(),
                    }
                } else {
                    AttemptUpdate::Failed {
                        exit_code: Some(1),
                        message: "failed".into(),
                        output_tail: output.clone(),
                    }
                };
                h.apply(Command::ReportAttempt {
                    task: id,
                    attempt: 1,
                    node: "gpu-1".into(),
                    update,
                });
                if ok {
                    model.store(model_key, id, h.state.now_ms, output);
                }
            }
            _ => h.advance(rng.random_range(0..800)),
        }
    }
    let mut replay = SchedulerState::default();
    for (i, p) in h.log.iter().enumerate() {
        replay.apply(i as u64 + 1, p);
    }
    assert_eq!(replay.digest(), h.state.digest(), "seed {seed}: replay");
}

#[test]
fn the_cache_serves_what_a_reference_model_predicts() {
    let first: u64 = std::env::var("CACHE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    for seed in first..first + 40 {
        println!("seed {seed} (CACHE_MODEL_SEED={seed} replays it)");
        cache_matches_the_model(seed);
    }
}
