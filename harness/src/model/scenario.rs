//! Scenario files: what world to build (PHC personality, guest oscillator, disciplines), the
//! timeline of disturbances, and the verdicts expected. Errors name the file, line and key.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use mock_phc::time::{MAX_FREQ_ERROR_PPM, MAX_SCENARIO_S, MAX_TOTAL_STEP_S};
use mock_phc::{Disturbance, WorldConfig};
use serde::{Deserialize, Serialize};

use crate::model::tolerance::ToleranceOverride;

/// A parsed, validated scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; defaults to the file stem.
    #[serde(default)]
    pub name: String,
    /// One or two sentences: the situation and what it checks.
    pub description: String,
    /// The simulated world (and, on other backends, the PHC personality and daemon to run).
    pub world: WorldConfig,
    /// When things happen.
    pub timeline: Timeline,
    /// Verdicts the run must meet.
    #[serde(default)]
    pub expect: Expect,
    /// The scenario's own tolerances for `compare` against baselines, over the baseline's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerance: Vec<ToleranceOverride>,
}

/// The scenario's clock: a warm-up, disturbances placed after it, and an observation window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    /// Time for the disciplines to settle before anything happens.
    pub warmup_s: f64,
    /// How long to follow the guest after the warm-up.
    pub observe_s: f64,
    /// Offset observation period.
    #[serde(default = "default_interval")]
    pub interval_s: f64,
    /// Disturbances, each at a time measured from the end of the warm-up.
    #[serde(default)]
    pub events: Vec<TimedDisturbance>,
}

fn default_interval() -> f64 {
    0.5
}

/// A disturbance and when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedDisturbance {
    /// Seconds after the warm-up.
    pub at_s: f64,
    /// What happens.
    #[serde(flatten)]
    pub disturbance: Disturbance,
}

/// An inclusive range; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
}

impl Range {
    /// Whether `v` lies inside.
    pub fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// How the guest is expected to be brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// At least one step of more than half the error.
    Step,
    /// Back within 1 ms without such a step.
    Slew,
    /// Never back within 1 ms.
    None,
}

/// Expected verdicts; every field present becomes one check.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the error is corrected.
    pub correction: Option<Correction>,
    /// |offset| right after the first disturbance ends, seconds.
    pub offset_after_disturbance_s: Option<Range>,
    /// Time from the end of the disturbance to the first correction, seconds.
    pub time_to_first_correction_s: Option<Range>,
    /// Time until |offset| stays under 1 ms, seconds.
    pub within_1ms_s: Option<Range>,
    /// Time until |offset| stays under 100 us, seconds.
    pub within_100us_s: Option<Range>,
    /// Number of steps after the disturbance.
    pub steps: Option<Range>,
    /// Largest |offset| after the warm-up, seconds.
    pub max_abs_offset_s: Option<Range>,
    /// Errno names that PHC reads must have returned at some point (e.g. `ESTALE`).
    #[serde(default)]
    pub read_errors: Vec<String>,
}

impl Range {
    /// A range that can hold: finite bounds, at least one of them, not below zero (every expected
    /// quantity is a magnitude, a time or a count), and min not above max.
    fn validate(&self) -> Result<(), String> {
        if self.min.is_none() && self.max.is_none() {
            return Err("has neither min nor max, so it checks nothing".into());
        }
        for (name, v) in [("min", self.min), ("max", self.max)] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("{name} must be a finite number >= 0, got {v}"));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max) {
            if lo > hi {
                return Err(format!("min {lo} is above max {hi}, so it can never hold"));
            }
        }
        Ok(())
    }
}

