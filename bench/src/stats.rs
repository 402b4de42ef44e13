//! Percentiles over measured durations.

use std::time::Duration;

pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// Nearest-rank percentiles; `samples` need not be sorted.
pub fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    let total: Duration = s.iter().sum();
    Summary {
        count: s.len(),
        p50: rank(0.50),
        p99: rank(0.99),
        max: *s.last().unwrap(),
        mean: total / s.len() as u32,
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "n={} p50={} p99={} max={} mean={}",
            self.count,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            ms(self.mean)
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count, "p50_ms": self.p50.as_secs_f64() * 1e3, "p99_ms": self.p99.as_secs_f64() * 1e3,
            "max_ms": self.max.as_secs_f64() * 1e3, "mean_ms": self.mean.as_secs_f64() * 1e3,
        })
    }
}
