//! Placement decision time: one queued task placed against N registered nodes
//! by the real `place` function and policy, timed one decision at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use autoglm_server::scheduler::command::Command;
use autoglm_server::scheduler::model::{
    Gpu, NodeCapacity, Payload, Resources, RetryPolicy, TaskSpec,
};
use autoglm_server::scheduler::placement::{
    policy_by_name, LiveNode, PlacementOptions, Round, POLICY_NAMES,
};
use autoglm_server::scheduler::{Proposal, SchedulerState};
use clap::Args;
use rand::{Rng, SeedableRng};

use crate::stats::summarize;

#[derive(Args)]
pub struct PlacementTimeArgs {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Decisions timed per policy.
    #[arg(long, default_value_t = 20_000)]
    decisions: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Policies to time (all when empty).
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn apply(state: &mut SchedulerState, index: &mut u64, command: Command) {
    *index += 1;
    state.apply(
        *index,
        &Proposal::new(1_000 + *index, *index, command, None),
    );
}

/// A fleet of `n` nodes with 8 GPUs each, some load on them, and live metrics.
fn fleet(n: usize, rng: &mut impl Rng) -> (SchedulerState, BTreeMap<String, LiveNode>, u64) {
    let mut state = SchedulerState::default();
    let mut index = 0;
    let mut live = BTreeMap::new();
    for i in 0..n {
        let name = format!("node-{i:04}");
        let capacity = NodeCapacity {
            address: String::new(),
            gpus: (0..8)
                .map(|g| Gpu {
                    index: g,
                    uuid: format!("GPU-{i}-{g}"),
                    model: "H100".into(),
                    memory_mb: 81_920,
                })
                .collect(),
            cpu_millis: 128_000,
            memory_mb: 1_024_000,
            labels: BTreeMap::from([("zone".to_string(), format!("z{}", i % 4))]),
            models_loaded: BTreeSet::from(["llama-3-8b".to_string()]),
            slots_per_gpu: 16,
        };
        apply(
            &mut state,
            &mut index,
            Command::RegisterNode {
                name: name.clone(),
                capacity,
            },
        );
        let l = LiveNode {
            gpu_util: rng.random_range(0.0..0.8),
            gpu_mem_used: rng.random_range(0.1..0.9),
            cpu_util: rng.random_range(0.0..0.7),
            mem_util: rng.random_range(0.1..0.8),
            net_latency_ms: rng.random_range(0.1..5.0),
            age_ms: 100,
            latency_ewma_ms: Some(rng.random_range(100.0..2000.0)),
        };
        live.insert(name, l);
    }
    (state, live, index)
}

fn task(name: &str) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        model: Some("llama-3-8b".into()),
        input_tokens: 512,
        max_output_tokens: 256,
        resources: Resources {
            gpus: 1,
            gpu_memory_mb: 2_000,
            cpu_millis: 500,
            memory_mb: 1_000,
        },
        priority: 50,
        labels: BTreeMap::new(),
        attempt_timeout_ms: 60_000,
        retry: RetryPolicy::default(),
        payload: Payload::Sim { service_ms: 0 },
        depends_on: Vec::new(),
    }
}

pub fn run(args: PlacementTimeArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let (mut state, live, mut index) = fleet(args.nodes, &mut rng);
    let names: Vec<&str> = if args.policies.is_empty() {
        POLICY_NAMES.to_vec()
    } else {
        args.policies.iter().map(String::as_str).collect()
    };
    let options = PlacementOptions {
        batch_max: 1,
        ..Default::default()
    };
    let mut results = Vec::new();
    println!(
        "placement decision time, {} nodes x 8 GPUs, one task per decision (seed {})",
        args.nodes, args.seed
    );
    for name in names {
        let mut policy =
            policy_by_name(name).ok_or_else(|| anyhow::anyhow!("unknown policy {name}"))?;
        let mut decisions = Vec::with_capacity(args.decisions);
        let mut rounds = Vec::with_capacity(args.decisions);
        for d in 0..args.decisions {
            // One queued task at a time; it is cancelled afterwards so the fleet stays as loaded.
            let submitted = format!("{name}-{d}");
            let job = vec![task(&submitted)];
            apply(
                &mut state,
                &mut index,
                Command::SubmitJob {
                    client_id: "bench".into(),
                    idempotency_key: String::new(),
                    tasks: job,
                },
            );
            let id = *state
                .queue
                .ids()
                .next()
                .ok_or_else(|| anyhow::anyhow!("nothing queued"))?;
            let started = Instant::now();
            let mut round = Round::new(&state, &live, &options, state.now_ms);
            rounds.push(started.elapsed());
            let started = Instant::now();
            let assignment = round.decide(&state.tasks[&id], policy.as_mut(), &mut rng);
            decisions.push(started.elapsed());
            anyhow::ensure!(
                assignment.is_ok(),
                "policy {name} placed nothing: {assignment:?}"
            );
            apply(&mut state, &mut index, Command::CancelTask { task: id });
        }
        let (s, r) = (summarize(&decisions), summarize(&rounds));
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        println!(
            "{name:>18}: decision p50 {:>6.1} µs  p99 {:>6.1} µs  max {:>7.1} µs | view per round p50 {:>6.1} µs  p99 {:>6.1} µs",
            us(s.p50), us(s.p99), us(s.max), us(r.p50), us(r.p99)
        );
        results.push(serde_json::json!({
            "policy": name, "nodes": args.nodes,
            "decision_p50_us": us(s.p50), "decision_p99_us": us(s.p99),
            "round_view_p50_us": us(r.p50), "round_view_p99_us": us(r.p99),
        }));
        // Forget the cancelled jobs so the next policy starts from the same state size.
        apply(
            &mut state,
            &mut index,
            Command::CollectGarbage {
                finished_before_ms: u64::MAX,
            },
        );
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
