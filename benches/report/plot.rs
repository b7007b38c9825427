//! Plots as SVG text, drawn by hand (no plotting crate).
//!
//! - [`percentile_plot`] follows HdrHistogram's own plots: the x axis is the
//!   percentile on a "nines" scale (0 %, 90 %, 99 %, 99.9 %, … equally
//!   spaced, that is `-log10(1 - p)`), the y axis is the latency on a log
//!   scale, one line per system.
//! - [`rate_plot`] is the open loop's: a latency percentile against the
//!   offered rate, both on log scales, one line per system, with a
//!   threshold drawn across.
//!
//! Several panels sit side by side under one legend.

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
/// Height of one row of the legend.
const LEGEND_ROW: f64 = 22.0;
/// Points per decade of the percentile axis.
const STEPS_PER_NINE: usize = 40;
/// No axis goes further than 99.999 %.
const MAX_NINES: usize = 5;

/// Draws the panels side by side under `title`, with a shared legend.
pub fn percentile_plot(title: &str, panels: &[Panel]) -> String {
    let legend: Vec<(&str, &str, bool)> = panels.first().map_or_else(Vec::new, |first| {
        first
            .series
            .iter()
            .map(|s| (s.name, s.color, s.dashed))
            .collect()
    });
    let mut svg = open_svg(title, panels.len(), &legend);
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, panel, PANEL_WIDTH * i as f64);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The SVG header, background, title and legend, for `panels` panels side
/// by side.
fn open_svg(title: &str, panels: usize, legend: &[(&str, &str, bool)]) -> String {
    let width = PANEL_WIDTH * panels as f64;
    let height = PANEL_HEIGHT + legend_height(legend, width);
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
    draw_legend(&mut svg, legend, PANEL_HEIGHT + 10.0, width);
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
    let (low, high) = decade_span(curves.iter().flatten().map(|&(_, micros)| micros));
    let to_x = |nines_x: f64| x0 + (x1 - x0) * nines_x / nines as f64;
    let to_y = |micros: f64| y0 - (y0 - y1) * (micros.log10() - low) / (high - low);

    draw_title(svg, (x0, x1), y1, &panel.title);
    draw_latency_grid(svg, (x0, x1), (low, high), to_y);
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
    draw_frame(svg, left, (x0, x1), (y0, y1), ("percentile", "latency"));
    for (series, curve) in panel.series.iter().zip(&curves) {
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|&(x, micros)| (to_x(x), to_y(micros)))
            .collect();
        draw_line(svg, series.color, series.dashed, &points);
    }
}

/// Where each legend entry goes, left to right in rows that fit `width`:
/// `(x, row)`.
fn legend_layout(entries: &[(&str, &str, bool)], width: f64) -> Vec<(f64, usize)> {
    let mut x = MARGIN_LEFT;
    let mut row = 0;
    entries
        .iter()
        .map(|(name, _, _)| {
            let entry_width = 40.0 + 7.0 * name.chars().count() as f64;
            if x > MARGIN_LEFT && x + entry_width > width - MARGIN_RIGHT {
                x = MARGIN_LEFT;
                row += 1;
            }
            let at = (x, row);
            x += entry_width;
            at
        })
        .collect()
}

/// The legend's height, with a margin below it.
fn legend_height(entries: &[(&str, &str, bool)], width: f64) -> f64 {
    let rows = legend_layout(entries, width)
        .last()
        .map_or(0, |&(_, row)| row + 1);
    rows as f64 * LEGEND_ROW + 18.0
}

/// The legend entries, `(name, colour, dashed)`, in rows from height `top`.
fn draw_legend(svg: &mut String, entries: &[(&str, &str, bool)], top: f64, width: f64) {
    for (&(name, color, dashed), (x, row)) in entries.iter().zip(legend_layout(entries, width)) {
        let dash = if dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let y = top + 12.0 + LEGEND_ROW * row as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"{dash}/>"#,
            x + 24.0,
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 30.0,
            y + 4.0,
            escape(name)
        );
    }
}

/// One line of a [`rate_plot`] panel.
pub struct RateSeries<'a> {
    /// Legend text.
    pub name: &'a str,
    /// SVG colour.
    pub color: &'a str,
    /// Drawn dashed (used for the reference system).
    pub dashed: bool,
    /// `(offered rate per second, latency in ns)`, in increasing rate.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a [`rate_plot`].
pub struct RatePanel<'a> {
    /// Shown above the chart.
    pub title: String,
    /// The lines; every panel lists the same systems in the same order.
    pub series: Vec<RateSeries<'a>>,
}

