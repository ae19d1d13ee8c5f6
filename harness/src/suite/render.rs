//! The suite's human-facing files: `index.md` and one self-contained `index.html` (verdict
//! table, recovery metrics, checks, fidelity tables and every plot inline; no external file,
//! script or style), which is also well-formed XML so that tests can parse it back.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

use super::summary::{Entry, Outcome, Summary};
use crate::analysis::Recovery;
use crate::report::fmt_ns;

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{v:.1} s"))
}

/// The columns of the verdict table, from an entry.
fn cells(e: &Entry) -> [String; 5] {
    let Some(r) = &e.recovery else { return ["-".into(), "-".into(), "-".into(), "-".into(), "-".into()] };
    [
        format!("{:?}", r.correction).to_lowercase(),
        secs(r.time_to_first_correction_s),
        secs(r.time_to_within_s.get("1ms").copied().flatten()),
        r.steps.len().to_string(),
        fmt_ns(r.max_abs_offset_ns as f64),
    ]
}

const HEAD: [&str; 5] = ["correction", "first correction", "within 1 ms", "steps", "max abs offset"];

fn totals_line(s: &Summary) -> String {
    let mut parts = vec![format!("{} scenarios selected", s.selected)];
    if let Some(f) = &s.filter {
        parts.push(format!("filter `{f}`"));
    }
    if let Some(sh) = s.shard {
        parts.push(format!("shard {}/{}", sh.index, sh.count));
    }
    let counts: Vec<String> =
        [Outcome::Pass, Outcome::Fail, Outcome::NoChecks, Outcome::Aborted, Outcome::Skipped]
            .iter()
            .map(|o| format!("{} {}", o.word().to_lowercase(), s.totals.get(o.key()).copied().unwrap_or(0)))
            .collect();
    format!("Backends: {}; {}. {}.", s.backends.join(", "), parts.join(", "), counts.join(", "))
}

fn verdict(s: &Summary) -> &'static str {
    if s.failed() {
        "FAIL"
    } else {
        "PASS"
    }
}

/// `index.md`: the verdict table, failed checks, skips with their reasons, fidelity.
pub fn markdown(s: &Summary) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# phc-harness suite: {}\n\n{}\n", verdict(s), totals_line(s));
    let _ = writeln!(m, "| scenario | backend | verdict | {} | report |", HEAD.join(" | "));
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
    for e in &s.entries {
        let link = e.dir.as_ref().map_or("-".into(), |d| format!("[report]({d}/report.md)"));
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {link} |",
            e.scenario,
            e.backend,
            e.outcome.word(),
            cells(e).join(" | ")
        );
    }
    let failed: Vec<String> = s
        .entries
        .iter()
        .flat_map(|e| {
            e.checks.iter().filter(|c| !c.pass).map(move |c| {
                format!(
                    "- {} [{}]: {}: expected {}, got {}",
                    e.scenario, e.backend, c.name, c.expected, c.actual
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(m, "\n## Failed checks\n\n{}", failed.join("\n"));
    }
    let why: Vec<String> = s
        .entries
        .iter()
        .filter_map(|e| {
            e.reason.as_ref().map(|r| format!("- {} [{}] {}: {r}", e.scenario, e.backend, e.outcome.word()))
        })
        .collect();
    if !why.is_empty() {
        let _ = writeln!(m, "\n## Skipped and aborted\n\n{}", why.join("\n"));
    }
    if !s.fidelity.is_empty() {
        let _ = writeln!(m, "\n## Sim against QEMU\n\n| scenario | agrees | table |\n|---|---|---|");
        for f in &s.fidelity {
            let _ = writeln!(
                m,
                "| {} | {} | [fidelity]({}/fidelity.md) |",
                f.scenario,
                if f.agrees { "yes" } else { "**no**" },
                f.dir
            );
        }
    }
    m
}

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px}\
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f3f3f3}.pass{color:#176d17;font-weight:bold}.fail,.aborted{color:#b00;font-weight:bold}\
.no_checks,.skipped{color:#886400;font-weight:bold}section{border-top:2px solid #ddd;margin-top:2em}\
svg{max-width:100%;height:auto}";

fn recovery_rows(r: &Recovery) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "offset after disturbance".to_owned(),
            r.offset_after_disturbance_ns.map_or("-".into(), |v| fmt_ns(v as f64)),
        ),
        ("time to first correction".into(), secs(r.time_to_first_correction_s)),
    ];
    for (k, v) in &r.time_to_within_s {
        rows.push((format!("time to within {k}"), secs(*v)));
    }
    rows.push(("steps".into(), r.steps.len().to_string()));
    rows.push(("correction".into(), format!("{:?}", r.correction).to_lowercase()));
    rows.push(("slew duration".into(), secs(r.slew_duration_s)));
    rows.push(("max |offset|".into(), fmt_ns(r.max_abs_offset_ns as f64)));
    rows.push(("rms after recovery".into(), r.rms_after_recovery_ns.map_or("-".into(), fmt_ns)));
    for (k, n) in &r.read_errors {
        rows.push((format!("PHC read errors {k}"), n.to_string()));
    }
    rows
}

/// An inline copy of an SVG file: its `<svg>` element, or a note when it cannot be read.
fn inline_svg(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => match t.find("<svg") {
            Some(i) => t[i..].to_owned(),
            None => format!("<p>{}: not an SVG</p>\n", esc(&path.display().to_string())),
        },
        Err(e) => format!("<p>{}: {}</p>\n", esc(&path.display().to_string()), esc(&e.to_string())),
    }
}

fn anchor(e: &Entry) -> String {
    format!("{}-{}", e.scenario, e.backend)
}

