//! The `run` and `scenarios` commands: resolve scenarios (a file, a folder, or the name of one
//! built into the binary), run them on a backend, write every report format to the output folder.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use phc_qemu::{chain, signals, Accel};

use crate::backend::qemu::{self, find_agent_bin, QemuBackend, QemuOptions};
use crate::backend::sim::Sim;
use crate::report::{Report, Verdict};
use crate::scenario::{self, Scenario, ScenarioError};
use crate::{engine, fidelity};

/// Scenarios built into the binary, so `run NAME` works from any folder.
pub const BUILTIN: &[(&str, &str)] = &[
    ("azure-pause-30s", include_str!("../../scenarios/azure-pause-30s.toml")),
    ("azure-pause-30s-slew-only", include_str!("../../scenarios/azure-pause-30s-slew-only.toml")),
    ("pause-30s-ntpd", include_str!("../../scenarios/pause-30s-ntpd.toml")),
    ("pause-30s-phc2sys", include_str!("../../scenarios/pause-30s-phc2sys.toml")),
    ("reboot", include_str!("../../scenarios/reboot.toml")),
    ("hyperv-stale-samples", include_str!("../../scenarios/hyperv-stale-samples.toml")),
    ("resume-without-sync", include_str!("../../scenarios/resume-without-sync.toml")),
    ("resume-without-sync-implicit", include_str!("../../scenarios/resume-without-sync-implicit.toml")),
    ("date-back-2-years", include_str!("../../scenarios/date-back-2-years.toml")),
    ("migration-frequency-jump", include_str!("../../scenarios/migration-frequency-jump.toml")),
    ("phc-jump-10s", include_str!("../../scenarios/phc-jump-10s.toml")),
];

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

/// The guest PHC of the QEMU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestPhc {
    /// QEMU's igb NIC clock, fed with host time by the harness.
    Igb,
    /// KVM's ptp_kvm, reading host time by hypercall.
    PtpKvm,
}

/// Acceleration choices for the QEMU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    /// KVM when a KVM guest really runs here, else TCG.
    Auto,
    /// Software emulation.
    Tcg,
    /// Hardware virtualization.
    Kvm,
}

impl AccelArg {
    /// The acceleration to use, or `None` to detect it.
    pub fn choice(self) -> Option<Accel> {
        match self {
            Self::Auto => None,
            Self::Tcg => Some(Accel::Tcg),
            Self::Kvm => Some(Accel::Kvm),
        }
    }
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
    #[arg(long)]
    pub warmup_s: Option<f64>,
    /// Override the observation window (seconds) of real-time backends (qemu); the sim always
    /// observes the scenario's full window, so a shortened guest run can be compared with it.
    #[arg(long)]
    pub observe_s: Option<f64>,
    /// Output folder; each run writes report.{json,md,txt} and plot.svg in a subfolder.
    #[arg(long, default_value = "results/runs")]
    pub out: PathBuf,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// QEMU backend: the static harness binary for the guest (default: PHC_AGENT_BIN, or what
    /// ci/build-agent.sh builds).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// QEMU backend: acceleration.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// QEMU backend: the guest PHC. `ptp-kvm` (needs KVM) reads host time itself, without the
    /// harness's provider; `igb` works under TCG too.
    #[arg(long, value_enum, default_value_t = GuestPhc::Igb)]
    pub phc: GuestPhc,
    /// QEMU backend: longest wait from starting QEMU to the guest agent's first answer.
    #[arg(long, default_value_t = 120.0)]
    pub boot_timeout_s: f64,
}

/// Arguments of `scenarios`.
#[derive(Debug, clap::Args)]
pub struct ScenariosArgs {
    /// List the files of this folder instead of the built-in scenarios.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Loads scenarios named on the command line.
pub fn resolve(names: &[String]) -> Result<Vec<Scenario>, ScenarioError> {
    let mut out = Vec::new();
    for n in names {
        let p = Path::new(n);
        if p.is_dir() {
            let files =
                scenario::list_dir(p).map_err(|source| ScenarioError::Io { path: p.to_owned(), source })?;
            for f in files {
                out.push(Scenario::load(&f)?);
            }
        } else if p.exists() {
            out.push(Scenario::load(p)?);
        } else if let Some((name, text)) = BUILTIN.iter().find(|(b, _)| *b == n.trim_end_matches(".toml")) {
            out.push(Scenario::parse(text, Path::new(&format!("{name}.toml")))?);
        } else {
            return Err(ScenarioError::Io {
                path: p.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file, and no built-in scenario of that name (see `phc-harness scenarios`)",
                ),
            });
        }
    }
    Ok(out)
}

