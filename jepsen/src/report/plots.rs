//! SVG plots of a run, drawn with plotters: latency and throughput over
//! time and a timeline of operations per process, each with the nemesis
//! windows shaded.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::metrics;
use crate::history::{pairs, Op, OpType};

const SHADE: RGBColor = RGBColor(250, 215, 160);
/// Beyond this many operations the timeline draws an even sample of them.
const TIMELINE_OPS_MAX: usize = 15_000;

fn color(kind: OpType) -> RGBColor {
    match kind {
        OpType::Ok => RGBColor(46, 139, 87),
        OpType::Fail => RGBColor(200, 40, 40),
        OpType::Info => RGBColor(230, 140, 0),
        OpType::Invoke => RGBColor(120, 120, 120),
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

fn end_s(history: &[Op]) -> f64 {
    history
        .last()
        .map_or(1.0, |o| o.time_ns as f64 / 1e9)
        .max(1.0)
}

/// Latency of every completed client operation over time (log scale).
pub fn latency(path: &Path, history: &[Op]) -> Result<()> {
    let points = metrics::latencies(history);
    let windows = metrics::nemesis_windows(history);
    let max_ms = points.iter().map(|p| p.1).fold(10.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency of client operations (ms, log)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end_s(history), (0.1..max_ms).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(
            windows.iter().map(|(_, s, e)| {
                Rectangle::new([(*s, 0.1), (*e, max_ms)], SHADE.mix(0.5).filled())
            }),
        )
        .map_err(plot_err)?;
    for kind in [OpType::Ok, OpType::Fail, OpType::Info] {
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.3 == kind)
                    .map(|p| Circle::new((p.0, p.1.max(0.1)), 2, color(kind).filled())),
            )
            .map_err(plot_err)?
            .label(format!("{kind:?}").to_lowercase())
            .legend(move |(x, y)| Circle::new((x, y), 3, color(kind).filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Successful operations per second, by operation.
pub fn throughput(path: &Path, history: &[Op]) -> Result<()> {
    let end = end_s(history);
    let buckets = end.ceil() as usize + 1;
    let mut series: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, _, f, kind) in metrics::latencies(history) {
        if kind == OpType::Ok {
            series.entry(f).or_insert_with(|| vec![0; buckets])[t as usize] += 1;
        }
    }
    let max = series
        .values()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.2;
    let windows = metrics::nemesis_windows(history);
    let root = SVGBackend::new(path, (1100, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("successful operations per second", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end, 0.0..max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(
            windows
                .iter()
                .map(|(_, s, e)| Rectangle::new([(*s, 0.0), (*e, max)], SHADE.mix(0.5).filled())),
        )
        .map_err(plot_err)?;
    for (i, (f, counts)) in series.iter().enumerate() {
        let c = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                counts
                    .iter()
                    .enumerate()
                    .map(|(t, n)| (t as f64, *n as f64)),
                c,
            ))
            .map_err(plot_err)?
            .label(f.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// One row per process: a bar from each invocation to its completion,
/// coloured by outcome. Returns the sampling step (1 = every operation).
pub fn timeline(path: &Path, history: &[Op]) -> Result<usize> {
    let ps: Vec<_> = pairs(history)
        .into_iter()
        .filter(|p| p.invoke.process != "nemesis")
        .collect();
    let step = ps.len().div_ceil(TIMELINE_OPS_MAX).max(1);
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &ps {
        let n = rows.len();
        rows.entry(p.invoke.process.as_str()).or_insert(n);
    }
    let end = end_s(history);
    let height = (rows.len() as u32 * 6 + 80).clamp(200, 2400);
    let windows = metrics::nemesis_windows(history);
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let n = rows.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("operations by process (shaded: faults)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..end, 0.0..n)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("process")
        .disable_y_mesh()
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(
            windows
                .iter()
                .map(|(_, s, e)| Rectangle::new([(*s, 0.0), (*e, n)], SHADE.mix(0.5).filled())),
        )
        .map_err(plot_err)?;
    chart
        .draw_series(ps.iter().step_by(step).map(|p| {
            let row = rows[p.invoke.process.as_str()] as f64;
            let start = p.invoke.time_ns as f64 / 1e9;
            let (stop, kind) = p
                .completion
                .map_or((end, OpType::Info), |c| (c.time_ns as f64 / 1e9, c.kind));
            Rectangle::new(
                [(start, row + 0.1), (stop.max(start + 0.01), row + 0.9)],
                color(kind).filled(),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(step)
}
