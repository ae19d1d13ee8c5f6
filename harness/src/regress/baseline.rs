//! Baselines in `results/baselines/`: per scenario and backend the recovery metrics of a run
//! that was judged good, each with its tolerance (absolute and relative, declared in the file,
//! overridable by the scenario's `[[tolerance]]`), and per latency run the ratios of each
//! method's percentiles to the same run's `clock_gettime` baseline, never bare times.
//! `compare` (in `crate::regress::compare`) checks runs against them; `promote` writes them.
//!
//! A baseline promoted from repeated runs of a scenario (`run --repeat N`, `suite --repeat N`:
//! seeds s, s+1, ...) is a distribution, not one draw: each metric's value is the runs' median
//! (the lower one, a value some run had), its [`Spread`] is recorded, and its tolerance is
//! [`SPREADS`] times the spread (max - min) but never below the metric's resolution
//! ([`resolution`]); words and nevers that any run had are accepted as they are.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::tolerance::{Better, METRICS};
use crate::regress::summary::Entry;

/// Version of the baseline format.
pub const FORMAT: u32 = 1;

/// Largest baseline file read: one holds a dozen metrics (a scenario, ~2 KiB) or a few per
/// latency method (a few KiB); 1 MiB is far above any real one.
pub const MAX_BASELINE_BYTES: u64 = 1 << 20;

/// One metric's baseline value and tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The value (a number, a word, or null for "never").
    pub value: Value,
    /// Absolute tolerance in the metric's unit.
    #[serde(default)]
    pub abs: f64,
    /// Relative tolerance, a fraction of |value|.
    #[serde(default)]
    pub rel: f64,
    /// Which way is worse.
    pub better: Better,
    /// How it scattered over the runs the baseline was promoted from (absent: one run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
}

/// A metric over the repeated runs a baseline was promoted from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    /// Runs.
    pub runs: usize,
    /// Smallest number seen (absent: no run had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest number seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Every value seen that is not a number (a word; null for never), each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<Value>,
    /// The metric's resolution, the least tolerance ([`resolution`]).
    pub floor: f64,
}

impl Spread {
    /// max - min (0 without numbers).
    pub fn width(&self) -> f64 {
        match (self.min, self.max) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }
}

/// A tolerance from repeated runs is this many spreads (max - min) around the median: a new run
/// of the same set-up lands inside, and a move of three spreads does not.
pub const SPREADS: f64 = 2.0;

/// `x` rounded up to four significant digits: a tolerance as a file shows it (`1.004`, not
/// `1.0033599999999296`), never narrower than computed.
fn round_up(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return x;
    }
    let scale = 10f64.powi(3 - x.log10().floor() as i32);
    let r = (x * scale).ceil() / scale;
    // The division can land a hair under x; the next double up is then taken.
    if r < x {
        r.next_up()
    } else {
        r
    }
}

/// The least a metric can be told apart by, the floor of a tolerance set from a spread. Times
/// are read off the series, one observation every `interval_s`; offsets are stored to the
/// microsecond (after a disturbance) and the nanosecond (largest); RMS to a tenth of a
/// nanosecond (1 ns is the floor); a step count by one. Never below what a double holds at
/// `magnitude` (two years in seconds are kept to about 10 ns).
pub fn resolution(metric: &str, interval_s: f64, magnitude: f64) -> f64 {
    let r = match metric {
        "offset_after_disturbance_s" => 1e-6,
        "max_abs_offset_s" => 1e-9,
        "rms_after_recovery_ns" => 1.0,
        "steps" => 1.0,
        "outcome" | "correction" => 0.0,
        m if m.starts_with("ratio_") => 0.0,
        _ => interval_s,
    };
    if r > 0.0 {
        r.max(magnitude.abs() * 1e-15)
    } else {
        r
    }
}

/// A baseline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// `scenario` or `latency`.
    pub kind: String,
    /// Scenario name (or the latency run's folder name).
    pub name: String,
    /// Backend (`sim`, `qemu`, `local`).
    pub backend: String,
    /// The seed it ran with (scenarios; null for latency).
    pub seed: Option<u64>,
    /// What it ran on: for QEMU the accel, clock, kernel, QEMU version, CPU model, command line.
    #[serde(default)]
    pub environment: BTreeMap<String, Value>,
    /// Metric name to value and tolerance.
    pub metrics: BTreeMap<String, Metric>,
    /// The seeds of the repeated runs it was promoted from, each once (absent: one run,
    /// `seed`; the runs are in each metric's `spread`). A baseline of repeats is a
    /// distribution: a run of any seed is compared with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
}

