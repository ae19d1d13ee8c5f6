//! `compare RUN_DIR --against OTHER [--against MORE ...]`: runs side by side (kernel lines, a
//! kernel matrix), none promoted to a baseline. Every metric of every run the first OTHER and
//! any other folder hold is one row with every folder's value, judged against the first OTHER
//! (the reference, B) with the tolerances a baseline would carry (the committed baseline's
//! where there is one, else the defaults, with the scenario's own overrides on top). A
//! difference is `moved`: this is a review of set-ups, not a regression gate, so seeds and
//! set-ups may differ and are shown rather than refused. Scenarios, latency runs (ratios to the
//! same run's clock_gettime) and driver probes (each check's result) all take part.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::model::tolerance::METRICS;
use crate::regress::baseline::{self, Baseline};
use crate::regress::compare::{self, Run, Status};

/// One metric of one run, every side.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Scenario (or latency or probe run) name.
    pub name: String,
    /// Backend.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// Each side's value, in the sides' order (`"missing"` where a side lacks the metric or
    /// the run).
    pub values: Vec<Value>,
    /// The tolerance applied, as text.
    pub tolerance: String,
    /// Each side against the reference (side 1), in the sides' order; the reference's own, and
    /// that of a side without the run (a note says so), is `Same`. `Improved`/`Regressed` are
    /// both "moved", with a direction.
    pub status: Vec<Status>,
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
    /// RUN_DIR (A), the reference OTHER (B), then any more (C, D, ...).
    pub sides: Vec<Side>,
    /// Every metric of every run the reference and another side hold.
    pub rows: Vec<Row>,
    /// Runs only some sides hold, and seeds that differ.
    pub notes: Vec<String>,
}

/// The letter a side goes by: A, B, ... Z, then S27, S28, ...
pub fn letter(i: usize) -> String {
    if i < 26 {
        char::from(b'A' + i as u8).to_string()
    } else {
        format!("S{}", i + 1)
    }
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
    let (name, backend) = run.key();
    // Only the tolerances: where there is no baseline the defaults apply, and where there is
    // one that cannot be read the defaults apply too, said in a note (never silently).
    let (keep, note) = match baseline::path_for(tolerances, &backend, &name)
        .and_then(|p| baseline::load(&p, &name, &backend))
    {
        Ok(b) => (Some(b), None),
        Err(baseline::BaselineError::Missing { .. }) => (None, None),
        Err(e) => (None, Some(format!("{name} [{backend}]: default tolerances, since {e}"))),
    };
    let flat = Flat {
        values: run.values(),
        env: run.environment(),
        overrides: run.overrides(),
        seed: run.seed(),
        baseline: run.baseline(keep.as_ref()),
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

/// Puts the runs of every side next to each other by name and backend: `sides[0]` is RUN_DIR,
/// `sides[1]` the reference every other side is judged against, then any more. `tolerances`
/// is the baselines folder whose tolerances apply where it holds the run (else the defaults).
pub fn pair(sides: &[(&Path, &[Run])], tolerances: &Path) -> Pair {
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
    let flats: Vec<BTreeMap<(String, String), Flat>> = sides.iter().map(|(_, runs)| flat(runs)).collect();
    let mut p = Pair {
        sides: sides.iter().zip(&flats).map(|((dir, _), f)| side(dir, f)).collect(),
        notes,
        ..Default::default()
    };
    if flats.len() < 2 {
        return p;
    }
    let reference = &flats[1];
    // Every run any side holds, in name order: the reference's, then the others'.
    let mut keys: Vec<&(String, String)> = flats.iter().flat_map(|f| f.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (name, backend) = key;
        let holders: Vec<usize> = (0..flats.len()).filter(|i| flats[*i].contains_key(key)).collect();
        let Some(b) = reference.get(key).filter(|_| holders.len() > 1) else {
            let only: Vec<String> = holders.iter().map(|i| p.sides[*i].dir.clone()).collect();
            p.notes.push(format!("{name} [{backend}]: only in {}", only.join(", ")));
            continue;
        };
        if holders.len() < flats.len() {
            let lacking: Vec<String> =
                (0..flats.len()).filter(|i| !holders.contains(i)).map(|i| p.sides[i].dir.clone()).collect();
            p.notes.push(format!("{name} [{backend}]: not in {}", lacking.join(", ")));
        }
        let seeds: Vec<Option<u64>> = holders.iter().map(|i| flats[*i][key].seed).collect();
        if seeds.iter().any(|s| *s != b.seed) {
            let s = |x: &Option<u64>| x.map_or("-".into(), |s| s.to_string());
            p.notes.push(format!(
                "{name} [{backend}]: seeds differ ({})",
                seeds.iter().map(s).collect::<Vec<_>>().join(" vs ")
            ));
        }
        // The reference's metrics and every other side's, in METRICS order.
        let mut metrics: Vec<&String> = b.baseline.metrics.keys().collect();
        for i in &holders {
            metrics.extend(flats[*i][key].values.keys());
        }
        metrics.sort_by_key(|k| {
            (METRICS.iter().position(|d| d.name == k.as_str()).unwrap_or(METRICS.len()), *k)
        });
        metrics.dedup();
        for k in metrics {
            let missing = Value::from("missing");
            let values: Vec<Value> = flats
                .iter()
                .map(|f| f.get(key).and_then(|x| x.values.get(k)).cloned().unwrap_or_else(|| missing.clone()))
                .collect();
            let mut tolerance = "-".to_owned();
            let status: Vec<Status> = flats
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if i == 1 {
                        return Status::Same;
                    }
                    // A side without the run is in the notes ("not in"), not a move.
                    let Some(a) = f.get(key) else { return Status::Same };
                    let Some(m) = b.baseline.metrics.get(k) else { return Status::Regressed };
                    let (abs, rel) = a
                        .overrides
                        .iter()
                        .rev()
                        .find(|o| o.metric == *k && o.backend.as_deref().is_none_or(|x| x == backend))
                        .map_or((m.abs, m.rel), |o| (o.abs, o.rel));
                    if i == 0 || tolerance == "-" {
                        tolerance = compare::tolerance_text(m, abs, rel);
                    }
                    match a.values.get(k) {
                        Some(v) if k == "outcome" => compare::judge_outcome(&m.value, v),
                        Some(v) => compare::judge(m, abs, rel, v),
                        None => Status::Regressed,
                    }
                })
                .collect();
            p.rows.push(Row {
                name: name.clone(),
                backend: backend.clone(),
                metric: k.clone(),
                values,
                tolerance,
                status,
            });
        }
    }
    p
}

