//! `compare`: a run (a suite folder with `summary.json`, or a `run --out` folder of report
//! folders, or folders holding a `latency.json`) against baselines, metric by metric within each
//! metric's tolerance. What moved is listed; a move to the worse side is a regression.
//! Latency is compared only between runs on the same host set-up (kernel, QEMU, CPU model,
//! accel, command line) unless told otherwise.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::tolerance::{Better, METRICS};
use crate::regress::baseline::{self, Baseline, BaselineError, Metric};
use crate::regress::summary::Entry;
use crate::regress::summary::HOST_KEYS;

/// How one metric compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Within tolerance.
    Same,
    /// Moved to the better side.
    Improved,
    /// Moved to the worse side (or changed, where no side is better).
    Regressed,
}

/// One metric of one run against its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Scenario (or latency run) name.
    pub name: String,
    /// Backend.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// Baseline value.
    pub baseline: Value,
    /// This run's value (null: never; absent metric: `"missing"`).
    pub current: Value,
    /// The tolerance applied, as text.
    pub tolerance: String,
    /// The tolerance over the baseline's |value| (`60x`), so that one far wider than what it
    /// guards shows; `-` where that is no number (an exact metric, never, zero).
    pub slack: String,
    /// The outcome.
    pub status: Status,
}

/// A whole comparison.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Every metric compared.
    pub rows: Vec<Row>,
    /// Runs that could not be compared (no or a malformed baseline, another seed, another host).
    pub errors: Vec<String>,
    /// Things worth knowing that decide nothing (a QEMU run on another kernel).
    pub notes: Vec<String>,
    /// Runs compared.
    pub runs: usize,
    /// Runs their backend skipped (said in `notes`, not compared).
    pub skipped: usize,
}

/// A run to compare: a scenario entry, a latency document or a probe document.
#[derive(Debug, Clone)]
pub enum Run {
    /// A scenario on a backend.
    Scenario(Box<Entry>),
    /// A latency measurement: its folder name and its `latency.json`.
    Latency(String, Value),
    /// A driver probe: its folder name and its `probe.json` (`probe --format json`).
    Probe(String, Value),
}

impl Run {
    /// The name and backend a baseline is kept under.
    pub fn key(&self) -> (String, String) {
        match self {
            Run::Scenario(e) => (e.scenario.clone(), e.backend.clone()),
            Run::Latency(n, v) | Run::Probe(n, v) => {
                (n.clone(), latency_environment(v)["kind"].as_str().unwrap_or("local").to_owned())
            }
        }
    }

    /// Its metrics by name.
    pub fn values(&self) -> BTreeMap<String, Value> {
        match self {
            Run::Scenario(e) => {
                baseline::entry_values(e).into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            }
            Run::Latency(_, v) => latency_values(v),
            Run::Probe(_, v) => probe_values(v),
        }
    }

    /// What it ran on (the keys a baseline's `environment` holds).
    pub fn environment(&self) -> BTreeMap<String, Value> {
        match self {
            Run::Scenario(e) => e.environment.clone(),
            Run::Latency(_, v) | Run::Probe(_, v) => latency_environment(v),
        }
    }

    /// The scenario's own tolerance overrides (none for a document).
    pub fn overrides(&self) -> Vec<crate::model::tolerance::ToleranceOverride> {
        match self {
            Run::Scenario(e) => e.tolerance.clone(),
            _ => Vec::new(),
        }
    }

    /// The seed (scenarios only).
    pub fn seed(&self) -> Option<u64> {
        match self {
            Run::Scenario(e) => Some(e.seed),
            _ => None,
        }
    }
}