/// A baseline that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// No baseline for a run.
    #[error("{path}: no baseline for {name} [{backend}]; promote a run with `phc-harness baseline RUN_DIR`")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// Scenario or latency run.
        name: String,
        /// Backend.
        backend: String,
    },
    /// The file is not a baseline.
    #[error("{path}: malformed baseline: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A scenario or backend name that cannot be part of a baseline's path.
    #[error("{}: no baseline path for {name:?} [{backend:?}]: {message}", dir.display())]
    Path {
        /// The baselines folder.
        dir: PathBuf,
        /// Scenario or latency run.
        name: String,
        /// Backend.
        backend: String,
        /// Why.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Default tolerances per backend: the sim is deterministic per seed, so only model changes
/// move it; a QEMU guest has a daemon's poll interval and a reboot's RTC half second of play.
pub fn default_tolerance(metric: &str, backend: &str) -> (f64, f64) {
    let qemu = backend != "sim";
    match metric {
        "offset_after_disturbance_s" => {
            if qemu {
                (1.0, 0.1)
            } else {
                (0.001, 0.01)
            }
        }
        "steps" => {
            if qemu {
                (1.0, 0.0)
            } else {
                (0.0, 0.0)
            }
        }
        "max_abs_offset_s" => {
            if qemu {
                (1.0, 0.1)
            } else {
                (0.001, 0.05)
            }
        }
        "rms_after_recovery_ns" => {
            if qemu {
                (10_000.0, 1.0)
            } else {
                (100.0, 0.5)
            }
        }
        "outcome" | "correction" => (0.0, 0.0),
        m if m.starts_with("ratio_") => (0.0, 0.25),
        // Times: a poll interval (chrony's 8 s at poll 3) in a guest, half a second in the sim.
        _ => {
            if qemu {
                (8.0, 0.25)
            } else {
                (0.5, 0.05)
            }
        }
    }
}

/// A metric value as a baseline stores it: rounded to 1 / `per_unit` (1 us for seconds, 0.1 ns
/// for nanoseconds), so that float noise in the last digits neither shows nor matters.
fn num(v: Option<f64>, per_unit: f64) -> Value {
    v.map(|v| (v * per_unit).round() / per_unit)
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

const PER_US: f64 = 1e6;

/// The metric values of a suite entry (a scenario run), by name.
pub fn entry_values(e: &Entry) -> BTreeMap<&'static str, Value> {
    let mut m = BTreeMap::new();
    m.insert("outcome", Value::from(e.outcome.key()));
    let Some(r) = &e.recovery else { return m };
    m.insert("correction", Value::from(format!("{:?}", r.correction).to_lowercase()));
    m.insert(
        "offset_after_disturbance_s",
        num(r.offset_after_disturbance_ns.map(|v| v as f64 / 1e9), PER_US),
    );
    m.insert("time_to_first_correction_s", num(r.time_to_first_correction_s, PER_US));
    for (k, key) in [
        ("1ms", "time_to_within_1ms_s"),
        ("100us", "time_to_within_100us_s"),
        ("1us", "time_to_within_1us_s"),
    ] {
        m.insert(key, num(r.time_to_within_s.get(k).copied().flatten(), PER_US));
    }
    m.insert("steps", Value::from(r.steps.len()));
    m.insert("slew_duration_s", num(r.slew_duration_s, PER_US));
    m.insert("max_abs_offset_s", num(Some(r.max_abs_offset_ns as f64 / 1e9), 1e9));
    m.insert("rms_after_recovery_ns", num(r.rms_after_recovery_ns, 10.0));
    m
}

/// The path of a scenario's baseline: `DIR/<backend>/<scenario>.json`. Both names come from
/// run files, so each must be a plain name ([`phc::input::check_name`]) and nothing on the way
/// below `dir` may be a symlink ([`phc::input::join_inside`]): the path stays inside `dir`.
pub fn path_for(dir: &Path, backend: &str, name: &str) -> Result<PathBuf, BaselineError> {
    let err = |message: String| BaselineError::Path {
        dir: dir.to_owned(),
        name: name.to_owned(),
        backend: backend.to_owned(),
        message,
    };
    phc::input::check_name(backend).map_err(|why| err(format!("backend: {why}")))?;
    phc::input::check_name(name).map_err(|why| err(format!("name: {why}")))?;
    phc::input::join_inside(dir, &format!("{backend}/{name}.json")).map_err(|e| err(e.to_string()))
}

/// Whether `file_name` is one a baseline of some scenario could have (`<plain name>.json`):
/// what `baseline --prune` may remove.
pub fn is_baseline_name(file_name: &str) -> bool {
    file_name
        .strip_suffix(".json")
        .is_some_and(|stem| phc::input::check_name(stem).is_ok() && phc::input::check_name(file_name).is_ok())
}

/// Reads a baseline file (a regular file, not a symlink, at most [`MAX_BASELINE_BYTES`]);
/// `Missing` when there is none.
pub fn load(path: &Path, name: &str, backend: &str) -> Result<Baseline, BaselineError> {
    let text = match phc::input::read_text(path, MAX_BASELINE_BYTES, phc::input::Links::Refuse) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BaselineError::Missing {
                path: path.to_owned(),
                name: name.to_owned(),
                backend: backend.to_owned(),
            })
        }
        Err(source) => return Err(BaselineError::Io { path: path.to_owned(), source }),
    };
    let b: Baseline = serde_json::from_str(&text)
        .map_err(|e| BaselineError::Malformed { path: path.to_owned(), message: e.to_string() })?;
    let bad = |message: String| Err(BaselineError::Malformed { path: path.to_owned(), message });
    if b.format != FORMAT {
        return bad(format!("format {} (this phc-harness reads format {FORMAT})", b.format));
    }
    if b.name != name || b.backend != backend {
        return bad(format!("it is the baseline of {} [{}], not of {name} [{backend}]", b.name, b.backend));
    }
    for (k, m) in &b.metrics {
        if !(m.abs.is_finite() && m.abs >= 0.0 && m.rel.is_finite() && m.rel >= 0.0) {
            return bad(format!("metrics.{k}: abs and rel must be finite numbers >= 0"));
        }
        if !(m.value.is_null() || m.value.is_number() || m.value.is_string()) {
            return bad(format!("metrics.{k}.value: must be a number, a string or null"));
        }
    }
    Ok(b)
}

