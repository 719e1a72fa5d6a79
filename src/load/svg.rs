//! The chart next to the JSON report, as hand-written SVG: the rate over time, the latency
//! percentile curve and, for fanout, each broadcast's completion time.

use std::fmt::Write as _;

use super::report::Report;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 260.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 90.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 46.0;

/// One plotting area of the chart, with its data ranges.
struct Panel {
    y0: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x / self.x_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        let h = PANEL_HEIGHT - TOP - BOTTOM;
        self.y0 + TOP + h - (y / self.y_max).clamp(0.0, 1.0) * h
    }
    fn bottom(&self) -> f64 {
        self.py(0.0)
    }
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
pub fn nice_max(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// 1234567 → "1.23M": short labels for axes.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{s}</text>"#
    );
}

fn axes(out: &mut String, p: &Panel, title: &str, x_label: &str, y_label: &str) {
    let (x0, x1, yb, yt) = (LEFT, WIDTH - RIGHT, p.bottom(), p.py(p.y_max));
    text(out, WIDTH / 2.0, p.y0 + 24.0, "middle", 15, title);
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{yt:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
        x1 - x0,
        yb - yt
    );
    for i in 0..=4 {
        let y = p.y_max * i as f64 / 4.0;
        let py = p.py(y);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{py:.1}" x2="{x1}" y2="{py:.1}" stroke="#ddd"/>"##
        );
        text(out, x0 - 6.0, py + 4.0, "end", 11, &short(y));
    }
    text(out, WIDTH / 2.0, yb + 36.0, "middle", 12, x_label);
    let _ = writeln!(
        out,
        r#"<text x="18" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {:.1})">{y_label}</text>"#,
        (yb + yt) / 2.0,
        (yb + yt) / 2.0
    );
}

fn polyline(out: &mut String, p: &Panel, points: &[(f64, f64)], color: &str, dash: bool) {
    let pts: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", p.px(x), p.py(y)))
        .collect();
    let dash = if dash {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
        pts.join(" ")
    );
}

fn x_ticks(out: &mut String, p: &Panel, ticks: &[(f64, String)]) {
    for (x, label) in ticks {
        let px = p.px(*x);
        let yb = p.bottom();
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{yb:.1}" x2="{px:.1}" y2="{:.1}" stroke="#444"/>"##,
            yb + 4.0
        );
        text(out, px, yb + 17.0, "middle", 11, label);
    }
}

fn rate_panel(out: &mut String, r: &Report, y0: f64) {
    let fanout = r.scenario == "fanout" || r.scenario == "resume";
    let rate = |s: &super::report::Sample| {
        if fanout {
            s.deliveries_per_s
        } else {
            s.messages_per_s
        }
    };
    let t_max = r.timeline.last().map_or(1.0, |s| s.t_s).max(1.0);
    let y_max = nice_max(r.timeline.iter().map(rate).fold(0.0, f64::max));
    let p = Panel {
        y0,
        x_max: t_max,
        y_max,
    };
    let what = if fanout { "deliveries/s" } else { "messages/s" };
    axes(
        out,
        &p,
        &format!("{what} over time ({} connections)", r.connections),
        "seconds",
        what,
    );
    let step = nice_max(t_max / 8.0);
    let ticks: Vec<(f64, String)> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|&t| t <= t_max)
        .map(|t| (t, short(t)))
        .collect();
    x_ticks(out, &p, &ticks);
    let pts: Vec<(f64, f64)> = r.timeline.iter().map(|s| (s.t_s, rate(s))).collect();
    polyline(out, &p, &pts, "#1f77b4", false);
    // Open connections on their own scale (right axis), dashed.
    let open_max = nice_max(r.timeline.iter().map(|s| s.open as f64).fold(0.0, f64::max));
    let q = Panel {
        y0,
        x_max: t_max,
        y_max: open_max,
    };
    let pts: Vec<(f64, f64)> = r.timeline.iter().map(|s| (s.t_s, s.open as f64)).collect();
    polyline(out, &q, &pts, "#ff7f0e", true);
    for i in 0..=4 {
        let y = open_max * i as f64 / 4.0;
        text(
            out,
            WIDTH - RIGHT + 6.0,
            q.py(y) + 4.0,
            "start",
            11,
            &short(y),
        );
    }
    text(
        out,
        WIDTH - RIGHT + 6.0,
        q.py(open_max) - 10.0,
        "start",
        11,
        "open (dashed)",
    );
}