/// Draws latency against offered rate, log–log, one panel per entry of
/// `panels`, with a dashed horizontal line at `threshold_ns` labelled
/// `threshold_label`.
pub fn rate_plot(
    title: &str,
    y_label: &str,
    threshold_ns: f64,
    threshold_label: &str,
    panels: &[RatePanel],
) -> String {
    let legend: Vec<(&str, &str, bool)> = panels.first().map_or_else(Vec::new, |first| {
        first
            .series
            .iter()
            .map(|s| (s.name, s.color, s.dashed))
            .collect()
    });
    let mut svg = open_svg(title, panels.len(), &legend);
    for (i, panel) in panels.iter().enumerate() {
        draw_rate_panel(
            &mut svg,
            panel,
            PANEL_WIDTH * i as f64,
            y_label,
            (threshold_ns, threshold_label),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Draws one rate panel with its left edge at `left`.
fn draw_rate_panel(
    svg: &mut String,
    panel: &RatePanel,
    left: f64,
    y_label: &str,
    (threshold_ns, threshold_label): (f64, &str),
) {
    let (x0, x1) = (left + MARGIN_LEFT, left + PANEL_WIDTH - MARGIN_RIGHT);
    let (y0, y1) = (PANEL_HEIGHT - MARGIN_BOTTOM, MARGIN_TOP);
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x_low, x_high) = decade_span(points().map(|&(rate, _)| rate));
    // Latencies in µs; the threshold is always in view.
    let (y_low, y_high) = decade_span(
        points()
            .map(|&(_, ns)| ns / 1000.0)
            .chain([threshold_ns / 1000.0]),
    );
    let to_x = |rate: f64| x0 + (x1 - x0) * (rate.log10() - x_low) / (x_high - x_low);
    let to_y = |micros: f64| y0 - (y0 - y1) * (micros.log10() - y_low) / (y_high - y_low);

    draw_title(svg, (x0, x1), y1, &panel.title);
    draw_latency_grid(svg, (x0, x1), (y_low, y_high), to_y);
    // Vertical grid: the rates, as the latency grid does it.
    for (rate, major) in log_ticks(x_low, x_high) {
        let x = to_x(rate);
        let stroke = if major { "#bbb" } else { "#e6e6e6" };
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="{stroke}"/>"#
        );
        if major {
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                y0 + 16.0,
                rate_label(rate)
            );
        }
    }
    let y = to_y(threshold_ns / 1000.0);
    let _ = writeln!(
        svg,
        r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#000" stroke-dasharray="2,3"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
        x1 - 4.0,
        y - 4.0,
        escape(threshold_label)
    );
    draw_frame(
        svg,
        left,
        (x0, x1),
        (y0, y1),
        ("offered rate (messages/s, log scale)", y_label),
    );
    for series in &panel.series {
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|&(rate, ns)| (to_x(rate), to_y(ns / 1000.0)))
            .collect();
        draw_line(svg, series.color, series.dashed, &points);
        for (x, y) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{}"/>"#,
                series.color
            );
        }
    }
}

/// The whole decades (as exponents, `low..=high`, at least one apart) that
/// hold every positive value of `values`; `(0, 1)` if there is none.
fn decade_span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| *v > 0.0)
        .map(f64::log10)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if low <= high {
        (low.floor(), high.ceil().max(low.floor() + 1.0))
    } else {
        (0.0, 1.0)
    }
}

/// The grid values of a log axis from decade `low` to decade `high`: 1, 2
/// and 5 × 10^k, each with whether it is a decade (labelled, and darker).
fn log_ticks(low: f64, high: f64) -> impl Iterator<Item = (f64, bool)> {
    (low as i32..=high as i32)
        .flat_map(|decade| {
            [(1.0, true), (2.0, false), (5.0, false)]
                .map(|(factor, major)| (factor * 10f64.powi(decade), major))
        })
        .filter(move |(value, _)| value.log10() <= high + 1e-9)
}

/// A panel's title, centred above its plot area (`x0..x1`, top `y1`).
fn draw_title(svg: &mut String, (x0, x1): (f64, f64), y1: f64, title: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
        (x0 + x1) / 2.0,
        y1 - 14.0,
        escape(title)
    );
}

/// The latency axis across `x0..x1`: a line at every grid value between
/// the decades `low` and `high` (microseconds, placed by `to_y`), and the
/// decades labelled on the left.
fn draw_latency_grid(
    svg: &mut String,
    (x0, x1): (f64, f64),
    (low, high): (f64, f64),
    to_y: impl Fn(f64) -> f64,
) {
    for (micros, major) in log_ticks(low, high) {
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

/// The axis labels (the y one "(log scale)") and the frame of a plot area
/// `x0..x1` by `y1..y0` whose panel starts at `left`.
fn draw_frame(
    svg: &mut String,
    left: f64,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    (x_label, y_label): (&str, &str),
) {
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 36.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{} (log scale)</text>"#,
        left + 16.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        x1 - x0,
        y0 - y1
    );
}

/// One system's line through `points` (already in SVG coordinates),
/// dashed for the reference system.
fn draw_line(svg: &mut String, color: &str, dashed: bool, points: &[(f64, f64)]) {
    let dash = if dashed {
        r#" stroke-dasharray="6,4""#
    } else {
        ""
    };
    let points: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
        points.join(" ")
    );
}

/// A power-of-ten rate: `1k`, `100k`, `1M`.
fn rate_label(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{}M", (r / 1e6).round()),
        r if r >= 1e3 => format!("{}k", (r / 1e3).round()),
        r => format!("{}", r.round()),
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
