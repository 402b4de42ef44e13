//! GPU inventory and telemetry: NVML (libnvidia-ml, loaded at run time) when
//! the driver is there, else the GPUs named in the configuration, whose load
//! is derived from the simulated attempts running on them so heartbeats mean
//! something on machines without GPUs.
//!
//! NVML calls block (microseconds each: ~8 µs for a sample on an H100), so
//! async callers run [`GpuSource::sample`] and [`GpuSource::probe`] through
//! `spawn_blocking`.

use std::collections::BTreeMap;

use autoglm_client::proto::{Gpu, GpuSample};
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use serde::Serialize;

use crate::config::{GpuSourceKind, SimulatedGpu};

const MIB: u64 = 1024 * 1024;

/// Health as far as the agent can tell: a GPU whose ECC counters are not
/// supported is `Unknown`, not unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// None where the driver does not say.
    pub used_memory_mb: Option<u64>,
}

/// Everything known about one GPU; fields the device does not support are None.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub memory_free_mb: u64,
    /// Percent of the last sample period a kernel ran.
    pub util_gpu_percent: Option<u32>,
    /// Percent of the last sample period device memory was read or written.
    pub util_memory_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    pub power_usage_mw: Option<u32>,
    pub power_limit_mw: Option<u32>,
    pub processes: Vec<GpuProcess>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected_volatile: Option<u64>,
    pub health: Health,
    /// Why the clocks are held down now (`metrics::THROTTLE_REASONS` names);
    /// None where the driver does not say.
    pub throttle_reasons: Option<Vec<String>>,
}

impl GpuInfo {
    /// What a heartbeat carries of this reading.
    pub fn sample(&self) -> GpuSample {
        GpuSample {
            index: self.index,
            util: self.util_gpu_percent.unwrap_or(0) as f64 / 100.0,
            memory_used_mb: self.memory_used_mb,
            memory_total_mb: self.memory_total_mb,
            temperature_c: self.temperature_c.unwrap_or(0),
            // Unknown health is not a reason to stop placing work.
            healthy: self.health != Health::Unhealthy,
            power_mw: self.power_usage_mw.unwrap_or(0),
        }
    }
}

/// What the running attempts hold on each GPU index; drives simulated telemetry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuLoad {
    pub per_gpu: BTreeMap<u32, SlotUse>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotUse {
    pub attempts: u32,
    /// GPU memory the attempts asked for; 0 where they did not say.
    pub memory_mb: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("gpu_source is nvml but NVML is not available: {0}")]
    NvmlRequired(NvmlError),
}

/// Where GPUs come from; see the module docs.
pub enum GpuSource {
    /// Boxed: NVML's function table is 12 KB.
    Nvml(Box<NvmlGpus>),
    Simulated(SimulatedGpus),
}

impl GpuSource {
    /// Opens NVML when `kind` allows it. Without the driver (and `kind` auto)
    /// logs one line and falls back to the configured GPUs; blocking (NVML
    /// init takes ~14 ms).
    pub fn open(
        kind: GpuSourceKind,
        node: &str,
        simulated: &[SimulatedGpu],
        slots_per_gpu: u32,
    ) -> Result<Self, GpuError> {
        let sim = || SimulatedGpus::new(node, simulated, slots_per_gpu);
        match kind {
            GpuSourceKind::Simulated => Ok(GpuSource::Simulated(sim())),
            GpuSourceKind::Nvml => Nvml::init()
                .map(|nvml| GpuSource::Nvml(Box::new(NvmlGpus::new(nvml))))
                .map_err(GpuError::NvmlRequired),
            GpuSourceKind::Auto => match Nvml::init() {
                Ok(nvml) => Ok(GpuSource::Nvml(Box::new(NvmlGpus::new(nvml)))),
                Err(e) => {
                    tracing::info!(
                        "NVML absent ({e}); reporting {} simulated GPU(s) from the configuration",
                        simulated.len()
                    );
                    Ok(GpuSource::Simulated(sim()))
                }
            },
        }
    }

    /// "nvml" or "simulated".
    pub fn kind_name(&self) -> &'static str {
        match self {
            GpuSource::Nvml(_) => "nvml",
            GpuSource::Simulated(_) => "simulated",
        }
    }

    pub fn driver_version(&self) -> Option<String> {
        match self {
            GpuSource::Nvml(n) => n.nvml.sys_driver_version().ok(),
            GpuSource::Simulated(_) => None,
        }
    }

    /// The GPUs for `Register`.
    pub fn inventory(&self) -> Vec<Gpu> {
        match self {
            GpuSource::Nvml(n) => n.inventory.clone(),
            GpuSource::Simulated(s) => s.inventory(),
        }
    }

    /// What each heartbeat reads: every field but the processes (the one
    /// slow NVML query); the heartbeat sends [`GpuInfo::sample`] of each and
    /// the agent's metrics show the rest.
    pub fn reading(&self, load: &GpuLoad) -> Vec<GpuInfo> {
        match self {
            GpuSource::Nvml(n) => n.read(false),
            GpuSource::Simulated(s) => s.probe(load),
        }
    }

    /// Every field of every GPU.
    pub fn probe(&self, load: &GpuLoad) -> Vec<GpuInfo> {
        match self {
            GpuSource::Nvml(n) => n.read(true),
            GpuSource::Simulated(s) => s.probe(load),
        }
    }
}