impl Expect {
    /// Checks every range and errno name; the error's key is relative to `expect`.
    fn validate(&self) -> Result<(), (String, String)> {
        for (key, r) in [
            ("offset_after_disturbance_s", &self.offset_after_disturbance_s),
            ("time_to_first_correction_s", &self.time_to_first_correction_s),
            ("within_1ms_s", &self.within_1ms_s),
            ("within_100us_s", &self.within_100us_s),
            ("steps", &self.steps),
            ("max_abs_offset_s", &self.max_abs_offset_s),
        ] {
            if let Some(r) = r {
                r.validate().map_err(|m| (key.to_owned(), m))?;
            }
        }
        for (i, name) in self.read_errors.iter().enumerate() {
            if !phc::error::errno_names().any(|n| n == name) {
                let known: Vec<&str> = phc::error::errno_names().collect();
                return Err((
                    format!("read_errors[{i}]"),
                    format!("{name:?} is not an errno a PHC read reports; one of {}", known.join(", ")),
                ));
            }
            if self.read_errors[..i].contains(name) {
                return Err((format!("read_errors[{i}]"), format!("{name:?} is named twice")));
            }
        }
        Ok(())
    }
}

/// A scenario that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Syntax, type or semantic error at a place in the file.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// Dotted key path, or `-` when the error is not about one key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// The daemon's poll interval, seconds: chronyd's 2^poll, phc2sys' 1/rate, ntpd's poll;
    /// 1 s without a daemon. Recovery times move in steps of it (a daemon acts once a poll),
    /// so it is the granularity at which two runs' times can be told apart.
    pub fn poll_interval_s(&self) -> f64 {
        self.world
            .disciplines
            .iter()
            .find_map(|d| match d {
                // The refclock's update interval; with an NTP server alone, its first poll.
                mock_phc::DisciplineConfig::Chrony(c) => match (&c.server, c.refclock) {
                    (Some(server), false) => Some(2f64.powi(i32::from(server.minpoll))),
                    _ => Some(2f64.powi(i32::from(c.poll))),
                },
                mock_phc::DisciplineConfig::Phc2sys(c) => Some(1.0 / c.rate_hz),
                mock_phc::DisciplineConfig::Ntpd(c) => Some(c.poll_s),
                mock_phc::DisciplineConfig::Timesyncd(c) => Some(c.poll_min_s),
                _ => None,
            })
            .unwrap_or(1.0)
    }

    /// Reads and validates a scenario file: a regular file (symlinks followed) of at most
    /// `MAX_FILE_BYTES`. Devices, FIFOs and sockets are refused without reading (or blocking).
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = read_scenario_file(path)?;
        Self::parse(&text, path)
    }

    /// Parses and validates scenario text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| {
            let (key, message) = split_toml_message(e.message());
            // The span covers the whole table for some errors (a flattened table's unknown key);
            // the line that names the key, from the span on, is the one to show.
            let line = e.span().map_or(0, |sp| {
                let start = line_of(text, sp.start);
                text.lines()
                    .enumerate()
                    .skip(start - 1)
                    .find(|(_, l)| {
                        l.trim_start()
                            .strip_prefix(key.as_str())
                            .is_some_and(|r| r.trim_start().starts_with('='))
                    })
                    .map_or(start, |(i, _)| i + 1)
            });
            ScenarioError::Invalid { path: path.to_owned(), line, key, message }
        })?;
        if s.name.is_empty() {
            s.name = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        }
        s.validate().map_err(|(key, message)| ScenarioError::Invalid {
            path: path.to_owned(),
            line: line_of_key(text, &key),
            key,
            message,
        })?;
        Ok(s)
    }

    /// Validates again after command-line overrides.
    pub fn revalidate(&self) -> Result<(), String> {
        self.validate().map_err(|(k, m)| format!("{k}: {m}"))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        check_name(&self.name).map_err(|m| ("name".to_owned(), m))?;
        let t = &self.timeline;
        let err = |key: &str, msg: String| Err((key.to_owned(), msg));
        if !(t.warmup_s.is_finite() && (0.0..=MAX_SCENARIO_S).contains(&t.warmup_s)) {
            return err(
                "timeline.warmup_s",
                format!("must be within 0..={MAX_SCENARIO_S} s, got {}", t.warmup_s),
            );
        }
        if !(t.observe_s.is_finite() && t.observe_s > 0.0 && t.observe_s <= MAX_SCENARIO_S) {
            return err(
                "timeline.observe_s",
                format!("must be > 0 and at most {MAX_SCENARIO_S} s, got {}", t.observe_s),
            );
        }
        if t.warmup_s + t.observe_s > MAX_SCENARIO_S {
            return err(
                "timeline.observe_s",
                format!("warm-up plus observation is longer than the {MAX_SCENARIO_S} s (7 days) a scenario may last"),
            );
        }
        if !(t.interval_s.is_finite() && t.interval_s >= MIN_INTERVAL_S) {
            return err(
                "timeline.interval_s",
                format!("must be at least {MIN_INTERVAL_S} s, got {}", t.interval_s),
            );
        }
        if t.interval_s > t.observe_s {
            return err("timeline.interval_s", "is longer than the observation window".into());
        }
        let observations = (t.warmup_s + t.observe_s) / t.interval_s;
        if observations > MAX_OBSERVATIONS as f64 {
            return err(
                "timeline.interval_s",
                format!(
                    "gives {observations:.0} observations; at most {MAX_OBSERVATIONS} are allowed \
                     (make the interval longer or the scenario shorter)"
                ),
            );
        }
        if t.events.len() > MAX_EVENTS {
            return err(
                "timeline.events",
                format!("has {} events; at most {MAX_EVENTS} are allowed", t.events.len()),
            );
        }
        let mut freq_ppm = self.world.guest.freq_error_ppm;
        let mut total_step_s = 0.0;
        for (i, e) in t.events.iter().enumerate() {
            let key = format!("timeline.events[{i}]");
            if !(e.at_s.is_finite() && e.at_s >= 0.0 && e.at_s < t.observe_s) {
                return err(
                    &format!("{key}.at_s"),
                    format!("must lie in the observation window [0, {}), got {}", t.observe_s, e.at_s),
                );
            }
            e.disturbance.validate(&key).map_err(world_error(""))?;
            let end_s = e.at_s + disturbance_duration_s(&e.disturbance);
            if end_s > t.observe_s {
                return err(
                    &format!("{key}.at_s"),
                    format!(
                        "the disturbance ends at {end_s} s, after the observation window ({} s)",
                        t.observe_s
                    ),
                );
            }
            total_step_s += e.disturbance.step_s().abs();
            if total_step_s > MAX_TOTAL_STEP_S {
                return err(
                    &format!("{key}.delta_s"),
                    format!("steps add up to more than {MAX_TOTAL_STEP_S} s (about 20 years)"),
                );
            }
            if let Disturbance::FrequencyJump { delta_ppm } = e.disturbance {
                freq_ppm += delta_ppm;
                if freq_ppm.abs() > MAX_FREQ_ERROR_PPM {
                    return err(
                        &format!("{key}.delta_ppm"),
                        format!(
                            "leaves the guest oscillator {freq_ppm:+} ppm off; at most +-{MAX_FREQ_ERROR_PPM} \
                             (a clock beyond that could run backwards)"
                        ),
                    );
                }
            }
        }
        mock_phc::World::new(&self.world).map_err(world_error("world."))?;
        let wakeups = self.duration_s() * (self.world.wakeups_per_s() + 1.0 / t.interval_s);
        if wakeups > MAX_WAKEUPS as f64 {
            return err(
                "world.disciplines",
                format!(
                    "the daemons, host samples and observations wake the simulation {wakeups:.0} times; \
                     at most {MAX_WAKEUPS} are allowed (poll less often or make the scenario shorter)"
                ),
            );
        }
        self.expect.validate().map_err(|(k, m)| (format!("expect.{k}"), m))?;
        for (i, t) in self.tolerance.iter().enumerate() {
            crate::model::tolerance::check_override(t).map_err(|m| (format!("tolerance[{i}]"), m))?;
        }
        Ok(())
    }

    /// When the first disturbance starts and ends, in scenario seconds (warm-up included).
    pub fn first_disturbance_window_s(&self) -> Option<(f64, f64)> {
        let e = self.timeline.events.first()?;
        let start = self.timeline.warmup_s + e.at_s;
        Some((start, start + disturbance_duration_s(&e.disturbance)))
    }

    /// Total scripted duration.
    pub fn duration_s(&self) -> f64 {
        self.timeline.warmup_s + self.timeline.observe_s
    }
}