/// The baseline each run, or each scenario's repeated runs together
/// (`baseline::from_entries`; runs of one seed from several folders are draws of their own),
/// would become; `keep` gives the baseline a key has now (its
/// tolerances survive a single run's promotion). In the order the keys first appear.
pub fn baselines(
    runs: &[Run],
    mut keep: impl FnMut(&str, &str) -> Result<Option<Baseline>, String>,
) -> Result<Vec<Baseline>, String> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in runs {
        let k = r.key();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for k in keys {
        let group: Vec<&Run> = runs.iter().filter(|r| r.key() == k).collect();
        let old = keep(&k.0, &k.1)?;
        let b = match group.as_slice() {
            [one] => one.baseline(old.as_ref()),
            many => {
                let entries: Vec<&Entry> = many
                    .iter()
                    .filter_map(|r| match r {
                        Run::Scenario(e) => Some(&**e),
                        _ => None,
                    })
                    .collect();
                if entries.len() != many.len() {
                    return Err(format!(
                        "{} [{}]: more than one run of a latency or probe document",
                        k.0, k.1
                    ));
                }
                baseline::from_entries(&entries, old.as_ref())
                    .ok_or_else(|| format!("{} [{}]: no runs", k.0, k.1))?
            }
        };
        out.push(b);
    }
    Ok(out)
}

impl Run {
    /// The baseline it would become (`keep`'s tolerances survive).
    pub fn baseline(&self, keep: Option<&Baseline>) -> Baseline {
        match self {
            Run::Scenario(e) => baseline::from_entry(e, keep),
            Run::Latency(n, v) => latency_baseline(n, v, keep),
            Run::Probe(n, v) => probe_baseline(n, v, keep),
        }
    }
}

/// Largest `probe.json` read: a probe document is a few KiB.
pub const MAX_PROBE_BYTES: u64 = 4 << 20;

/// Reads a probe document through the bounded reader (a regular file, not a symlink).
pub fn read_probe(path: &Path) -> Result<Value, String> {
    let text = phc::input::read_text(path, MAX_PROBE_BYTES, phc::input::Links::Refuse)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a probe document: {e}", path.display()))?;
    if !v["checks"].is_array() || !v["deviations"].is_u64() {
        return Err(format!("{}: not a probe document (no checks or deviations)", path.display()));
    }
    Ok(v)
}

/// A probe document's metrics: `deviations`, the clock's name, and per check
/// `probe.GROUP.NAME` its result (`ok`, an errno, a capability's value, `skipped`).
pub fn probe_values(v: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert("deviations".into(), v["deviations"].clone());
    m.insert("clock_name".into(), v["clock_name"].clone());
    for c in v["checks"].as_array().into_iter().flatten() {
        let key =
            format!("probe.{}.{}", c["group"].as_str().unwrap_or("?"), c["name"].as_str().unwrap_or("?"));
        m.insert(key, c["result"].clone());
    }
    m
}

/// The baseline a probe document would become: every value exact (a driver that answers
/// otherwise has changed), `deviations` lower is better.
pub fn probe_baseline(name: &str, v: &Value, keep: Option<&Baseline>) -> Baseline {
    let env = latency_environment(v);
    let backend = env["kind"].as_str().unwrap_or("local").to_owned();
    let metrics = probe_values(v)
        .into_iter()
        .map(|(k, value)| {
            let better = if k == "deviations" { Better::Lower } else { Better::Exact };
            let (abs, rel) = keep.and_then(|b| b.metrics.get(&k)).map_or((0.0, 0.0), |m| (m.abs, m.rel));
            (k, Metric { value, abs, rel, better, spread: None })
        })
        .collect();
    Baseline {
        format: baseline::FORMAT,
        kind: "probe".into(),
        name: name.to_owned(),
        backend,
        seed: None,
        environment: env,
        metrics,
        seeds: Vec::new(),
    }
}

/// Largest `latency.json` read. A latency document holds per method its percentiles and a
/// 1-2-5 histogram (a few KiB); 64 MiB leaves room for raw samples a future version may add.
pub const MAX_LATENCY_BYTES: u64 = 64 << 20;

