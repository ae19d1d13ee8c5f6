//! Plots of a latency run (`latency --format json`): per method a histogram of the round trip
//! over the report's 1-2-5 buckets, and the cumulative distribution (CDF) of each method on one
//! log-scaled axis, the `clock_gettime` baseline included. Hand-written, deterministic SVG.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use serde_json::Value;

use crate::format::escape::{xml_attr, xml_text};

const W: f64 = 900.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = ["#1f5fbf", "#c03030", "#2a9a2a", "#9a4fbf", "#d08000", "#208f8f", "#777", "#000"];

/// One distribution to draw: its label and its histogram as (upper bound ns, count).
#[derive(Debug, Clone, PartialEq)]
pub struct Dist {
    /// `basic`, `extended.realtime`, `clock_gettime (baseline)`, ...
    pub label: String,
    /// Buckets in order.
    pub buckets: Vec<(f64, u64)>,
}

fn dist(label: String, summary: &Value) -> Option<Dist> {
    let buckets: Vec<(f64, u64)> = summary["histogram"]
        .as_array()?
        .iter()
        .filter_map(|b| Some((b["le_ns"].as_f64()?, b["count"].as_u64()?)))
        .collect();
    (!buckets.is_empty()).then_some(Dist { label, buckets })
}

/// The round-trip distributions of a latency document: the baseline first, then each method
/// that worked.
pub fn distributions(doc: &Value) -> Vec<Dist> {
    let mut out: Vec<Dist> =
        dist("clock_gettime (baseline)".into(), &doc["baseline"]["round_trip_ns"]).into_iter().collect();
    for m in doc["methods"].as_array().into_iter().flatten() {
        let mut label = m["method"].as_str().unwrap_or("?").to_owned();
        if let Some(c) = m["clock"].as_str() {
            label = format!("{label}.{c}");
        }
        out.extend(dist(label, &m["round_trip_ns"]));
    }
    out
}

fn log_axis(ds: &[Dist]) -> (f64, f64) {
    let lo =
        ds.iter().flat_map(|d| d.buckets.iter().map(|b| b.0)).filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
    let hi = ds.iter().flat_map(|d| d.buckets.iter().map(|b| b.0)).fold(1.0, f64::max);
    let lo = if lo == f64::MAX { 1.0 } else { lo };
    (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0))
}

fn x_axis(s: &mut String, lo: f64, hi: f64, bottom: f64) {
    let x = |d: f64| LEFT + (d - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let mut d = lo;
    while d <= hi + 1e-9 {
        let label = crate::judge::report::fmt_ns(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{bottom:.1}" stroke="#ddd"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle">{2}</text>"##,
            x(d),
            bottom + 16.0,
            xml_text(&label)
        );
        d += 1.0;
    }
}

/// A histogram per distribution, stacked vertically: bar height is the bucket's share of the
/// samples, bar position its (log) bounds.
pub fn histogram_svg(title: &str, ds: &[Dist]) -> String {
    let (lo, hi) = log_axis(ds);
    let panel = 110.0;
    let h = TOP + BOTTOM + panel * ds.len().max(1) as f64;
    let x = |v: f64| LEFT + (v.max(1.0).log10() - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">{}: round trip, histogram per method</text>"#,
        xml_text(title)
    );
    x_axis(&mut s, lo, hi, h - BOTTOM);
    for (i, d) in ds.iter().enumerate() {
        let base = TOP + panel * (i as f64 + 1.0) - 10.0;
        let total: u64 = d.buckets.iter().map(|b| b.1).sum::<u64>().max(1);
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(s, r#"<g class="histogram" data-label="{}">"#, xml_attr(&d.label));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 4.0,
            base - panel + 24.0,
            xml_text(&d.label)
        );
        let mut prev = 0.0f64;
        for &(le, n) in &d.buckets {
            let (a, b) = (x(prev.max(le / 2.5)), x(le));
            let bh = (panel - 30.0) * n as f64 / total as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>&lt;= {} : {n}</title></rect>"#,
                base - bh,
                (b - a).max(0.5),
                xml_text(&crate::judge::report::fmt_ns(le))
            );
            prev = le;
        }
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{base:.1}" y2="{base:.1}" stroke="#999"/></g>"##,
            W - RIGHT
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round trip (log scale); bars: share of samples per bucket</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        h - 10.0
    );
    s.push_str("</svg>\n");
    s
}

/// The cumulative distribution of every method on one log axis, from its histogram buckets
/// (the fraction of samples at or below each bucket's upper bound).
pub fn cdf_svg(title: &str, ds: &[Dist]) -> String {
    let (lo, hi) = log_axis(ds);
    let h = 420.0;
    let x = |v: f64| LEFT + (v.max(1.0).log10() - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let y = |f: f64| TOP + (1.0 - f) * (h - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">{}: round trip, cumulative distribution</text>"#,
        xml_text(title)
    );
    x_axis(&mut s, lo, hi, h - BOTTOM);
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let (yy, x2, tx) = (y(q), W - RIGHT, LEFT - 6.0);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{x2:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{tx:.1}" y="{:.1}" text-anchor="end">{q}</text>"##,
            yy + 4.0
        );
    }
    for (i, d) in ds.iter().enumerate() {
        let total: u64 = d.buckets.iter().map(|b| b.1).sum::<u64>().max(1);
        let color = COLORS[i % COLORS.len()];
        let mut path = String::new();
        let mut acc = 0u64;
        let mut last_y = y(0.0);
        for (k, &(le, n)) in d.buckets.iter().enumerate() {
            acc += n;
            let f = acc as f64 / total as f64;
            let xx = x(le);
            if k == 0 {
                let _ = write!(path, "M{xx:.1},{last_y:.1} ");
            }
            last_y = y(f);
            let _ = write!(path, "L{xx:.1},{last_y:.1} ");
        }
        let _ = writeln!(
            s,
            r#"<path class="cdf" data-label="{}" d="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
            xml_attr(&d.label),
            path.trim_end()
        );
        let ly = TOP + 14.0 * (i as f64 + 1.0);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT_L:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 35.0,
            LEFT + 40.0,
            ly + 4.0,
            xml_text(&d.label),
            LEFT_L = LEFT + 15.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round trip (log scale); fraction of samples at or below</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        h - 10.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_take_the_baseline_and_methods_that_worked() {
        let doc = serde_json::json!({
            "baseline": {"round_trip_ns": {"histogram": [{"le_ns": 20, "count": 5}, {"le_ns": 50, "count": 5}]}},
            "methods": [
                {"method": "basic", "clock": null, "round_trip_ns": {"histogram": [{"le_ns": 2000, "count": 10}]}},
                {"method": "extended", "clock": "realtime", "round_trip_ns": {"histogram": [{"le_ns": 1000, "count": 9}, {"le_ns": 2000, "count": 1}]}},
                {"method": "precise", "clock": null, "round_trip_ns": null}
            ]
        });
        let d = distributions(&doc);
        let labels: Vec<&str> = d.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["clock_gettime (baseline)", "basic", "extended.realtime"]);
        let cdf = cdf_svg("t", &d);
        assert_eq!(cdf.matches("class=\"cdf\"").count(), 3);
        // The last point of every CDF is at fraction 1 (the top of the plot area).
        assert!(cdf.contains(&format!(",{TOP:.1}\" fill=\"none\"")), "{cdf}");
        let hist = histogram_svg("t", &d);
        assert_eq!(hist.matches("class=\"histogram\"").count(), 3);
        assert_eq!(hist.matches("<rect x=").count(), 5);
    }
}
