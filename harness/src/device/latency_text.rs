//! The text rendering of a `latency` report: a table of round trips, one of kernel windows, and a
//! small bar chart of each method's round-trip histogram.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::latency_report::{MethodResult, Report};
use crate::model::stats::Summary;

const BAR_WIDTH: u64 = 40;

fn label(m: &MethodResult) -> String {
    match m.clock {
        Some(c) if m.method != "clock_gettime" => format!("{} {c}", m.method),
        _ if m.method == "clock_gettime" => "clock_gettime monotonic (baseline)".into(),
        _ => m.method.to_owned(),
    }
}

fn row(s: &mut String, name: &str, sum: &Summary, ratio: Option<f64>) {
    let ratio = ratio.map_or(String::from("-"), |r| format!("{r:.2}x"));
    let _ = writeln!(
        s,
        "  {name:<36} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10.1} {:>9}",
        sum.min_ns, sum.p50_ns, sum.p90_ns, sum.p99_ns, sum.p999_ns, sum.max_ns, sum.mean_ns, ratio
    );
}

fn header(s: &mut String, last: &str) {
    let _ = writeln!(
        s,
        "  {:<36} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>9}",
        "method", "min", "p50", "p90", "p99", "p99.9", "max", "mean", last
    );
}

/// Renders the report as text.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let driver = r.driver.map_or(String::from("no sysfs entry"), |d| format!("driver {d}"));
    let _ = writeln!(
        s,
        "{} ({driver}): {} samples per method, {} reading(s) per call",
        r.device, r.samples, r.n_per_call
    );
    let _ = writeln!(s, "\nround trip of the call (CLOCK_MONOTONIC_RAW before and after), ns:");
    header(&mut s, "p50/base");
    let all = std::iter::once(&r.baseline).chain(&r.methods);
    for m in all.clone() {
        match &m.round_trip_ns {
            Some(sum) => row(&mut s, &label(m), sum, m.ratio_p50_to_baseline.or(Some(1.0))),
            None => {
                let why = m.note.as_deref().map_or(String::new(), |n| format!(": {n}"));
                let _ = writeln!(s, "  {:<36} {} ({}){why}", label(m), m.status, m.error.unwrap_or("?"));
            }
        }
    }
    if r.methods.iter().any(|m| m.window_ns.is_some()) {
        let _ = writeln!(s, "\nwindow reported by the kernel (t2 - t1, shortest reading of each call), ns:");
        header(&mut s, "");
        for m in &r.methods {
            if let Some(w) = &m.window_ns {
                row(&mut s, &label(m), w, None);
            }
        }
    }
    for m in all {
        let Some(sum) = &m.round_trip_ns else { continue };
        let _ = writeln!(s, "\n{} round trip histogram:", label(m));
        let peak = sum.histogram.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        for b in &sum.histogram {
            let bar = "#".repeat((b.count * BAR_WIDTH).div_ceil(peak) as usize);
            let _ = writeln!(s, "  <= {:>10} ns |{bar:<40}| {}", b.le_ns, b.count);
        }
    }
    crate::format::escape::terminal(&s)
}
