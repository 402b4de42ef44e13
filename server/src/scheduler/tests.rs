//! Tests of the pure core: validation, the lifecycle, fencing, cascades, and
//! property tests over random DAGs driven through placement and reports.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::command::{AttemptUpdate, Command, Proposal, Response};
use super::model::*;
use super::placement::{place, policy_by_name, queue_order, PlacementOptions};
use super::SchedulerState;

pub fn spec(name: &str, deps: &[(&str, EdgeCondition)]) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        model: None,
        input_tokens: 100,
        max_output_tokens: 100,
        resources: Resources {
            gpus: 1,
            gpu_memory_mb: 1_000,
            cpu_millis: 100,
            memory_mb: 100,
        },
        priority: 50,
        labels: BTreeMap::new(),
        attempt_timeout_ms: 60_000,
        retry: RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
        payload: Payload::Sim { service_ms: 10 },
        depends_on: deps
            .iter()
            .map(|(t, c)| Dependency {
                task: t.to_string(),
                condition: *c,
            })
            .collect(),
    }
}

pub fn capacity(gpus: u32, slots: u32) -> NodeCapacity {
    NodeCapacity {
        address: "127.0.0.1:1".into(),
        gpus: (0..gpus)
            .map(|i| Gpu {
                index: i,
                uuid: format!("GPU-{i}"),
                model: "H100".into(),
                memory_mb: 80_000,
            })
            .collect(),
        cpu_millis: 64_000,
        memory_mb: 512_000,
        labels: BTreeMap::new(),
        models_loaded: BTreeSet::new(),
        slots_per_gpu: slots,
    }
}

/// A snapshot of `state` as a replica writes it (in the version its
/// entry format and contents call for).
pub fn snapshot(state: &SchedulerState) -> Vec<u8> {
    use autoglm_storage::{Applied, StateMachine};
    <SchedulerState as StateMachine<crate::raft::TypeConfig>>::encode_snapshot(&Applied {
        last_applied: None,
        membership: Default::default(),
        state: state.clone(),
    })
    .unwrap()
}

/// A state plus a log, so tests can replay it.
pub struct Harness {
    pub state: SchedulerState,
    pub log: Vec<Proposal>,
    now: u64,
    /// The entry format `apply` writes.
    format: u16,
}

impl Harness {
    pub fn new() -> Self {
        Self::in_format(super::format::ENTRY_FORMAT_DEFAULT)
    }

    /// A harness whose `apply` writes entries of `format`.
    pub fn in_format(format: u16) -> Self {
        Self {
            state: SchedulerState::default(),
            log: Vec::new(),
            now: 1_000,
            format,
        }
    }

    pub fn apply(&mut self, command: Command) -> Response {
        self.apply_as(self.format, command, None)
    }

    /// Moves the leader's clock on: the next entry carries the later time.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Applies `command` in an entry of `format`, with a request id.
    pub fn apply_as(&mut self, format: u16, command: Command, request: Option<u128>) -> Response {
        self.now += 10;
        let p = Proposal {
            format,
            ..Proposal::new(self.now, self.now * 31, command, request)
        };
        self.log.push(p.clone());
        let r = self.state.apply(self.log.len() as u64, &p);
        self.state
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant broken after {p:?}: {e}"));
        r
    }

    pub fn submit(&mut self, key: &str, tasks: Vec<TaskSpec>) -> Response {
        self.apply(Command::SubmitJob {
            client_id: "c".into(),
            idempotency_key: key.into(),
            tasks,
        })
    }

    pub fn node(&mut self, name: &str, gpus: u32, slots: u32) {
        assert_eq!(
            self.apply(Command::RegisterNode {
                name: name.into(),
                capacity: capacity(gpus, slots)
            }),
            Response::Done
        );
    }

    pub fn state_of(&self, id: TaskId) -> TaskState {
        self.state.tasks[&id].state
    }
}

fn job_tasks(r: &Response) -> BTreeMap<String, TaskId> {
    match r {
        Response::JobAccepted { tasks, .. } => tasks.clone(),
        other => panic!("expected an accepted job, got {other:?}"),
    }
}