/// Runs one scenario on the simulator and builds its report.
pub fn run_sim(s: &Scenario) -> Result<Report, mock_phc::Error> {
    let mut sim = Sim::new(&s.world)?;
    let (obs, r) = engine::run(s, &mut sim, |_, _| {});
    if let Err(never) = r {
        match never {}
    }
    Ok(Report::new(s, "sim", obs, None))
}

/// Runs one scenario in a QEMU guest. Failures after boot (SIGINT/SIGTERM included, where
/// `signals::install` was called) still give a report, marked aborted.
pub fn run_qemu(s: &Scenario, opts: &QemuOptions, progress: bool) -> Result<Report, phc_qemu::Error> {
    if progress {
        eprintln!("{}: booting the guest ...", s.name);
    }
    let mut b = QemuBackend::start(s, opts)?;
    let mut last = Instant::now();
    let (obs, r) = engine::run(s, &mut b, |done, total| {
        if progress && last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            eprintln!("{}: {done:.0} / {total:.0} s", s.name);
        }
    });
    let (abort, info) = match r {
        Ok(()) => (None, b.finish()),
        Err(e) => (Some(chain(&e)), b.info()),
    };
    let mut report = Report::new(s, "qemu", obs, abort);
    report.backend_info = info;
    Ok(report)
}

/// The daemon's poll interval, seconds: the granularity recovery times can be compared at.
pub fn poll_interval_s(s: &Scenario) -> f64 {
    s.world
        .disciplines
        .iter()
        .find_map(|d| match d {
            mock_phc::DisciplineConfig::Chrony(c) => Some(2f64.powi(i32::from(c.poll))),
            _ => None,
        })
        .unwrap_or(1.0)
}

/// Writes every format of a report into `dir`.
pub fn write_all(report: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), report.to_json())?;
    std::fs::write(dir.join("report.md"), report.to_markdown())?;
    std::fs::write(dir.join("report.txt"), report.to_text())?;
    std::fs::write(dir.join("plot.svg"), crate::plot::svg(report))?;
    Ok(())
}

fn print_report(report: &Report, format: Format) {
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Md => print!("{}", report.to_markdown()),
        Format::Json => print!("{}", report.to_json()),
    }
}