impl Pair {
    /// Metrics where some side differs from the reference beyond the tolerance.
    pub fn moved(&self) -> usize {
        self.rows.iter().filter(|r| r.status.iter().any(|s| *s != Status::Same)).count()
    }

    /// One Markdown table, every side's value per metric, each side's kernel in the header.
    pub fn to_markdown(&self) -> String {
        use crate::format::escape::markdown_cell as md;
        let head = |s: &Side| {
            let k = if s.kernels.is_empty() { "no kernel recorded".to_owned() } else { s.kernels.join(", ") };
            md(&format!("{} ({k})", s.dir))
        };
        let mut s = String::new();
        for (i, side) in self.sides.iter().enumerate() {
            let reference = if i == 1 && self.sides.len() > 2 { ", the reference" } else { "" };
            let _ = writeln!(s, "- {}{reference}: {}", letter(i), head(side));
        }
        s.push('\n');
        let col = |i: usize, s: &Side| {
            if s.kernels.is_empty() {
                letter(i)
            } else {
                format!("{}: {}", letter(i), md(&s.kernels.join(", ")))
            }
        };
        let cols: Vec<String> = self.sides.iter().enumerate().map(|(i, side)| col(i, side)).collect();
        let _ = writeln!(
            s,
            "| scenario | backend | metric | {} | tolerance | |\n|---|---|---|{}---|---|",
            cols.join(" | "),
            "---|".repeat(cols.len())
        );
        let two = self.sides.len() == 2;
        for r in &self.rows {
            let words: Vec<String> = r
                .status
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .filter_map(|(i, st)| match (st, two) {
                    (Status::Same, _) => None,
                    (Status::Improved, true) => Some("moved (A better)".to_owned()),
                    (Status::Regressed, true) => Some("moved".to_owned()),
                    (Status::Improved, false) => Some(format!("{} moved (better)", letter(i))),
                    (Status::Regressed, false) => Some(format!("{} moved", letter(i))),
                })
                .collect();
            let values: Vec<String> = r.values.iter().map(|v| md(&compare::show(v))).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                md(&r.name),
                md(&r.backend),
                md(&r.metric),
                values.join(" | "),
                md(&r.tolerance),
                words.join(", ")
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