/// `index.html`, reading each run's `plot.svg` and `fidelity.json` under `dir`.
pub fn html(s: &Summary, dir: &Path) -> String {
    let mut h = String::new();
    let v = verdict(s);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>phc-harness suite: {v}</title>\n<style>{STYLE}</style>\n</head>\n<body>"
    );
    let _ = writeln!(
        h,
        "<h1>phc-harness suite: <span class=\"{}\">{v}</span></h1>\n<p>{}</p>",
        v.to_lowercase(),
        esc(&totals_line(s))
    );
    let _ = writeln!(h, "<table id=\"verdicts\">\n<tr><th>scenario</th><th>backend</th><th>verdict</th>");
    for c in HEAD {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>\n");
    for e in &s.entries {
        let _ = write!(
            h,
            "<tr class=\"entry\"><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"{}\">{}</td>",
            esc(&anchor(e)),
            esc(&e.scenario),
            esc(&e.backend),
            e.outcome.key(),
            e.outcome.word()
        );
        for c in cells(e) {
            let _ = write!(h, "<td>{}</td>", esc(&c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    for e in &s.entries {
        let _ = writeln!(
            h,
            "<section id=\"{}\">\n<h2>{} [{}]: <span class=\"{}\">{}</span></h2>",
            esc(&anchor(e)),
            esc(&e.scenario),
            esc(&e.backend),
            e.outcome.key(),
            e.outcome.word()
        );
        if let Some(r) = &e.reason {
            let _ = writeln!(h, "<p><b>{}:</b> {}</p>", e.outcome.word(), esc(r));
        }
        if !e.environment.is_empty() {
            let env: Vec<String> = e.environment.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(h, "<p>{}</p>", esc(&env.join("; ")));
        }
        if let Some(r) = &e.recovery {
            h.push_str("<table class=\"recovery\"><tr><th>metric</th><th>value</th></tr>\n");
            for (k, v) in recovery_rows(r) {
                let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(&k), esc(&v));
            }
            h.push_str("</table>\n");
        }
        if !e.checks.is_empty() {
            h.push_str("<table class=\"checks\"><tr><th>check</th><th>expected</th><th>actual</th><th>result</th></tr>\n");
            for c in &e.checks {
                let (cls, w) = if c.pass { ("pass", "pass") } else { ("fail", "FAIL") };
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{cls}\">{w}</td></tr>",
                    esc(&c.name),
                    esc(&c.expected),
                    esc(&c.actual)
                );
            }
            h.push_str("</table>\n");
        }
        if let Some(d) = &e.dir {
            h.push_str(&inline_svg(&dir.join(d).join("plot.svg")));
        }
        h.push_str("</section>\n");
    }
    for f in &s.fidelity {
        let _ = writeln!(
            h,
            "<section id=\"{}-fidelity\">\n<h2>{}: sim against QEMU: {}</h2>",
            esc(&f.scenario),
            esc(&f.scenario),
            if f.agrees { "agree" } else { "DISAGREE" }
        );
        let path = dir.join(&f.dir).join("fidelity.json");
        let parsed: Option<crate::fidelity::Fidelity> =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
        match parsed {
            Some(fd) => {
                h.push_str("<table class=\"fidelity\"><tr><th>metric</th><th>sim</th><th>qemu</th><th>difference</th><th>tolerance</th><th>agrees</th><th>rule</th></tr>\n");
                let n = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                for r in &fd.rows {
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                        esc(&r.metric),
                        n(r.sim),
                        n(r.qemu),
                        n(r.difference),
                        n(r.tolerance),
                        if r.agrees { "pass" } else { "fail" },
                        if r.agrees { "yes" } else { "no" },
                        esc(&r.rule)
                    );
                }
                h.push_str("</table>\n");
            }
            None => {
                let _ = writeln!(
                    h,
                    "<p>{}: missing or not a fidelity document</p>",
                    esc(&path.display().to_string())
                );
            }
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::summary::{FidelityEntry, Summary};

    #[test]
    fn fidelity_tables_show_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::runner::builtin("reboot").unwrap().unwrap();
        let a = crate::runner::run_sim(&s).unwrap();
        let mut b = a.clone();
        b.backend = "qemu".into();
        let f = crate::fidelity::compare(&a, &b, crate::runner::poll_interval_s(&s));
        crate::runner::write_fidelity(&f, &dir.path().join("reboot-fidelity")).unwrap();
        let entries: Vec<_> = [&a, &b]
            .iter()
            .map(|r| crate::suite::entry_from_report(r, &dir.path().join("x"), dir.path(), Vec::new()))
            .collect();
        let fe = FidelityEntry { scenario: "reboot".into(), agrees: false, dir: "reboot-fidelity".into() };
        let sum = Summary::new(vec!["sim".into(), "qemu".into()], None, None, 1, entries, vec![fe]);
        assert!(sum.failed(), "a disagreement fails the suite");
        let html = html(&sum, dir.path());
        assert!(html.contains("<h2>reboot: sim against QEMU: DISAGREE</h2>"), "{html}");
        assert_eq!(html.matches("<table class=\"fidelity\">").count(), 1);
        assert!(html.contains("<td>offset_after_disturbance_s</td>"), "{html}");
        let md = markdown(&sum);
        assert!(md.contains("| reboot | **no** | [fidelity](reboot-fidelity/fidelity.md) |"), "{md}");
        let k = crate::ktap::parse(&crate::ktap::render(&sum)).unwrap();
        assert_eq!(k.last().unwrap().name, "reboot.fidelity");
        assert_eq!(k.last().unwrap().result, crate::ktap::Result::NotOk);
        let j = crate::junit::render(&sum);
        assert!(j.contains("<testsuite name=\"phc-harness.fidelity\" tests=\"1\" failures=\"1\""), "{j}");
    }
}