/// A scenario or backend name read from a file, checked before it becomes part of a baseline's
/// path.
fn check_names(what: &Path, names: &[(&str, &str)]) -> Result<(), String> {
    for (key, name) in names {
        phc::input::check_name(name).map_err(|why| format!("{}: {key}: {why}", what.display()))?;
    }
    Ok(())
}

/// Whether something is at `path` (a dangling symlink or a FIFO counts), without following it.
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Reads a latency document through the bounded reader (a regular file, not a symlink).
pub fn read_latency(path: &Path) -> Result<Value, String> {
    let text = phc::input::read_text(path, MAX_LATENCY_BYTES, phc::input::Links::Refuse)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a latency document: {e}", path.display()))?;
    if !v["methods"].is_array() || !v["baseline"].is_object() {
        return Err(format!("{}: not a latency document (no methods or baseline)", path.display()));
    }
    Ok(v)
}

/// The runs in a folder. A suite folder (one with `summary.json`) is its summary's entries and
/// nothing else: report folders it does not list (an older suite's, say) are not read.
/// Otherwise each `*/report.json` (a `run --out` folder), and each `latency.json` in the
/// folder or one level down. Every file goes through `phc::input` with a cap per kind, and a
/// folder or file that is a symlink is refused, as is a name that could not be a baseline's.
pub fn load_runs(dir: &Path) -> Result<Vec<Run>, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a folder", dir.display()));
    }
    if present(&dir.join("summary.json")) {
        let s = crate::regress::summary::Summary::load(dir).map_err(|e| e.to_string())?;
        if s.entries.is_empty() {
            return Err(format!("{}: no runs in its summary.json", dir.display()));
        }
        return Ok(s.entries.into_iter().map(|e| Run::Scenario(Box::new(e))).collect());
    }
    let mut runs = Vec::new();
    let mut subdirs: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let t = e.file_type().map_err(|err| format!("{}: {err}", e.path().display()))?;
        let p = e.path();
        if t.is_symlink() {
            if present(&p.join("report.json")) || present(&p.join("latency.json")) {
                return Err(format!("{}: a symlink, which is not followed here", p.display()));
            }
        } else if t.is_dir() {
            subdirs.push(p);
        }
    }
    subdirs.sort();
    for d in std::iter::once(dir.to_owned()).chain(subdirs) {
        let lat = d.join("latency.json");
        if present(&lat) {
            let v = read_latency(&lat)?;
            let name = d.file_name().map_or("latency".into(), |n| n.to_string_lossy().into_owned());
            let kind = latency_environment(&v)["kind"].as_str().unwrap_or("local").to_owned();
            check_names(&lat, &[("folder name", &name), ("backend kind", &kind)])?;
            runs.push(Run::Latency(name, v));
        }
        let probe = d.join("probe.json");
        if present(&probe) {
            let v = read_probe(&probe)?;
            let name = d.file_name().map_or("probe".into(), |n| n.to_string_lossy().into_owned());
            let kind = latency_environment(&v)["kind"].as_str().unwrap_or("local").to_owned();
            check_names(&probe, &[("folder name", &name), ("backend kind", &kind)])?;
            if runs.iter().any(|r| matches!(r, Run::Latency(n, _) if *n == name)) {
                return Err(format!(
                    "{}: a latency.json and a probe.json in one folder would share the name {name}",
                    d.display()
                ));
            }
            runs.push(Run::Probe(name, v));
        }
        let rep = d.join("report.json");
        if d != dir && present(&rep) {
            let r = crate::judge::report::Report::load(&rep)?;
            check_names(&rep, &[("scenario", &r.scenario), ("backend", &r.backend)])?;
            runs.push(Run::Scenario(Box::new(crate::regress::summary::entry_from_report(
                &r,
                &d,
                dir,
                Vec::new(),
            ))));
        }
    }
    if runs.is_empty() {
        return Err(format!(
            "{}: no runs in it (no summary.json, no */report.json, no latency.json)",
            dir.display()
        ));
    }
    Ok(runs)
}

