//! `sim` attempts: a modelled GPU service time, for benchmarks and tests on
//! machines without GPUs. Prefill is per input token; decoding is per output
//! token and slows down as more attempts share the node, the way batched
//! inference does:
//!
//! ```text
//! service = (input * prefill + output * decode * (1 + (batch - 1) / cap)) / speed
//! ```
//!
//! where `batch` counts the sim attempts running when this one starts (itself
//! included). A spec with `service_ms > 0` takes exactly that long. Timing is
//! `tokio::time::sleep`, so tests run it on paused time.

use std::future::Future;
use std::time::Duration;

use autoglm_client::proto::{SimPayload, TaskSpec};

use super::{until_stopped, Ended, StopCause};
use crate::config::AgentConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct SimModel {
    pub speed_factor: f64,
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    pub concurrency_cap: u32,
}

impl SimModel {
    pub fn from_config(c: &AgentConfig) -> Self {
        Self {
            speed_factor: c.sim.speed_factor,
            prefill_ms_per_token: c.sim.prefill_ms_per_token,
            decode_ms_per_token: c.sim.decode_ms_per_token,
            concurrency_cap: c.sim_concurrency_cap(),
        }
    }

    /// The modelled service time of one attempt started with `batch` sim
    /// attempts running (itself included).
    pub fn service_time(
        &self,
        input_tokens: u32,
        max_output_tokens: u32,
        batch: usize,
    ) -> Duration {
        let cap = f64::from(self.concurrency_cap.max(1));
        let slowdown = 1.0 + batch.saturating_sub(1) as f64 / cap;
        let ms = (f64::from(input_tokens) * self.prefill_ms_per_token
            + f64::from(max_output_tokens) * self.decode_ms_per_token * slowdown)
            / self.speed_factor;
        // Whole microseconds, so equal models give equal durations. A model
        // built in code with odd values saturates (NaN becomes 0) instead of
        // panicking.
        Duration::from_micros((ms * 1000.0).round() as u64)
    }
}

pub(super) async fn run(
    model: &SimModel,
    spec: &TaskSpec,
    p: &SimPayload,
    batch: usize,
    stop: impl Future<Output = StopCause>,
) -> Ended {
    let service = if p.service_ms > 0 {
        Duration::from_millis(p.service_ms)
    } else {
        model.service_time(spec.input_tokens, spec.max_output_tokens, batch)
    };
    let work = async move {
        tokio::time::sleep(service).await;
        Ended::Finished {
            success: true,
            exit_code: Some(0),
            message: format!("simulated {} ms (batch {batch})", service.as_millis()),
            output_tail: String::new(),
        }
    };
    until_stopped(work, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_follows_the_formula() {
        let m = SimModel {
            speed_factor: 2.0,
            prefill_ms_per_token: 0.05,
            decode_ms_per_token: 20.0,
            concurrency_cap: 4,
        };
        // (1000 * 0.05 + 100 * 20 * (1 + 2/4)) / 2 = (50 + 3000) / 2
        assert_eq!(m.service_time(1000, 100, 3), Duration::from_millis(1525));
        assert_eq!(m.service_time(1000, 100, 1), Duration::from_millis(1025));
        assert_eq!(m.service_time(0, 0, 9), Duration::ZERO);
    }
}
