//! The run report: a serde model built from a scenario's observations, rendered as text for the
//! terminal, Markdown, and JSON (stable keys, see JSON.md). The SVG plot lives in `plot`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mock_phc::EventKind;
use serde::{Deserialize, Serialize};

use crate::format::escape::{
    markdown_cell, markdown_code, markdown_code_block, markdown_line, markdown_paragraph, terminal_line,
};
use crate::judge::analysis::{self, Check, Recovery};
use crate::model::observation::{Marker, Observation, Observations};
use crate::model::scenario::Scenario;

/// Overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// At least one check failed.
    Fail,
    /// The scenario expects nothing, so nothing was judged: not a pass, not a failure.
    NoChecks,
    /// The run did not finish (backend failure); metrics cover what was seen.
    Aborted,
}

/// One event, flattened for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "EventLineFile")]
pub struct EventLine {
    /// Scenario seconds.
    pub t_s: f64,
    /// Who (`chrony`, `hv_utils`, `world`, ...).
    pub source: String,
    /// `step`, `frequency`, `read_error` or `note`.
    pub kind: String,
    /// A step's size in ns; absent for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ns: Option<i64>,
    /// A frequency change's new frequency in ppb (to 0.001 ppb); absent for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freq_ppb: Option<f64>,
    /// Text: the errno name or the log line. Left out of the JSON when empty (steps, frequency
    /// changes), so it must default when read back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
}

/// An event as a `report.json` holds it, this version's or an older one's: before `step_ns`
/// and `freq_ppb` one key, `value`, held the step in ns or the frequency in ppb by `kind`.
#[derive(Deserialize)]
struct EventLineFile {
    t_s: f64,
    source: String,
    kind: String,
    #[serde(default)]
    step_ns: Option<i64>,
    #[serde(default)]
    freq_ppb: Option<f64>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    text: String,
}

impl From<EventLineFile> for EventLine {
    fn from(f: EventLineFile) -> Self {
        let (mut step_ns, mut freq_ppb) = (f.step_ns, f.freq_ppb);
        if let Some(v) = f.value {
            match f.kind.as_str() {
                // Written from an i64, so integral; `as` saturates whatever a file says.
                "step" => step_ns = step_ns.or(Some(v.round() as i64)),
                "frequency" => freq_ppb = freq_ppb.or(Some(v)),
                _ => {}
            }
        }
        Self { t_s: f.t_s, source: f.source, kind: f.kind, step_ns, freq_ppb, text: f.text }
    }
}

/// A run's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// Backend (`sim`, `qemu`).
    pub backend: String,
    /// The world's seed.
    pub seed: u64,
    /// `pass`, `fail`, `no_checks` or `aborted`.
    pub verdict: Verdict,
    /// Why the run was aborted, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// Recovery metrics.
    pub recovery: Recovery,
    /// Each expectation with its outcome.
    pub checks: Vec<Check>,
    /// Disturbances as applied.
    pub disturbances: Vec<Marker>,
    /// Steps, frequency changes, read errors and daemon log lines, in time order.
    pub events: Vec<EventLine>,
    /// Offset series.
    pub series: Vec<Observation>,
    /// Present when `series` was thinned for the file (long runs; see `decimate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_decimated: Option<crate::judge::decimate::Decimation>,
    /// Backend-specific facts (acceleration, boot time, daemon output).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backend_info: BTreeMap<String, serde_json::Value>,
    /// The observation interval, seconds (`timeline.interval_s`): the resolution of every time
    /// measured from the series, which a baseline's tolerance does not go below. Absent in older
    /// reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
}

/// Largest `report.json` read. `run` thins the series to `decimate::MAX_JSON_SERIES` points
/// (a few hundred KiB), but `--full-series` keeps every sample: a long scenario at a short
/// interval is up to about a million observations at ~150 bytes of pretty JSON each.
pub const MAX_REPORT_BYTES: u64 = 256 << 20;