/// A latency document's metrics: per method (and clock) the p50 and p99 round trip as ratios to
/// the same run's `clock_gettime` baseline, and whether the method worked.
pub fn latency_values(v: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    let base = &v["baseline"]["round_trip_ns"];
    for meth in v["methods"].as_array().into_iter().flatten() {
        let mut key = meth["method"].as_str().unwrap_or("?").to_owned();
        if let Some(c) = meth["clock"].as_str() {
            key = format!("{key}.{c}");
        }
        m.insert(format!("status.{key}"), meth["status"].clone());
        for p in ["p50", "p99"] {
            let ratio = match (meth["round_trip_ns"][p].as_f64(), base[p].as_f64()) {
                (Some(a), Some(b)) if b > 0.0 => {
                    serde_json::Number::from_f64((a / b * 1000.0).round() / 1000.0)
                }
                _ => None,
            };
            m.insert(format!("ratio_{p}.{key}"), ratio.map_or(Value::Null, Value::Number));
        }
    }
    m
}

/// The environment of a latency or probe document: its `backend` object's set-up keys (a local
/// run is `kind` `local`, a simulated one `sim`), with the device and driver.
pub fn latency_environment(v: &Value) -> BTreeMap<String, Value> {
    let mut env: BTreeMap<String, Value> = BTreeMap::new();
    env.insert("kind".into(), Value::from("local"));
    if let Some(b) = v["backend"].as_object() {
        for (k, x) in b {
            if HOST_KEYS.contains(&k.as_str()) {
                env.insert(k.clone(), x.clone());
            }
        }
    }
    for k in ["device", "driver"] {
        if !v[k].is_null() {
            env.insert(k.into(), v[k].clone());
        }
    }
    // `--backend sim` documents carry no backend object: their device says it (`sim`,
    // `sim:DRIVER`).
    let device = v["device"].as_str().unwrap_or_default();
    if v["backend"]["kind"].is_null() && (device == "sim" || device.starts_with("sim:")) {
        env.insert("kind".into(), Value::from("sim"));
    }
    env
}

/// The baseline a latency document would become (`keep`'s tolerances survive).
pub fn latency_baseline(name: &str, v: &Value, keep: Option<&Baseline>) -> Baseline {
    let env = latency_environment(v);
    let backend = env["kind"].as_str().unwrap_or("local").to_owned();
    let metrics = latency_values(v)
        .into_iter()
        .map(|(k, value)| {
            let better = if k.starts_with("status.") { Better::Exact } else { Better::Lower };
            let (abs, rel) = keep
                .and_then(|b| b.metrics.get(&k))
                .map_or_else(|| baseline::default_tolerance(&k, &backend), |m| (m.abs, m.rel));
            (k, Metric { value, abs, rel, better, spread: None })
        })
        .collect();
    Baseline {
        format: baseline::FORMAT,
        kind: "latency".into(),
        name: name.to_owned(),
        backend,
        seed: None,
        environment: env,
        metrics,
        seeds: Vec::new(),
    }
}

/// Judges one value against its baseline metric with tolerance (`abs`, `rel`).
pub fn judge(m: &Metric, abs: f64, rel: f64, current: &Value) -> Status {
    // A word or a never that one of the baseline's repeated runs had is no move.
    if m.spread.as_ref().is_some_and(|s| s.seen.contains(current)) {
        return Status::Same;
    }
    match m.better {
        Better::Exact => {
            if *current == m.value {
                Status::Same
            } else {
                Status::Regressed
            }
        }
        Better::Lower | Better::Either => match (m.value.as_f64(), current.as_f64()) {
            (Some(b), Some(c)) => {
                let d = c - b;
                if d.abs() <= abs + rel * b.abs() {
                    Status::Same
                } else if m.better == Better::Lower && d < 0.0 {
                    Status::Improved
                } else {
                    Status::Regressed
                }
            }
            (None, None) if m.value.is_null() && current.is_null() => Status::Same,
            // "never" against a number: never is the worst for a time.
            (None, Some(_)) if m.value.is_null() && m.better == Better::Lower => Status::Improved,
            _ => Status::Regressed,
        },
    }
}

