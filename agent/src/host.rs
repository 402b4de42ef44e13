//! The host's CPU and memory, read from /proc: capacity for `Register`,
//! utilization for heartbeats.

use std::io;

/// What the node offers besides GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCapacity {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

/// CPUs this process may use (affinity and cgroup quota included, which
/// /proc/cpuinfo ignores) and MemTotal from /proc/meminfo.
pub fn capacity() -> io::Result<HostCapacity> {
    let cpus = std::thread::available_parallelism()?.get() as u64;
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let mem = parse_meminfo(&meminfo).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "/proc/meminfo has no MemTotal")
    })?;
    Ok(HostCapacity {
        cpu_millis: cpus * 1000,
        memory_mb: mem.total_kb / 1024,
    })
}

/// Share of host memory in use, 0..1 (1 - MemAvailable / MemTotal).
pub fn mem_util() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)?.util()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemInfo {
    total_kb: u64,
    available_kb: Option<u64>,
}

impl MemInfo {
    fn util(&self) -> Option<f64> {
        let available = self.available_kb?;
        if self.total_kb == 0 {
            return None;
        }
        Some((1.0 - available as f64 / self.total_kb as f64).clamp(0.0, 1.0))
    }
}

fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(MemInfo {
        total_kb: field("MemTotal")?,
        available_kb: field("MemAvailable"),
    })
}

/// CPU utilization between two reads of /proc/stat: utilization is a rate,
/// so the first sample only sets the baseline.
#[derive(Debug, Default)]
pub struct CpuMeter {
    prev: Option<CpuTimes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuMeter {
    /// Share of CPU time busy since the previous call, 0..1; None on the
    /// first call or when /proc/stat cannot be read.
    pub fn sample(&mut self) -> Option<f64> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        self.update(parse_cpu_times(&text)?)
    }

    fn update(&mut self, now: CpuTimes) -> Option<f64> {
        let prev = self.prev.replace(now)?;
        let total = now.total.checked_sub(prev.total)?;
        let busy = now.busy.checked_sub(prev.busy)?;
        if total == 0 {
            return Some(0.0);
        }
        Some((busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq steal
/// (guest time is already inside user and nice).
fn parse_cpu_times(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses_total_and_available() {
        let m = parse_meminfo(
            "MemTotal:       16000000 kB\nMemFree: 1 kB\nMemAvailable:    4000000 kB\n",
        )
        .expect("parsed");
        assert_eq!(m.total_kb, 16_000_000);
        assert_eq!(m.util(), Some(0.75));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn cpu_util_is_a_rate_between_samples() {
        let mut meter = CpuMeter::default();
        let a = parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("a");
        let b = parse_cpu_times("cpu  200 0 200 1300 300 0 0 0 0 0\n").expect("b");
        assert_eq!(meter.update(a), None);
        // busy +200 of total +1000
        assert_eq!(meter.update(b), Some(0.2));
    }

    #[test]
    fn this_machine_has_capacity() {
        let c = capacity().expect("/proc readable");
        assert!(c.cpu_millis >= 1000 && c.memory_mb > 0, "{c:?}");
    }
}
