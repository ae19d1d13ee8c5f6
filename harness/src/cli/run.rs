//! The `run` and `scenarios` commands: resolve scenarios (a file, a folder, or the name of one
//! built into the binary), run them on a backend, write every report format to the output folder,
//! and print them (`--format json`: one JSON array, see JSON.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::args::AccelArg;
use crate::format::exit::Exit;
use crate::format::output;
use crate::judge::fidelity;
use crate::judge::report::{Report, Verdict};
use crate::model::scenario::{self, Scenario, ScenarioError};
use crate::run::backend::qemu::{self, find_agent_bin, ClockMode, GuestPhc, QemuOptions};
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

/// Backends `run` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// mock-phc's world in virtual time.
    Sim,
    /// A real Linux guest under QEMU with the real chronyd.
    Qemu,
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files, folders of them, or names of built-in scenarios (see `scenarios`).
    #[arg(required = true)]
    pub scenarios: Vec<String>,
    /// Backends to run on; `sim,qemu` runs both and compares them (fidelity).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sim")]
    pub backend: Vec<BackendKind>,
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
    /// QEMU backend: the static harness binary for the guest (default: PHC_AGENT_BIN, or what
    /// ci/build-agent.sh builds).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// QEMU backend: acceleration.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// QEMU backend: the PHC the guest's daemon reads (default: `hyperv` for a scenario whose
    /// `world.phc.personality` is hyperv, else `igb`). `hyperv` is mock-phc's CUSE device fed
    /// host samples like hv_utils; `ptp-kvm` (needs KVM) reads host time itself.
    #[arg(long, value_enum)]
    pub phc: Option<GuestPhc>,
    /// QEMU backend: the guest's time. `virtual` (TCG, icount with sleep=off) runs faster than
    /// real time and measures offsets inside the guest against the igb PHC, which is the host
    /// clock; `real` runs in wall-clock time with the harness feeding host time (the cross-check,
    /// and the only choice with KVM or `--phc ptp-kvm`).
    #[arg(long, value_enum, default_value_t = ClockMode::Virtual)]
    pub clock: ClockMode,
    /// QEMU backend: the guest kernel line (ci/setup-vm.sh caches both): `6.12` (Debian
    /// bookworm) or `7.2` (trixie-backports, with QEMU's vmclock device and ptp_vmclock).
    #[arg(long, default_value_t = phc_qemu::KernelLine::V6_12)]
    pub kernel_line: phc_qemu::KernelLine,
    /// QEMU backend: longest wait from starting QEMU to the guest agent's first answer.
    #[arg(long, default_value_t = 120.0, value_parser = crate::cli::args::boot_timeout_s)]
    pub boot_timeout_s: f64,
    /// QEMU backend: the guest kernel.
    #[command(flatten)]
    pub kernel: super::args::KernelArgs,
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
    if let Err(e) = super::args::no_repeats("--backend", &args.backend) {
        return usage(e);
    }
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
    if args.observe_s.is_some() && !args.backend.contains(&BackendKind::Qemu) {
        say!("phc-harness: note: --observe-s applies to the qemu backend only");
    }
    // Unpacked only for a QEMU run: the temp folder lives until the runs are done.
    let kernel = match args.backend.contains(&BackendKind::Qemu).then(|| args.kernel.prepare()) {
        Some(Ok(k)) => k,
        Some(Err(e)) => return usage(e),
        None => None,
    };
    let qemu_opts = if args.backend.contains(&BackendKind::Qemu) {
        // A Ctrl-C (or `timeout`'s SIGTERM) then ends the run through the normal path: an
        // aborted report, QEMU killed, temp files removed.
        qemu::prepare_process();
        match find_agent_bin(args.agent_bin.clone()) {
            Ok(agent_bin) => Some(QemuOptions {
                agent_bin,
                accel: args.accel.choice(),
                boot_timeout: Duration::from_secs_f64(args.boot_timeout_s.clamp(0.1, 3600.0)),
                phc: args.phc,
                clock: args.clock,
                kernel_line: args.kernel_line,
                kernel_dir: kernel.as_ref().map(|k| k.path.clone()),
            }),
            Err(e) => return usage(e),
        }
    } else {
        None
    };
    let tty = std::io::stderr().is_terminal();
    let mut printer = Printer { format: args.format, items: 0 };
    let mut exit = Exit::Ok;
    let mut not_run = 0;
    for s in scenarios {
        let mut reports = Vec::new();
        for kind in &args.backend {
            let started = Instant::now();
            let report = match kind {
                BackendKind::Sim => match runner::run_sim(&s) {
                    Ok(r) => r,
                    Err(e) => return usage(format!("{}: {e}", s.name)),
                },
                BackendKind::Qemu => {
                    let Some(opts) = qemu_opts.as_ref() else { continue };
                    let mut q = s.clone();
                    if let Some(o) = args.observe_s {
                        q.timeline.observe_s = o;
                    }
                    if let Some(why) = qemu::unsupported(&q, args.clock, GuestPhc::for_scenario(args.phc, &q))
                    {
                        say!("phc-harness: {}: not run on qemu: {why}", s.name);
                        not_run += 1;
                        continue;
                    }
                    // A guest that never became ready still gets a report, marked aborted.
                    runner::run_qemu_or_abort(&q, opts, true)
                }
            };
            let dir = runner::report_dir(&args.out, &report);
            let written = if args.full_series {
                runner::write_all_full(&report, &dir)
            } else {
                runner::write_all(&report, &dir)
            };
            if let Err(e) = written {
                return usage(format!("{}: {e}", dir.display()));
            }
            if matches!(report.verdict, Verdict::Fail | Verdict::Aborted) {
                exit = exit.max(Exit::CheckFailed);
            }
            if let Some(why) = &report.abort_reason {
                say!("phc-harness: {} [{}]: aborted: {why}", s.name, report.backend);
            }
            printer.report(&report);
            let took = started.elapsed().as_secs_f64();
            if report.abort_reason.is_some() {
                // How far it got, not a speed: an aborted run did not play the scenario.
                let reached = report.series.last().map_or(0.0, |o| o.t_s);
                say!(
                    "  aborted at {reached:.1} s of scenario after {took:.1} s; reports in {}",
                    dir.display()
                );
            } else if tty || took > 2.0 {
                let scenario_s = report.series.last().map_or(s.duration_s(), |o| o.t_s);
                say!(
                    "  {scenario_s:.1} s of scenario in {took:.3} s ({:.1}x real time); reports in {}",
                    scenario_s / took.max(1e-9),
                    dir.display()
                );
            }
            reports.push(report);
            if let Some(sig) = phc_qemu::signals::pending() {
                say!("phc-harness: {sig}: stopping after this report");
                printer.scenario_done(&s.name, &reports, None);
                printer.finish();
                return Exit::Interrupted(sig);
            }
        }
        let mut fid = None;
        if let [sim, q] = &reports[..] {
            if sim.backend == "sim" && q.backend == "qemu" {
                let f = crate::run::ensemble::fidelity(&s, sim, q);
                let dir = runner::fidelity_dir(&args.out, &s.name);
                if let Err(e) = runner::write_fidelity(&f, &dir) {
                    return usage(format!("{}: {e}", dir.display()));
                }
                printer.fidelity(&f);
                if !f.agrees {
                    exit = exit.max(Exit::CheckFailed);
                }
                fid = Some(f);
            }
        }
        printer.scenario_done(&s.name, &reports, fid.as_ref());
    }
    printer.finish();
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