/// A run's outcome against its baseline's: a worse one (a pass that now fails) is a
/// regression, a better one (a failure that now passes) an improvement.
pub fn judge_outcome(base: &Value, current: &Value) -> Status {
    let rank = |v: &Value| match v.as_str() {
        Some("pass") => 0,
        Some("no_checks" | "skipped") => 1,
        Some("fail") => 2,
        _ => 3,
    };
    match rank(current).cmp(&rank(base)) {
        std::cmp::Ordering::Equal if current == base => Status::Same,
        std::cmp::Ordering::Less => Status::Improved,
        _ => Status::Regressed,
    }
}

/// A tolerance over the baseline's |value|, as the table prints it (`-` where that is no
/// number).
pub fn slack_text(m: &Metric, abs: f64, rel: f64) -> String {
    let v = match (m.better, m.value.as_f64()) {
        (Better::Exact, _) | (_, None) => return "-".into(),
        (_, Some(v)) if v == 0.0 || !v.is_finite() => return "-".into(),
        (_, Some(v)) => v.abs(),
    };
    let r = (abs + rel * v) / v;
    if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 1.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.3}x")
    }
}

/// A tolerance as the tables print it.
pub fn tolerance_text(m: &Metric, abs: f64, rel: f64) -> String {
    match m.better {
        Better::Exact => "equal".into(),
        _ if rel == 0.0 => format!("±{abs}"),
        _ => format!("±({abs} + {}%)", rel * 100.0),
    }
}

/// Compares every run with its baseline under `dir`. `allow_different_host` lets latency be
/// compared across set-ups (kernel, QEMU, CPU model, accel, command line).
pub fn compare(runs: &[Run], dir: &Path, allow_different_host: bool) -> Comparison {
    let mut c = Comparison { runs: runs.len(), ..Default::default() };
    let mut per_key: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in runs {
        *per_key.entry(r.key()).or_default() += 1;
    }
    for run in runs {
        let (name, backend) = run.key();
        // Repeated runs of one scenario: each is a row of its own, named with its seed.
        let label = match run.seed() {
            Some(s) if per_key[&(name.clone(), backend.clone())] > 1 => format!("{name} (seed {s})"),
            _ => name.clone(),
        };
        // A run the backend could not do (a kernel without igb, say) is said, not compared:
        // its set-up, not the guest, changed.
        if let Run::Scenario(e) = run {
            if e.outcome == crate::regress::summary::Outcome::Skipped {
                c.notes.push(format!(
                    "{label} [{backend}]: not compared: skipped ({})",
                    e.reason.as_deref().unwrap_or("no reason given")
                ));
                c.skipped += 1;
                continue;
            }
        }
        let (values, env, overrides, seed) = (run.values(), run.environment(), run.overrides(), run.seed());
        let base = match baseline::path_for(dir, &backend, &name)
            .and_then(|path| baseline::load(&path, &name, &backend))
        {
            Ok(b) => b,
            Err(
                e @ (BaselineError::Missing { .. }
                | BaselineError::Malformed { .. }
                | BaselineError::Path { .. }
                | BaselineError::Io { .. }),
            ) => {
                c.errors.push(error_line(&e));
                continue;
            }
        };
        // A baseline of repeated runs is a distribution over seeds: any seed's run is a draw.
        if base.seeds.is_empty() && base.seed != seed {
            c.errors.push(format!(
                "{name} [{backend}]: ran with seed {}, the baseline with seed {}: not comparable",
                seed.map_or("-".into(), |s| s.to_string()),
                base.seed.map_or("-".into(), |s| s.to_string())
            ));
            continue;
        }
        let differs: Vec<String> = HOST_KEYS
            .iter()
            .filter(|k| base.environment.get(**k) != env.get(**k))
            .map(|k| {
                let show = |v: Option<&Value>| v.map_or("(none)".to_owned(), |v| v.to_string());
                format!("{k} {} -> {}", show(base.environment.get(*k)), show(env.get(*k)))
            })
            .collect();
        if !differs.is_empty() {
            let what =
                format!("{name} [{backend}]: another set-up than the baseline's: {}", differs.join(", "));
            if matches!(run, Run::Latency(..)) && !allow_different_host {
                c.errors.push(format!("{what}; latency is only compared on the same set-up (--allow-different-host to compare anyway)"));
                continue;
            }
            c.notes.push(what);
        }
        for (k, m) in &base.metrics {
            let (abs, rel) = overrides
                .iter()
                .rev()
                .find(|o| o.metric == *k && o.backend.as_deref().is_none_or(|b| b == backend))
                .map_or((m.abs, m.rel), |o| (o.abs, o.rel));
            let (current, status) = match values.get(k) {
                // An outcome one of the baseline's repeated runs had is no move either.
                Some(v) if k == "outcome" && m.spread.as_ref().is_some_and(|s| s.seen.contains(v)) => {
                    (v.clone(), Status::Same)
                }
                Some(v) if k == "outcome" => (v.clone(), judge_outcome(&m.value, v)),
                Some(v) => (v.clone(), judge(m, abs, rel, v)),
                None => (Value::from("missing"), Status::Regressed),
            };
            c.rows.push(Row {
                name: label.clone(),
                backend: backend.clone(),
                metric: k.clone(),
                baseline: m.value.clone(),
                current,
                tolerance: tolerance_text(m, abs, rel),
                slack: slack_text(m, abs, rel),
                status,
            });
        }
    }
    c.rows.sort_by_key(|r| {
        let order = METRICS.iter().position(|d| d.name == r.metric).unwrap_or(METRICS.len());
        (r.name.clone(), r.backend.clone(), order, r.metric.clone())
    });
    c
}