/// The baseline a suite entry would become. Tolerances come from `keep` (the baseline it
/// replaces, so hand-set tolerances survive a regeneration), else the defaults.
pub fn from_entry(e: &Entry, keep: Option<&Baseline>) -> Baseline {
    let values = entry_values(e);
    let metrics = METRICS
        .iter()
        .filter_map(|d| {
            let value = values.get(d.name)?.clone();
            let (abs, rel) = keep
                .and_then(|k| k.metrics.get(d.name))
                .map_or_else(|| default_tolerance(d.name, &e.backend), |m| (m.abs, m.rel));
            Some((d.name.to_owned(), Metric { value, abs, rel, better: d.better, spread: None }))
        })
        .collect();
    Baseline {
        format: FORMAT,
        kind: "scenario".into(),
        name: e.scenario.clone(),
        backend: e.backend.clone(),
        seed: Some(e.seed),
        environment: e.environment.clone(),
        metrics,
        seeds: Vec::new(),
    }
}

/// The baseline repeated runs of one scenario on one backend would become (one run:
/// [`from_entry`]). Each metric: the lower median of the runs' numbers (a value one of them
/// had), its spread, and a tolerance of [`SPREADS`] spreads above its [`resolution`]; a word
/// metric keeps the commonest word and accepts every word seen. The tolerances `keep` had are
/// replaced (a scenario's own `[[tolerance]]` still overrides them when comparing). Environment
/// and seed come from the lowest seed's run.
pub fn from_entries(entries: &[&Entry], keep: Option<&Baseline>) -> Option<Baseline> {
    let first = entries.iter().min_by_key(|e| e.seed)?;
    if entries.len() == 1 {
        return Some(from_entry(first, keep));
    }
    let values: Vec<BTreeMap<&str, Value>> = entries.iter().map(|e| entry_values(e)).collect();
    // Older reports have no interval; the coarsest any run had.
    let interval_s = entries
        .iter()
        .filter_map(|e| e.interval_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        .unwrap_or(1.0);
    let metrics = METRICS
        .iter()
        .filter_map(|d| {
            let vals: Vec<&Value> = values.iter().filter_map(|v| v.get(d.name)).collect();
            if vals.is_empty() {
                return None;
            }
            Some((d.name.to_owned(), spread_metric(d.name, d.better, &vals, interval_s)))
        })
        .collect();
    let mut seeds: Vec<u64> = entries.iter().map(|e| e.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    Some(Baseline {
        format: FORMAT,
        kind: "scenario".into(),
        name: first.scenario.clone(),
        backend: first.backend.clone(),
        seed: Some(first.seed),
        environment: first.environment.clone(),
        metrics,
        seeds,
    })
}

/// One metric over repeated runs' values (see [`from_entries`]).
fn spread_metric(name: &str, better: Better, vals: &[&Value], interval_s: f64) -> Metric {
    let mut numbers: Vec<f64> = vals.iter().filter_map(|v| v.as_f64()).filter(|x| x.is_finite()).collect();
    numbers.sort_by(f64::total_cmp);
    let mut seen: Vec<Value> = Vec::new();
    for v in vals.iter().filter(|v| v.as_f64().is_none()) {
        if !seen.contains(v) {
            seen.push((*v).clone());
        }
    }
    let floor = resolution(name, interval_s, numbers.iter().fold(0.0, |m: f64, x| m.max(x.abs())));
    let spread = |seen| Spread {
        runs: vals.len(),
        min: numbers.first().copied(),
        max: numbers.last().copied(),
        seen,
        floor,
    };
    if better == Better::Exact || numbers.is_empty() {
        // The commonest value (the first seen of equals), every other one accepted.
        let mut counts: Vec<(&Value, usize)> = Vec::new();
        for v in vals {
            match counts.iter_mut().find(|(c, _)| c == v) {
                Some((_, n)) => *n += 1,
                None => counts.push((v, 1)),
            }
        }
        let top = counts.iter().max_by_key(|(_, n)| *n).map_or(Value::Null, |(v, _)| (*v).clone());
        let mut seen: Vec<Value> = counts.iter().map(|(v, _)| (*v).clone()).collect();
        seen.retain(|v| *v != top);
        let s = spread(seen);
        let abs = if better == Better::Exact { 0.0 } else { floor.max(round_up(SPREADS * s.width())) };
        return Metric { value: top, abs, rel: 0.0, better, spread: Some(s) };
    }
    // The lower median: a value a run had.
    let value =
        serde_json::Number::from_f64(numbers[(numbers.len() - 1) / 2]).map_or(Value::Null, Value::Number);
    let s = spread(seen);
    let abs = floor.max(round_up(SPREADS * s.width()));
    Metric { value, abs, rel: 0.0, better, spread: Some(s) }
}

/// Pretty JSON with a trailing newline.
pub fn to_json(b: &Baseline) -> String {
    let mut s = serde_json::to_string_pretty(b).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes a baseline file atomically (a temp file renamed into place).
pub fn save(path: &Path, b: &Baseline) -> Result<(), BaselineError> {
    let io = |source| BaselineError::Io { path: path.to_owned(), source };
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
    std::io::Write::write_all(&mut tmp, to_json(b).as_bytes()).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tolerance::{check_override, ToleranceOverride};

    #[test]
    fn overrides_are_checked() {
        let t = |metric: &str, abs: f64, backend: Option<&str>| ToleranceOverride {
            metric: metric.into(),
            abs,
            rel: 0.0,
            backend: backend.map(Into::into),
        };
        assert!(check_override(&t("steps", 1.0, None)).is_ok());
        assert!(check_override(&t("stepz", 1.0, None)).unwrap_err().contains("unknown metric `stepz`"));
        assert!(check_override(&t("steps", -1.0, None)).unwrap_err().contains("abs must be"));
        assert!(check_override(&t("steps", f64::NAN, None)).is_err());
        assert!(check_override(&t("steps", 1.0, Some("vmware"))).unwrap_err().contains("backend"));
    }

    #[test]
    fn baseline_paths_stay_inside_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(path_for(dir.path(), "sim", "reboot").unwrap(), dir.path().join("sim/reboot.json"));
        for (b, n) in
            [("..", "x"), ("sim", "../../x"), ("/etc", "passwd"), ("sim", ""), ("", "x"), ("sim", "a/b")]
        {
            assert!(path_for(dir.path(), b, n).is_err(), "{b:?} {n:?} accepted");
        }
        std::os::unix::fs::symlink("/tmp", dir.path().join("qemu")).unwrap();
        assert!(path_for(dir.path(), "qemu", "x").unwrap_err().to_string().contains("symlink"));
        assert!(is_baseline_name("reboot.json"));
        for bad in ["reboot.toml", ".json", ".x.json", "-x.json", "a b.json", "x.json.bak"] {
            assert!(!is_baseline_name(bad), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the names, a baseline path is under the folder, two levels down, or refused.
        #[test]
        fn any_names_give_a_path_inside_or_none(b in proptest::prelude::any::<String>(), n in proptest::prelude::any::<String>()) {
            let dir = Path::new("/nonexistent-phc-baselines");
            if let Ok(p) = path_for(dir, &b, &n) {
                let rest = p.strip_prefix(dir).unwrap();
                proptest::prop_assert_eq!(rest.components().count(), 2);
                proptest::prop_assert!(rest.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }
    }

    #[test]
    fn symlinked_and_endless_baselines_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sim")).unwrap();
        let p = dir.path().join("sim/reboot.json");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b' '; MAX_BASELINE_BYTES as usize + 1]).unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err();
        assert!(matches!(e, BaselineError::Io { .. }), "{e}");
    }

    #[test]
    fn malformed_and_missing_baselines_say_what_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(dir.path(), "sim", "reboot").unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("reboot.json") && e.contains("no baseline for reboot [sim]"), "{e}");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{ not json").unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("malformed baseline"), "{e}");
        let other = Baseline {
            format: FORMAT,
            kind: "scenario".into(),
            name: "other".into(),
            backend: "sim".into(),
            seed: Some(1),
            environment: BTreeMap::new(),
            metrics: BTreeMap::new(),
            seeds: Vec::new(),
        };
        save(&p, &other).unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("baseline of other [sim], not of reboot [sim]"), "{e}");
        let mut neg = other.clone();
        neg.name = "reboot".into();
        neg.metrics.insert(
            "steps".into(),
            Metric { value: Value::from(1), abs: -1.0, rel: 0.0, better: Better::Either, spread: None },
        );
        save(&p, &neg).unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("metrics.steps: abs and rel"), "{e}");
    }

    fn metric_of(name: &str, better: Better, vals: &[Value], interval_s: f64) -> Metric {
        let refs: Vec<&Value> = vals.iter().collect();
        spread_metric(name, better, &refs, interval_s)
    }

    #[test]
    fn repeats_give_the_median_their_spread_and_two_spreads_of_tolerance() {
        use crate::regress::compare::{judge, Status};
        let v = |x: f64| Value::from(x);
        let m = metric_of(
            "time_to_first_correction_s",
            Better::Lower,
            &[v(57.5), v(49.5), v(65.5), v(89.5)],
            8.0,
        );
        // The lower median is a value a run had.
        assert_eq!(m.value, v(57.5));
        let s = m.spread.clone().unwrap();
        assert_eq!((s.runs, s.min, s.max, s.floor), (4, Some(49.5), Some(89.5), 8.0));
        assert_eq!((m.abs, m.rel), (80.0, 0.0));
        assert_eq!(judge(&m, m.abs, m.rel, &v(57.5 + 79.0)), Status::Same);
        assert_eq!(judge(&m, m.abs, m.rel, &v(57.5 + 3.0 * 40.0)), Status::Regressed);
        // No scatter: the floor, an observation interval.
        let m = metric_of("time_to_within_1ms_s", Better::Lower, &[v(30.5), v(30.5), v(30.5)], 0.5);
        assert_eq!((m.value.clone(), m.abs), (v(30.5), 0.5));
        assert_eq!(judge(&m, m.abs, m.rel, &v(31.0)), Status::Same);
        assert_eq!(judge(&m, m.abs, m.rel, &v(31.5)), Status::Regressed);
        // A never some runs had is accepted; the value is the median of the numbers.
        let m = metric_of("time_to_within_1us_s", Better::Lower, &[Value::Null, v(100.0), v(110.0)], 1.0);
        assert_eq!(m.value, v(100.0));
        assert_eq!(m.spread.as_ref().unwrap().seen, vec![Value::Null]);
        assert_eq!(judge(&m, m.abs, m.rel, &Value::Null), Status::Same);
        let m = metric_of("time_to_within_1us_s", Better::Lower, &[Value::Null, Value::Null], 1.0);
        assert_eq!(m.value, Value::Null);
        assert_eq!(judge(&m, m.abs, m.rel, &Value::Null), Status::Same);
        // Words: the commonest, and every word seen; another is a move.
        let w = |x: &str| Value::from(x);
        let m = metric_of("correction", Better::Exact, &[w("step"), w("slew"), w("step")], 8.0);
        assert_eq!(m.value, w("step"));
        assert_eq!(judge(&m, m.abs, m.rel, &w("slew")), Status::Same);
        assert_eq!(judge(&m, m.abs, m.rel, &w("none")), Status::Regressed);
        // Two years in seconds: the floor is what a double holds there, not 1 ns.
        let m = metric_of("max_abs_offset_s", Better::Lower, &[v(63_072_000.0), v(63_072_000.0)], 8.0);
        assert!(m.abs > 1e-8 && m.abs < 1e-7, "{}", m.abs);
        // Tolerances are shown to four digits, rounded up.
        for (x, want) in
            [(1.0033599999999296, 1.004), (6291.5999999999985, 6292.0), (80.0018, 80.01), (2.0, 2.0)]
        {
            assert_eq!(round_up(x), want, "{x}");
        }
        assert!(round_up(3.0e-9) >= 3.0e-9);
    }

    /// Every committed QEMU baseline is a distribution of repeated runs, and a regression of
    /// three spreads in any of its numbers fails `compare` (where three spreads are below the
    /// metric's resolution, a move just past the resolution does); a word never seen fails.
    #[test]
    fn a_planted_regression_of_three_spreads_fails_every_committed_qemu_baseline() {
        use crate::regress::compare::{judge, Status};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join("results/baselines/qemu");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(files.len() >= 10, "{files:?}");
        let mut planted = 0;
        for f in &files {
            let name = f.file_stem().unwrap().to_str().unwrap();
            let b = load(f, name, "qemu").unwrap();
            assert!(
                b.seeds.len() >= 5,
                "{name}: promoted from {} runs; regenerate with ci/update-baselines.sh qemu",
                b.seeds.len()
            );
            let overrides =
                crate::model::scenario::Scenario::load(&root.join(format!("scenarios/{name}.toml")))
                    .map(|s| s.tolerance)
                    .unwrap_or_default();
            for (k, m) in &b.metrics {
                let s = m.spread.as_ref().unwrap_or_else(|| panic!("{name}.{k}: no spread"));
                let (abs, rel) = overrides
                    .iter()
                    .rev()
                    .find(|o| o.metric == *k && o.backend.as_deref().is_none_or(|b| b == "qemu"))
                    .map_or((m.abs, m.rel), |o| (o.abs, o.rel));
                let current = match (m.better, m.value.as_f64()) {
                    (Better::Exact, _) => Value::from("planted"),
                    (_, Some(v)) => {
                        let moved = if 3.0 * s.width() > s.floor { 3.0 * s.width() } else { 1.5 * s.floor };
                        Value::from(v + moved)
                    }
                    // Never in most runs: nothing is worse than never.
                    (_, None) => continue,
                };
                let status = if k == "outcome" {
                    crate::regress::compare::judge_outcome(&m.value, &current)
                } else {
                    judge(m, abs, rel, &current)
                };
                assert_eq!(status, Status::Regressed, "{name}.{k}: {current} against {} ±{abs}", m.value);
                planted += 1;
            }
        }
        assert!(planted >= 100, "{planted}");
    }
}
