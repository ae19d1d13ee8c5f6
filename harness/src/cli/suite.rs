//! The regression workflow's commands: `suite` (every scenario of a folder, one suite folder
//! with reports, summary, index.md/html, junit.xml and results.ktap), `compare` (a run against
//! `results/baselines`), `baseline` (promote a run) and `merge` (join shard folders).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::args::AccelArg;
use crate::format::exit::Exit;
use crate::format::output;
use crate::regress::baseline;
use crate::regress::compare;
use crate::regress::suite::{self, Backend, Progress};
use crate::regress::summary::{Outcome, Shard};
use crate::run::backend::qemu::{self, find_agent_bin, ClockMode, QemuOptions};

/// Backends a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteBackend {
    /// mock-phc's world in virtual time.
    Sim,
    /// A QEMU guest with the real chronyd.
    Qemu,
    /// This machine's own PHC (/dev/ptp_hyperv, /dev/ptpN) and daemon, in wall-clock time.
    Local,
}

/// What `suite` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteFormat {
    /// KTAP v1 (as results.ktap).
    Ktap,
    /// summary.json.
    Json,
    /// index.md.
    Md,
}

/// Arguments of `suite`.
#[derive(Debug, clap::Args)]
pub struct SuiteArgs {
    /// The folder of scenario files.
    #[arg(default_value = "scenarios")]
    pub dir: PathBuf,
    /// Backends; `sim,qemu` runs both and compares them (fidelity).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sim")]
    pub backend: Vec<SuiteBackend>,
    /// Only scenarios whose name matches one of these comma-separated globs (`*`, `?`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only part I of N of the selection (by sorted scenario name, round robin); `merge` joins
    /// the parts.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// The suite folder (replaced run by run; summary and indexes written at the end).
    #[arg(long, default_value = "results/runs/suite")]
    pub out: PathBuf,
    /// What to print on stdout (progress goes to stderr).
    #[arg(long, value_enum, default_value_t = SuiteFormat::Ktap)]
    pub format: SuiteFormat,
    /// Keep whole offset series in report.json (long runs are decimated by default).
    #[arg(long)]
    pub full_series: bool,
    /// Override every scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// QEMU backend: the static harness binary for the guest (default: PHC_AGENT_BIN, or what
    /// ci/build-agent.sh builds).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// QEMU backend: acceleration.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// QEMU backend: the guest's time (`virtual` is fast and repeatable).
    #[arg(long, value_enum, default_value_t = ClockMode::Virtual)]
    pub clock: ClockMode,
    /// QEMU backend: longest wait from starting QEMU to the guest agent's first answer.
    #[arg(long, default_value_t = 120.0, value_parser = crate::cli::args::boot_timeout_s)]
    pub boot_timeout_s: f64,
    /// QEMU backend: the guest kernel.
    #[command(flatten)]
    pub kernel: super::args::KernelArgs,
    /// Local backend: the PHC to observe (default /dev/ptp_hyperv, else the first in sysfs).
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// Local backend: let `guest_step` scenarios step this machine's clock (it is stepped back
    /// onto the PHC afterwards if the daemon has not done so).
    #[arg(long)]
    pub allow_clock_writes: bool,
}

fn usage(msg: impl std::fmt::Display) -> Exit {
    say!("phc-harness: {msg}");
    Exit::Usage
}

fn eta(elapsed: f64, done: f64, total: f64) -> String {
    if done <= 0.0 {
        return "ETA -".into();
    }
    format!("ETA {:.0} s", (elapsed / done * (total - done)).max(0.0))
}