impl Report {
    /// Reads a `report.json` through the bounded reader (a regular file, not a symlink). Its
    /// names are data: whoever makes a path of them checks them first.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = phc::input::read_text(path, MAX_REPORT_BYTES, phc::input::Links::Refuse)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a report: {e}", path.display()))
    }

    /// Builds the report of a finished (or aborted, with `abort_reason`) run.
    pub fn new(scenario: &Scenario, backend: &str, obs: Observations, abort_reason: Option<String>) -> Self {
        let recovery = analysis::recovery(scenario, &obs);
        let checks = analysis::verdicts(scenario, &recovery);
        let verdict = if abort_reason.is_some() {
            Verdict::Aborted
        } else if checks.is_empty() {
            Verdict::NoChecks
        } else if checks.iter().all(|c| c.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let events = obs
            .events
            .iter()
            .map(|e| {
                let (kind, step_ns, freq_ppb, text) = match &e.kind {
                    EventKind::Step { delta_ns } => ("step", Some(*delta_ns), None, String::new()),
                    EventKind::Frequency { freq_ppb } => {
                        ("frequency", None, Some(analysis::round_ppb(*freq_ppb)), String::new())
                    }
                    EventKind::ReadError { code } => ("read_error", None, None, (*code).to_owned()),
                    EventKind::Note(s) => ("note", None, None, s.clone()),
                };
                EventLine {
                    t_s: analysis::round_s(e.t_ns as f64 / 1e9),
                    source: e.source.to_owned(),
                    kind: kind.into(),
                    step_ns,
                    freq_ppb,
                    text,
                }
            })
            .collect();
        Self {
            scenario: scenario.name.clone(),
            description: scenario.description.clone(),
            backend: backend.to_owned(),
            seed: scenario.world.seed,
            verdict,
            abort_reason,
            recovery,
            checks,
            disturbances: obs.markers,
            events,
            series: obs.series,
            series_decimated: None,
            backend_info: BTreeMap::new(),
            interval_s: Some(scenario.timeline.interval_s),
        }
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }

    /// The Markdown report. Every text from the scenario or the run is escaped
    /// ([`crate::format::escape`]): it shows as written and never becomes markup or breaks a table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let r = &self.recovery;
        let _ = writeln!(s, "# {}: {}\n", markdown_line(&self.scenario), verdict_word(self.verdict));
        let _ = writeln!(s, "{}\n", markdown_paragraph(self.description.trim()));
        let _ = writeln!(s, "Backend {}, seed {}.\n", markdown_code(&self.backend), self.seed);
        if let Some(why) = &self.abort_reason {
            let _ = writeln!(s, "**Aborted:** {}\n", markdown_cell(why));
        }
        for (k, v) in &self.backend_info {
            if !v.is_string() || v.as_str().is_some_and(|t| !t.contains('\n')) {
                let _ = writeln!(s, "- {}: {}", markdown_line(k), markdown_cell(&v.to_string()));
            }
        }
        if !self.backend_info.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(s, "## Recovery\n\n| metric | value |\n|---|---|");
        for (k, v) in metric_rows(r) {
            let _ = writeln!(s, "| {} | {} |", markdown_cell(&k), markdown_cell(&v));
        }
        if self.checks.is_empty() {
            let _ = writeln!(
                s,
                "\n## Checks\n\nNone: the scenario has no `[expect]` entries, so nothing was judged."
            );
        } else {
            let _ = writeln!(s, "\n## Checks\n\n| check | expected | actual | result |\n|---|---|---|---|");
            for c in &self.checks {
                let res = if c.pass { "pass" } else { "**FAIL**" };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {res} |",
                    markdown_cell(&c.name),
                    markdown_cell(&c.expected),
                    markdown_cell(&c.actual)
                );
            }
        }
        let _ = writeln!(s, "\n## Disturbances\n");
        if self.disturbances.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for m in &self.disturbances {
            let _ = writeln!(
                s,
                "- {:.1} s .. {:.1} s: {}",
                m.start_s,
                m.end_s,
                markdown_cell(&describe(&m.disturbance))
            );
        }
        let _ = writeln!(s, "\n## Events\n");
        let shown: Vec<&EventLine> = self.events.iter().filter(|e| e.kind != "frequency").collect();
        for e in shown.iter().take(60) {
            let _ = writeln!(
                s,
                "- {:9.3} s  {:<8} {}",
                e.t_s,
                markdown_cell(&e.source),
                markdown_cell(&event_text(e))
            );
        }
        if shown.len() > 60 {
            let _ = writeln!(s, "- ... {} more in report.json", shown.len() - 60);
        }
        if shown.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for (k, v) in &self.backend_info {
            if let Some(t) = v.as_str().filter(|t| t.contains('\n')) {
                let _ = writeln!(s, "\n## {}\n\n{}", markdown_line(k), markdown_code_block(t.trim_end()));
            }
        }
        let _ = writeln!(s, "\n![|offset| over time](plot.svg)");
        s
    }

    /// A compact summary for the terminal: text from the scenario or the run with its control
    /// characters (escape sequences, line breaks) shown, never acted on.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let (name, backend) = (terminal_line(&self.scenario), terminal_line(&self.backend));
        let _ = writeln!(s, "{name} [{backend}] {}", verdict_word(self.verdict));
        if let Some(why) = &self.abort_reason {
            let _ = writeln!(s, "  aborted: {}", terminal_line(why));
        }
        for (k, v) in metric_rows(&self.recovery) {
            let _ = writeln!(s, "  {:<34} {}", terminal_line(&k), terminal_line(&v));
        }
        if self.checks.is_empty() {
            let _ = writeln!(s, "  no checks: the scenario has no [expect] entries, nothing was judged");
        }
        for c in &self.checks {
            let mark = if c.pass { "ok  " } else { "FAIL" };
            let _ = writeln!(
                s,
                "  {mark} {:<30} expected {:<14} got {}",
                terminal_line(&c.name),
                terminal_line(&c.expected),
                terminal_line(&c.actual)
            );
        }
        s
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::NoChecks => "NO CHECKS",
        Verdict::Aborted => "ABORTED",
    }
}

