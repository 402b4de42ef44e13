//! `autoglm-agent probe`: what the agent would register and report, as a
//! table or JSON, so an operator can check a node before it joins.

use std::fmt::Write as _;

use serde::Serialize;

use crate::gpu::{GpuInfo, GpuLoad, GpuSource};
use crate::host::{self, CpuMeter};

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// "nvml" or "simulated".
    pub source: &'static str,
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    /// Over a short window while probing.
    pub cpu_util: Option<f64>,
    pub mem_util: Option<f64>,
}

/// Reads everything; blocking (NVML, /proc and a 100 ms CPU window).
pub fn probe(source: &GpuSource) -> std::io::Result<ProbeReport> {
    let capacity = host::capacity()?;
    let mut cpu = CpuMeter::default();
    cpu.sample();
    std::thread::sleep(std::time::Duration::from_millis(100));
    Ok(ProbeReport {
        source: source.kind_name(),
        driver_version: source.driver_version(),
        gpus: source.probe(&GpuLoad::default()),
        cpu_millis: capacity.cpu_millis,
        memory_mb: capacity.memory_mb,
        cpu_util: cpu.sample(),
        mem_util: host::mem_util(),
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v}{unit}"))
}

fn percent(v: Option<f64>) -> String {
    opt(v.map(|v| format!("{:.1}", v * 100.0)), "%")
}

/// A human-readable report.
pub fn render_table(r: &ProbeReport) -> String {
    let mut out = String::new();
    let source = match r.source {
        "nvml" => "nvml".to_string(),
        other => format!("{other} (NVML absent or not used)"),
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "source:         {source}");
    let _ = writeln!(
        out,
        "driver version: {}",
        opt(r.driver_version.as_deref(), "")
    );
    let _ = writeln!(
        out,
        "cpu:            {} millicores, {} busy",
        r.cpu_millis,
        percent(r.cpu_util)
    );
    let _ = writeln!(
        out,
        "memory:         {} MB, {} used",
        r.memory_mb,
        percent(r.mem_util)
    );
    let _ = writeln!(out, "gpus:           {}", r.gpus.len());
    for g in &r.gpus {
        let _ = writeln!(out, "\nGPU {}  {}  {}", g.index, g.name, g.uuid);
        let _ = writeln!(
            out,
            "  memory       {} MB total, {} used, {} free",
            g.memory_total_mb, g.memory_used_mb, g.memory_free_mb
        );
        let _ = writeln!(
            out,
            "  utilization  gpu {}, memory {}",
            opt(g.util_gpu_percent, "%"),
            opt(g.util_memory_percent, "%")
        );
        let _ = writeln!(out, "  temperature  {}", opt(g.temperature_c, " °C"));
        let _ = writeln!(
            out,
            "  power        {} of {}",
            opt(g.power_usage_mw.map(|mw| mw as f64 / 1000.0), " W"),
            opt(g.power_limit_mw.map(|mw| mw as f64 / 1000.0), " W")
        );
        let _ = writeln!(
            out,
            "  health       {} (uncorrected ECC errors: {})",
            format!("{:?}", g.health).to_lowercase(),
            opt(g.ecc_uncorrected_volatile, "")
        );
        if g.processes.is_empty() {
            let _ = writeln!(out, "  processes    none");
        }
        for p in &g.processes {
            let _ = writeln!(
                out,
                "  process      pid {} using {}",
                p.pid,
                opt(p.used_memory_mb, " MB")
            );
        }
    }
    out
}
