//! Minimal SVG line charts: no fonts, no dependencies, byte-for-byte
//! deterministic output (so committed plots only change when results do).

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: String,
    pub dashed: bool,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Optional horizontal reference line (value, label).
    pub hline: Option<(f64, &'a str)>,
}

pub const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn nice(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn render(c: &Chart) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (70.0, 190.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let pts = c
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.1.is_finite() && (!c.log_y || p.1 > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if let Some((v, _)) = c.hline {
        y0 = y0.min(v);
        y1 = y1.max(v);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let ty = |y: f64| if c.log_y { y.max(1e-12).log10() } else { y };
    let (mut ly0, mut ly1) = (ty(y0), ty(y1));
    if !c.log_y {
        ly0 = ly0.min(0.0);
    } else {
        ly0 = ly0.floor();
        ly1 = ly1.ceil();
    }
    if ly1 - ly0 < 1e-12 {
        ly1 = ly0 + 1.0;
    }
    if !c.log_y {
        ly1 *= 1.05;
    }
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (ty(y) - ly0) / (ly1 - ly0) * ph;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        left + pw / 2.0,
        esc(c.title)
    );
    // Grid and ticks.
    let yticks: Vec<f64> = if c.log_y {
        let mut v = Vec::new();
        let mut e = ly0;
        while e <= ly1 + 1e-9 {
            for m in [1.0, 2.0, 5.0] {
                let val = 10f64.powf(e) * m;
                if ty(val) <= ly1 + 1e-9 {
                    v.push(val);
                }
            }
            e += 1.0;
        }
        v
    } else {
        (0..=5)
            .map(|i| ly0 + (ly1 - ly0) * i as f64 / 5.0)
            .collect()
    };
    for y in yticks {
        let py = sy(y);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            py + 4.0,
            nice(y)
        );
    }
    for i in 0..=5 {
        let x = x0 + (x1 - x0) * i as f64 / 5.0;
        let px = sx(x);
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{}" stroke="#f0f0f0"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 18.0,
            nice(x)
        );
    }
    let _ = writeln!(
        o,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 12.0,
        esc(c.x_label)
    );
    let _ = writeln!(
        o,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(c.y_label)
    );
    if let Some((v, label)) = c.hline {
        let py = sy(v);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#000" stroke-dasharray="2,3"/><text x="{}" y="{:.1}">{}</text>"##,
            left + pw,
            left + 4.0,
            py - 4.0,
            esc(label)
        );
    }
    for (k, s) in c.series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite() && (!c.log_y || p.1 > 0.0))
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        if !path.is_empty() {
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
                s.color,
                path.join(" ")
            );
            if s.points.len() <= 12 {
                for p in &path {
                    let (x, y) = p.split_once(',').expect("x,y");
                    let _ = writeln!(
                        o,
                        r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{}"/>"#,
                        s.color
                    );
                }
            }
        }
        let ly = top + 10.0 + k as f64 * 18.0;
        let lx = left + pw + 12.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            s.color,
            lx + 28.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}
