//! Baselines in `results/baselines/`: per scenario and backend the recovery metrics of a run
//! that was judged good, each with its tolerance (absolute and relative, declared in the file,
//! overridable by the scenario's `[[tolerance]]`), and per latency run the ratios of each
//! method's percentiles to the same run's `clock_gettime` baseline, never bare times.
//! `compare` (in `crate::regress::compare`) checks runs against them; `promote` writes them.
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
            Some((d.name.to_owned(), Metric { value, abs, rel, better: d.better }))
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
    }
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
        };
        save(&p, &other).unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("baseline of other [sim], not of reboot [sim]"), "{e}");
        let mut neg = other.clone();
        neg.name = "reboot".into();
        neg.metrics.insert(
            "steps".into(),
            Metric { value: Value::from(1), abs: -1.0, rel: 0.0, better: Better::Either },
        );
        save(&p, &neg).unwrap();
        let e = load(&p, "reboot", "sim").unwrap_err().to_string();
        assert!(e.contains("metrics.steps: abs and rel"), "{e}");
    }
}
