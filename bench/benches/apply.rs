//! The cost of `apply` for each command kind, on states that already hold 0,
//! 100,000 and 1,000,000 queued tasks (`APPLY_SIZES=0,100000` picks others),
//! and of the state digest `Status` reports. Each measured apply is set up
//! untimed (the task it needs submitted, assigned...) and cleaned up untimed
//! (the task finished), so the state keeps its size while criterion runs.
//! `cargo bench -p autoglm-bench --bench apply`

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use autoglm_server::scheduler::command::{Assignment, AttemptUpdate, BatchedWrite, Command};
use autoglm_server::scheduler::format::ENTRY_FORMAT_MAX;
use autoglm_server::scheduler::model::{
    NodeCapacity, Payload, Resources, RetryPolicy, TaskId, TaskSpec,
};
use autoglm_server::scheduler::{Proposal, Response, SchedulerState};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const NODE: &str = "node-0";
/// Tasks per submission while the base state is built.
const JOB_TASKS: usize = 1_000;

/// A state and its next log index.
struct Bench {
    state: SchedulerState,
    index: u64,
}

impl Bench {
    fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let proposal = Proposal {
            format: ENTRY_FORMAT_MAX,
            ..Proposal::new(1_000 + self.index, self.index, command, None)
        };
        self.state.apply(self.index, &proposal)
    }

    /// Applies `command` and returns how long `apply` took.
    fn timed(&mut self, command: Command) -> Duration {
        self.index += 1;
        let proposal = Proposal {
            format: ENTRY_FORMAT_MAX,
            ..Proposal::new(1_000 + self.index, self.index, command, None)
        };
        let started = Instant::now();
        black_box(self.state.apply(self.index, &proposal));
        started.elapsed()
    }

    fn submit_one(&mut self) -> TaskId {
        match self.apply(submit(1)) {
            Response::JobAcceptedAt { tasks, .. } => tasks["t0"],
            other => panic!("submission refused: {other:?}"),
        }
    }
}

fn spec(i: usize) -> TaskSpec {
    TaskSpec {
        name: format!("t{i}"),
        model: None,
        input_tokens: 100,
        max_output_tokens: 100,
        resources: Resources {
            gpus: 0,
            gpu_memory_mb: 0,
            cpu_millis: 1,
            memory_mb: 1,
        },
        priority: 50,
        labels: BTreeMap::new(),
        attempt_timeout_ms: 60_000,
        retry: RetryPolicy::default(),
        payload: Payload::Sim { service_ms: 10 },
        depends_on: Vec::new(),
    }
}

fn submit(tasks: usize) -> Command {
    Command::SubmitJob {
        client_id: "bench".into(),
        idempotency_key: String::new(),
        tasks: (0..tasks).map(spec).collect(),
    }
}

fn assign(task: TaskId) -> Command {
    Command::Assign {
        assignments: vec![Assignment {
            task,
            attempt: 1,
            node: NODE.into(),
            gpus: Vec::new(),
        }],
    }
}

fn report(task: TaskId, update: AttemptUpdate) -> Command {
    Command::ReportAttempt {
        task,
        attempt: 1,
        node: NODE.into(),
        update,
    }
}

fn succeeded() -> AttemptUpdate {
    AttemptUpdate::Succeeded {
        exit_code: Some(0),
        output_tail: String::new(),
    }
}

fn set_config(i: u64) -> Command {
    Command::SetConfig {
        key: "kv/bench".into(),
        value: format!("v{i}"),
        expected_version: None,
    }
}

/// One node with room for every task, then `queued` tasks in the queue.
fn base(queued: usize) -> Bench {
    let mut bench = Bench {
        state: SchedulerState::default(),
        index: 0,
    };
    bench.apply(Command::RegisterNode {
        name: NODE.into(),
        capacity: NodeCapacity {
            address: String::new(),
            gpus: Vec::new(),
            cpu_millis: u64::from(u32::MAX),
            memory_mb: u64::from(u32::MAX),
            labels: BTreeMap::new(),
            models_loaded: BTreeSet::new(),
            slots_per_gpu: 1,
        },
    });
    let mut left = queued;
    while left > 0 {
        let n = left.min(JOB_TASKS);
        bench.apply(submit(n));
        left -= n;
    }
    assert_eq!(bench.state.queue.len(), queued);
    bench
}

/// Runs `step` `iters` times; `step` applies untimed what it needs and
/// returns the time of the one apply it measures.
fn measure(
    bench: &mut Bench,
    iters: u64,
    mut step: impl FnMut(&mut Bench) -> Duration,
) -> Duration {
    (0..iters).map(|_| step(bench)).sum()
}

fn apply_by_kind(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("APPLY_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 100_000, 1_000_000]);
    for size in sizes {
        let mut bench = base(size);
        let mut group = c.benchmark_group(format!("apply at {size} queued"));
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(3));
        group.bench_function(BenchmarkId::from_parameter("submit one task"), |b| {
            b.iter_custom(|iters| {
                measure(&mut bench, iters, |bench| {
                    let took = bench.timed(submit(1));
                    let task = bench.state.next_task_id - 1;
                    bench.apply(Command::CancelTask { task });
                    took
                })
            })
        });
        group.bench_function(BenchmarkId::from_parameter("cancel a task"), |b| {
            b.iter_custom(|iters| {
                measure(&mut bench, iters, |bench| {
                    let task = bench.submit_one();
                    bench.timed(Command::CancelTask { task })
                })
            })
        });
        group.bench_function(BenchmarkId::from_parameter("assign one"), |b| {
            b.iter_custom(|iters| {
                measure(&mut bench, iters, |bench| {
                    let task = bench.submit_one();
                    let took = bench.timed(assign(task));
                    bench.apply(Command::CancelTask { task });
                    took
                })
            })
        });
        group.bench_function(BenchmarkId::from_parameter("report running"), |b| {
            b.iter_custom(|iters| {
                measure(&mut bench, iters, |bench| {
                    let task = bench.submit_one();
                    bench.apply(assign(task));
                    let took = bench.timed(report(task, AttemptUpdate::Running));
                    bench.apply(Command::CancelTask { task });
                    took
                })
            })
        });
        group.bench_function(BenchmarkId::from_parameter("report succeeded"), |b| {
            b.iter_custom(|iters| {
                measure(&mut bench, iters, |bench| {
                    let task = bench.submit_one();
                    bench.apply(assign(task));
                    bench.apply(report(task, AttemptUpdate::Running));
                    bench.timed(report(task, succeeded()))
                })
            })
        });
        group.bench_function(BenchmarkId::from_parameter("set config"), |b| {
            b.iter_custom(|iters| {
                measure(&mut bench, iters, |bench| {
                    let i = bench.index;
                    bench.timed(set_config(i))
                })
            })
        });
        group.bench_function(
            BenchmarkId::from_parameter("batch of 64 config writes"),
            |b| {
                b.iter_custom(|iters| {
                    measure(&mut bench, iters, |bench| {
                        let writes = (0..64)
                            .map(|i| BatchedWrite {
                                command: set_config(i),
                                request: Some(u128::from(bench.index) << 8 | u128::from(i)),
                            })
                            .collect();
                        bench.timed(Command::Batch { writes })
                    })
                })
            },
        );
        group.bench_function(BenchmarkId::from_parameter("state digest"), |b| {
            b.iter(|| black_box(bench.state.digest()))
        });
        group.finish();
    }
}

criterion_group!(benches, apply_by_kind);
criterion_main!(benches);
