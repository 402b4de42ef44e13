use super::*;
use crate::sim::model::{self, NodeSpec};
use crate::sim::workload::TaskReq;
use crate::sim::{run_scenario, workload, Scenario};

fn one_node_fleet(cap: u32) -> Fleet {
    Fleet {
        name: "T".into(),
        nodes: vec![NodeSpec {
            name: "n-00".into(),
            gpu_model: "H100".into(),
            speed: 1.0,
            cap,
        }],
        straggler: None,
        crash: None,
        broken: None,
    }
}

fn job(at_ms: u64, input: u32, output: u32) -> JobSpec {
    JobSpec {
        arrival_ms: at_ms,
        tasks: vec![TaskReq {
            input_tokens: input,
            output_tokens: output,
            priority: 0,
            deps: vec![],
            cache_key: None,
        }],
    }
}

fn config(fleet: Fleet, policy: &str) -> SimConfig {
    let n = fleet.nodes.len();
    let mut cfg = SimConfig::new(fleet, policy, 1, vec![1.0; n]);
    cfg.dispatch_ms = 0;
    cfg
}

#[test]
fn one_request_alone_takes_prefill_plus_decode() {
    let cfg = config(one_node_fleet(8), "default");
    let r = Sim::new(cfg, vec![job(0, 1_000, 101)])
        .unwrap()
        .run("t", 0.0);
    assert_eq!((r.succeeded, r.failed, r.lost), (1, 0, 0));
    // Submit committed at 5 ms, placed by the 50 ms round, assignment
    // committed at 55 ms; prefill 1,000 x 0.2 ms = 200 ms; then 100 more
    // tokens at 60 tokens/s.
    let ttft = 55.0 + 200.0;
    assert!(
        (r.ttft_p50_ms - ttft).abs() <= 1.0,
        "ttft {}",
        r.ttft_p50_ms
    );
    let e2e = ttft + 100.0 / 60.0 * 1000.0;
    assert!((r.e2e_p50_ms - e2e).abs() <= 1.0, "e2e {}", r.e2e_p50_ms);
}

#[test]
fn decode_slows_as_the_batch_grows() {
    let cfg = config(one_node_fleet(8), "default");
    let jobs = (0..4).map(|_| job(0, 1, 601)).collect();
    let r = Sim::new(cfg, jobs).unwrap().run("t", 0.0);
    // Four together: 600 tokens at 60 / (1 + 0.02 * 3) tokens/s each.
    let decode = 600.0 / (60.0 / 1.06) * 1000.0;
    assert!((r.e2e_p99_ms - r.ttft_p99_ms - decode).abs() < 5.0, "{r:?}");
}

#[test]
fn the_batch_cap_holds_and_the_rest_waits_in_the_queue() {
    let cfg = config(one_node_fleet(4), "least-outstanding");
    let jobs = (0..20).map(|i| job(i, 100, 50)).collect();
    let r = Sim::new(cfg, jobs).unwrap().run("t", 0.0);
    assert_eq!(r.succeeded, 20);
    assert_eq!(r.max_batch_over_cap, 1.0);
}

#[test]
fn a_crash_requeues_with_retries_and_loses_nothing() {
    let mut fleet = model::f2();
    fleet.crash = Some((0, 10_000));
    let caps = model::capacities(&fleet, &ServiceModel::default(), 1_000.0, 200.0);
    let mut cfg = SimConfig::new(fleet.clone(), "round-robin", 3, caps.clone());
    cfg.opts.dispatch_threshold = 1.0;
    let jobs: Vec<JobSpec> = (0..600).map(|i| job(i * 50, 1_000, 200)).collect();
    let r = Sim::new(cfg, jobs.clone()).unwrap().run("t", 0.0);
    assert_eq!(r.lost, 0);
    assert!(r.retries > 0, "the crash cost attempts: {r:?}");
    assert_eq!(r.succeeded, 600, "{r:?}");
    // Without retries the crashed node's attempts fail, still none is lost.
    let mut cfg = SimConfig::new(fleet, "round-robin", 3, caps);
    cfg.opts.dispatch_threshold = 1.0;
    cfg.max_attempts = 1;
    let r = Sim::new(cfg, jobs).unwrap().run("t", 0.0);
    assert_eq!(r.lost, 0);
    assert!(r.failed > 0 && r.succeeded + r.failed == 600, "{r:?}");
}

