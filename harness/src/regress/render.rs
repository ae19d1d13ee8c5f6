//! The suite's human-facing files: `index.md` and one self-contained `index.html` (verdict
//! table, recovery metrics, checks, fidelity tables and every plot inline; no external file,
//! script or style), which is also well-formed XML so that tests can parse it back.
//!
//! Everything in them is built from data (the summary, each run's `report.json`, each
//! comparison's `fidelity.json`) and escaped as it is written ([`crate::format::escape`]); no file of a
//! report folder is ever pasted in, since a merged suite's folders come from whoever uploaded
//! the shards.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

use super::summary::{Entry, Outcome, Summary};
use crate::format::escape::{markdown_cell, markdown_code, markdown_line, url_path, xml_attr, xml_text};
use crate::judge::analysis::Recovery;
use crate::judge::report::fmt_ns;

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

/// The counts line, with `text` escaping the backends and `code` the filter for the format.
fn totals_line(s: &Summary, text: fn(&str) -> String, code: fn(&str) -> String) -> String {
    let mut parts = vec![format!("{} scenarios selected", s.selected)];
    if let Some(f) = &s.filter {
        parts.push(format!("filter {}", code(f)));
    }
    if let Some(sh) = s.shard {
        parts.push(format!("shard {}/{}", sh.index, sh.count));
    }
    let counts: Vec<String> =
        [Outcome::Pass, Outcome::Fail, Outcome::NoChecks, Outcome::Aborted, Outcome::Skipped]
            .iter()
            .map(|o| format!("{} {}", o.word().to_lowercase(), s.totals.get(o.key()).copied().unwrap_or(0)))
            .collect();
    format!("Backends: {}; {}. {}.", text(&s.backends.join(", ")), parts.join(", "), counts.join(", "))
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
    let _ = writeln!(
        m,
        "# phc-harness suite: {}\n\n{}\n",
        verdict(s),
        totals_line(s, markdown_cell, markdown_code)
    );
    let _ = writeln!(m, "| scenario | backend | verdict | {} | report |", HEAD.join(" | "));
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
    for e in &s.entries {
        let link = e.dir.as_ref().map_or("-".into(), |d| format!("[report]({}/report.md)", url_path(d)));
        let cells: Vec<String> = cells(e).iter().map(|c| markdown_cell(c)).collect();
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {link} |",
            markdown_cell(&e.scenario),
            markdown_cell(&e.backend),
            e.outcome.word(),
            cells.join(" | ")
        );
    }
    let failed: Vec<String> = s
        .entries
        .iter()
        .flat_map(|e| {
            e.checks.iter().filter(|c| !c.pass).map(move |c| {
                format!(
                    "- {} \\[{}\\]: {}: expected {}, got {}",
                    markdown_line(&e.scenario),
                    markdown_cell(&e.backend),
                    markdown_cell(&c.name),
                    markdown_cell(&c.expected),
                    markdown_cell(&c.actual)
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
            e.reason.as_ref().map(|r| {
                format!(
                    "- {} \\[{}\\] {}: {}",
                    markdown_line(&e.scenario),
                    markdown_cell(&e.backend),
                    e.outcome.word(),
                    markdown_cell(r)
                )
            })
        })
        .collect();
    if !why.is_empty() {
        let _ = writeln!(m, "\n## Skipped and aborted\n\n{}", why.join("\n"));
    }
    if !side_by_side(s).is_empty() {
        let _ =
            writeln!(m, "\n## Recovery side by side\n\n![|offset| after the disturbance]({RECOVERY_PLOT})");
    }
    if !s.fidelity.is_empty() {
        let _ = writeln!(m, "\n## Sim against QEMU\n\n| scenario | agrees | table |\n|---|---|---|");
        for f in &s.fidelity {
            let agrees = match (f.agrees, f.seed) {
                (true, _) => "yes".to_owned(),
                (false, None) => "**no**".to_owned(),
                // One of repeated runs: its distribution judges.
                (false, Some(seed)) => format!("no (seed {seed}; not judged alone)"),
            };
            let _ = writeln!(
                m,
                "| {} | {agrees} | [fidelity]({}/fidelity.md) |",
                markdown_cell(&f.scenario),
                url_path(&f.dir)
            );
        }
    }
    if !s.distributions.is_empty() {
        let _ = writeln!(
            m,
            "\n## Repeated runs: distributions\n\n| scenario | sim against QEMU | real runs inside | table |\n|---|---|---|---|"
        );
        for d in &s.distributions {
            let _ = writeln!(
                m,
                "| {} | {} | {} | [distribution]({}/distribution.md) |",
                markdown_cell(&d.scenario),
                match d.agrees {
                    Some(true) => "agrees",
                    Some(false) => "**disagrees**",
                    None => "-",
                },
                d.inside.as_deref().map_or("-".into(), markdown_cell),
                url_path(&d.dir)
            );
        }
    }
    m
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

/// A run's plot, drawn afresh from its `report.json` by [`crate::judge::plot::svg`] (which escapes
/// every text it takes from the report), or a note when that cannot be read. The folder's
/// `plot.svg` is never pasted in: in a merged suite it is whatever a shard's uploader put
/// there, `<script>` included.
fn plot(path: &Path) -> String {
    match crate::judge::report::Report::load(path) {
        Ok(r) => crate::judge::plot::svg(&r),
        Err(e) => format!("<p>{}: no plot: {}</p>\n", xml_text(&path.display().to_string()), xml_text(&e)),
    }
}

/// The suite's side-by-side recovery plot, beside `index.md`.
pub const RECOVERY_PLOT: &str = "recovery.svg";
/// Most runs drawn in it: beyond, the legend would outgrow the plot (a suite of repeats).
const MAX_SIDE_BY_SIDE: usize = 16;

/// The runs `recovery.svg` draws: those with a report and a disturbance, one per scenario and
/// backend (of repeats, the first seed's), two or more, at most `MAX_SIDE_BY_SIDE`; else none.
fn side_by_side(s: &Summary) -> Vec<&Entry> {
    let mut runs: Vec<&Entry> = Vec::new();
    for e in &s.entries {
        let disturbed = e.dir.is_some() && e.recovery.as_ref().is_some_and(|r| r.disturbance_end_s.is_some());
        if disturbed && !runs.iter().any(|r| r.scenario == e.scenario && r.backend == e.backend) {
            runs.push(e);
        }
    }
    if (2..=MAX_SIDE_BY_SIDE).contains(&runs.len()) {
        runs
    } else {
        Vec::new()
    }
}

/// `recovery.svg`: every disturbed run's |offset| from the end of its disturbance, side by side
/// (crate::judge::plot::recovery_svg), drawn afresh from the runs' `report.json` under `dir`;
/// None where fewer than two runs (or too many) have one.
pub fn recovery_plot(s: &Summary, dir: &Path) -> Option<String> {
    let loaded: Vec<(String, crate::judge::report::Report)> = side_by_side(s)
        .into_iter()
        .filter_map(|e| {
            let d = e.dir.as_ref()?;
            let r = crate::judge::report::Report::load(&dir.join(d).join("report.json")).ok()?;
            Some((format!("{} [{}]", e.scenario, e.backend), r))
        })
        .collect();
    if loaded.len() < 2 {
        return None;
    }
    let runs: Vec<(String, &crate::judge::report::Report)> =
        loaded.iter().map(|(l, r)| (l.clone(), r)).collect();
    Some(crate::judge::plot::recovery_svg("|offset| to host time after the disturbance, side by side", &runs))
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
        totals_line(s, xml_text, |f| xml_text(&format!("`{f}`")))
    );
    let _ = writeln!(h, "<table id=\"verdicts\">\n<tr><th>scenario</th><th>backend</th><th>verdict</th>");
    for c in HEAD {
        let _ = write!(h, "<th>{}</th>", xml_text(c));
    }
    h.push_str("</tr>\n");
    for e in &s.entries {
        let _ = write!(
            h,
            "<tr class=\"entry\"><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"{}\">{}</td>",
            xml_attr(&anchor(e)),
            xml_text(&e.scenario),
            xml_text(&e.backend),
            e.outcome.key(),
            e.outcome.word()
        );
        for c in cells(e) {
            let _ = write!(h, "<td>{}</td>", xml_text(&c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    if let Some(svg) = recovery_plot(s, dir) {
        let _ = writeln!(h, "<section id=\"recovery\">\n<h2>Recovery side by side</h2>\n{svg}</section>");
    }
    for e in &s.entries {
        let _ = writeln!(
            h,
            "<section id=\"{}\">\n<h2>{} [{}]: <span class=\"{}\">{}</span></h2>",
            xml_attr(&anchor(e)),
            xml_text(&e.scenario),
            xml_text(&e.backend),
            e.outcome.key(),
            e.outcome.word()
        );
        if let Some(r) = &e.reason {
            let _ = writeln!(h, "<p><b>{}:</b> {}</p>", e.outcome.word(), xml_text(r));
        }
        if !e.environment.is_empty() {
            let env: Vec<String> = e.environment.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(h, "<p>{}</p>", xml_text(&env.join("; ")));
        }
        if let Some(r) = &e.recovery {
            h.push_str("<table class=\"recovery\"><tr><th>metric</th><th>value</th></tr>\n");
            for (k, v) in recovery_rows(r) {
                let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", xml_text(&k), xml_text(&v));
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
                    xml_text(&c.name),
                    xml_text(&c.expected),
                    xml_text(&c.actual)
                );
            }
            h.push_str("</table>\n");
        }
        if let Some(d) = &e.dir {
            match phc::input::join_inside(dir, d) {
                Ok(folder) => h.push_str(&plot(&folder.join("report.json"))),
                Err(err) => {
                    let _ = writeln!(h, "<p>{}: no plot: {}</p>", xml_text(d), xml_text(&err.to_string()));
                }
            }
        }
        h.push_str("</section>\n");
    }
    for f in &s.fidelity {
        let _ = writeln!(
            h,
            "<section id=\"{}\">\n<h2>{}{}: sim against QEMU: {}</h2>",
            xml_attr(&f.dir),
            xml_text(&f.scenario),
            f.seed.map_or(String::new(), |s| format!(" (seed {s}, one of repeated runs)")),
            if f.agrees { "agree" } else { "DISAGREE" }
        );
        let path = phc::input::join_inside(dir, &f.dir).map(|p| p.join("fidelity.json"));
        let parsed = path.as_ref().ok().and_then(|p| crate::judge::fidelity::Fidelity::load(p).ok());
        let path = path.unwrap_or_else(|_| Path::new(&f.dir).join("fidelity.json"));
        match parsed {
            Some(fd) => {
                h.push_str("<table class=\"fidelity\"><tr><th>metric</th><th>sim</th><th>qemu</th><th>difference</th><th>tolerance</th><th>agrees</th><th>rule</th></tr>\n");
                let n = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                for r in &fd.rows {
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                        xml_text(&r.metric),
                        n(r.sim),
                        n(r.qemu),
                        n(r.difference),
                        n(r.tolerance),
                        if r.agrees { "pass" } else { "fail" },
                        if r.agrees { "yes" } else { "no" },
                        xml_text(&r.rule)
                    );
                }
                h.push_str("</table>\n");
            }
            None => {
                let _ = writeln!(
                    h,
                    "<p>{}: missing or not a fidelity document</p>",
                    xml_text(&path.display().to_string())
                );
            }
        }
        h.push_str("</section>\n");
    }
    if !s.distributions.is_empty() {
        h.push_str("<section id=\"distributions\">\n<h2>Repeated runs: distributions</h2>\n<table class=\"distributions\"><tr><th>scenario</th><th>sim against QEMU</th><th>real runs inside</th><th>table</th></tr>\n");
        for d in &s.distributions {
            let (class, word) = match d.agrees {
                Some(true) => ("pass", "agrees"),
                Some(false) => ("fail", "DISAGREES"),
                None => ("", "-"),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td><td><a href=\"{}/distribution.md\">distribution</a></td></tr>",
                xml_text(&d.scenario),
                xml_text(d.inside.as_deref().unwrap_or("-")),
                xml_attr(&url_path(&d.dir))
            );
        }
        h.push_str("</table>\n</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regress::summary::{FidelityEntry, Summary};

    #[test]
    fn fidelity_tables_show_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::run::runner::builtin("reboot").unwrap().unwrap();
        let a = crate::run::runner::run_sim(&s).unwrap();
        let mut b = a.clone();
        b.backend = "qemu".into();
        let f = crate::judge::fidelity::compare(&a, &b, s.poll_interval_s());
        crate::run::runner::write_fidelity(&f, &dir.path().join("reboot-fidelity")).unwrap();
        let entries: Vec<_> = [&a, &b]
            .iter()
            .map(|r| {
                crate::regress::summary::entry_from_report(r, &dir.path().join("x"), dir.path(), Vec::new())
            })
            .collect();
        let fe = FidelityEntry {
            scenario: "reboot".into(),
            agrees: false,
            dir: "reboot-fidelity".into(),
            seed: None,
        };
        let sum = Summary::new(vec!["sim".into(), "qemu".into()], None, None, 1, entries, vec![fe]);
        assert!(sum.failed(), "a disagreement fails the suite");
        let html = html(&sum, dir.path());
        assert!(html.contains("<h2>reboot: sim against QEMU: DISAGREE</h2>"), "{html}");
        assert_eq!(html.matches("<table class=\"fidelity\">").count(), 1);
        assert!(html.contains("<td>offset_after_disturbance_s</td>"), "{html}");
        let md = markdown(&sum);
        assert!(md.contains("| reboot | **no** | [fidelity](reboot-fidelity/fidelity.md) |"), "{md}");
        let k = crate::format::ktap::parse(&crate::regress::results::ktap(&sum)).unwrap();
        assert_eq!(k.last().unwrap().name, "reboot.fidelity");
        assert_eq!(k.last().unwrap().result, crate::format::ktap::Result::NotOk);
        let j = crate::regress::results::junit(&sum);
        assert!(j.contains("<testsuite name=\"phc-harness.fidelity\" tests=\"1\" failures=\"1\""), "{j}");
    }

    /// No element or attribute that runs script, in any case (HTML's names are
    /// case-insensitive): what `index.html` must never hold, whatever its folders hold.
    fn assert_inert(html: &str) -> Vec<crate::format::escape::read::El> {
        let els = crate::format::escape::read::elements(html).unwrap_or_else(|e| panic!("{e}\n{html}"));
        for e in &els {
            let name = e.name.to_ascii_lowercase();
            assert!(
                !matches!(name.as_str(), "script" | "iframe" | "object" | "embed" | "foreignobject"),
                "{name}"
            );
            for (k, v) in &e.attrs {
                let k = k.to_ascii_lowercase();
                assert!(!k.starts_with("on"), "attribute {k}={v:?} on <{name}>");
                assert!(!v.to_ascii_lowercase().contains("javascript:"), "{k}={v:?}");
            }
        }
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("<script") && !lower.contains("<foreignobject"), "{html}");
        els
    }

    #[test]
    fn a_report_folder_s_plot_svg_never_reaches_index_html() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::run::runner::builtin("reboot").unwrap().unwrap();
        let mut r = crate::run::runner::run_sim(&s).unwrap();
        // Text from the run that ends up in the plot, hostile too.
        r.scenario = "<script>alert(3)</script>\u{1b}[2J".into();
        r.backend = "sim\" onload=\"alert(4)".into();
        let run = dir.path().join("reboot-sim");
        crate::run::runner::write_all_full(&r, &run).unwrap();
        // What an uploader put in a shard's folder.
        let evil = "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"><script>alert(2)</script>\
                    <foreignObject><iframe src=\"javascript:alert(5)\"/></foreignObject></svg>";
        std::fs::write(run.join("plot.svg"), evil).unwrap();
        let e = crate::regress::summary::entry_from_report(&r, &run, dir.path(), Vec::new());
        let sum = Summary::new(vec!["sim".into()], None, None, 1, vec![e], Vec::new());
        let h = html(&sum, dir.path());
        let els = assert_inert(&h);
        for bad in ["alert(1)", "alert(2)", "alert(5)"] {
            assert!(!h.contains(bad), "the folder's plot.svg is in index.html: {bad}");
        }
        // The plot is there, drawn from report.json, with the hostile name as text.
        let svgs: Vec<_> = els.iter().filter(|e| e.name == "svg").collect();
        assert_eq!(svgs.len(), 1, "{h}");
        let title =
            els.iter().find(|e| e.name == "text" && e.text.contains("alert(3)")).expect("the plot's title");
        assert!(
            title.text.starts_with("<script>alert(3)</script>\\u{1b}[2J [sim\" onload="),
            "{}",
            title.text
        );
        assert!(!h.contains('\u{1b}'));
        // Without report.json there is a note and no plot.
        std::fs::remove_file(run.join("report.json")).unwrap();
        let h = html(&sum, dir.path());
        let els = assert_inert(&h);
        assert!(!els.iter().any(|e| e.name == "svg"));
        assert!(els.iter().any(|e| e.name == "p" && e.text.contains("report.json: no plot")), "{h}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any text in the summary: index.html parses with no live markup from it and a verdict
        /// row per entry; every row of index.md keeps its table's columns.
        #[test]
        fn index_files_from_any_text_keep_their_shape(w in proptest::collection::vec(crate::format::escape::fixtures::nasty(), 1..6)) {
            let dir = tempfile::tempdir().unwrap();
            let s = crate::format::escape::fixtures::summary(&w);
            let h = html(&s, dir.path());
            let els = assert_inert(&h);
            let rows = els.iter().filter(|e| e.name == "tr" && e.attr("class") == Some("entry")).count();
            proptest::prop_assert_eq!(rows, s.entries.len());
            proptest::prop_assert_eq!(els.iter().filter(|e| e.name == "section").count(), s.entries.len() + s.fidelity.len());
            let md = markdown(&s);
            crate::format::escape::fixtures::terminal_safe(&md).map_err(proptest::test_runner::TestCaseError::fail)?;
            let mut tables = 0;
            let mut width = None;
            // The filter is a code span (its text shown as it is); the rest is escaped.
            let filter = crate::format::escape::markdown_code(s.filter.as_deref().unwrap_or_default());
            proptest::prop_assert!(md.contains(&format!(", filter {filter}. ")), "{}", md);
            for line in md.lines() {
                // The code span where it stands (the same characters may come earlier in an
                // escaped backend name: "\`\`" holds "`\`").
                let bare = crate::format::escape::fixtures::unescaped(&line.replacen(&format!(", filter {filter}. "), ", filter . ", 1));
                proptest::prop_assert!(!bare.contains(['<', '>', '`']), "{}", line);
                if line.starts_with('|') {
                    let cols = bare.matches('|').count();
                    match width {
                        None => {
                            tables += 1;
                            width = Some(cols);
                        }
                        Some(w) => proptest::prop_assert_eq!(cols, w, "{}", line),
                    }
                } else {
                    width = None;
                    // Outside a table nothing reads as a table row, a heading or a list item
                    // but the lines written as such.
                    proptest::prop_assert!(!line.starts_with("##") || line.starts_with("## "), "{}", line);
                }
            }
            proptest::prop_assert_eq!(tables, 2);
            proptest::prop_assert_eq!(md.lines().filter(|l| l.starts_with("| ") && l.ends_with(" |")).count(), 2 + s.entries.len() + s.fidelity.len());
        }
    }
}
