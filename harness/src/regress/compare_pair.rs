//! `compare RUN_DIR --against OTHER`: two runs side by side (two kernel lines, say), neither
//! promoted to a baseline. Every metric of every run both folders hold is one row with both
//! values, judged with the tolerances a baseline would carry (the committed baseline's where
//! there is one, else the defaults, with the scenario's own overrides on top). A difference is
//! `moved`: this is a review of two set-ups, not a regression gate, so seeds and set-ups may
//! differ and are shown rather than refused.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::model::tolerance::METRICS;
use crate::regress::baseline::{self, Baseline};
use crate::regress::compare::{self, Run, Status};

/// One metric of one run, both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Scenario (or latency run) name.
    pub name: String,
    /// Backend.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// RUN_DIR's value (`"missing"` when it lacks the metric).
    pub left: Value,
    /// OTHER's value (`"missing"` when it lacks the metric).
    pub right: Value,
    /// The tolerance applied, as text.
    pub tolerance: String,
    /// RUN_DIR against OTHER: `Improved`/`Regressed` are both "moved", with a side.
    pub status: Status,
}

/// One side's set-up, as its runs record it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side {
    /// The folder.
    pub dir: String,
    /// Each distinct `kernel_release` (with `kernel_line` when recorded), sorted; empty for runs
    /// that record none (sim).
    pub kernels: Vec<String>,
}

/// A side-by-side comparison.
#[derive(Debug, Clone, Default)]
pub struct Pair {
    /// RUN_DIR.
    pub left: Side,
    /// OTHER.
    pub right: Side,
    /// Every metric of every run both sides hold.
    pub rows: Vec<Row>,
    /// Runs only one side holds, and seeds that differ.
    pub notes: Vec<String>,
}

struct Flat {
    values: BTreeMap<String, Value>,
    env: BTreeMap<String, Value>,
    overrides: Vec<crate::model::tolerance::ToleranceOverride>,
    seed: Option<u64>,
    baseline: Baseline,
}

/// A run's values and its tolerances, and a note when its baseline exists but cannot be used.
fn flatten(run: &Run, tolerances: &Path) -> ((String, String), Flat, Option<String>) {
    let (name, backend) = match run {
        Run::Scenario(e) => (e.scenario.clone(), e.backend.clone()),
        Run::Latency(n, v) => {
            (n.clone(), compare::latency_environment(v)["kind"].as_str().unwrap_or("local").to_owned())
        }
    };
    // Only the tolerances: where there is no baseline the defaults apply, and where there is
    // one that cannot be read the defaults apply too, said in a note (never silently).
    let (keep, note) = match baseline::path_for(tolerances, &backend, &name)
        .and_then(|p| baseline::load(&p, &name, &backend))
    {
        Ok(b) => (Some(b), None),
        Err(baseline::BaselineError::Missing { .. }) => (None, None),
        Err(e) => (None, Some(format!("{name} [{backend}]: default tolerances, since {e}"))),
    };
    let flat = match run {
        Run::Scenario(e) => Flat {
            values: baseline::entry_values(e).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            env: e.environment.clone(),
            overrides: e.tolerance.clone(),
            seed: Some(e.seed),
            baseline: baseline::from_entry(e, keep.as_ref()),
        },
        Run::Latency(n, v) => Flat {
            values: compare::latency_values(v),
            env: compare::latency_environment(v),
            overrides: Vec::new(),
            seed: None,
            baseline: compare::latency_baseline(n, v, keep.as_ref()),
        },
    };
    ((name, backend), flat, note)
}

fn kernel_of(env: &BTreeMap<String, Value>) -> Option<String> {
    let release = env.get("kernel_release").and_then(Value::as_str)?;
    Some(match env.get("kernel_line").and_then(Value::as_str) {
        Some(line) => format!("{release} (line {line})"),
        None => release.to_owned(),
    })
}

fn side(dir: &Path, runs: &BTreeMap<(String, String), Flat>) -> Side {
    let mut kernels: Vec<String> = runs.values().filter_map(|f| kernel_of(&f.env)).collect();
    kernels.sort();
    kernels.dedup();
    Side { dir: dir.display().to_string(), kernels }
}