#[test]
fn the_policies_are_the_servers() {
    let fleet = one_node_fleet(4);
    assert!(Sim::new(config(fleet.clone(), "no-such-policy"), vec![]).is_err());
    for p in policy_names() {
        assert!(Sim::new(config(fleet.clone(), p), vec![]).is_ok(), "{p}");
    }
    assert_eq!(
        &policy_names()[..autoglm_server::scheduler::placement::POLICY_NAMES.len()],
        autoglm_server::scheduler::placement::POLICY_NAMES
    );
}

fn scenario(policy: &str, seed: u64) -> Scenario {
    Scenario {
        fleet: "f3".into(),
        workload: workload::WorkloadKind::Conv,
        policy: policy.into(),
        rho: 0.7,
        heartbeat_ms: 1_000,
        seed,
        duration_s: 40.0,
        max_attempts: 3,
        failover: Some((20_000, 2_000)),
        dispatch_threshold: None,
        breaker_failures: None,
        cache_repeat: None,
    }
}

#[test]
fn same_seed_same_result() {
    let trace = workload::load_trace(&workload::default_trace_path()).unwrap();
    for p in ["default", "power-of-two", "oracle"] {
        let a = serde_json::to_string(&run_scenario(&scenario(p, 5), &trace).unwrap()).unwrap();
        let b = serde_json::to_string(&run_scenario(&scenario(p, 5), &trace).unwrap()).unwrap();
        assert_eq!(a, b, "{p}");
    }
    let a = serde_json::to_string(&run_scenario(&scenario("random", 5), &trace).unwrap());
    let b = serde_json::to_string(&run_scenario(&scenario("random", 6), &trace).unwrap());
    assert_ne!(a.unwrap(), b.unwrap(), "the seed matters");
}

#[test]
fn policies_differ_on_a_heterogeneous_fleet() {
    let trace = workload::load_trace(&workload::default_trace_path()).unwrap();
    let mut sc = scenario("round-robin", 1);
    sc.fleet = "f2".into();
    sc.failover = None;
    sc.dispatch_threshold = Some(1.0);
    let rr = run_scenario(&sc, &trace).unwrap();
    sc.policy = "oracle".into();
    let oracle = run_scenario(&sc, &trace).unwrap();
    assert_eq!(rr.offered, oracle.offered, "same workload for every policy");
    assert!(oracle.e2e_mean_ms < rr.e2e_mean_ms, "{oracle:?} vs {rr:?}");
}

#[test]
fn the_breaker_keeps_work_off_a_node_that_fails_every_attempt() {
    let trace = workload::load_trace(&workload::default_trace_path()).unwrap();
    let run = |failures| {
        let sc = Scenario {
            fleet: "f4".into(),
            duration_s: 80.0,
            failover: None,
            breaker_failures: Some(failures),
            ..scenario("default", 3)
        };
        run_scenario(&sc, &trace).unwrap()
    };
    let (off, on) = (run(0), run(5));
    assert_eq!((off.lost, on.lost), (0, 0));
    assert!(
        off.failed > 0,
        "without the breaker the broken node fails tasks: {off:?}"
    );
    assert_eq!(on.failed, 0, "with it, retries land elsewhere: {on:?}");
    assert!(
        on.retries * 10 < off.retries,
        "retries {} with the breaker, {} without",
        on.retries,
        off.retries
    );
}

#[test]
fn repeated_requests_are_served_from_the_cache_and_save_gpu_time() {
    let trace = workload::load_trace(&workload::default_trace_path()).unwrap();
    let run = |repeat| {
        let sc = Scenario {
            fleet: "f2".into(),
            duration_s: 60.0,
            failover: None,
            cache_repeat: repeat,
            ..scenario("default", 2)
        };
        run_scenario(&sc, &trace).unwrap()
    };
    let (none, keyed) = (run(None), run(Some(0.3)));
    assert_eq!(none.cached, 0);
    assert!(none.gpu_time_saved_frac == 0.0, "{none:?}");
    assert_eq!(keyed.offered, none.offered, "the same arrivals");
    assert_eq!((keyed.lost, keyed.failed), (0, 0), "{keyed:?}");
    // Some repeats arrive while their original still runs: those run again.
    let share = keyed.cached as f64 / keyed.offered as f64;
    assert!((0.15..=0.31).contains(&share), "{share} of tasks cached");
    assert!(keyed.gpu_time_saved_frac > 0.1, "{keyed:?}");
    assert!(
        keyed.cached_p99_ms < keyed.e2e_p50_ms,
        "cached p99 {} ms vs e2e p50 {} ms",
        keyed.cached_p99_ms,
        keyed.e2e_p50_ms
    );
}
