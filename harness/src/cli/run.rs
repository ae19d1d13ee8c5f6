//! The `run` and `scenarios` commands: resolve scenarios (a file, a folder, or the name of one
//! built into the binary), run them on a backend, write every report format to the output folder,
//! and print them (`--format json`: one JSON array, see JSON.md).

use std::io::IsTerminal;
use std::path::PathBuf;

use super::args::{BackendArg, BackendArgs};
use crate::format::exit::Exit;
use crate::format::output;
use crate::judge::fidelity;
use crate::judge::report::{Report, Verdict};
use crate::model::scenario::{self, Scenario, ScenarioError};
use crate::run::batch::{self, Step};
use crate::run::runner;

/// Output formats of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Terminal summary.
    Text,
    /// Markdown.
    Md,
    /// JSON (keys in JSON.md).
    Json,
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files, folders of them, or names of built-in scenarios (see `scenarios`).
    #[arg(required = true)]
    pub scenarios: Vec<String>,
    /// The backends and their options.
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the scenario's warm-up (seconds), e.g. to shorten real-time runs.
    #[arg(long, value_parser = crate::cli::args::warmup_s)]
    pub warmup_s: Option<f64>,
    /// Override the observation window (seconds) of real-time backends (qemu); the sim always
    /// observes the scenario's full window, so a shortened guest run can be compared with it.
    #[arg(long, value_parser = crate::cli::args::observe_s)]
    pub observe_s: Option<f64>,
    /// Output folder; each run writes report.{json,md,txt} and plot.svg in a subfolder.
    #[arg(long, default_value = "results/runs")]
    pub out: PathBuf,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Keep the whole offset series in report.json (series longer than 5000 observations are
    /// decimated by default; the metrics always come from the whole series).
    #[arg(long)]
    pub full_series: bool,
    /// Runs per scenario: seeds s, s+1, ..., s+N-1 (s the scenario's, or --seed), on every
    /// backend. On QEMU the seed draws what it draws on the sim where the harness plays it (the
    /// guest oscillator's wander path). After a scenario's N runs, its distribution (median,
    /// percentiles, range, outcome shares) goes to SCENARIO-distribution/ and, with both sim and
    /// qemu, sim against QEMU is judged on the distributions (k/N real runs inside the sim's
    /// range), which then decides the exit status instead of each seed's comparison.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub repeat: u16,
    /// QEMU runs at once (on this many threads; reports and output stay in order). Default: one
    /// per CPU this process may use. Where there are CPUs enough, each run's guest and the thread
    /// that drives it get a CPU of their own: two guests sharing CPUs slowed each other's hosts,
    /// and in virtual time that can move a daemon balanced on a knife edge (phc-jump-10s). 1
    /// runs one guest at a time.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

/// Arguments of `scenarios`.
#[derive(Debug, clap::Args)]
pub struct ScenariosArgs {
    /// List the files of this folder instead of the built-in scenarios.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What `run` prints on stdout: text or Markdown per report, or one JSON array whose elements
/// (one per scenario) are printed as each scenario ends.
struct Printer {
    format: Format,
    items: usize,
}

impl Printer {
    fn report(&self, r: &Report) {
        match self.format {
            Format::Text => output::out(&r.to_text()),
            Format::Md => output::out(&r.to_markdown()),
            Format::Json => {}
        }
    }

    fn fidelity(&self, f: &fidelity::Fidelity) {
        if self.format != Format::Json {
            output::out(&f.to_markdown());
        }
    }

    fn distribution(&mut self, d: &crate::judge::distribution::Distribution) {
        if self.format != Format::Json {
            output::out(&d.to_markdown());
            return;
        }
        if !output::stdout_open() {
            return;
        }
        let item = serde_json::json!({ "scenario": d.scenario, "distribution": d });
        let sep = if self.items == 0 { "[\n" } else { ",\n" };
        self.items += 1;
        output::out(&format!("{sep}{}", serde_json::to_string_pretty(&item).unwrap_or_default()));
    }

    fn scenario_done(&mut self, name: &str, reports: &[Report], f: Option<&fidelity::Fidelity>) {
        if self.format != Format::Json || !output::stdout_open() {
            return;
        }
        let item = serde_json::json!({
            "scenario": name,
            "reports": reports.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect::<Vec<_>>(),
            "fidelity": f.map(|f| serde_json::to_value(f).unwrap_or_default()),
        });
        let sep = if self.items == 0 { "[\n" } else { ",\n" };
        self.items += 1;
        output::out(&format!("{sep}{}", serde_json::to_string_pretty(&item).unwrap_or_default()));
    }

    fn finish(&self) {
        if self.format == Format::Json {
            output::out(if self.items == 0 { "[]\n" } else { "\n]\n" });
        }
    }
}

fn usage(msg: impl std::fmt::Display) -> Exit {
    say!("phc-harness: {msg}");
    Exit::Usage
}

/// `phc-harness run`. Exit 0: every run passed or had no checks (and agreed, for sim,qemu); 1: a verdict failed,
/// a run aborted or sim and qemu disagree; 2: bad input, a backend that could not start, or an
/// output that could not be written.
pub fn run(args: RunArgs) -> Exit {
    let mut scenarios = match runner::resolve(&args.scenarios) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    for s in &mut scenarios {
        if let Some(seed) = args.seed {
            s.world.seed = seed;
        }
        if let Some(w) = args.warmup_s {
            s.timeline.warmup_s = w;
        }
        if let Err(e) = s.revalidate() {
            return usage(format!("{}: {e}", s.name));
        }
        if let Some(o) = args.observe_s {
            let mut q = s.clone();
            q.timeline.observe_s = o;
            if let Err(e) = q.revalidate() {
                return usage(format!("{}: --observe-s: {e}", s.name));
            }
        }
    }
    if args.observe_s.is_some() && !args.backends.backend.contains(&BackendArg::Qemu) {
        say!("phc-harness: note: --observe-s applies to the qemu backend only");
    }
    // The user's kernel, unpacked for a QEMU run, lives until the runs are done.
    let (backends, _kernel) = match args.backends.backends(args.observe_s, true) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    for s in &scenarios {
        for b in &backends {
            if let Some((clock, why)) = b.clock_for(s) {
                say!(
                    "phc-harness: note: {} runs on {} with --clock {} ({why}; --clock virtual forces virtual time)",
                    s.name,
                    b.name(),
                    clock.name()
                );
            }
        }
    }
    let repeat = usize::from(args.repeat);
    if repeat > 1 {
        scenarios = match batch::repeated(&scenarios, repeat) {
            Ok(v) => v,
            Err(e) => return usage(e),
        };
    }
    let tty = std::io::stderr().is_terminal();
    let mut printer = Printer { format: args.format, items: 0 };
    let mut exit = Exit::Ok;
    let mut not_run = 0;
    let mut ran = 0;
    let opts = batch::Options {
        out: args.out.clone(),
        full_series: args.full_series,
        progress: true,
        jobs: batch::default_jobs(args.jobs),
        repeat,
    };
    let stopped = batch::run(&scenarios, &backends, &opts, |step| match step {
        Step::Start { .. } => {}
        Step::Skipped { scenario, backend, why } => {
            say!("phc-harness: {}: not run on {backend}: {why}", scenario.name);
            not_run += 1;
        }
        Step::Ran { scenario, report, dir, took } => {
            ran += 1;
            if matches!(report.verdict, Verdict::Fail | Verdict::Aborted) {
                exit = exit.max(Exit::CheckFailed);
            }
            if let Some(why) = &report.abort_reason {
                say!("phc-harness: {} [{}]: aborted: {why}", scenario.name, report.backend);
            }
            printer.report(report);
            let took = took.as_secs_f64();
            if report.abort_reason.is_some() {
                // How far it got, not a speed: an aborted run did not play the scenario.
                let reached = report.series.last().map_or(0.0, |o| o.t_s);
                say!(
                    "  aborted at {reached:.1} s of scenario after {took:.1} s; reports in {}",
                    dir.display()
                );
            } else if tty || took > 2.0 {
                let scenario_s = report.series.last().map_or(scenario.duration_s(), |o| o.t_s);
                say!(
                    "  {scenario_s:.1} s of scenario in {took:.3} s ({:.1}x real time); reports in {}",
                    scenario_s / took.max(1e-9),
                    dir.display()
                );
            }
        }
        // With repeats each seed's comparison is written, not printed, and the distribution
        // judges.
        Step::Compared { fidelity, .. } if repeat == 1 => {
            printer.fidelity(fidelity);
            if !fidelity.agrees {
                exit = exit.max(Exit::CheckFailed);
            }
        }
        Step::Compared { .. } => {}
        Step::Distribution { distribution, dir, .. } => {
            printer.distribution(distribution);
            if distribution.fidelity.as_ref().is_some_and(|f| !f.agrees) {
                exit = exit.max(Exit::CheckFailed);
            }
            say!(
                "phc-harness: {}: distribution of {repeat} runs in {}",
                distribution.scenario,
                dir.display()
            );
        }
        Step::Done { scenario, reports, fidelity } => {
            printer.scenario_done(&scenario.name, reports, fidelity)
        }
    });
    printer.finish();
    if ran > 0 && output::stdout_open() {
        // The one line that says where every report of this run went, however it printed (not
        // after a stdout that failed: that is said in its own one line, or not at all).
        say!(
            "phc-harness: {ran} run(s); reports (report.json, report.md, report.txt, plot.svg) in {}",
            args.out.display()
        );
    }
    match stopped {
        Err(e) => return usage(e),
        Ok(Some(sig)) => {
            say!("phc-harness: {sig}: stopped after the report in flight");
            return Exit::Interrupted(sig);
        }
        Ok(None) => {}
    }
    if not_run > 0 {
        // Every run of `run` was asked for by name: one that could not be done is an error,
        // not a quiet success (`suite` is the command that skips what a backend cannot run).
        say!("phc-harness: {not_run} requested run(s) could not be done (see above)");
        exit = exit.max(Exit::Usage);
    }
    exit
}

/// `phc-harness scenarios`.
pub fn list(args: ScenariosArgs) -> Exit {
    let loaded: Vec<Result<Scenario, ScenarioError>> = match &args.dir {
        Some(d) => match scenario::list_dir(d) {
            Ok(files) => files.iter().map(|f| Scenario::load(f)).collect(),
            Err(e) => return usage(format!("{}: {e}", d.display())),
        },
        None => runner::BUILTIN.iter().map(|(n, _)| runner::builtin(n).expect("listed")).collect(),
    };
    let mut exit = Exit::Ok;
    for s in loaded {
        match s {
            Ok(s) => {
                let flat = s.description.split_whitespace().collect::<Vec<_>>().join(" ");
                let first = flat.split_terminator(". ").next().unwrap_or("").trim_end_matches('.');
                output::out(&format!("{:<30} {}\n", s.name, first));
            }
            Err(e) => exit = usage(e),
        }
    }
    exit
}
