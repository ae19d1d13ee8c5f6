//! `baseline`: promotes a run to the baselines, keeping hand-set tolerances; `--prune` drops
//! the baselines of scenarios a whole suite no longer has.

use std::path::PathBuf;

use crate::format::exit::Exit;
use crate::format::output;
use crate::regress::summary::Outcome;
use crate::regress::{baseline, compare};

fn usage(msg: impl std::fmt::Display) -> Exit {
    say!("phc-harness: {msg}");
    Exit::Usage
}

/// Arguments of `baseline`.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// The run to promote: a suite folder, a `run --out` folder, or latency.json folders.
    /// Repeated runs of a scenario (`--repeat N`) become one baseline: the median of each
    /// metric, its spread, and a tolerance of two spreads (never below the metric's resolution).
    /// More folders pool their runs (several `--repeat` suites of one set-up: a QEMU run is
    /// not reproducible per seed, so each is a draw of its own).
    #[arg(required = true, num_args = 1..)]
    pub run_dirs: Vec<PathBuf>,
    /// The baselines folder to write into (`<backend>/<name>.json`).
    #[arg(long, default_value = "results/baselines")]
    pub baseline: PathBuf,
    /// Also remove the baselines of the run's backends that the run has no scenario for (a
    /// scenario removed or renamed). Only for a whole suite (no --filter, no --shard).
    #[arg(long)]
    pub prune: bool,
}

/// `phc-harness baseline`: writes one baseline per run, keeping the tolerances of the baseline
/// it replaces, or one per scenario of repeated runs (`--repeat`), with tolerances from their
/// spread. Aborted runs are refused (nothing is written then).
pub fn promote(args: BaselineArgs) -> Exit {
    let mut runs = Vec::new();
    for d in &args.run_dirs {
        match compare::load_runs(d) {
            Ok(r) => runs.extend(r),
            Err(e) => return usage(e),
        }
    }
    let aborted: Vec<String> = runs
        .iter()
        .filter_map(|r| match r {
            compare::Run::Scenario(e) if e.outcome == Outcome::Aborted => {
                Some(format!("{} [{}]", e.scenario, e.backend))
            }
            _ => None,
        })
        .collect();
    if !aborted.is_empty() {
        return usage(format!("not promoting a run with aborted scenarios: {}", aborted.join(", ")));
    }
    // Every path and every older baseline checked before anything is written: a name that is
    // not plain, a symlink on the way, or a baseline file that does not parse (its hand-set
    // tolerances would be lost) refuses the whole promotion.
    // Repeated runs of one scenario (seeds s, s+1, ...) become one baseline of their spread.
    let mut paths = Vec::new();
    let planned = compare::baselines(&runs, |name, backend| {
        let path = baseline::path_for(&args.baseline, backend, name).map_err(|e| e.to_string())?;
        let keep = match baseline::load(&path, name, backend) {
            Ok(b) => Some(b),
            Err(baseline::BaselineError::Missing { .. }) => None,
            Err(e) => return Err(format!("{e}; not replaced (fix or remove it to regenerate)")),
        };
        paths.push(path);
        Ok(keep)
    });
    let planned: Vec<(std::path::PathBuf, baseline::Baseline)> = match planned {
        Ok(p) => paths.into_iter().zip(p).collect(),
        Err(e) => return usage(e),
    };
    if args.prune {
        if let Err(e) = prunable(&args, &runs) {
            return usage(e);
        }
    }
    for (path, b) in &planned {
        if let Err(e) = baseline::save(path, b) {
            return usage(e);
        }
        output::out(&format!("{}\n", path.display()));
    }
    if args.prune {
        return prune(&args, &runs);
    }
    Exit::Ok
}

/// Checks that `--prune` may run: a whole suite folder (no filter, no shard).
fn prunable(args: &BaselineArgs, runs: &[compare::Run]) -> Result<(), String> {
    let [dir] = args.run_dirs.as_slice() else {
        return Err("--prune needs one whole suite folder, not several".into());
    };
    match crate::regress::summary::Summary::load(dir) {
        Ok(s) if s.filter.is_none() && s.shard.is_none() => {}
        _ => {
            return Err("--prune needs a whole suite folder (summary.json without --filter or --shard)".into())
        }
    }
    if runs.iter().any(|r| !matches!(r, compare::Run::Scenario(..))) {
        return Err("--prune is for suite folders, not latency or probe runs".into());
    }
    Ok(())
}

/// Removes the baselines of the run's backends that name no scenario of the run. Only regular
/// files directly in `<baselines>/<backend>/` (a real folder, not a symlink) whose names a
/// baseline could have (`<plain name>.json`) are removed; nothing else is touched.
fn prune(args: &BaselineArgs, runs: &[compare::Run]) -> Exit {
    let mut by_backend: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for r in runs {
        if let compare::Run::Scenario(e) = r {
            by_backend.entry(e.backend.as_str()).or_default().push(format!("{}.json", e.scenario));
        }
    }
    for (backend, names) in by_backend {
        let dir = match phc::input::join_inside(&args.baseline, backend) {
            Ok(d) => d,
            Err(e) => return usage(format!("{}: {e}", args.baseline.display())),
        };
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return usage(format!("{}: {e}", dir.display())),
        };
        for f in rd.filter_map(Result::ok) {
            let Some(name) = f.file_name().to_str().map(str::to_owned) else { continue };
            if !baseline::is_baseline_name(&name) || names.contains(&name) {
                continue;
            }
            // DirEntry::file_type does not follow a symlink: only a regular file is removed.
            if !f.file_type().is_ok_and(|t| t.is_file()) {
                say!("not removed {} (not a regular file)", f.path().display());
                continue;
            }
            if let Err(e) = std::fs::remove_file(f.path()) {
                return usage(format!("{}: {e}", f.path().display()));
            }
            say!("removed {} (no such scenario in the run)", f.path().display());
        }
    }
    Exit::Ok
}