/// Compares the runs of `left` with those of `right` by name and backend. `tolerances` is the
/// baselines folder whose tolerances apply where it holds the run (else the defaults).
pub fn pair(left_dir: &Path, left: &[Run], right_dir: &Path, right: &[Run], tolerances: &Path) -> Pair {
    let mut notes = Vec::new();
    let mut flat = |runs: &[Run]| -> BTreeMap<_, _> {
        runs.iter()
            .map(|r| {
                let (key, f, note) = flatten(r, tolerances);
                if let Some(n) = note.filter(|n| !notes.contains(n)) {
                    notes.push(n);
                }
                (key, f)
            })
            .collect()
    };
    let (l, r) = (flat(left), flat(right));
    let mut p = Pair { left: side(left_dir, &l), right: side(right_dir, &r), notes, ..Default::default() };
    for ((name, backend), a) in &l {
        let Some(b) = r.get(&(name.clone(), backend.clone())) else {
            p.notes.push(format!("{name} [{backend}]: only in {}", p.left.dir));
            continue;
        };
        if a.seed != b.seed {
            let s = |x: Option<u64>| x.map_or("-".into(), |s| s.to_string());
            p.notes.push(format!("{name} [{backend}]: seeds differ ({} vs {})", s(a.seed), s(b.seed)));
        }
        // The right side is the reference; its metrics and the left's, in METRICS order.
        let mut keys: Vec<&String> = b.baseline.metrics.keys().chain(a.values.keys()).collect();
        keys.sort_by_key(|k| {
            (METRICS.iter().position(|d| d.name == k.as_str()).unwrap_or(METRICS.len()), *k)
        });
        keys.dedup();
        for k in keys {
            let missing = Value::from("missing");
            let left = a.values.get(k).cloned().unwrap_or_else(|| missing.clone());
            let right = b.values.get(k).cloned().unwrap_or_else(|| missing.clone());
            let (tolerance, status) = match b.baseline.metrics.get(k) {
                Some(m) => {
                    let (abs, rel) = a
                        .overrides
                        .iter()
                        .rev()
                        .find(|o| o.metric == *k && o.backend.as_deref().is_none_or(|x| x == backend))
                        .map_or((m.abs, m.rel), |o| (o.abs, o.rel));
                    let status = match a.values.get(k) {
                        Some(v) if k == "outcome" => compare::judge_outcome(&m.value, v),
                        Some(v) => compare::judge(m, abs, rel, v),
                        None => Status::Regressed,
                    };
                    (compare::tolerance_text(m, abs, rel), status)
                }
                None => ("-".into(), Status::Regressed),
            };
            p.rows.push(Row {
                name: name.clone(),
                backend: backend.clone(),
                metric: k.clone(),
                left,
                right,
                tolerance,
                status,
            });
        }
    }
    for (name, backend) in r.keys().filter(|k| !l.contains_key(*k)) {
        p.notes.push(format!("{name} [{backend}]: only in {}", p.right.dir));
    }
    p
}

impl Pair {
    /// Metrics that differ beyond their tolerance (either side).
    pub fn moved(&self) -> usize {
        self.rows.iter().filter(|r| r.status != Status::Same).count()
    }

    /// One Markdown table, both values per metric, each side's kernel in the header.
    pub fn to_markdown(&self) -> String {
        use crate::format::escape::markdown_cell as md;
        let head = |s: &Side| {
            let k = if s.kernels.is_empty() { "no kernel recorded".to_owned() } else { s.kernels.join(", ") };
            md(&format!("{} ({k})", s.dir))
        };
        let mut s = String::new();
        let _ = writeln!(s, "- A: {}\n- B: {}\n", head(&self.left), head(&self.right));
        let col = |c: &str, s: &Side| {
            if s.kernels.is_empty() {
                c.to_owned()
            } else {
                format!("{c}: {}", md(&s.kernels.join(", ")))
            }
        };
        let _ = writeln!(
            s,
            "| scenario | backend | metric | {} | {} | tolerance | |\n|---|---|---|---|---|---|---|",
            col("A", &self.left),
            col("B", &self.right)
        );
        for r in &self.rows {
            let word = match r.status {
                Status::Same => "",
                Status::Improved => "moved (A better)",
                Status::Regressed => "moved",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {word} |",
                md(&r.name),
                md(&r.backend),
                md(&r.metric),
                md(&compare::show(&r.left)),
                md(&compare::show(&r.right)),
                md(&r.tolerance)
            );
        }
        s.push('\n');
        for n in &self.notes {
            let _ = writeln!(s, "- note: {}", md(n));
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(s, "{} metrics side by side: {} moved.", self.rows.len(), self.moved());
        s
    }
}
