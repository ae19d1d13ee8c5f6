//! `compare`: a run against the baselines, or runs side by side (`--against`, repeatable).

use std::path::PathBuf;

use crate::format::exit::Exit;
use crate::format::output;
use crate::regress::compare;

fn usage(msg: impl std::fmt::Display) -> Exit {
    say!("phc-harness: {msg}");
    Exit::Usage
}

/// Arguments of `compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// A suite folder, a `run --out` folder, or a folder with latency.json files.
    pub run_dir: PathBuf,
    /// The baselines.
    #[arg(long, default_value = "results/baselines")]
    pub baseline: PathBuf,
    /// Compare latency across different set-ups (kernel, QEMU, CPU model, accel, command line).
    #[arg(long)]
    pub allow_different_host: bool,
    /// Put RUN_DIR side by side with this run (another kernel line, say) instead of comparing it
    /// with the baselines, judged with the baselines' tolerances (`--baseline`, else the
    /// defaults). Repeat it for a matrix (one folder per kernel): one table, one column per
    /// folder, each judged against the first OTHER_RUN_DIR. Differences are `moved`, exit 0,
    /// unless `--fail-on-change`.
    #[arg(long, value_name = "OTHER_RUN_DIR")]
    pub against: Vec<PathBuf>,
    /// With `--against`: exit 1 when a metric moved.
    #[arg(long, requires = "against")]
    pub fail_on_change: bool,
}

/// `phc-harness compare`: prints what moved as Markdown. Exit 0: no regression; 1: a metric
/// regressed; 2: a baseline missing or malformed, a run not comparable, bad input.
pub fn compare(args: CompareArgs) -> Exit {
    if !args.against.is_empty() {
        return side_by_side(&args);
    }
    if !args.baseline.is_dir() {
        return usage(format!(
            "{}: no baseline folder; promote a run with `phc-harness baseline RUN_DIR --baseline {}`",
            args.baseline.display(),
            args.baseline.display()
        ));
    }
    let runs = match compare::load_runs(&args.run_dir) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let c = compare::compare(&runs, &args.baseline, args.allow_different_host);
    output::out(&c.to_markdown());
    if !c.errors.is_empty() {
        for e in &c.errors {
            say!("phc-harness: {e}");
        }
        Exit::Usage
    } else if c.regressions() > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    }
}

/// `compare RUN_DIR --against OTHER [--against MORE ...]`: one Markdown table with every run's
/// values. Exit 0, or 1 with `--fail-on-change` when a metric moved; 2 on bad input.
fn side_by_side(args: &CompareArgs) -> Exit {
    let dirs: Vec<&std::path::Path> =
        std::iter::once(args.run_dir.as_path()).chain(args.against.iter().map(PathBuf::as_path)).collect();
    let mut loaded = Vec::with_capacity(dirs.len());
    for d in &dirs {
        match compare::load_runs(d) {
            Ok(r) => loaded.push(r),
            Err(e) => return usage(e),
        }
    }
    let sides: Vec<(&std::path::Path, &[compare::Run])> =
        dirs.iter().zip(&loaded).map(|(d, r)| (*d, r.as_slice())).collect();
    let p = crate::regress::compare_pair::pair(&sides, &args.baseline);
    output::out(&p.to_markdown());
    if p.rows.is_empty() {
        return usage(format!(
            "{} and {}: no run in common (same scenario, latency or probe name and backend)",
            args.run_dir.display(),
            args.against.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    if args.fail_on_change && p.moved() > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    }
}