/// Formats nanoseconds with a unit a person reads at a glance.
pub fn fmt_ns(ns: f64) -> String {
    let a = ns.abs();
    if a >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if a >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if a >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{v:.1} s"))
}

fn metric_rows(r: &Recovery) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "offset after disturbance".into(),
            r.offset_after_disturbance_ns.map_or("-".into(), |v| fmt_ns(v as f64)),
        ),
        ("time to first correction".into(), secs(r.time_to_first_correction_s)),
    ];
    for (k, _) in analysis::THRESHOLDS {
        rows.push((format!("time to within {k}"), secs(r.time_to_within_s.get(k).copied().flatten())));
    }
    let steps = if r.steps.is_empty() {
        "none".to_owned()
    } else {
        r.steps
            .iter()
            .map(|s| format!("{} at +{:.1} s by {}", fmt_ns(s.delta_ns as f64), s.t_s, s.source))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(("steps".into(), steps));
    rows.push(("correction".into(), format!("{:?}", r.correction).to_lowercase()));
    rows.push(("slew duration".into(), secs(r.slew_duration_s)));
    rows.push(("max |offset|".into(), fmt_ns(r.max_abs_offset_ns as f64)));
    rows.push(("rms after recovery".into(), r.rms_after_recovery_ns.map_or("-".into(), fmt_ns)));
    if !r.read_errors.is_empty() {
        let errs: Vec<String> = r.read_errors.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        rows.push(("PHC read errors".into(), errs.join(", ")));
    }
    rows
}

fn event_text(e: &EventLine) -> String {
    match e.kind.as_str() {
        "step" => format!("step {}", fmt_ns(e.step_ns.unwrap_or(0) as f64)),
        "read_error" => format!("read error {}", e.text),
        _ => e.text.clone(),
    }
}

