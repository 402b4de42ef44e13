//! The standard `process_*` metrics of Prometheus client libraries, read
//! from /proc on every scrape: resident memory, open files, CPU time.
//! Their names are the ones Prometheus dashboards and alerts already know,
//! hence without the `autoglm_` prefix.

use procfs::process::{LimitValue, Process};
use procfs::WithCurrentSystemInfo;

use crate::gauges::gauge;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Unit;

/// Register with `Registry::register_collector`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // /proc unreadable (another OS, a locked-down sandbox): no process
        // metrics rather than a failed scrape.
        let Ok(me) = Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let rss = stat.rss_bytes().get() as f64;
            gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                rss,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory",
                "Virtual memory size.",
                Some(&Unit::Bytes),
                stat.vsize as f64,
            )?;
            let ticks = procfs::ticks_per_second().max(1) as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent.",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge(
                    &mut encoder,
                    "process_start_time",
                    "Start time of the process since the Unix epoch.",
                    Some(&Unit::Seconds),
                    boot as f64 + stat.starttime as f64 / ticks,
                )?;
            }
        }
        if let Ok(open) = me.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors.",
                None,
                open as f64,
            )?;
        }
        if let Ok(limits) = me.limits() {
            if let LimitValue::Value(max) = limits.max_open_files.soft_limit {
                gauge(
                    &mut encoder,
                    "process_max_fds",
                    "Limit on open file descriptors.",
                    None,
                    max as f64,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn reads_this_process() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let text = crate::exposition::render(&registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
                .parse()
                .unwrap()
        };
        // A test binary holds at least a few MiB and stdin/out/err.
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_start_time_seconds") > 1.6e9);
        assert!(text.contains("# TYPE process_cpu_seconds counter"));
    }
}