/// x position of a percentile on a "nines" scale: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3 …
fn nines(percentile: f64) -> f64 {
    let rest = (100.0 - percentile).max(0.001) / 100.0;
    (-rest.log10()).min(5.0)
}

/// Latency in µs, or in ms when the largest value is past 10 ms: (divisor from ns, unit).
fn latency_unit(max_ns: u64) -> (f64, &'static str) {
    if max_ns > 10_000_000_000 {
        (1e9, "s")
    } else if max_ns > 10_000_000 {
        (1e6, "ms")
    } else {
        (1e3, "µs")
    }
}

fn latency_panel(out: &mut String, r: &Report, y0: f64) {
    let (div, unit) = latency_unit(r.latency_max_ns);
    let y_max = nice_max(
        r.latency_curve
            .iter()
            .map(|&(_, v)| v as f64 / div)
            .fold(0.0, f64::max),
    );
    let p = Panel {
        y0,
        x_max: 5.0,
        y_max,
    };
    let title = format!(
        "latency percentiles: p50 {} {unit}, p99 {} {unit}, max {} {unit}",
        short(r.latency_p50_ns as f64 / div),
        short(r.latency_p99_ns as f64 / div),
        short(r.latency_max_ns as f64 / div)
    );
    axes(out, &p, &title, "percentile", &format!("latency ({unit})"));
    let ticks: Vec<(f64, String)> = [0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
        .iter()
        .map(|&q| (nines(q), format!("p{q}")))
        .collect();
    x_ticks(out, &p, &ticks);
    let pts: Vec<(f64, f64)> = r
        .latency_curve
        .iter()
        .map(|&(q, v)| (nines(q), v as f64 / div))
        .collect();
    polyline(out, &p, &pts, "#2ca02c", false);
}

fn broadcast_panel(out: &mut String, r: &Report, y0: f64) {
    let shown = &r.broadcasts[..r.broadcasts.len().min(400)];
    let y_max = nice_max(
        shown
            .iter()
            .map(|b| b.complete_ns as f64 / 1e6)
            .fold(0.0, f64::max),
    );
    let p = Panel {
        y0,
        x_max: shown.len().max(1) as f64,
        y_max,
    };
    let title = format!(
        "time until the last subscriber got each broadcast (p99 {} ms)",
        short(r.fanout_complete_p99_ns as f64 / 1e6)
    );
    axes(
        out,
        &p,
        &title,
        "broadcast (sequence number)",
        "complete (ms)",
    );
    let w = ((WIDTH - LEFT - RIGHT) / p.x_max - 1.0).max(1.0);
    for (i, b) in shown.iter().enumerate() {
        let color = if b.deliveries as u64 >= r.connected {
            "#9467bd"
        } else {
            "#d62728"
        };
        let (x, y) = (p.px(i as f64), p.py(b.complete_ns as f64 / 1e6));
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/>"#,
            p.bottom() - y
        );
    }
    let step = nice_max(p.x_max / 8.0).max(1.0);
    let ticks: Vec<(f64, String)> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|&x| x < p.x_max)
        .map(|x| (x + 0.5, short(x)))
        .collect();
    x_ticks(out, &p, &ticks);
}

/// The whole chart for a report.
pub fn render(r: &Report) -> String {
    let panels = if r.broadcasts.is_empty() { 2.0 } else { 3.0 };
    let height = 50.0 + panels * PANEL_HEIGHT;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let headline = format!(
        "ringws-load {}: {} connections, {} B, {} s, errors {}",
        r.scenario,
        r.connections,
        r.payload_bytes,
        short(r.duration_s),
        r.errors.total()
    );
    text(&mut out, WIDTH / 2.0, 28.0, "middle", 17, &headline);
    rate_panel(&mut out, r, 40.0);
    latency_panel(&mut out, r, 40.0 + PANEL_HEIGHT);
    if !r.broadcasts.is_empty() {
        broadcast_panel(&mut out, r, 40.0 + 2.0 * PANEL_HEIGHT);
    }
    out.push_str("</svg>\n");
    out
}