/// `phc-harness run`. Exit 0: every run passed (and agreed, for sim,qemu); 1: a verdict failed,
/// a run aborted or sim and qemu disagree; 2: bad input or a backend that could not start.
pub fn run(args: RunArgs) -> ExitCode {
    let mut scenarios = match resolve(&args.scenarios) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("phc-harness: {e}");
            return ExitCode::from(2);
        }
    };
    for s in &mut scenarios {
        if let Some(seed) = args.seed {
            s.world.seed = seed;
        }
        if let Some(w) = args.warmup_s {
            s.timeline.warmup_s = w;
        }
        if let Err(e) = s.revalidate() {
            eprintln!("phc-harness: {}: {e}", s.name);
            return ExitCode::from(2);
        }
        if let Some(o) = args.observe_s {
            let mut q = s.clone();
            q.timeline.observe_s = o;
            if let Err(e) = q.revalidate() {
                eprintln!("phc-harness: {}: --observe-s: {e}", s.name);
                return ExitCode::from(2);
            }
        }
    }
    if args.observe_s.is_some() && !args.backend.contains(&BackendKind::Qemu) {
        eprintln!("phc-harness: note: --observe-s applies to the qemu backend only");
    }
    let qemu_opts = if args.backend.contains(&BackendKind::Qemu) {
        // A Ctrl-C (or `timeout`'s SIGTERM) then ends the run through the normal path: an
        // aborted report, QEMU killed, temp files removed.
        qemu::prepare_process();
        match find_agent_bin(args.agent_bin.clone()) {
            Ok(agent_bin) => Some(QemuOptions {
                agent_bin,
                accel: args.accel.choice(),
                boot_timeout: Duration::from_secs_f64(args.boot_timeout_s.clamp(0.1, 3600.0)),
                ptp_kvm: args.phc == GuestPhc::PtpKvm,
            }),
            Err(e) => {
                eprintln!("phc-harness: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let tty = std::io::stderr().is_terminal();
    let mut bad = false;
    for s in scenarios {
        let mut reports = Vec::new();
        for kind in &args.backend {
            let started = Instant::now();
            let report = match kind {
                BackendKind::Sim => run_sim(&s).map_err(|e| e.to_string()),
                BackendKind::Qemu => {
                    let opts = qemu_opts.as_ref().expect("set above");
                    let mut q = s.clone();
                    if let Some(o) = args.observe_s {
                        q.timeline.observe_s = o;
                    }
                    match qemu::unsupported(&q) {
                        Some(why) => {
                            eprintln!("phc-harness: {}: skipped on qemu: {why}", s.name);
                            continue;
                        }
                        // A guest that never became ready still gets a report, marked aborted.
                        None => Ok(run_qemu(&q, opts, true).unwrap_or_else(|e| {
                            Report::new(&q, "qemu", engine::Observations::default(), Some(chain(&e)))
                        })),
                    }
                }
            };
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("phc-harness: {}: {e}", s.name);
                    return ExitCode::from(2);
                }
            };
            let dir = args.out.join(format!("{}-{}-seed{}", s.name, report.backend, s.world.seed));
            if let Err(e) = write_all(&report, &dir) {
                eprintln!("phc-harness: {}: {e}", dir.display());
                return ExitCode::from(2);
            }
            bad |= report.verdict != Verdict::Pass;
            if let Some(why) = &report.abort_reason {
                eprintln!("phc-harness: {} [{}]: aborted: {why}", s.name, report.backend);
            }
            print_report(&report, args.format);
            let took = started.elapsed().as_secs_f64();
            if tty || took > 2.0 {
                eprintln!(
                    "  {:.1} s of scenario in {:.3} s; reports in {}",
                    s.duration_s(),
                    took,
                    dir.display()
                );
            }
            reports.push(report);
            if let Some(sig) = signals::pending() {
                eprintln!("phc-harness: {sig}: stopping after this report");
                return ExitCode::from(signals::exit_status(sig));
            }
        }
        if let [sim, q] = &reports[..] {
            if sim.backend == "sim" && q.backend == "qemu" {
                let f = fidelity::compare(sim, q, poll_interval_s(&s));
                let dir = args.out.join(format!("{}-fidelity", s.name));
                let written = std::fs::create_dir_all(&dir).and_then(|_| {
                    std::fs::write(dir.join("fidelity.md"), f.to_markdown())?;
                    std::fs::write(
                        dir.join("fidelity.json"),
                        serde_json::to_string_pretty(&f).expect("plain"),
                    )
                });
                if let Err(e) = written {
                    eprintln!("phc-harness: {}: {e}", dir.display());
                    return ExitCode::from(2);
                }
                match args.format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&f).expect("plain")),
                    _ => print!("{}", f.to_markdown()),
                }
                bad |= !f.agrees;
            }
        }
    }
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `phc-harness scenarios`.
pub fn list(args: ScenariosArgs) -> ExitCode {
    let loaded: Vec<Result<Scenario, ScenarioError>> = match &args.dir {
        Some(d) => match scenario::list_dir(d) {
            Ok(files) => files.iter().map(|f| Scenario::load(f)).collect(),
            Err(e) => {
                eprintln!("phc-harness: {}: {e}", d.display());
                return ExitCode::from(2);
            }
        },
        None => BUILTIN.iter().map(|(n, t)| Scenario::parse(t, Path::new(&format!("{n}.toml")))).collect(),
    };
    let mut bad = false;
    for s in loaded {
        match s {
            Ok(s) => {
                let flat = s.description.split_whitespace().collect::<Vec<_>>().join(" ");
                let first = flat.split_terminator(". ").next().unwrap_or("").trim_end_matches('.');
                println!("{:<30} {}", s.name, first);
            }
            Err(e) => {
                bad = true;
                eprintln!("phc-harness: {e}");
            }
        }
    }
    if bad {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
