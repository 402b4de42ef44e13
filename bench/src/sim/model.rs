//! The simulated hardware: a continuous-batching service model per node, and
//! the fleets F1, F2 and F3 of issue 6.

use serde::Serialize;

/// How one GPU node serves inference requests (continuous batching).
///
/// A request first prefills its prompt: `input_tokens * prefill_s_per_token /
/// speed` seconds, which emits the first token. It then decodes its remaining
/// output tokens at `speed * decode_tok_s / (1 + batch_alpha * (b - 1))`
/// tokens per second, where `b` is the number of requests on the node (in
/// either phase). Every change of `b` changes every decoder's rate
/// (processor sharing); the simulator recomputes completion times then.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceModel {
    /// Decode tokens per second of one request alone on a speed-1.0 GPU.
    pub decode_tok_s: f64,
    /// Per-request decode slowdown per extra request in the batch.
    pub batch_alpha: f64,
    /// Prefill seconds per input token on a speed-1.0 GPU.
    pub prefill_s_per_token: f64,
}

impl Default for ServiceModel {
    fn default() -> Self {
        Self {
            decode_tok_s: 60.0,
            batch_alpha: 0.02,
            prefill_s_per_token: 0.000_2,
        }
    }
}

impl ServiceModel {
    /// Decode tokens per second of each request in a batch of `b`.
    pub fn decode_rate(&self, speed: f64, b: usize) -> f64 {
        speed * self.decode_tok_s / (1.0 + self.batch_alpha * b.saturating_sub(1) as f64)
    }

    pub fn prefill_s(&self, speed: f64, input_tokens: f64) -> f64 {
        input_tokens * self.prefill_s_per_token / speed
    }

    /// Requests per second a node serves with its batch full (Little's law:
    /// `cap` requests in service, each taking prefill plus decode at the
    /// full-batch rate), for a request of the given mean size.
    pub fn node_capacity_rps(&self, speed: f64, cap: u32, mean_in: f64, mean_out: f64) -> f64 {
        let service_s = self.prefill_s(speed, mean_in)
            + (mean_out - 1.0).max(0.0) / self.decode_rate(speed, cap as usize);
        cap as f64 / service_s
    }
}

/// One node class member: a GPU of some speed and a concurrency cap derived
/// from its memory (KV-cache memory over per-request KV memory).
#[derive(Debug, Clone, Serialize)]
pub struct NodeSpec {
    pub name: String,
    pub gpu_model: String,
    pub speed: f64,
    pub cap: u32,
}

/// A node made `factor` times slower from `at_ms` for `for_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct Straggler {
    pub node: usize,
    pub at_ms: u64,
    pub for_ms: u64,
    pub factor: f64,
}

/// A node whose every attempt fails `fail_after_ms` after it starts (a
/// broken GPU or driver), from `at_ms` for `for_ms`, then repaired. It looks
/// idle, so without the circuit breaker it draws work: a black hole.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub node: usize,
    pub at_ms: u64,
    pub for_ms: u64,
    pub fail_after_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    pub straggler: Option<Straggler>,
    /// (node, time in ms): the node crashes and stays down.
    pub crash: Option<(usize, u64)>,
    pub broken: Option<Broken>,
}

fn class(prefix: &str, gpu: &str, n: usize, speed: f64, cap: u32) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| NodeSpec {
            name: format!("{prefix}-{i:02}"),
            gpu_model: gpu.into(),
            speed,
            cap,
        })
        .collect()
}

/// F1: 16 identical nodes (the medium class, so its capacity is close to F2's).
pub fn f1() -> Fleet {
    Fleet {
        name: "F1".into(),
        nodes: class("med", "A100-40GB", 16, 0.6, 48),
        straggler: None,
        crash: None,
        broken: None,
    }
}

/// F2: 16 heterogeneous nodes: 4 fast (1.0, 64), 6 medium (0.6, 48), 6 slow (0.35, 24).
pub fn f2() -> Fleet {
    let mut nodes = class("fast", "H100-80GB", 4, 1.0, 64);
    nodes.extend(class("med", "A100-40GB", 6, 0.6, 48));
    nodes.extend(class("slow", "L4-24GB", 6, 0.35, 24));
    Fleet {
        name: "F2".into(),
        nodes,
        straggler: None,
        crash: None,
        broken: None,
    }
}

/// F3: F2, one fast node 5x slower for 60 s from `duration/4`, and one
/// medium node crashing at `duration/2` (it does not come back).
pub fn f3(duration_ms: u64) -> Fleet {
    let mut f = f2();
    f.name = "F3".into();
    f.straggler = Some(Straggler {
        node: 0,
        at_ms: duration_ms / 4,
        for_ms: 60_000,
        factor: 5.0,
    });
    f.crash = Some((4, duration_ms / 2));
    f
}

/// F4: F2 with one fast node whose every attempt fails after 0.5 s from
/// `duration/4` for `duration/2`, then repaired (the circuit breaker's case).
pub fn f4(duration_ms: u64) -> Fleet {
    let mut f = f2();
    f.name = "F4".into();
    f.broken = Some(Broken {
        node: 0,
        at_ms: duration_ms / 4,
        for_ms: duration_ms / 2,
        fail_after_ms: 500,
    });
    f
}

pub fn fleet_by_name(name: &str, duration_ms: u64) -> Option<Fleet> {
    match name.to_ascii_lowercase().as_str() {
        "f1" => Some(f1()),
        "f2" => Some(f2()),
        "f3" => Some(f3(duration_ms)),
        "f4" => Some(f4(duration_ms)),
        _ => None,
    }
}

/// Each node's nominal capacity in requests per second.
pub fn capacities(fleet: &Fleet, model: &ServiceModel, mean_in: f64, mean_out: f64) -> Vec<f64> {
    fleet
        .nodes
        .iter()
        .map(|n| model.node_capacity_rps(n.speed, n.cap, mean_in, mean_out))
        .collect()
}