fn rejected(r: Response) -> String {
    match r {
        Response::Rejected(m) => m,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn validation_errors_name_task_and_field_and_change_nothing() {
    let mut h = Harness::new();
    h.node("n1", 2, 1);
    let before = h.state.clone();
    let unknown = rejected(h.submit("", vec![spec("a", &[("zz", EdgeCondition::OnSuccess)])]));
    assert!(
        unknown.contains("(a).depends_on") && unknown.contains("zz"),
        "{unknown}"
    );
    let cycle = rejected(h.submit(
        "",
        vec![
            spec("a", &[("b", EdgeCondition::OnSuccess)]),
            spec("b", &[("a", EdgeCondition::Always)]),
        ],
    ));
    assert!(cycle.contains("cycle"), "{cycle}");
    let dup = rejected(h.submit("", vec![spec("a", &[]), spec("a", &[])]));
    assert!(
        dup.contains("(a).name") && dup.contains("duplicate"),
        "{dup}"
    );
    let mut huge = spec("big", &[]);
    huge.resources.gpus = 4;
    let infeasible = rejected(h.submit("", vec![huge]));
    assert!(infeasible.contains("(big).resources"), "{infeasible}");
    let mut fat = spec("fat", &[]);
    fat.payload = Payload::Http {
        method: "POST".into(),
        path: "/v1/completions".into(),
        headers: BTreeMap::new(),
        body: "x".repeat(70_000),
    };
    let too_big = rejected(h.submit("", vec![fat]));
    assert!(too_big.contains("(fat).payload"), "{too_big}");
    let mut empty = spec("e", &[]);
    empty.payload = Payload::Exec {
        argv: vec![],
        env: BTreeMap::new(),
        cwd: None,
    };
    let empty_cmd = rejected(h.submit("", vec![empty]));
    assert!(empty_cmd.contains("(e).payload.exec.argv"), "{empty_cmd}");
    // Only the clock moved.
    let mut after = h.state.clone();
    after.now_ms = before.now_ms;
    after.seed = before.seed;
    after.index = before.index;
    assert_eq!(after, before);
}

#[test]
fn same_idempotency_key_returns_the_same_job() {
    let mut h = Harness::new();
    let first = h.submit("k1", vec![spec("a", &[])]);
    let again = h.submit("k1", vec![spec("a", &[]), spec("b", &[])]);
    match (first, again) {
        (
            Response::JobAccepted {
                job: j1,
                tasks: t1,
                duplicate: false,
            },
            Response::JobAccepted {
                job: j2,
                tasks: t2,
                duplicate: true,
            },
        ) => {
            assert_eq!(j1, j2);
            assert_eq!(t1, t2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.state.jobs.len(), 1);
}

fn assign_all(h: &mut Harness) -> Vec<super::command::Assignment> {
    let mut policy = policy_by_name("default").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let batch = place(
        &h.state,
        &BTreeMap::new(),
        policy.as_mut(),
        &PlacementOptions::default(),
        h.state.now_ms,
        &mut rng,
    );
    h.apply(Command::Assign {
        assignments: batch.clone(),
    });
    batch
}

#[test]
fn stale_attempt_reports_are_rejected() {
    let mut h = Harness::new();
    h.node("n1", 1, 1);
    let mut s = spec("a", &[]);
    s.retry.max_attempts = 3;
    s.retry.backoff_base_ms = 0;
    s.retry.jitter_permille = 0;
    let id = job_tasks(&h.submit("", vec![s]))["a"];
    assign_all(&mut h);
    let fail = AttemptUpdate::Failed {
        exit_code: Some(1),
        message: "boom".into(),
        output_tail: String::new(),
    };
    h.apply(Command::ReportAttempt {
        task: id,
        attempt: 1,
        node: "n1".into(),
        update: fail.clone(),
    });
    assert_eq!(h.state_of(id), TaskState::Queued);
    assign_all(&mut h);
    assert_eq!(h.state.tasks[&id].attempt, 2);
    // The first attempt reports late: rejected, nothing changes.
    let late = AttemptUpdate::Succeeded {
        exit_code: Some(0),
        output_tail: String::new(),
    };
    assert_eq!(
        h.apply(Command::ReportAttempt {
            task: id,
            attempt: 1,
            node: "n1".into(),
            update: late
        }),
        Response::Stale { current_attempt: 2 }
    );
    assert_eq!(h.state_of(id), TaskState::Assigned);
    // A report from another node for the current attempt is stale too.
    let wrong_node = AttemptUpdate::Running;
    assert!(matches!(
        h.apply(Command::ReportAttempt {
            task: id,
            attempt: 2,
            node: "n9".into(),
            update: wrong_node
        }),
        Response::Stale { .. }
    ));
    let ok = AttemptUpdate::Succeeded {
        exit_code: Some(0),
        output_tail: "done".into(),
    };
    h.apply(Command::ReportAttempt {
        task: id,
        attempt: 2,
        node: "n1".into(),
        update: ok.clone(),
    });
    assert_eq!(h.state_of(id), TaskState::Succeeded);
    // Terminal is recorded once.
    assert!(matches!(
        h.apply(Command::ReportAttempt {
            task: id,
            attempt: 2,
            node: "n1".into(),
            update: fail
        }),
        Response::Stale { .. }
    ));
    assert_eq!(h.state_of(id), TaskState::Succeeded);
}

#[test]
fn cancel_and_failure_cascade_down_the_graph() {
    let mut h = Harness::new();
    h.node("n1", 4, 4);
    let ids = job_tasks(&h.submit(
        "",
        vec![
            spec("a", &[]),
            spec("b", &[("a", EdgeCondition::OnSuccess)]),
            spec("c", &[("b", EdgeCondition::OnSuccess)]),
            spec("cleanup", &[("a", EdgeCondition::OnFailure)]),
            spec("report", &[("a", EdgeCondition::Always)]),
        ],
    ));
    assert_eq!(h.state_of(ids["b"]), TaskState::Waiting);
    assign_all(&mut h);
    let fail = AttemptUpdate::Failed {
        exit_code: Some(2),
        message: "x".into(),
        output_tail: String::new(),
    };
    h.apply(Command::ReportAttempt {
        task: ids["a"],
        attempt: 1,
        node: "n1".into(),
        update: fail,
    });
    assert_eq!(h.state_of(ids["a"]), TaskState::Failed);
    let reason = |h: &Harness, n: &str| {
        h.state.tasks[&ids[n]]
            .outcome
            .as_ref()
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(h.state_of(ids["b"]), TaskState::Cancelled);
    assert_eq!(reason(&h, "b"), "upstream_failed");
    assert_eq!(h.state_of(ids["c"]), TaskState::Cancelled);
    assert_eq!(reason(&h, "c"), "upstream_failed");
    assert_eq!(h.state_of(ids["cleanup"]), TaskState::Queued);
    assert_eq!(h.state_of(ids["report"]), TaskState::Queued);

    let ids = job_tasks(&h.submit(
        "",
        vec![
            spec("x", &[]),
            spec("y", &[("x", EdgeCondition::OnSuccess)]),
        ],
    ));
    let job = h.state.tasks[&ids["x"]].job_id;
    h.apply(Command::CancelTask { task: ids["x"] });
    assert_eq!(h.state_of(ids["y"]), TaskState::Cancelled);
    assert_eq!(
        h.state.tasks[&ids["y"]].outcome.as_ref().unwrap().reason,
        "upstream_cancelled"
    );
    assert!(h.state.jobs[&job].finished_ms.is_some());
}

#[test]
fn node_down_requeues_its_attempts_and_timeouts_retry() {
    let mut h = Harness::new();
    h.node("n1", 1, 2);
    let mut s = spec("a", &[]);
    s.retry = RetryPolicy {
        max_attempts: 2,
        backoff_base_ms: 0,
        backoff_factor_permille: 1000,
        backoff_max_ms: 0,
        jitter_permille: 0,
    };
    let id = job_tasks(&h.submit("", vec![s]))["a"];
    assign_all(&mut h);
    h.apply(Command::SetNodeLiveness {
        name: "n1".into(),
        up: false,
    });
    assert_eq!(h.state_of(id), TaskState::Queued);
    assert!(
        assign_all(&mut h).is_empty(),
        "nothing placed on a down node"
    );
    h.apply(Command::SetNodeLiveness {
        name: "n1".into(),
        up: true,
    });
    assign_all(&mut h);
    h.apply(Command::AttemptTimedOut {
        task: id,
        attempt: 2,
    });
    assert_eq!(h.state_of(id), TaskState::TimedOut);
    assert_eq!(h.state.tasks[&id].history.len(), 2);
}

#[test]
fn queue_orders_by_priority_then_age_and_ages_low_priorities() {
    let mut h = Harness::new();
    let mut low = spec("low", &[]);
    low.priority = 10;
    let mut high = spec("high", &[]);
    high.priority = 90;
    let low_id = job_tasks(&h.submit("", vec![low]))["low"];
    let first_mid = job_tasks(&h.submit("", vec![spec("m1", &[])]))["m1"];
    let high_id = job_tasks(&h.submit("", vec![high]))["high"];
    let second_mid = job_tasks(&h.submit("", vec![spec("m2", &[])]))["m2"];
    let order: Vec<TaskId> = queue_order(&h.state, 1_000_000, h.state.now_ms)
        .map(|t| t.id)
        .collect();
    assert_eq!(order, vec![high_id, first_mid, second_mid, low_id]);
    // After long enough, the old low-priority task outranks a fresh mid one.
    h.now += 45_000;
    let fresh_mid = job_tasks(&h.submit("", vec![spec("m3", &[])]))["m3"];
    let aged: Vec<TaskId> = queue_order(&h.state, 1_000, h.state.now_ms)
        .map(|t| t.id)
        .collect();
    let at = |id| aged.iter().position(|x| *x == id).unwrap();
    assert!(at(low_id) < at(fresh_mid), "{aged:?}");
}

/// A random DAG: each task depends on some earlier ones (so it is acyclic).
fn random_dag(rng: &mut impl Rng, size: usize) -> Vec<TaskSpec> {
    (0..size)
        .map(|i| {
            let mut deps = Vec::new();
            for j in 0..i {
                if rng.random_bool(0.15) {
                    let c = [
                        EdgeCondition::OnSuccess,
                        EdgeCondition::OnFailure,
                        EdgeCondition::Always,
                    ][rng.random_range(0..3)];
                    deps.push((format!("t{j}"), c));
                }
            }
            let mut s = spec(&format!("t{i}"), &[]);
            s.depends_on = deps
                .into_iter()
                .map(|(task, condition)| Dependency { task, condition })
                .collect();
            s.priority = rng.random_range(0..=100);
            s.retry = RetryPolicy {
                max_attempts: rng.random_range(1..3),
                backoff_base_ms: 0,
                backoff_factor_permille: 1000,
                backoff_max_ms: 0,
                jitter_permille: 0,
            };
            s
        })
        .collect()
}

fn satisfied(state: TaskState, c: EdgeCondition) -> bool {
    match c {
        EdgeCondition::OnSuccess => state == TaskState::Succeeded,
        EdgeCondition::OnFailure => matches!(state, TaskState::Failed | TaskState::TimedOut),
        EdgeCondition::Always => state.is_terminal(),
    }
}

/// Drives a random DAG to completion and checks it on every step.
fn run_dag(seed: u64, size: usize) -> Harness {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut h = Harness::new();
    h.node("n1", 2, 2);
    h.node("n2", 1, 3);
    let ids = job_tasks(&h.submit("", random_dag(&mut rng, size)));
    let mut finished_order = Vec::new();
    let mut policy = policy_by_name("default").unwrap();
    for _round in 0..10_000 {
        if ids.values().all(|id| h.state.tasks[id].state.is_terminal()) {
            break;
        }
        let batch = place(
            &h.state,
            &BTreeMap::new(),
            policy.as_mut(),
            &PlacementOptions::default(),
            h.state.now_ms,
            &mut rng,
        );
        for a in &batch {
            for (up, c) in &h.state.tasks[&a.task].upstream {
                assert!(
                    satisfied(h.state.tasks[up].state, *c),
                    "seed {seed}: task {} placed before its dependency {up}",
                    a.task
                );
            }
        }
        h.apply(Command::Assign { assignments: batch });
        let placed: Vec<(TaskId, u32, String)> = h
            .state
            .tasks
            .values()
            .filter(|t| t.state.is_placed())
            .map(|t| (t.id, t.attempt, t.placement.as_ref().unwrap().node.clone()))
            .collect();
        for (id, attempt, node) in placed {
            let update = match rng.random_range(0..10) {
                0 => AttemptUpdate::Failed {
                    exit_code: Some(1),
                    message: "random failure".into(),
                    output_tail: String::new(),
                },
                1 => AttemptUpdate::Running,
                _ => AttemptUpdate::Succeeded {
                    exit_code: Some(0),
                    output_tail: String::new(),
                },
            };
            // Sometimes a stale duplicate of an old attempt arrives too.
            if attempt > 1 && rng.random_bool(0.3) {
                let r = h.apply(Command::ReportAttempt {
                    task: id,
                    attempt: attempt - 1,
                    node: node.clone(),
                    update: update.clone(),
                });
                assert!(
                    matches!(r, Response::Stale { .. }),
                    "seed {seed}: stale report accepted: {r:?}"
                );
            }
            let was_terminal = h.state.tasks[&id].state.is_terminal();
            h.apply(Command::ReportAttempt {
                task: id,
                attempt,
                node,
                update,
            });
            if !was_terminal && h.state.tasks[&id].state.is_terminal() {
                finished_order.push(id);
            }
        }
    }
    assert!(
        ids.values().all(|id| h.state.tasks[id].state.is_terminal()),
        "seed {seed}: DAG did not finish"
    );
    // Every task that ran finished after all its upstream tasks finished.
    let pos: BTreeMap<TaskId, usize> = finished_order
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    for id in &finished_order {
        for (up, _) in &h.state.tasks[id].upstream {
            if let (Some(a), Some(b)) = (pos.get(up), pos.get(id)) {
                assert!(a < b, "seed {seed}: {id} finished before its upstream {up}");
            }
        }
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_complete_in_dependency_order(seed in any::<u64>(), size in 1usize..40) {
        println!("seed {seed} size {size}");
        run_dag(seed, size);
    }

    #[test]
    fn queue_order_is_effective_priority_then_age(
        jobs in proptest::collection::vec((0u32..=100, 0u64..5_000), 1..40),
        aging_ms in 1_000u64..100_000,
    ) {
        let mut h = Harness::new();
        for (i, (priority, wait)) in jobs.iter().enumerate() {
            h.now += wait;
            let mut s = spec(&format!("t{i}"), &[]);
            s.priority = *priority;
            h.submit("", vec![s]);
        }
        let now = h.state.now_ms + 10_000;
        let order: Vec<&Task> = queue_order(&h.state, aging_ms, now).collect();
        let effective = |t: &Task| (t.spec.priority as u64 + (now - t.queued_ms) / aging_ms).min(100);
        for pair in order.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            prop_assert!(
                effective(a) > effective(b) || (effective(a) == effective(b) && (a.queued_ms, a.id) <= (b.queued_ms, b.id)),
                "{} (p{} q{}) before {} (p{} q{})", a.id, a.spec.priority, a.queued_ms, b.id, b.spec.priority, b.queued_ms
            );
        }
        prop_assert_eq!(order.len(), jobs.len());
    }

    #[test]
    fn replaying_the_log_gives_the_same_digest(seed in any::<u64>(), size in 1usize..30) {
        let h = run_dag(seed, size);
        let mut replay = SchedulerState::default();
        for (i, p) in h.log.iter().enumerate() {
            replay.apply(i as u64 + 1, p);
        }
        prop_assert_eq!(replay.digest(), h.state.digest());
        prop_assert_eq!(&replay, &h.state);
    }
}

#[test]
fn time_never_goes_backwards() {
    let mut s = SchedulerState::default();
    let put = |at_ms| {
        Proposal::new(
            at_ms,
            0,
            Command::ConfigPut {
                key: "a".into(),
                value: "1".into(),
                expected_version: None,
            },
            None,
        )
    };
    s.apply(1, &put(100));
    s.apply(2, &put(50));
    assert_eq!(s.now_ms, 100);
}

#[test]
fn backoff_is_judged_by_the_leaders_clock_not_the_last_entry() {
    let mut h = Harness::new();
    h.node("n1", 1, 1);
    let mut s = spec("a", &[]);
    s.retry = RetryPolicy {
        max_attempts: 2,
        backoff_base_ms: 5_000,
        backoff_factor_permille: 1000,
        backoff_max_ms: 5_000,
        jitter_permille: 0,
    };
    let id = job_tasks(&h.submit("", vec![s]))["a"];
    assign_all(&mut h);
    let fail = AttemptUpdate::Failed {
        exit_code: Some(1),
        message: "x".into(),
        output_tail: String::new(),
    };
    h.apply(Command::ReportAttempt {
        task: id,
        attempt: 1,
        node: "n1".into(),
        update: fail,
    });
    let not_before = h.state.tasks[&id].not_before_ms;
    let mut policy = policy_by_name("default").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let opts = PlacementOptions::default();
    // No entry is applied while the backoff runs, so the replicated clock stands still.
    assert!(place(
        &h.state,
        &BTreeMap::new(),
        policy.as_mut(),
        &opts,
        h.state.now_ms,
        &mut rng
    )
    .is_empty());
    let batch = place(
        &h.state,
        &BTreeMap::new(),
        policy.as_mut(),
        &opts,
        not_before,
        &mut rng,
    );
    assert_eq!(
        batch.len(),
        1,
        "placed once the leader's clock passed the backoff"
    );
    // The Assign entry carries the leader's time, so apply agrees.
    let p = Proposal::new(not_before, 1, Command::Assign { assignments: batch }, None);
    h.state.apply(1_000, &p);
    assert_eq!(h.state_of(id), TaskState::Assigned);
}

fn config_put(value: &str, request: Option<u128>) -> Proposal {
    Proposal::new(
        1,
        0,
        Command::ConfigPut {
            key: "k".into(),
            value: value.into(),
            expected_version: None,
        },
        request,
    )
}

#[test]
fn a_write_that_reaches_the_log_twice_is_applied_once() {
    let mut s = SchedulerState::default();
    let first = s.apply(1, &config_put("a", Some(7)));
    let digest = s.digest();
    // The retry (or a forward of an entry the old leader had appended)
    // gets the first response and changes nothing.
    assert_eq!(s.apply(2, &config_put("a", Some(7))), first);
    assert_eq!(s.digest(), digest);
    assert_eq!(s.config.get("k").map(|e| e.version), Some(1));
    // A different request is a different write.
    s.apply(3, &config_put("a", Some(8)));
    assert_eq!(s.config.get("k").map(|e| e.version), Some(2));
    // Writes without an id (leader loops) are never deduplicated.
    s.apply(4, &config_put("a", None));
    s.apply(5, &config_put("a", None));
    assert_eq!(s.config.get("k").map(|e| e.version), Some(4));
}

#[test]
fn remembered_requests_are_bounded_oldest_first() {
    use crate::scheduler::limits::APPLIED_REQUESTS_MAX;
    let mut s = SchedulerState::default();
    for id in 0..=APPLIED_REQUESTS_MAX as u128 {
        s.apply(id as u64 + 1, &config_put("v", Some(id)));
    }
    assert_eq!(s.applied_requests.len(), APPLIED_REQUESTS_MAX);
    assert!(s.applied_requests.get(0).is_none());
    assert!(s.applied_requests.get(1).is_some());
}

#[test]
fn remembered_responses_are_bounded_in_bytes_too() {
    use crate::scheduler::limits::APPLIED_REQUESTS_BYTES_MAX;
    let mut s = SchedulerState::default();
    let big = "x".repeat(60 * 1024);
    let writes = APPLIED_REQUESTS_BYTES_MAX / big.len() + 10;
    for id in 0..writes as u128 {
        s.apply(id as u64 + 1, &config_put(&big, Some(id)));
    }
    assert!(s.applied_requests.len() < writes);
    assert!(s.applied_requests.get(0).is_none());
    assert!(s.applied_requests.get(writes as u128 - 1).is_some());
}

#[test]
fn a_version_1_snapshot_restores_with_an_empty_acl() {
    use autoglm_storage::state_machine::{decode_snapshot, Applied};
    use openraft::{BasicNode, LogId, StoredMembership};
    use serde::Serialize;

    let mut h = Harness::new();
    h.node("gpu-1", 2, 1);
    h.submit(
        "k",
        vec![
            spec("a", &[]),
            spec("b", &[("a", EdgeCondition::OnSuccess)]),
        ],
    );
    h.apply(Command::ConfigPut {
        key: "kv/x".into(),
        value: "1".into(),
        expected_version: None,
    });
    let s = &h.state;
    /// Exactly the layout snapshot format 1 wrote: `Applied` around the
    /// state's fields before `acl`, no tag.
    #[derive(Serialize)]
    struct V1<'a> {
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, BasicNode>,
        now_ms: u64,
        config: &'a super::config_store::ConfigStore,
        jobs: &'a super::digested::DigestedMap<JobId, Job>,
        tasks: &'a super::digested::DigestedMap<TaskId, Task>,
        queue: &'a BTreeSet<TaskId>,
        nodes: &'a BTreeMap<NodeName, Node>,
        placed: &'a BTreeMap<NodeName, BTreeSet<TaskId>>,
        idempotency: &'a super::digested::DigestedMap<(String, String), JobId>,
        next_task_id: TaskId,
        applied_requests: &'a super::requests::AppliedRequests,
    }
    let queue_ids: BTreeSet<TaskId> = s.queue.ids().copied().collect();
    let v1 = postcard::to_stdvec(&V1 {
        last_applied: None,
        membership: StoredMembership::default(),
        now_ms: s.now_ms,
        config: &s.config,
        jobs: &s.jobs,
        tasks: &s.tasks,
        queue: &queue_ids,
        nodes: &s.nodes,
        placed: &s.placed,
        idempotency: &s.idempotency,
        next_task_id: s.next_task_id,
        applied_requests: &s.applied_requests,
    })
    .unwrap();
    let restored = decode_snapshot::<crate::raft::TypeConfig, SchedulerState>(&v1).unwrap();
    assert_eq!(
        restored.state.digest(),
        s.digest(),
        "version 1 restores the same state"
    );
    assert_eq!(restored.state.acl, super::acl::Acl::default());
    restored
        .state
        .check_invariants()
        .expect("the queue index and counts are rebuilt on restore");

    // The current format round-trips, tagged with its version.
    let mut s2 = s.clone();
    s2.acl.job_owners.insert(1, "alice".into());
    let current = autoglm_storage::codec::encode_snapshot(&Applied {
        last_applied: None,
        membership: StoredMembership::default(),
        state: s2.clone(),
    })
    .unwrap();
    assert_eq!(&current[..4], b"AGLS");
    let back = decode_snapshot::<crate::raft::TypeConfig, SchedulerState>(&current).unwrap();
    assert_eq!(back.state.digest(), s2.digest());
    back.state.check_invariants().unwrap();
    let mut newer = current.clone();
    newer[4] = 9;
    assert!(decode_snapshot::<crate::raft::TypeConfig, SchedulerState>(&newer).is_err());
}

#[test]
fn owned_submissions_are_held_to_every_bound_and_remember_owner_and_secrets() {
    let mut h = Harness::new();
    let owned = |tasks: Vec<TaskSpec>, secret: BTreeMap<String, BTreeSet<String>>| {
        Command::SubmitOwnedJob {
            owner: "alice".into(),
            client_id: "c".into(),
            idempotency_key: String::new(),
            tasks,
            secret_env: secret,
        }
    };
    let mut long = spec("a", &[]);
    long.model = Some("m".repeat(10_000));
    let r = rejected(h.apply(owned(vec![long.clone()], BTreeMap::new())));
    assert!(r.contains("(a).model"), "{r}");
    // The same task through the old command replays as it always did.
    assert!(matches!(
        h.submit("", vec![long]),
        Response::JobAccepted { .. }
    ));

    let mut exec = spec("e", &[]);
    exec.payload = Payload::Exec {
        argv: vec!["python3".into()],
        env: BTreeMap::from([("DB_PASS".into(), "p".into()), ("X".into(), "1".into())]),
        cwd: None,
    };
    let unknown = BTreeMap::from([("e".to_string(), BTreeSet::from(["NOPE".to_string()]))]);
    let r = rejected(h.apply(owned(vec![exec.clone()], unknown)));
    assert!(r.contains("secret_env"), "{r}");
    let marked = BTreeMap::from([("e".to_string(), BTreeSet::from(["DB_PASS".to_string()]))]);
    let Response::JobAccepted { job, tasks, .. } = h.apply(owned(vec![exec], marked)) else {
        panic!("accepted");
    };
    assert!(h.state.acl.owns("alice", job) && !h.state.acl.owns("bob", job));
    let task = &h.state.tasks[&tasks["e"]];
    assert_eq!(
        h.state.secret_env_names(task),
        BTreeSet::from(["DB_PASS".to_string()])
    );
    assert!(h.state.sees_secrets("alice", false, job));
    assert!(!h.state.sees_secrets("bob", false, job));
    assert!(h.state.sees_secrets("bob", true, job));
}

#[test]
fn set_config_is_checked_by_the_registry_and_config_put_replays_unchecked() {
    let mut h = Harness::new();
    let set = |key: &str, value: &str| Command::SetConfig {
        key: key.into(),
        value: value.into(),
        expected_version: None,
    };
    assert!(rejected(h.apply(set("limits/payload_bytes_max", "0")))
        .contains("limits/payload_bytes_max"));
    assert!(rejected(h.apply(set("no/such", "1"))).contains("unknown setting"));
    assert!(matches!(
        h.apply(set("limits/payload_bytes_max", "2048")),
        Response::ConfigWritten(_)
    ));
    assert_eq!(h.state.payload_bytes_max(), 2048);
    // An old log's unchecked write still applies; reads ignore the bad value.
    let old = Command::ConfigPut {
        key: "limits/payload_bytes_max".into(),
        value: "abc".into(),
        expected_version: None,
    };
    assert!(matches!(h.apply(old), Response::ConfigWritten(_)));
    assert_eq!(h.state.payload_bytes_max(), 64 * 1024);
}

#[test]
fn the_snapshot_copy_encodes_as_the_state_and_restores_its_queue_order() {
    let mut h = Harness::new();
    h.node("n", 1, 1);
    for (i, priority) in [10u32, 50, 90, 50].into_iter().enumerate() {
        let mut task = spec("t", &[]);
        task.priority = priority;
        h.submit(&format!("job-{i}"), vec![task]);
    }
    let copy = h.state.copy_for_snapshot();
    let bytes = postcard::to_stdvec(&copy).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(&h.state).unwrap());
    let mut restored: SchedulerState = postcard::from_bytes(&bytes).unwrap();
    restored.reindex();
    assert!(restored.queue.same_index(&h.state.queue));
    assert_eq!(restored.digest(), h.state.digest());
}
