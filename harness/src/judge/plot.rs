//! An SVG plot of |offset| over time on a log scale, with disturbances shaded and steps marked.
//! Hand-written SVG: no plotting dependency, and the output is deterministic for snapshots.
//! Long series are drawn decimated (per pixel column the smallest and largest |offset|).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::format::escape::xml_text;
use crate::judge::report::Report;

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Lowest decade shown: 1 ns.
const FLOOR_NS: f64 = 1.0;

/// Renders the report's offset series as an SVG document.
pub fn svg(report: &Report) -> String {
    let t_max = report.series.last().map_or(1.0, |o| o.t_s).max(1.0);
    let max_ns = report
        .series
        .iter()
        .flat_map(|o| [o.guest_offset_ns, o.phc_offset_ns])
        .flatten()
        .map(|v| v.unsigned_abs() as f64)
        .fold(1_000.0, f64::max);
    let top_decade = max_ns.log10().ceil().max(1.0);
    let x = |t: f64| LEFT + (t / t_max) * (W - LEFT - RIGHT);
    let y = |v: f64| {
        let l = v.max(FLOOR_NS).log10();
        TOP + (1.0 - l / top_decade) * (H - TOP - BOTTOM)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">{} [{}]: |offset| to host time</text>"#,
        xml_text(&report.scenario),
        xml_text(&report.backend)
    );
    for m in &report.disturbances {
        let (a, b) = (x(m.start_s), x(m.end_s.max(m.start_s + t_max / 500.0)));
        let _ = writeln!(
            s,
            r##"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#f4c430" opacity="0.35"><title>{}</title></rect>"##,
            b - a,
            H - TOP - BOTTOM,
            xml_text(&crate::judge::report::describe(&m.disturbance))
        );
    }
    decade_grid(&mut s, top_decade, &y);
    time_ticks(&mut s, t_max, &x);
    // The PHC first, so the guest's line, the one that matters, is drawn on top.
    for (pick, color, label) in [(1usize, "#c03030", "PHC"), (0, "#1f5fbf", "guest CLOCK_REALTIME")] {
        let mut path = String::new();
        let mut pen_up = true;
        // Two points per pixel column (its smallest and largest |offset|) draw the same picture
        // as every point: a simulated day stays a small file.
        let vals: Vec<(f64, Option<f64>)> = report
            .series
            .iter()
            .map(|o| {
                let v = if pick == 0 { o.guest_offset_ns } else { o.phc_offset_ns };
                (o.t_s, v.map(|v| v.unsigned_abs() as f64))
            })
            .collect();
        // The plot area's width in pixels: a whole number, small.
        let columns = (W - LEFT - RIGHT) as usize;
        for i in crate::judge::decimate::minmax_indices(&vals, columns) {
            let o = &report.series[i];
            let v = if pick == 0 { o.guest_offset_ns } else { o.phc_offset_ns };
            match v {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_up { "M" } else { "L" },
                        x(o.t_s),
                        y(v.unsigned_abs() as f64)
                    );
                    pen_up = false;
                }
                None => pen_up = true,
            }
        }
        let _ =
            writeln!(s, r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.2"/>"#, path.trim_end());
        let ly = TOP + 14.0 + 14.0 * (1 - pick) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            W - 200.0,
            W - 180.0,
            W - 175.0,
            ly + 4.0
        );
    }
    for e in report.events.iter().filter(|e| e.kind == "step") {
        let xx = x(e.t_s);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}" stroke="#2a2" stroke-dasharray="3,3"><title>{} step {}</title></line>"##,
            H - BOTTOM,
            xml_text(&e.source),
            crate::judge::report::fmt_ns(e.step_ns.unwrap_or(0) as f64)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (s); shaded: disturbances; dashed: steps</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0
    );
    s.push_str("</svg>\n");
    s
}

/// A grid line and label at every decade of |offset| up to `top_decade`, `y` placing a value.
fn decade_grid(s: &mut String, top_decade: f64, y: &dyn Fn(f64) -> f64) {
    for d in 0..=(top_decade as i32) {
        let yy = y(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            decade_label(d)
        );
    }
}