/// Maps mock-phc's error (its key relative to `prefix`) to a key and message.
fn world_error(prefix: &'static str) -> impl Fn(mock_phc::Error) -> (String, String) {
    move |e| match e {
        mock_phc::Error::InvalidConfig { key, reason } => (format!("{prefix}{key}"), reason),
    }
}

/// Longest scenario name: its report folder adds `-BACKEND-seedN` (up to 30 bytes) and must stay
/// a plain name of at most `phc::input::MAX_NAME_BYTES`.
const MAX_SCENARIO_NAME_BYTES: usize = 90;

/// Scenario names become folder names under `--out`: plain (the one rule, `phc::input`), so
/// they cannot leave it.
fn check_name(name: &str) -> Result<(), String> {
    let why = if name.len() > MAX_SCENARIO_NAME_BYTES {
        Some(format!("{} bytes (at most {MAX_SCENARIO_NAME_BYTES})", name.len()))
    } else {
        phc::input::check_name(name).err()
    };
    match why {
        Some(why) => {
            Err(format!("not a plain name: {why} (a file name that is not plain needs a `name` key)"))
        }
        None => Ok(()),
    }
}

/// How long a disturbance keeps the guest away (pause and reboot), zero for instant ones.
pub fn disturbance_duration_s(d: &Disturbance) -> f64 {
    match d {
        Disturbance::Pause { duration_s, .. } => *duration_s,
        Disturbance::SnapshotRestore { gap_s } => *gap_s,
        Disturbance::Reboot { downtime_s } => *downtime_s,
        _ => 0.0,
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    let mut b = byte.min(text.len());
    while !text.is_char_boundary(b) {
        b -= 1;
    }
    text[..b].matches('\n').count() + 1
}

/// The line of a dotted key path (`timeline.events[1].duration_s`), from the TOML parser's spans:
/// the key's own line, or, for a key the file leaves to its default, the line of the closest
/// table or array element that is there. 0 only when nothing of the path is in the file.
fn line_of_key(text: &str, key: &str) -> usize {
    use toml_edit::{ImDocument, Item, Value};
    enum Node<'a> {
        Table(&'a toml_edit::Table),
        Inline(&'a toml_edit::InlineTable),
        Tables(&'a toml_edit::ArrayOfTables),
        Array(&'a toml_edit::Array),
        Leaf,
    }
    fn of_value(v: &Value) -> Node<'_> {
        match v {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }
    fn of_item(i: &Item) -> Node<'_> {
        match i {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => of_value(v),
            Item::None => Node::Leaf,
        }
    }
    let Ok(doc) = ImDocument::parse(text) else { return 0 };
    let mut cur = Node::Table(doc.as_table());
    let mut best: Option<usize> = None;
    'path: for seg in key.split('.') {
        let mut parts = seg.split('[');
        let name = parts.next().unwrap_or_default();
        let found = match cur {
            Node::Table(t) => t.get_key_value(name),
            Node::Inline(t) => t.get_key_value(name),
            _ => None,
        };
        let Some((k, item)) = found else { break };
        best = k.span().or_else(|| item.span()).map(|r| r.start).or(best);
        cur = of_item(item);
        for idx in parts {
            let Ok(i) = idx.trim_end_matches(']').parse::<usize>() else { break 'path };
            cur = match cur {
                Node::Tables(a) => match a.get(i) {
                    Some(t) => {
                        best = t.span().map(|r| r.start).or(best);
                        Node::Table(t)
                    }
                    None => break 'path,
                },
                Node::Array(a) => match a.get(i) {
                    Some(v) => {
                        best = v.span().map(|r| r.start).or(best);
                        of_value(v)
                    }
                    None => break 'path,
                },
                _ => break 'path,
            };
        }
    }
    best.map_or(0, |b| line_of(text, b))
}

fn split_toml_message(msg: &str) -> (String, String) {
    let msg = msg.trim().to_owned();
    // serde names the offending field in backticks: "unknown field `x`, expected ...".
    let key = msg.split('`').nth(1).filter(|_| msg.contains('`')).unwrap_or("-").to_owned();
    (key, msg)
}

/// Largest scenario file read: real ones are a few kB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Shortest observation interval.
pub const MIN_INTERVAL_S: f64 = 0.01;
/// Most observations one run takes (warm-up plus observation over the interval): a day at the
/// default 0.5 s fits. With the reports this bounds a sim run's memory to about 200 MB.
pub const MAX_OBSERVATIONS: usize = 200_000;
/// Most disturbances in one timeline.
pub const MAX_EVENTS: usize = 1000;
/// Most times the simulation may wake in one run (daemon timers, host samples, observations):
/// the shipped scenarios need a few thousand; this bounds a run to seconds, not hours.
pub const MAX_WAKEUPS: u64 = 4_000_000;

/// Reads a scenario file: only a regular file (after symlinks), at most `MAX_FILE_BYTES`. The
/// open does not block on a FIFO, and nothing is read from a device.
fn read_scenario_file(path: &Path) -> Result<String, ScenarioError> {
    phc::input::read_text(path, MAX_FILE_BYTES, phc::input::Links::Follow)
        .map_err(|source| ScenarioError::Io { path: path.to_owned(), source })
}

/// The scenario files in a folder, sorted by name.
pub fn list_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "a pause"
[world.phc]
personality = "kvm"
[timeline]
warmup_s = 10
observe_s = 100
[[timeline.events]]
at_s = 5
kind = "pause"
duration_s = 30
[expect]
steps = { min = 1 }
"#;

    #[test]
    fn parses_and_names_from_the_file() {
        let s = Scenario::parse(GOOD, Path::new("scenarios/demo.toml")).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.first_disturbance_window_s(), Some((15.0, 45.0)));
        assert_eq!(s.duration_s(), 110.0);
        assert_eq!(s.expect.steps, Some(Range { min: Some(1.0), max: None }));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("observe_s = 100", "observe_s = 100\nobserv_s = 3");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:8: observ_s: unknown field"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_key() {
        let text = GOOD.replace("at_s = 5", "at_s = 500");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:9: timeline.events[0].at_s: must lie"), "{e}");
        let text = GOOD.replace("observe_s = 100", "observe_s = -1");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:7: timeline.observe_s: must be > 0"), "{e}");
    }

    #[test]
    fn a_misspelt_key_in_an_event_points_at_its_own_line() {
        let text = GOOD.replace("duration_s = 30", "duraton_s = 30");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:11: duraton_s: unknown field"), "{e}");
    }

    #[test]
    fn type_errors_have_a_line() {
        let text = GOOD.replace("warmup_s = 10", "warmup_s = \"ten\"");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:6:"), "{e}");
    }

    #[test]
    fn an_error_in_the_second_event_points_at_its_line() {
        let text = format!("{GOOD}\n[[timeline.events]]\nat_s = 50\nkind = \"pause\"\nduration_s = -3\n");
        let text = text.replace("[expect]\nsteps = { min = 1 }\n", "");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        let line = text.lines().position(|l| l == "duration_s = -3").unwrap() + 1;
        assert!(e.starts_with(&format!("x.toml:{line}: timeline.events[1].duration_s: must be > 0")), "{e}");
    }

    #[test]
    fn expectations_that_cannot_hold_or_check_nothing_are_refused() {
        for (line, want) in [
            ("steps = {}", "expect.steps: has neither min nor max"),
            ("steps = { min = 3, max = 1 }", "expect.steps: min 3 is above max 1"),
            ("steps = { min = nan }", "expect.steps: min must be a finite number"),
            ("within_1ms_s = { max = inf }", "expect.within_1ms_s: max must be a finite number"),
            ("max_abs_offset_s = { max = -1 }", "expect.max_abs_offset_s: max must be"),
            ("read_errors = [\"ESTAEL\"]", "expect.read_errors[0]: \"ESTAEL\" is not an errno"),
            ("read_errors = [\"ESTALE\", \"ESTALE\"]", "expect.read_errors[1]: \"ESTALE\" is named twice"),
            ("read_errors = [\"\\u000b\"]", "expect.read_errors[0]"),
        ] {
            let text = GOOD.replace("steps = { min = 1 }", line);
            let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
            assert!(e.starts_with("x.toml:13: ") && e.contains(want), "{line}: {e}");
        }
        let text = GOOD.replace("steps = { min = 1 }", "steps = { max = 0 }\nread_errors = [\"ESTALE\"]");
        assert!(Scenario::parse(&text, Path::new("x.toml")).is_ok());
    }

    #[test]
    fn runs_that_would_take_hours_are_refused_at_load() {
        // A week of chronyd at dpoll -6: tens of millions of wake-ups, within every other cap.
        let daemon =
            "[[world.disciplines]]\nkind = \"chrony\"\npoll = -6\ndpoll = -6\n[timeline]\ninterval_s = 100";
        let text = GOOD.replace("[timeline]", daemon).replace("observe_s = 100", "observe_s = 600000");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:5: world.disciplines: ") && e.contains("at most 4000000"), "{e}");
        // Too many daemons on one clock.
        let many = "[[world.disciplines]]\nkind = \"none\"\n".repeat(9) + "[timeline]";
        let text = GOOD.replace("[timeline]", &many);
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.contains("world.disciplines: has 9; at most 8"), "{e}");
        // The same daemon for a day at its default poll is fine.
        let daemon = "[[world.disciplines]]\nkind = \"chrony\"\n[timeline]";
        let text = GOOD.replace("[timeline]", daemon).replace("observe_s = 100", "observe_s = 86400");
        let text = text.replace("[timeline]", "[timeline]\ninterval_s = 1");
        Scenario::parse(&text, Path::new("x.toml")).unwrap();
    }

    #[test]
    fn world_errors_point_at_their_key() {
        let text = GOOD.replace("personality = \"kvm\"", "personality = \"hyperv\"\nstale_after_s = -1");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:5: world.phc.stale_after_s: must be > 0"), "{e}");
        // A default that is wrong only together with another key points at the nearest table.
        let text =
            GOOD.replace("[timeline]", "[[world.disciplines]]\nkind = \"ntpd\"\npoll_s = 1e-12\n[timeline]");
        let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml:7: world.disciplines[0].poll_s: must be within 1..="), "{e}");
    }

    #[test]
    fn hostile_numbers_are_refused_at_load() {
        let cases = [
            ("observe_s = 100", "observe_s = 1e12", "timeline.observe_s"),
            ("observe_s = 100", "observe_s = 3e6", "timeline.observe_s"),
            ("observe_s = 100", "observe_s = nan", "timeline.observe_s"),
            ("warmup_s = 10", "warmup_s = 1e12", "timeline.warmup_s"),
            ("observe_s = 100", "observe_s = 100\ninterval_s = 1e-9", "timeline.interval_s"),
            ("observe_s = 100", "observe_s = 600000\ninterval_s = 0.01", "timeline.interval_s"),
            ("duration_s = 30", "duration_s = 1e12", "timeline.events[0].duration_s"),
            ("duration_s = 30", "duration_s = inf", "timeline.events[0].duration_s"),
            ("duration_s = 30", "duration_s = -30", "timeline.events[0].duration_s"),
            ("duration_s = 30", "duration_s = 96", "timeline.events[0].at_s"),
            (
                "kind = \"pause\"\nduration_s = 30",
                "kind = \"reboot\"\ndowntime_s = -5",
                "timeline.events[0].downtime_s",
            ),
            (
                "kind = \"pause\"\nduration_s = 30",
                "kind = \"host_step\"\ndelta_s = nan",
                "timeline.events[0].delta_s",
            ),
            (
                "kind = \"pause\"\nduration_s = 30",
                "kind = \"frequency_jump\"\ndelta_ppm = -2e6",
                "timeline.events[0].delta_ppm",
            ),
            ("[world.phc]", "name = \"../../etc/x\"\n[world.phc]", "name"),
            ("[world.phc]", "name = \"/tmp/x\"\n[world.phc]", "name"),
            ("[world.phc]", "name = \"..\"\n[world.phc]", "name"),
        ];
        for (from, to, key) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = Scenario::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
            assert!(e.contains(&format!(": {key}: ")), "{to}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // Repeated frequency jumps that add up past the bound.
        let mut text =
            GOOD.replace("kind = \"pause\"\nduration_s = 30", "kind = \"frequency_jump\"\ndelta_ppm = 60000");
        text.push_str("\n[[timeline.events]]\nat_s = 6\nkind = \"frequency_jump\"\ndelta_ppm = 60000\n");
        let e = Scenario::parse(&text.replace("[expect]\nsteps = { min = 1 }\n", ""), Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeline.events[1].delta_ppm: leaves the guest oscillator"), "{e}");
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        for (p, want) in [
            (fifo.as_path(), "not a regular file (a FIFO)"),
            (link.as_path(), "not a regular file (a character device)"),
            (Path::new("/dev/urandom"), "not a regular file (a character device)"),
            (dir.path(), "not a regular file (a directory)"),
            (big.as_path(), "over the limit of"),
        ] {
            let e = Scenario::load(p).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", p.display());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Whatever the text, the loader answers Ok or an error naming a line; it never panics.
        #[test]
        fn the_loader_never_panics(text in "\\PC{0,400}") {
            if let Err(ScenarioError::Invalid { line, .. }) = Scenario::parse(&text, Path::new("f.toml")) {
                proptest::prop_assert!(line <= text.lines().count() + 1);
            }
        }

        /// A valid scenario with one number replaced by anything: accepted only within bounds.
        #[test]
        fn numbers_anywhere_never_panic(
            which in 0usize..5,
            v in proptest::prop_oneof![
                proptest::num::f64::ANY,
                -1e7..1e7f64,
                proptest::sample::select(vec![0.0, -0.0, 1e-9, 1e300, f64::MAX, f64::MIN_POSITIVE]),
            ],
        ) {
            let keys = ["warmup_s = 10", "observe_s = 100", "at_s = 5", "duration_s = 30", "min = 1"];
            let key = keys[which].split(" = ").next().unwrap();
            let lit = if v.is_nan() { "nan".to_owned() } else if v.is_infinite() { format!("{}inf", if v < 0.0 { "-" } else { "" }) } else { format!("{v:?}") };
            let text = GOOD.replace(keys[which], &format!("{key} = {lit}"));
            if let Ok(s) = Scenario::parse(&text, Path::new("f.toml")) {
                proptest::prop_assert!(s.duration_s() <= MAX_SCENARIO_S);
                proptest::prop_assert!(s.duration_s() / s.timeline.interval_s <= MAX_OBSERVATIONS as f64);
            }
        }
    }

    #[test]
    fn ranges() {
        let r = Range { min: Some(1.0), max: Some(2.0) };
        assert!(r.contains(1.0) && r.contains(2.0) && !r.contains(2.1) && !r.contains(0.9));
        assert!(Range::default().contains(f64::MAX));
    }
}
