//! The agent's Prometheus metrics, served at `/metrics` on its HTTP port
//! (`http_listen`), with `/healthz`. Counted where things happen (attempt
//! outcomes, reconnects, GPU reading time); the GPUs' last full reading
//! (temperature, power, ECC errors, throttle reasons where the driver
//! reports them) and the lease are read on each scrape.

use std::sync::{Arc, Mutex};

use autoglm_runtime::gauges::{gauge, gauges, Labels};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

use crate::gpu::GpuInfo;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `exec`, `http`, `sim`, or `none` for a spec without a payload.
    pub executor: &'static str,
    /// `succeeded`, `failed`, `timed_out`, or `stopped` (cancelled, fenced,
    /// taken away, shut down).
    pub outcome: &'static str,
}

/// What the scrape reads besides the counters: shared with the session.
#[derive(Debug, Default)]
struct Readings {
    gpus: Vec<GpuInfo>,
    /// When the lease runs out; None once the agent fenced itself.
    lease_deadline: Option<Instant>,
}

/// Cheap to clone; clones share every metric.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    pub attempts_running: Gauge,
    pub outcomes: Family<OutcomeLabels, Counter>,
    pub gpu_read: Histogram,
    pub reconnects: Counter,
    pub connected: Gauge,
    readings: Arc<Mutex<Readings>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            attempts_running: Gauge::default(),
            outcomes: Family::default(),
            // 50 µs .. ~1.6 s
            gpu_read: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            reconnects: Counter::default(),
            connected: Gauge::default(),
            readings: Arc::default(),
        }
    }
}

impl AgentMetrics {
    fn readings(&self) -> std::sync::MutexGuard<'_, Readings> {
        self.readings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The GPUs' last full reading, taken with each heartbeat.
    pub fn set_gpus(&self, gpus: Vec<GpuInfo>) {
        self.readings().gpus = gpus;
    }

    pub fn set_lease_deadline(&self, deadline: Option<Instant>) {
        self.readings().lease_deadline = deadline;
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "autoglm_agent_attempts_running",
            "Attempts this agent runs (or waits for GPU slots for).",
            self.attempts_running.clone(),
        );
        r.register(
            "autoglm_agent_attempt_outcomes",
            "Attempts ended on this agent, by executor and outcome.",
            self.outcomes.clone(),
        );
        r.register_with_unit(
            "autoglm_agent_gpu_read",
            "Time to read every GPU (NVML, or the simulated source) for one heartbeat.",
            Unit::Seconds,
            self.gpu_read.clone(),
        );
        r.register(
            "autoglm_agent_reconnects",
            "Sessions with a replica that ended other than by shutdown.",
            self.reconnects.clone(),
        );
        r.register(
            "autoglm_agent_connected",
            "1 while the agent is registered with a leader.",
            self.connected.clone(),
        );
        r.register_collector(Box::new(ReadingsCollector(self.readings.clone())));
        r.register_collector(Box::new(autoglm_runtime::process::ProcessCollector));
        r
    }
}

/// NVML's throttle reasons (`nvmlClocksThrottleReason*`) by the names the
/// metrics use.
pub const THROTTLE_REASONS: &[&str] = &[
    "gpu_idle",
    "applications_clocks_setting",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "display_clock_setting",
];

#[derive(Debug)]
struct ReadingsCollector(Arc<Mutex<Readings>>);

impl Collector for ReadingsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let (gpus, deadline) = {
            let r = self.0.lock().unwrap_or_else(|e| e.into_inner());
            (r.gpus.clone(), r.lease_deadline)
        };
        let remaining = deadline.map_or(0.0, |d| {
            d.saturating_duration_since(Instant::now()).as_secs_f64()
        });
        gauge(
            &mut e,
            "autoglm_agent_lease_remaining_seconds",
            "Time left before the agent fences itself (kills its attempts) unless a leader is heard; 0 once fenced.",
            None,
            remaining,
        )?;
        const MIB: f64 = 1024.0 * 1024.0;
        let per_gpu = |f: &dyn Fn(&GpuInfo) -> Option<f64>| {
            gpus.iter()
                .filter_map(|g| f(g).map(|v| (vec![("gpu", g.index.to_string())], v)))
                .collect::<Vec<(Labels, f64)>>()
        };
        gauges(
            &mut e,
            "autoglm_agent_gpu_utilization_ratio",
            "Share of the last sample period a kernel ran (0..1).",
            &per_gpu(&|g| g.util_gpu_percent.map(|p| p as f64 / 100.0)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_memory_used_bytes",
            "GPU memory in use.",
            &per_gpu(&|g| Some(g.memory_used_mb as f64 * MIB)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_memory_total_bytes",
            "GPU memory in all.",
            &per_gpu(&|g| Some(g.memory_total_mb as f64 * MIB)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_temperature_celsius",
            "GPU temperature, where the driver reports it.",
            &per_gpu(&|g| g.temperature_c.map(f64::from)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_power_watts",
            "GPU power draw, where the driver reports it.",
            &per_gpu(&|g| g.power_usage_mw.map(|mw| mw as f64 / 1000.0)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_power_limit_watts",
            "GPU enforced power limit, where the driver reports it.",
            &per_gpu(&|g| g.power_limit_mw.map(|mw| mw as f64 / 1000.0)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_ecc_uncorrected_errors",
            "Uncorrected ECC errors since the driver loaded, where ECC is on.",
            &per_gpu(&|g| g.ecc_uncorrected_volatile.map(|n| n as f64)),
        )?;
        gauges(
            &mut e,
            "autoglm_agent_gpu_healthy",
            "0 after an uncorrected ECC error or a lost GPU.",
            &per_gpu(&|g| Some(f64::from(g.health != crate::gpu::Health::Unhealthy))),
        )?;
        let throttle: Vec<(Labels, f64)> = gpus
            .iter()
            .filter_map(|g| g.throttle_reasons.as_ref().map(|active| (g.index, active)))
            .flat_map(|(index, active)| {
                THROTTLE_REASONS.iter().map(move |reason| {
                    (
                        vec![("gpu", index.to_string()), ("reason", reason.to_string())],
                        f64::from(active.iter().any(|a| a == reason)),
                    )
                })
            })
            .collect();
        gauges(&mut e,
            "autoglm_agent_gpu_throttle",
            "1 for each reason NVML gives for holding the GPU's clocks down now, where the driver reports them.",
            &throttle,
        )
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) {
    use axum::http::header::CONTENT_TYPE;
    use axum::http::StatusCode;
    use axum::routing::get;
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    match autoglm_runtime::exposition::render(&registry) {
                        Ok(body) => (
                            StatusCode::OK,
                            [(CONTENT_TYPE, autoglm_runtime::exposition::CONTENT_TYPE)],
                            body,
                        ),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                            format!("metrics: {e}\n"),
                        ),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("metrics server: {e}");
    }
}
