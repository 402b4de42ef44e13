//! SVG line charts of a sweep, drawn with plotters' SVG backend. It writes
//! text as SVG `<text>` (no font files needed) and the same data gives the
//! same bytes, so committed plots change only when the results do.

use std::fmt::Debug;
use std::ops::Range;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Optional horizontal reference line (value, legend label).
    pub hline: Option<(f64, &'a str)>,
}

/// Matplotlib's "tab10", so colours match the earlier plots.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

const SIZE: (u32, u32) = (760, 440);
/// The legend gets its own column right of the plot: the share plots have
/// 16 series, which would cover the lines inside the plot area.
const LEGEND_W: u32 = 180;
/// Series with at most this many points also get a marker per point.
const MARKERS_MAX: usize = 12;

fn plot_err<E: Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

fn tick(v: &f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn style(s: &Series) -> ShapeStyle {
    s.color.stroke_width(2)
}

/// Renders a chart as an SVG document.
pub fn render(c: &Chart) -> Result<String> {
    let drawable = |p: &&(f64, f64)| p.1.is_finite() && (!c.log_y || p.1 > 0.0);
    let points = || {
        c.series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(drawable)
    };
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) =
        points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if let Some((v, _)) = c.hline {
        (y0, y1) = (y0.min(v), y1.max(v));
    }
    let x = if x0 < x1 { x0..x1 } else { 0.0..1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (area, legend) = root.split_horizontally(SIZE.0 - LEGEND_W);
        if c.log_y {
            // Whole decades, so the axis starts and ends on a labelled tick.
            let (lo, hi) = if y0 <= y1 { (y0, y1) } else { (1.0, 10.0) };
            let lo = 10f64.powf(lo.log10().floor());
            let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
            draw(&area, c, x, (lo..hi).log_scale())?;
        } else {
            let hi = if y0 <= y1 { y1.max(1e-9) * 1.05 } else { 1.0 };
            draw(&area, c, x, y0.min(0.0)..hi)?;
        }
        draw_legend(&legend, c)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn draw<Y>(area: &DrawingArea<SVGBackend, Shift>, c: &Chart, x: Range<f64>, y: Y) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(c.title, ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(c.x_label)
        .y_desc(c.y_label)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()
        .map_err(plot_err)?;
    let (x0, x1) = (chart.x_range().start, chart.x_range().end);
    if let Some((v, _)) = c.hline {
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, v), (x1, v)],
                2,
                3,
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?;
    }
    for s in &c.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite() && (!c.log_y || p.1 > 0.0))
            .collect();
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style(s)))
                .map_err(plot_err)?;
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style(s)))
                .map_err(plot_err)?;
        }
        if s.points.len() <= MARKERS_MAX {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, s.color.filled())))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

/// One row per series (and the reference line), in the order given.
fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, c: &Chart) -> Result<()> {
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    let row = |k: usize| 40 + k as i32 * 18;
    for (k, s) in c.series.iter().enumerate() {
        let line = vec![(6, row(k)), (28, row(k))];
        if s.dashed {
            area.draw(&DashedPathElement::new(line, 6, 4, style(s)))
        } else {
            area.draw(&PathElement::new(line, style(s)))
        }
        .map_err(plot_err)?;
        area.draw(&Text::new(s.name.clone(), (34, row(k) - 6), font.clone()))
            .map_err(plot_err)?;
    }
    if let Some((_, label)) = c.hline {
        let k = c.series.len();
        area.draw(&DashedPathElement::new(
            vec![(6, row(k)), (28, row(k))],
            2,
            3,
            BLACK.stroke_width(1),
        ))
        .map_err(plot_err)?;
        area.draw(&Text::new(label, (34, row(k) - 6), font.clone()))
            .map_err(plot_err)?;
    }
    Ok(())
}