fn error_line(e: &BaselineError) -> String {
    e.to_string()
}

/// A metric value as the tables print it (null: `never`).
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "never".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{}", (f * 1e6).round() / 1e6),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

impl Comparison {
    /// Metrics that moved to the worse side.
    pub fn regressions(&self) -> usize {
        self.rows.iter().filter(|r| r.status == Status::Regressed).count()
    }

    /// The Markdown table of what moved, with a closing line of counts.
    pub fn to_markdown(&self) -> String {
        use crate::format::escape::markdown_cell as md;
        let mut s = String::new();
        let moved: Vec<&Row> = self.rows.iter().filter(|r| r.status != Status::Same).collect();
        // Every metric compared, moved or not, with its tolerance and that tolerance over the
        // value: a check whose tolerance dwarfs what it guards shows here.
        if !self.rows.is_empty() {
            let _ = writeln!(
                s,
                "| scenario | backend | metric | baseline | now | tolerance | tolerance / value | |\n|---|---|---|---|---|---|---|---|"
            );
            for r in &self.rows {
                let word = match r.status {
                    Status::Regressed => "**REGRESSION**",
                    Status::Improved => "improved",
                    Status::Same => "",
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {word} |",
                    md(&r.name),
                    md(&r.backend),
                    md(&r.metric),
                    md(&show(&r.baseline)),
                    md(&show(&r.current)),
                    md(&r.tolerance),
                    md(&r.slack)
                );
            }
            s.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(s, "- note: {}", md(n));
        }
        for e in &self.errors {
            let _ = writeln!(s, "- error: {}", md(e));
        }
        if !self.notes.is_empty() || !self.errors.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "{} runs, {} metrics compared: {} moved, {} regressions, {} improved, {} runs not compared{}.",
            self.runs,
            self.rows.len(),
            moved.len(),
            self.regressions(),
            moved.iter().filter(|r| r.status == Status::Improved).count(),
            self.errors.len(),
            if self.skipped > 0 {
                format!(", {} skipped by their backend", self.skipped)
            } else {
                String::new()
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(value: Value, better: Better) -> Metric {
        Metric { value, abs: 1.0, rel: 0.1, better, spread: None }
    }

    #[test]
    fn judging_within_tolerance_and_by_side() {
        let m = metric(Value::from(10.0), Better::Lower);
        assert_eq!(judge(&m, 1.0, 0.1, &Value::from(12.0)), Status::Same); // 2 <= 1 + 1
        assert_eq!(judge(&m, 1.0, 0.1, &Value::from(12.5)), Status::Regressed);
        assert_eq!(judge(&m, 1.0, 0.1, &Value::from(7.5)), Status::Improved);
        assert_eq!(judge(&m, 1.0, 0.1, &Value::Null), Status::Regressed);
        let never = metric(Value::Null, Better::Lower);
        assert_eq!(judge(&never, 1.0, 0.1, &Value::Null), Status::Same);
        assert_eq!(judge(&never, 1.0, 0.1, &Value::from(3.0)), Status::Improved);
        let e = metric(Value::from(2), Better::Either);
        assert_eq!(judge(&e, 0.0, 0.0, &Value::from(1)), Status::Regressed);
        assert_eq!(judge(&e, 0.0, 0.0, &Value::from(2)), Status::Same);
        let x = metric(Value::from("step"), Better::Exact);
        assert_eq!(judge(&x, 0.0, 0.0, &Value::from("slew")), Status::Regressed);
        assert_eq!(judge(&x, 0.0, 0.0, &Value::from("step")), Status::Same);
    }

    #[test]
    fn outcomes_have_a_better_side() {
        let v = |s: &str| Value::from(s);
        assert_eq!(judge_outcome(&v("pass"), &v("fail")), Status::Regressed);
        assert_eq!(judge_outcome(&v("fail"), &v("pass")), Status::Improved);
        assert_eq!(judge_outcome(&v("pass"), &v("pass")), Status::Same);
        assert_eq!(judge_outcome(&v("skipped"), &v("no_checks")), Status::Regressed);
        assert_eq!(judge_outcome(&v("fail"), &v("aborted")), Status::Regressed);
    }

    #[test]
    fn latency_is_ratios_to_the_runs_own_baseline() {
        let v = serde_json::json!({
            "device": "/dev/ptp0", "driver": "nic",
            "baseline": {"round_trip_ns": {"p50": 100, "p99": 200}},
            "methods": [
                {"method": "basic", "clock": null, "status": "ok", "round_trip_ns": {"p50": 400, "p99": 1000}},
                {"method": "precise", "clock": null, "status": "unsupported", "round_trip_ns": null},
            ],
            "backend": {"kind": "qemu", "accel": "tcg", "boot_to_ready_s": 3.2}
        });
        let m = latency_values(&v);
        assert_eq!(m["ratio_p50.basic"], 4.0);
        assert_eq!(m["ratio_p99.basic"], 5.0);
        assert_eq!(m["status.precise"], "unsupported");
        assert!(m["ratio_p50.precise"].is_null());
        let env = latency_environment(&v);
        assert_eq!(env["accel"], "tcg");
        assert!(!env.contains_key("boot_to_ready_s"), "a timing is not a set-up fact");
        // Same ratios on another CPU model: refused unless allowed.
        let dir = tempfile::tempdir().unwrap();
        let mut b = latency_baseline("lat", &v, None);
        b.environment.insert("cpu_model".into(), Value::from("max"));
        baseline::save(&baseline::path_for(dir.path(), "qemu", "lat").unwrap(), &b).unwrap();
        let runs = [Run::Latency("lat".into(), v)];
        let c = compare(&runs, dir.path(), false);
        assert!(c.errors[0].contains("cpu_model \"max\" -> (none)") && c.rows.is_empty(), "{:?}", c.errors);
        let c = compare(&runs, dir.path(), true);
        assert!(c.errors.is_empty() && c.regressions() == 0 && !c.rows.is_empty(), "{}", c.to_markdown());
    }
}