/// GPUs seen through NVML. The inventory is read once: GPUs do not come and go
/// while the driver is loaded, and `Register` must stay stable across
/// reconnects.
pub struct NvmlGpus {
    nvml: Nvml,
    inventory: Vec<Gpu>,
}

impl NvmlGpus {
    fn new(nvml: Nvml) -> Self {
        let count = nvml.device_count().unwrap_or_else(|e| {
            tracing::warn!("NVML: cannot count GPUs ({e}); reporting none");
            0
        });
        let inventory = (0..count)
            .filter_map(
                |i| match nvml.device_by_index(i).and_then(|d| describe(i, &d)) {
                    Ok(gpu) => Some(gpu),
                    Err(e) => {
                        tracing::warn!("NVML: GPU {i} cannot be queried ({e}); not reporting it");
                        None
                    }
                },
            )
            .collect();
        Self { nvml, inventory }
    }

    fn read(&self, with_processes: bool) -> Vec<GpuInfo> {
        self.inventory
            .iter()
            .map(|gpu| match self.nvml.device_by_index(gpu.index) {
                Ok(d) => read_device(gpu, &d, with_processes),
                // Fallen off the bus since start-up, typically.
                Err(e) => lost(gpu, &e),
            })
            .collect()
    }
}

/// Uncorrected ECC errors since the driver loaded, and what they say.
fn ecc(d: &Device<'_>) -> (Option<u64>, Health) {
    let count = d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile);
    let health = match &count {
        Ok(0) => Health::Healthy,
        Ok(_) | Err(NvmlError::GpuLost) => Health::Unhealthy,
        // Not supported (ECC off, consumer boards) or not permitted: unknown.
        Err(_) => Health::Unknown,
    };
    (count.ok(), health)
}

fn describe(index: u32, d: &Device<'_>) -> Result<Gpu, NvmlError> {
    Ok(Gpu {
        index,
        uuid: d.uuid()?,
        model: d.name()?,
        memory_mb: d.memory_info()?.total / MIB,
    })
}

