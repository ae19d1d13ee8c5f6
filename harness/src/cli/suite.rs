//! `suite`: every scenario of a folder on each backend, one suite folder with reports, summary,
//! index.md/html, junit.xml and results.ktap; progress with an ETA on stderr.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Instant;

use super::args::BackendArgs;
use crate::format::exit::Exit;
use crate::format::output;
use crate::regress::suite::{self, Progress};
use crate::regress::summary::Shard;

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
    /// The backends and their options.
    #[command(flatten)]
    pub backends: BackendArgs,
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
    /// QEMU runs at once (on this many threads; reports and output stay in order). Default: one
    /// per CPU this process may use. Where there are CPUs enough, each run's guest and the thread
    /// that drives it get a CPU of their own: two guests sharing CPUs slowed each other's hosts,
    /// and in virtual time that can move a daemon balanced on a knife edge (phc-jump-10s). 1
    /// runs one guest at a time.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Override every scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run each scenario N times, seeds s, s+1, ..., s+N-1 (s its own or --seed): each
    /// scenario's distribution is written (`NAME-distribution/`) and, where sim and QEMU both
    /// ran, judged on distributions in place of each seed's comparison. `baseline` makes one
    /// baseline of a scenario's repeats, with tolerances from their spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub repeat: u16,
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
    if let Err(e) = super::args::no_repeats("--backend", &args.backends.backend) {
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
    let repeat = usize::from(args.repeat);
    if repeat > 1 {
        if args.shard.is_some() {
            return usage(
                "--repeat with --shard: a shard's repeats cannot be merged; repeat without --shard",
            );
        }
        scenarios = match crate::run::batch::repeated(&scenarios, repeat) {
            Ok(v) => v,
            Err(e) => return usage(e),
        };
    }
    // The user's kernel, unpacked for a QEMU run, lives until the runs are done.
    let (backends, _kernel) = match args.backends.backends(None, false) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let opts = suite::Options {
        backends,
        filter: args.filter.clone(),
        shard: args.shard,
        full_series: args.full_series,
        jobs: crate::run::batch::default_jobs(args.jobs),
        out: args.out.clone(),
        repeat,
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