/// `phc-harness suite`. Exit 0: every run passed, had no checks or was skipped; 1: a verdict
/// failed, a run aborted or sim and QEMU disagree; 2: bad input or an output not written.
pub fn suite(args: SuiteArgs) -> Exit {
    if let Err(e) = super::args::no_repeats("--backend", &args.backend) {
        return usage(e);
    }
    if !args.dir.is_dir() {
        return usage(format!("{}: not a folder of scenario files", args.dir.display()));
    }
    let all = match crate::run::runner::resolve(&[args.dir.to_string_lossy().into_owned()]) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let (mut scenarios, selected) = suite::select(all, args.filter.as_deref(), args.shard);
    if selected == 0 {
        return usage(format!(
            "{}: no scenario matches{}",
            args.dir.display(),
            args.filter.as_ref().map_or(String::new(), |f| format!(" --filter {f}"))
        ));
    }
    if let Some(seed) = args.seed {
        for s in &mut scenarios {
            s.world.seed = seed;
        }
    }
    let backends: Vec<Backend> = args
        .backend
        .iter()
        .map(|b| match b {
            SuiteBackend::Sim => Backend::Sim,
            SuiteBackend::Qemu => Backend::Qemu,
            SuiteBackend::Local => Backend::Local,
        })
        .collect();
    let local = if backends.contains(&Backend::Local) {
        if let Err(e) = phc_qemu::signals::install() {
            say!("phc-harness: cannot handle SIGINT/SIGTERM: {e}");
        }
        // Checked once here, so a wrong device is one line and exit 2, not a suite of aborts.
        match crate::run::backend::local::find_device(args.device.as_deref()).and_then(|d| {
            crate::run::backend::local::LocalBackend::open(&d, args.allow_clock_writes).map(|_| d)
        }) {
            Ok(d) => Some((d, args.allow_clock_writes)),
            Err(e) => return usage(format!("--backend local: {e}")),
        }
    } else {
        None
    };
    // Unpacked only for a QEMU run: the temp folder lives until the runs are done.
    let kernel = match backends.contains(&Backend::Qemu).then(|| args.kernel.prepare()) {
        Some(Ok(k)) => k,
        Some(Err(e)) => return usage(e),
        None => None,
    };
    let qemu_opts = if backends.contains(&Backend::Qemu) {
        qemu::prepare_process();
        match find_agent_bin(args.agent_bin.clone()) {
            Ok(agent_bin) => Some(QemuOptions {
                accel: args.accel.choice(),
                boot_timeout: Duration::from_secs_f64(args.boot_timeout_s.clamp(0.1, 3600.0)),
                clock: args.clock,
                kernel_dir: kernel.as_ref().map(|k| k.path.clone()),
                ..QemuOptions::new(agent_bin)
            }),
            Err(e) => return usage(e),
        }
    } else {
        None
    };
    let opts = suite::Options {
        backends,
        qemu: qemu_opts,
        filter: args.filter.clone(),
        shard: args.shard,
        full_series: args.full_series,
        out: args.out.clone(),
        local,
    };
    let tty = std::io::stderr().is_terminal();
    let wall = Instant::now();
    let mut started = Instant::now();
    let mut place = String::new();
    let r = suite::run(&scenarios, selected, &opts, |p| match p {
        Progress::Start(k, n, name, backend, done, total) => {
            started = Instant::now();
            place = format!("[{k}/{n}] {name} [{backend}]");
            if tty {
                let line = format!("{place} ... {}", eta(wall.elapsed().as_secs_f64(), done, total));
                eprint!("\r\x1b[K{}", crate::format::escape::terminal_line(&line));
            }
        }
        Progress::Done(e, done, total) => {
            let took = started.elapsed().as_secs_f64();
            let why = e.reason.as_ref().map_or(String::new(), |r| format!(": {r}"));
            if tty {
                eprint!("\r\x1b[K");
            }
            let eta = eta(wall.elapsed().as_secs_f64(), done, total);
            say!("{place} {} in {took:.2} s{why} ({eta})", e.outcome.word());
        }
    });
    let (summary, stopped) = match r {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    say!(
        "suite: {} in {:.1} s: {}; reports in {}",
        summary.verdict.to_uppercase(),
        wall.elapsed().as_secs_f64(),
        summary.totals.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        args.out.display()
    );
    output::out(&match args.format {
        SuiteFormat::Ktap => crate::regress::results::ktap(&summary),
        SuiteFormat::Json => summary.to_json(),
        SuiteFormat::Md => crate::regress::render::markdown(&summary),
    });
    if let Some(sig) = stopped {
        say!("phc-harness: {sig}: stopped; the summary covers the runs that ended");
        return Exit::Interrupted(sig);
    }
    if summary.failed() {
        Exit::CheckFailed
    } else {
        Exit::Ok
    }
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
    /// defaults). Differences are `moved`, exit 0, unless `--fail-on-change`.
    #[arg(long, value_name = "OTHER_RUN_DIR")]
    pub against: Option<PathBuf>,
    /// With `--against`: exit 1 when a metric moved.
    #[arg(long, requires = "against")]
    pub fail_on_change: bool,
}

/// `phc-harness compare`: prints what moved as Markdown. Exit 0: no regression; 1: a metric
/// regressed; 2: a baseline missing or malformed, a run not comparable, bad input.
pub fn compare(args: CompareArgs) -> Exit {
    if let Some(other) = &args.against {
        return side_by_side(&args, other);
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

/// `compare RUN_DIR --against OTHER`: one Markdown table with both runs' values. Exit 0, or 1
/// with `--fail-on-change` when a metric moved; 2 on bad input.
fn side_by_side(args: &CompareArgs, other: &std::path::Path) -> Exit {
    let (left, right) = match (compare::load_runs(&args.run_dir), compare::load_runs(other)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let p = crate::regress::compare_pair::pair(&args.run_dir, &left, other, &right, &args.baseline);
    if p.rows.is_empty() {
        output::out(&p.to_markdown());
        return usage(format!(
            "{} and {}: no run in common (same scenario or latency name and backend)",
            args.run_dir.display(),
            other.display()
        ));
    }
    output::out(&p.to_markdown());
    if args.fail_on_change && p.moved() > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    }
}

/// Arguments of `baseline`.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// The run to promote: a suite folder, a `run --out` folder, or latency.json folders.
    pub run_dir: PathBuf,
    /// The baselines folder to write into (`<backend>/<name>.json`).
    #[arg(long, default_value = "results/baselines")]
    pub baseline: PathBuf,
    /// Also remove the baselines of the run's backends that the run has no scenario for (a
    /// scenario removed or renamed). Only for a whole suite (no --filter, no --shard).
    #[arg(long)]
    pub prune: bool,
}

/// `phc-harness baseline`: writes one baseline per run, keeping the tolerances of the baseline
/// it replaces. Aborted runs are refused (nothing is written then).
pub fn promote(args: BaselineArgs) -> Exit {
    let runs = match compare::load_runs(&args.run_dir) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
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
    let mut planned = Vec::new();
    for r in &runs {
        let (name, backend) = match r {
            compare::Run::Scenario(e) => (e.scenario.clone(), e.backend.clone()),
            compare::Run::Latency(n, v) => {
                let env = compare::latency_environment(v);
                (n.clone(), env["kind"].as_str().unwrap_or("local").to_owned())
            }
        };
        let path = match baseline::path_for(&args.baseline, &backend, &name) {
            Ok(p) => p,
            Err(e) => return usage(e),
        };
        let keep = match baseline::load(&path, &name, &backend) {
            Ok(b) => Some(b),
            Err(baseline::BaselineError::Missing { .. }) => None,
            Err(e) => return usage(format!("{e}; not replaced (fix or remove it to regenerate)")),
        };
        let b = match r {
            compare::Run::Scenario(e) => baseline::from_entry(e, keep.as_ref()),
            compare::Run::Latency(n, v) => compare::latency_baseline(n, v, keep.as_ref()),
        };
        planned.push((path, b));
    }
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
    match crate::regress::summary::Summary::load(&args.run_dir) {
        Ok(s) if s.filter.is_none() && s.shard.is_none() => {}
        _ => {
            return Err("--prune needs a whole suite folder (summary.json without --filter or --shard)".into())
        }
    }
    if runs.iter().any(|r| matches!(r, compare::Run::Latency(..))) {
        return Err("--prune is for suite folders, not latency runs".into());
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

/// Arguments of `merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shard folders (each written by `suite --shard I/N`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged suite folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// `phc-harness merge`: one suite folder from its shards. Exit 0/1 as the merged suite's
/// verdict; 2 when the folders do not make one suite.
pub fn merge(args: MergeArgs) -> Exit {
    match crate::regress::merge::merge(&args.dirs, &args.out) {
        Ok(s) => {
            output::out(&crate::regress::results::ktap(&s));
            if s.failed() {
                Exit::CheckFailed
            } else {
                Exit::Ok
            }
        }
        Err(e) => usage(e),
    }
}

/// Arguments of `plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// A latency document (`latency --format json > latency.json`).
    pub latency_json: PathBuf,
    /// Where to write latency-histogram.svg and latency-cdf.svg (default: beside the file).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `phc-harness plot`: a latency run's histogram per method and its CDFs, as SVG. The input is
/// a regular file (a FIFO, a device or `/dev/stdin` on a pipe is refused) of at most
/// `compare::MAX_LATENCY_BYTES`. The plots go into `--out` (a folder, made if missing) or else
/// beside the input, only when the input path is itself a regular file (not a symlink, so
/// `/dev/stdin` never puts them into `/dev`). A symlink or anything but a regular file where a
/// plot goes is refused, and each plot replaces its file atomically.
pub fn plot(args: PlotArgs) -> Exit {
    let input = &args.latency_json;
    let text = match phc::input::read_text(
        input,
        crate::regress::compare::MAX_LATENCY_BYTES,
        phc::input::Links::Follow,
    ) {
        Ok(t) => t,
        Err(e) => return usage(format!("{}: {e}", input.display())),
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return usage(format!("{}: not JSON: {e}", input.display())),
    };
    let ds = crate::judge::plot_latency::distributions(&doc);
    if ds.is_empty() {
        return usage(format!(
            "{}: no round-trip histogram in it (not a latency document?)",
            input.display()
        ));
    }
    let dir = match &args.out {
        Some(d) => {
            match std::fs::metadata(d) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => {
                    return usage(format!("{}: not a folder ({})", d.display(), phc::input::file_kind(&m)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Err(e) = std::fs::create_dir_all(d) {
                        return usage(format!("{}: {e}", d.display()));
                    }
                }
                Err(e) => return usage(format!("{}: {e}", d.display())),
            }
            d.clone()
        }
        None => {
            match std::fs::symlink_metadata(input) {
                Ok(m) if m.is_file() => {}
                _ => {
                    return usage(format!(
                        "{}: not a regular file itself (a symlink?): give --out for the plots",
                        input.display()
                    ))
                }
            }
            input
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_owned()
        }
    };
    let title = doc["device"].as_str().unwrap_or("latency");
    let plots = [
        ("latency-histogram.svg", crate::judge::plot_latency::histogram_svg(title, &ds)),
        ("latency-cdf.svg", crate::judge::plot_latency::cdf_svg(title, &ds)),
    ];
    for (name, _) in &plots {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => {
                return usage(format!(
                    "{}: {}, not replaced by a plot",
                    path.display(),
                    phc::input::file_kind(&m)
                ))
            }
            _ => {}
        }
    }
    for (name, svg) in plots {
        let path = dir.join(name);
        if let Err(e) = crate::format::files::write_file_atomic(&path, svg.as_bytes()) {
            return usage(format!("{}: {e}", path.display()));
        }
        output::out(&format!("{}\n", path.display()));
    }
    Exit::Ok
}
