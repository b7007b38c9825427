//! A percentile plot as SVG text, drawn by hand (no plotting crate).
//!
//! The layout follows HdrHistogram's own plots: the x axis is the percentile
//! on a "nines" scale (0 %, 90 %, 99 %, 99.9 %, … equally spaced, that is
//! `-log10(1 - p)`), the y axis is the latency on a log scale, one line per
//! system. Several panels sit side by side under one legend.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// One line in a panel.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// SVG colour.
    pub color: &'a str,
    /// Drawn dashed (used for the reference system).
    pub dashed: bool,
    /// Latencies in nanoseconds.
    pub histogram: &'a Histogram<u64>,
}

/// One chart: a title and its lines. Every panel must list the same
/// systems in the same order, since the legend is shared.
pub struct Panel<'a> {
    /// Shown above the chart.
    pub title: String,
    /// The lines.
    pub series: Vec<Series<'a>>,
}

const PANEL_WIDTH: f64 = 520.0;
const PANEL_HEIGHT: f64 = 380.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 36.0;
const MARGIN_TOP: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 50.0;
const LEGEND_HEIGHT: f64 = 40.0;
/// Points per decade of the percentile axis.
const STEPS_PER_NINE: usize = 40;
/// No axis goes further than 99.999 %.
const MAX_NINES: usize = 5;

/// Draws the panels side by side under `title`, with a shared legend.
pub fn percentile_plot(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_WIDTH * panels.len() as f64;
    let height = PANEL_HEIGHT + LEGEND_HEIGHT;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="16">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, panel, PANEL_WIDTH * i as f64);
    }
    if let Some(first) = panels.first() {
        draw_legend(&mut svg, &first.series, PANEL_HEIGHT + 10.0);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Draws one panel with its left edge at `left`.
fn draw_panel(svg: &mut String, panel: &Panel, left: f64) {
    let (x0, x1) = (left + MARGIN_LEFT, left + PANEL_WIDTH - MARGIN_RIGHT);
    let (y0, y1) = (PANEL_HEIGHT - MARGIN_BOTTOM, MARGIN_TOP);
    // As many nines as the smallest sample count supports.
    let fewest = panel
        .series
        .iter()
        .map(|s| s.histogram.len())
        .min()
        .unwrap_or(0);
    let nines = ((fewest.max(1) as f64).log10().floor() as usize).clamp(1, MAX_NINES);
    let curves: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| {
            (0..=nines * STEPS_PER_NINE)
                .map(|step| {
                    let x = step as f64 / STEPS_PER_NINE as f64;
                    let quantile = 1.0 - 10f64.powf(-x);
                    let micros = s.histogram.value_at_quantile(quantile).max(1) as f64 / 1000.0;
                    (x, micros)
                })
                .collect()
        })
        .collect();
    let all = curves.iter().flatten().map(|&(_, micros)| micros.log10());
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if low <= high {
        (low.floor(), high.ceil().max(low.floor() + 1.0))
    } else {
        (0.0, 1.0)
    };
    let to_x = |nines_x: f64| x0 + (x1 - x0) * nines_x / nines as f64;
    let to_y = |micros: f64| y0 - (y0 - y1) * (micros.log10() - low) / (high - low);

    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
        (x0 + x1) / 2.0,
        y1 - 14.0,
        escape(&panel.title)
    );
    // Horizontal grid: every decade labelled, 2x and 5x faint.
    for decade in low as i32..=high as i32 {
        for (factor, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let micros = factor * 10f64.powi(decade);
            if micros.log10() > high + 1e-9 {
                continue;
            }
            let y = to_y(micros);
            let stroke = if major { "#bbb" } else { "#e6e6e6" };
            let _ = writeln!(
                svg,
                r#"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="{stroke}"/>"#
            );
            if major {
                let _ = writeln!(
                    svg,
                    r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                    x0 - 6.0,
                    y + 4.0,
                    duration_label(micros)
                );
            }
        }
    }
    // Vertical grid: one line per nine.
    for nine in 0..=nines {
        let x = to_x(nine as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#bbb"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + 16.0,
            percentile_label(nine)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (x0 + x1) / 2.0,
        y0 + 36.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        left + 16.0,
        (y0 + y1) / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        x1 - x0,
        y0 - y1
    );
    for (series, curve) in panel.series.iter().zip(&curves) {
        let points: Vec<String> = curve
            .iter()
            .map(|&(x, micros)| format!("{:.1},{:.1}", to_x(x), to_y(micros)))
            .collect();
        let dash = if series.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            series.color,
            points.join(" ")
        );
    }
}

/// One row of legend entries at height `top`.
fn draw_legend(svg: &mut String, series: &[Series], top: f64) {
    let mut x = MARGIN_LEFT;
    for s in series {
        let dash = if s.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let y = top + 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{dash}/>"#,
            x + 24.0,
            s.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 30.0,
            y + 4.0,
            escape(s.name)
        );
        x += 40.0 + 7.0 * s.name.len() as f64;
    }
}

/// `0 %`, `90 %`, `99 %`, `99.9 %`, … for a count of nines.
fn percentile_label(nines: usize) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        n => format!("99.{}%", "9".repeat(n - 2)).replace(".%", "%"),
    }
}

/// A power-of-ten duration given in microseconds, in the handiest unit.
fn duration_label(micros: f64) -> String {
    match micros {
        m if m < 1.0 => format!("{} ns", (m * 1000.0).round()),
        m if m < 1000.0 => format!("{} µs", m.round()),
        m if m < 1_000_000.0 => format!("{} ms", (m / 1000.0).round()),
        m => format!("{} s", (m / 1_000_000.0).round()),
    }
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