/// Six time labels along the x axis, `x` placing a time.
fn time_ticks(s: &mut String, t_max: f64, x: &dyn Fn(f64) -> f64) {
    for i in 0..=5 {
        let t = t_max * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
            x(t),
            H - BOTTOM + 18.0
        );
    }
}

/// "1 ns", "10 ns", ..., "1 ms", ..., "100 s": decades read at a glance.
fn decade_label(d: i32) -> String {
    let units = [("ns", 0), ("us", 3), ("ms", 6), ("s", 9)];
    let (u, e) = units.iter().rev().find(|(_, e)| d >= *e).copied().unwrap_or(("ns", 0));
    format!("{} {u}", 10i64.pow((d - e) as u32))
}

/// Line colours for side-by-side runs (a palette that stays apart in print and for the common
/// colour blindnesses), repeated with dashes after the eighth.
const PALETTE: [&str; 8] =
    ["#1f5fbf", "#c03030", "#2a9d2a", "#8a3fbf", "#e08a00", "#00a0a0", "#6b4f2a", "#d04a9a"];

/// Side-by-side recovery: |guest offset| over the time since each run's first disturbance ended,
/// one line per run (labelled), on a log scale, with 1 ms marked. `runs` are (label, report); a
/// run without a disturbance is left out. What a suite of configurations writes as
/// `recovery.svg` (the guide's claim, "NTP alone recovers far more slowly", in one picture).
pub fn recovery_svg(title: &str, runs: &[(String, &Report)]) -> String {
    let curves: Vec<(&String, f64, &Report)> = runs
        .iter()
        .filter_map(|(label, r)| r.recovery.disturbance_end_s.map(|end| (label, end, *r)))
        .collect();
    let t_max =
        curves.iter().filter_map(|(_, end, r)| r.series.last().map(|o| o.t_s - end)).fold(1.0, f64::max);
    let max_ns = curves
        .iter()
        .flat_map(|(_, end, r)| r.series.iter().filter(move |o| o.t_s >= *end))
        .filter_map(|o| o.guest_offset_ns)
        .map(|v| v.unsigned_abs() as f64)
        .fold(1_000.0, f64::max);
    let top_decade = max_ns.log10().ceil().max(1.0);
    let legend_h = 14.0 * curves.len() as f64;
    let h = H + legend_h;
    let x = |t: f64| LEFT + (t / t_max) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v.max(FLOOR_NS).log10() / top_decade) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#, xml_text(title));
    decade_grid(&mut s, top_decade, &y);
    let ms = y(1e6);
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{ms:.1}" y2="{ms:.1}" stroke="#555" stroke-dasharray="6,3"><title>1 ms</title></line>"##,
        W - RIGHT
    );
    time_ticks(&mut s, t_max, &x);
    let columns = (W - LEFT - RIGHT) as usize;
    for (i, (label, end, r)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if i >= PALETTE.len() { r#" stroke-dasharray="5,3""# } else { "" };
        let pts: Vec<(f64, Option<f64>)> = r
            .series
            .iter()
            .map(|o| (o.t_s, o.guest_offset_ns.filter(|_| o.t_s >= *end).map(|v| v.unsigned_abs() as f64)))
            .collect();
        let mut path = String::new();
        let mut pen_up = true;
        for k in crate::judge::decimate::minmax_indices(&pts, columns) {
            match pts[k] {
                (t, Some(v)) => {
                    let _ = write!(path, "{}{:.1},{:.1} ", if pen_up { "M" } else { "L" }, x(t - end), y(v));
                    pen_up = false;
                }
                (_, None) => pen_up = true,
            }
        }
        let _ = writeln!(
            s,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.4"{dash}><title>{}</title></path>"#,
            path.trim_end(),
            xml_text(label)
        );
        let ly = H + 14.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 20.0,
            LEFT + 26.0,
            ly + 4.0,
            xml_text(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the disturbance ended (s); dashed line: 1 ms</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 22.0
    );
    s.push_str("</svg>\n");
    s
}
