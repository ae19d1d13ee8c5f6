//! Scenario files: what world to build (PHC personality, guest oscillator, disciplines), the
//! timeline of disturbances, and the verdicts expected. Errors name the file, line and key.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use mock_phc::{Disturbance, WorldConfig};
use serde::{Deserialize, Serialize};

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
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Io { path: path.to_owned(), source })?;
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
        let t = &self.timeline;
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err((key.to_owned(), format!("must be a positive number of seconds, got {v}")))
            }
        };
        if !(t.warmup_s.is_finite() && t.warmup_s >= 0.0) {
            return Err(("timeline.warmup_s".into(), format!("must be >= 0, got {}", t.warmup_s)));
        }
        positive("timeline.observe_s", t.observe_s)?;
        positive("timeline.interval_s", t.interval_s)?;
        if t.interval_s > t.observe_s {
            return Err(("timeline.interval_s".into(), "is longer than the observation window".into()));
        }
        for (i, e) in t.events.iter().enumerate() {
            if !(e.at_s.is_finite() && e.at_s >= 0.0 && e.at_s < t.observe_s) {
                return Err((
                    format!("timeline.events[{i}].at_s"),
                    format!("must lie in the observation window [0, {}), got {}", t.observe_s, e.at_s),
                ));
            }
        }
        mock_phc::World::new(&self.world).map_err(|e| ("world".to_owned(), e.to_string()))?;
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

/// How long a disturbance keeps the guest away (pause and reboot), zero for instant ones.
pub fn disturbance_duration_s(d: &Disturbance) -> f64 {
    match d {
        Disturbance::Pause { duration_s, .. } => *duration_s,
        Disturbance::Reboot { downtime_s } => *downtime_s,
        _ => 0.0,
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// The line where the last segment of `key` is assigned (or its table starts), best effort.
fn line_of_key(text: &str, key: &str) -> usize {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(last).is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.starts_with(&format!("[{key}]"))
                || l.starts_with(&format!("[[{key}]]"))
        })
        .map_or(0, |i| i + 1)
}

fn split_toml_message(msg: &str) -> (String, String) {
    let msg = msg.trim().to_owned();
    // serde names the offending field in backticks: "unknown field `x`, expected ...".
    let key = msg.split('`').nth(1).filter(|_| msg.contains('`')).unwrap_or("-").to_owned();
    (key, msg)
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
        assert!(e.starts_with("x.toml:7: timeline.observe_s: must be a positive"), "{e}");
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
    fn ranges() {
        let r = Range { min: Some(1.0), max: Some(2.0) };
        assert!(r.contains(1.0) && r.contains(2.0) && !r.contains(2.1) && !r.contains(0.9));
        assert!(Range::default().contains(f64::MAX));
    }
}