fn read_device(gpu: &Gpu, d: &Device<'_>, with_processes: bool) -> GpuInfo {
    let memory = match d.memory_info() {
        Ok(m) => m,
        Err(e) => return lost(gpu, &e),
    };
    let util = d.utilization_rates().ok();
    let (ecc_count, health) = ecc(d);
    let processes = if !with_processes {
        Vec::new()
    } else {
        d.running_compute_processes()
            .map(|ps| {
                ps.into_iter()
                    .map(|p| GpuProcess {
                        pid: p.pid,
                        used_memory_mb: match p.used_gpu_memory {
                            UsedGpuMemory::Used(bytes) => Some(bytes / MIB),
                            UsedGpuMemory::Unavailable => None,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    GpuInfo {
        index: gpu.index,
        uuid: gpu.uuid.clone(),
        name: gpu.model.clone(),
        memory_total_mb: memory.total / MIB,
        memory_used_mb: memory.used / MIB,
        memory_free_mb: memory.free / MIB,
        util_gpu_percent: util.as_ref().map(|u| u.gpu),
        util_memory_percent: util.as_ref().map(|u| u.memory),
        temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
        power_usage_mw: d.power_usage().ok(),
        power_limit_mw: d.enforced_power_limit().ok(),
        processes,
        ecc_uncorrected_volatile: ecc_count,
        health,
        throttle_reasons: d.current_throttle_reasons().ok().map(throttle_names),
    }
}

/// NVML's flags by the names the metrics use; aliases of one bit once.
fn throttle_names(reasons: ThrottleReasons) -> Vec<String> {
    let mut names: Vec<String> = reasons
        .iter_names()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|n| crate::metrics::THROTTLE_REASONS.contains(&n.as_str()))
        .collect();
    names.dedup();
    names
}

/// A GPU NVML can no longer read: unhealthy, so no more work lands on it.
fn lost(gpu: &Gpu, e: &NvmlError) -> GpuInfo {
    tracing::warn!(index = gpu.index, "NVML: cannot read GPU ({e})");
    GpuInfo {
        index: gpu.index,
        uuid: gpu.uuid.clone(),
        name: gpu.model.clone(),
        memory_total_mb: gpu.memory_mb,
        memory_used_mb: 0,
        memory_free_mb: 0,
        util_gpu_percent: None,
        util_memory_percent: None,
        temperature_c: None,
        power_usage_mw: None,
        power_limit_mw: None,
        processes: Vec::new(),
        ecc_uncorrected_volatile: None,
        health: Health::Unhealthy,
        throttle_reasons: None,
    }
}

/// GPUs from the configuration.
pub struct SimulatedGpus {
    gpus: Vec<Gpu>,
    slots_per_gpu: u32,
}

impl SimulatedGpus {
    pub fn new(node: &str, configured: &[SimulatedGpu], slots_per_gpu: u32) -> Self {
        let gpus = configured
            .iter()
            .zip(0u32..)
            .map(|(g, index)| Gpu {
                index,
                // Unique in the fleet, like a real GPU UUID.
                uuid: format!("SIM-{node}-{index}"),
                model: g.model.clone(),
                memory_mb: g.memory_mb,
            })
            .collect();
        Self {
            gpus,
            slots_per_gpu: slots_per_gpu.max(1),
        }
    }

    fn inventory(&self) -> Vec<Gpu> {
        self.gpus.clone()
    }

    /// Utilization is the share of slots busy; memory is what the attempts
    /// asked for, or an equal share per slot when they did not say.
    fn probe(&self, load: &GpuLoad) -> Vec<GpuInfo> {
        self.gpus
            .iter()
            .map(|g| {
                let used = load.per_gpu.get(&g.index).copied().unwrap_or_default();
                let busy = used.attempts.min(self.slots_per_gpu);
                let util = busy as f64 / self.slots_per_gpu as f64;
                let memory_used = if used.memory_mb > 0 {
                    used.memory_mb
                } else {
                    g.memory_mb * busy as u64 / self.slots_per_gpu as u64
                }
                .min(g.memory_mb);
                GpuInfo {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    name: g.model.clone(),
                    memory_total_mb: g.memory_mb,
                    memory_used_mb: memory_used,
                    memory_free_mb: g.memory_mb - memory_used,
                    util_gpu_percent: Some((util * 100.0).round() as u32),
                    util_memory_percent: Some((util * 100.0).round() as u32),
                    // An idle H100 sits near 36 °C and a busy one near 70 °C.
                    temperature_c: Some(35 + (util * 35.0).round() as u32),
                    // And draws 70 W idle, up to its 700 W limit busy.
                    power_usage_mw: Some(70_000 + (util * 630_000.0).round() as u32),
                    power_limit_mw: Some(700_000),
                    processes: Vec::new(),
                    ecc_uncorrected_volatile: None,
                    health: Health::Healthy,
                    // NVML says "idle" of a GPU nothing runs on.
                    throttle_reasons: Some(if busy == 0 {
                        vec!["gpu_idle".to_string()]
                    } else {
                        Vec::new()
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100s(n: usize) -> Vec<SimulatedGpu> {
        (0..n)
            .map(|_| SimulatedGpu {
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_mb: 81_559,
            })
            .collect()
    }

    /// This development machine has no NVIDIA driver: auto falls back, nvml
    /// refuses to start. On a GPU machine the test checks the real inventory.
    #[test]
    fn without_the_driver_auto_falls_back_to_simulated() {
        let source =
            GpuSource::open(GpuSourceKind::Auto, "n1", &h100s(2), 2).expect("auto never fails");
        match Nvml::init() {
            Err(_) => {
                assert_eq!(source.kind_name(), "simulated");
                assert_eq!(source.driver_version(), None);
                let inv = source.inventory();
                assert_eq!(inv.len(), 2);
                assert_eq!(inv[1].uuid, "SIM-n1-1");
                assert!(GpuSource::open(GpuSourceKind::Nvml, "n1", &[], 1).is_err());
            }
            Ok(_) => assert_eq!(source.kind_name(), "nvml"),
        }
    }

    #[test]
    fn simulated_load_drives_samples() {
        let source = GpuSource::Simulated(SimulatedGpus::new("n", &h100s(2), 2));
        let idle: Vec<GpuSample> = source
            .reading(&GpuLoad::default())
            .iter()
            .map(GpuInfo::sample)
            .collect();
        assert_eq!(idle.len(), 2);
        assert!(idle
            .iter()
            .all(|s| s.util == 0.0 && s.memory_used_mb == 0 && s.healthy));

        let mut load = GpuLoad::default();
        load.per_gpu.insert(
            1,
            SlotUse {
                attempts: 1,
                memory_mb: 0,
            },
        );
        let s: Vec<GpuSample> = source.reading(&load).iter().map(GpuInfo::sample).collect();
        assert_eq!(s[0].util, 0.0);
        assert_eq!(s[1].util, 0.5);
        assert_eq!(s[1].memory_used_mb, 81_559 / 2);

        load.per_gpu.insert(
            1,
            SlotUse {
                attempts: 3,
                memory_mb: 100_000,
            },
        );
        let s: Vec<GpuSample> = source.reading(&load).iter().map(GpuInfo::sample).collect();
        assert_eq!(s[1].util, 1.0);
        assert_eq!(s[1].memory_used_mb, 81_559);
    }
}