/// A one-line description of a disturbance.
pub fn describe(d: &mock_phc::Disturbance) -> String {
    use mock_phc::Disturbance as D;
    match d {
        D::Pause { duration_s, sync_on_resume } => {
            format!("pause {duration_s} s{}", if *sync_on_resume { "" } else { " (no SYNC on resume)" })
        }
        D::Reboot { downtime_s } => format!("reboot ({downtime_s} s down)"),
        D::SnapshotRestore { gap_s } => format!("snapshot saved, restored {gap_s} s later"),
        D::HostStep { delta_s } => format!("host time steps {delta_s:+} s"),
        D::GuestStep { delta_s } => format!("guest clock set {delta_s:+} s"),
        D::SamplesStop => "host stops sending time samples".into(),
        D::SamplesResume => "host resumes time samples".into(),
        D::FrequencyJump { delta_ppm } => format!("guest frequency jumps {delta_ppm:+} ppm"),
        D::NtpServer { answer, offset_s } => {
            let mut parts = Vec::new();
            if let Some(a) = answer {
                parts.push(match a {
                    mock_phc::NtpAnswer::Time => "answers again".to_owned(),
                    mock_phc::NtpAnswer::Silent => "falls silent".to_owned(),
                    mock_phc::NtpAnswer::Garbage => "answers garbage".to_owned(),
                });
            }
            if let Some(o) = offset_s {
                parts.push(format!("is off by {o:+} s"));
            }
            format!("NTP server {}", parts.join(" and "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observation::{Marker, Observation};

    fn report(expect: &str, abort_reason: Option<String>) -> Report {
        let s = Scenario::parse(
            &format!(
                "description = \"x\"\n[world.phc]\npersonality = \"kvm\"\n[timeline]\nwarmup_s = 0\n\
                 observe_s = 10\n{expect}"
            ),
            std::path::Path::new("bare.toml"),
        )
        .unwrap();
        let series = (0..20)
            .map(|i| Observation {
                t_s: f64::from(i) * 0.5,
                guest_offset_ns: Some(10),
                phc_offset_ns: None,
                phc_error: None,
            })
            .collect();
        Report::new(&s, "sim", Observations { series, markers: Vec::new(), events: Vec::new() }, abort_reason)
    }

    #[test]
    fn a_scenario_without_checks_says_so_and_never_passes() {
        for expect in ["", "[expect]\n", "[expect]\nread_errors = []\n"] {
            let r = report(expect, None);
            assert_eq!(r.verdict, Verdict::NoChecks, "{expect:?}");
            let text = r.to_text();
            assert!(text.starts_with("bare [sim] NO CHECKS\n"), "{text}");
            assert!(text.contains("no checks:") && !text.contains("PASS"), "{text}");
            let md = r.to_markdown();
            assert!(md.starts_with("# bare: NO CHECKS\n"), "{md}");
            assert!(
                md.contains("None: the scenario has no `[expect]` entries") && !md.contains("PASS"),
                "{md}"
            );
            let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
            assert_eq!(v["verdict"], "no_checks");
            assert_eq!(v["checks"], serde_json::json!([]));
        }
    }

    #[test]
    fn checks_decide_between_pass_and_fail_and_an_abort_wins() {
        let r = report("[expect]\nmax_abs_offset_s = { max = 0.001 }\n", None);
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.to_text().starts_with("bare [sim] PASS\n"));
        let r = report("[expect]\nsteps = { min = 1 }\n", None);
        assert_eq!(r.verdict, Verdict::Fail);
        let r = report("", Some("QEMU died".into()));
        assert_eq!(r.verdict, Verdict::Aborted);
        assert_eq!(serde_json::to_value(Verdict::Aborted).unwrap(), "aborted");
    }

    #[test]
    fn events_name_their_units_and_older_reports_with_value_still_read() {
        let old = r#"[{"t_s": 1.5, "source": "hv_utils", "kind": "step", "value": -100000120.0},
            {"t_s": 2.0, "source": "chrony", "kind": "frequency", "value": -12000.5},
            {"t_s": 3.0, "source": "chrony", "kind": "read_error", "text": "ESTALE"}]"#;
        let ev: Vec<EventLine> = serde_json::from_str(old).unwrap();
        assert_eq!((ev[0].step_ns, ev[0].freq_ppb), (Some(-100_000_120), None));
        assert_eq!((ev[1].step_ns, ev[1].freq_ppb), (None, Some(-12000.5)));
        assert_eq!((ev[2].step_ns, ev[2].freq_ppb, ev[2].text.as_str()), (None, None, "ESTALE"));
        assert_eq!(event_text(&ev[0]), "step -100.000 ms");
        let new = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            new,
            serde_json::json!([
                {"t_s": 1.5, "source": "hv_utils", "kind": "step", "step_ns": -100000120},
                {"t_s": 2.0, "source": "chrony", "kind": "frequency", "freq_ppb": -12000.5},
                {"t_s": 3.0, "source": "chrony", "kind": "read_error", "text": "ESTALE"}
            ])
        );
        let back: Vec<EventLine> = serde_json::from_value(new).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn a_stepped_run_slewed_for_0_s_in_every_rendering() {
        let s = Scenario::parse(
            "description = \"x\"\n[world.phc]\npersonality = \"kvm\"\n[timeline]\nwarmup_s = 0\n\
             observe_s = 20\n[[timeline.events]]\nat_s = 0\nkind = \"pause\"\nduration_s = 5\n",
            std::path::Path::new("bare.toml"),
        )
        .unwrap();
        let series = (0..40)
            .map(|i| {
                let t = f64::from(i) * 0.5;
                let v = if t < 5.2 { -5_000_000_000 } else { 20 };
                Observation { t_s: t, guest_offset_ns: Some(v), phc_offset_ns: None, phc_error: None }
            })
            .collect();
        let markers = vec![Marker {
            start_s: 0.0,
            end_s: 5.0,
            disturbance: mock_phc::Disturbance::Pause { duration_s: 5.0, sync_on_resume: true },
        }];
        let events = vec![mock_phc::Event {
            t_ns: 5_200_000_000,
            source: "chrony",
            kind: EventKind::Step { delta_ns: 5_000_000_020 },
        }];
        let r = Report::new(&s, "sim", Observations { series, markers, events }, None);
        assert_eq!(r.recovery.correction, crate::model::scenario::Correction::Step);
        assert_eq!(r.recovery.slew_duration_s, Some(0.0));
        let text = r.to_text();
        assert!(text.contains("slew duration                      0.0 s\n"), "{text}");
        assert!(!text.contains("never"), "{text}");
        let md = r.to_markdown();
        assert!(md.contains("| slew duration | 0.0 s |\n") && !md.contains("never"), "{md}");
        assert!(md.contains("| max \\|offset\\| | 5.000 s |\n"), "{md}");
        assert!(md.contains("step 5.000 s"), "{md}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["recovery"]["slew_duration_s"], 0.0);
        assert_eq!(v["events"][0]["step_ns"], 5_000_000_020_i64);
        assert!(v["events"][0].get("value").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever text the scenario and the run carry: report.md's tables keep their columns
        /// and no HTML or code span comes from it, and the terminal summary has one line per
        /// metric and check and no control character but LF.
        #[test]
        fn reports_from_any_text_keep_their_shape(w in proptest::collection::vec(crate::format::escape::fixtures::nasty(), 1..6)) {
            use crate::format::escape::fixtures::{terminal_safe, unescaped};
            let mut r = report("[expect]\nsteps = { min = 1 }\nmax_abs_offset_s = { max = 0.001 }\n", None);
            let mut k = 0;
            let mut next = || {
                k += 1;
                w[k % w.len()].clone()
            };
            r.scenario = next();
            r.description = next();
            r.backend = next();
            r.abort_reason = Some(next());
            for c in &mut r.checks {
                (c.name, c.expected, c.actual) = (next(), next(), next());
            }
            r.recovery.read_errors.insert(next(), 2);
            r.recovery.steps.push(crate::judge::analysis::Step { t_s: 1.0, delta_ns: 5, source: next() });
            r.events.push(EventLine { t_s: 1.0, source: next(), kind: "note".into(), step_ns: None, freq_ppb: None, text: next() });
            r.backend_info.insert(next(), serde_json::Value::String(next()));
            r.backend_info.insert(next(), serde_json::Value::String(format!("{}\n```\n{}", next(), next())));

            let md = r.to_markdown();
            terminal_safe(&md).map_err(proptest::test_runner::TestCaseError::fail)?;
            let backend = crate::format::escape::markdown_code(&r.backend);
            // The fence that opened the code block we are in: a closing fence is a line of at
            // least as many backticks and nothing else (CommonMark).
            let mut fence: Option<usize> = None;
            let mut widths = Vec::new();
            for line in md.lines() {
                let ticks = line.chars().take_while(|&c| c == '`').count();
                let only_ticks = ticks == line.trim_end().chars().count();
                match fence {
                    Some(n) => {
                        if ticks >= n && only_ticks {
                            fence = None;
                        }
                        continue;
                    }
                    None if ticks >= 3 => {
                        fence = Some(ticks);
                        continue;
                    }
                    None => {}
                }
                let bare = unescaped(&line.replacen(&backend, "", 1));
                proptest::prop_assert!(!bare.contains(['<', '>', '`']), "{}", line);
                if line.starts_with('|') {
                    widths.push(bare.matches('|').count());
                }
            }
            proptest::prop_assert_eq!(fence, None, "{}", md);
            let rows = metric_rows(&r.recovery).len();
            proptest::prop_assert_eq!(widths.len(), 2 + rows + 2 + r.checks.len());
            proptest::prop_assert!(widths[..2 + rows].iter().all(|&n| n == 3), "{:?}\n{}", widths, md);
            proptest::prop_assert!(widths[2 + rows..].iter().all(|&n| n == 5), "{:?}\n{}", widths, md);

            let text = r.to_text();
            terminal_safe(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(text.lines().count(), 2 + rows + r.checks.len());
        }
    }
}
