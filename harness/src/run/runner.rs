//! Running scenarios, as the CLI, the tests and the benches do it: resolve names to scenarios (a
//! file, a folder, or one built into the binary), run one on a backend, and write its reports
//! into a folder atomically, so that no two runs into one output folder ever mix their files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mock_phc::discipline::sample_noise::Noise;

use crate::format::files::write_dir;
use crate::judge::fidelity::Fidelity;
use crate::judge::report::Report;
use crate::model::scenario::{self, Scenario, ScenarioError};
use crate::run::backend::qemu::{nested, ClockMode, NestedBackend, QemuBackend, QemuOptions, VirtualBackend};
use crate::run::backend::sim::Sim;
use crate::run::engine;

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
    ("snapshot-restore", include_str!("../../scenarios/snapshot-restore.toml")),
];

/// A built-in scenario by name.
pub fn builtin(name: &str) -> Option<Result<Scenario, ScenarioError>> {
    let (n, text) = BUILTIN.iter().find(|(b, _)| *b == name.trim_end_matches(".toml"))?;
    Some(Scenario::parse(text, Path::new(&format!("{n}.toml"))))
}

/// Loads the scenarios named on a command line: files, folders of `*.toml` files, or built-in
/// names. Two scenarios with one name are an error: their reports would land in one folder.
pub fn resolve(names: &[String]) -> Result<Vec<Scenario>, ScenarioError> {
    let mut out: Vec<Scenario> = Vec::new();
    let mut from: Vec<PathBuf> = Vec::new();
    let mut push = |s: Scenario, path: PathBuf| {
        if let Some(i) = out.iter().position(|o| o.name == s.name) {
            return Err(ScenarioError::Invalid {
                line: 0,
                key: "name".into(),
                message: format!(
                    "scenario name `{}` is also the name of {}; names must be unique in one run",
                    s.name,
                    from[i].display()
                ),
                path,
            });
        }
        out.push(s);
        from.push(path);
        Ok(())
    };
    for n in names {
        let p = Path::new(n);
        if p.is_dir() {
            let files =
                scenario::list_dir(p).map_err(|source| ScenarioError::Io { path: p.to_owned(), source })?;
            if files.is_empty() {
                return Err(ScenarioError::Io {
                    path: p.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "a folder with no scenario files (*.toml) in it",
                    ),
                });
            }
            for f in files {
                push(Scenario::load(&f)?, f)?;
            }
        } else if p.exists() || p.is_symlink() {
            push(Scenario::load(p)?, p.to_owned())?;
        } else if let Some(s) = builtin(n) {
            push(s?, PathBuf::from(format!("built-in {n}")))?;
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
    run_sim_noise(s).map(|(r, _)| r)
}

/// `run_sim`, and the noise of chronyd's samples and regression in the run
/// (`mock_phc::discipline::sample_noise`; None without chrony).
pub fn run_sim_noise(s: &Scenario) -> Result<(Report, Option<Noise>), mock_phc::Error> {
    let mut sim = Sim::new(&s.world)?;
    let (obs, r) = engine::run(s, &mut sim, |_, _| {});
    if let Err(never) = r {
        match never {}
    }
    Ok((Report::new(s, "sim", obs, None), sim.world().chrony_noise()))
}

/// Runs one scenario in a QEMU guest, in virtual or real time (`opts.clock`). Failures after boot
/// (SIGINT/SIGTERM included, where `backend::qemu::prepare_process` was called) still give a
/// report, marked aborted.
pub fn run_qemu(s: &Scenario, opts: &QemuOptions, progress: bool) -> Result<Report, phc_qemu::Error> {
    if progress {
        let nested =
            opts.phc == Some(crate::run::backend::qemu::GuestPhc::PtpKvm) && opts.clock == ClockMode::Real;
        let how = if opts.clock == ClockMode::Virtual && opts.snapshot {
            "starting the guest (virtual time: from the boot snapshot cache, or booted and saved there)"
        } else if nested && opts.snapshot {
            "starting the guest (real time; nested where this machine runs TCG: from the boot snapshot cache, \
             or booted and saved there)"
        } else {
            &*format!("booting the guest ({} time)", opts.clock.name())
        };
        crate::say!("{}: {how} ...", s.name);
    }
    let wall = Instant::now();
    let mut last = Instant::now();
    let mut tick = |done: f64, total: f64| {
        if progress && last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            let speed = done / wall.elapsed().as_secs_f64().max(1e-3);
            crate::say!("{}: {done:.0} / {total:.0} s of scenario ({speed:.1}x real time)", s.name);
        }
    };
    let (obs, abort, mut info) = match opts.clock {
        ClockMode::Virtual => {
            drive(s, VirtualBackend::start(s, opts)?, &mut tick, VirtualBackend::finish, VirtualBackend::info)
        }
        // ptp_kvm where this machine runs TCG: KVM nested inside a TCG guest.
        ClockMode::Real if nested::wanted(opts)? => {
            drive(s, NestedBackend::start(s, opts)?, &mut tick, NestedBackend::finish, NestedBackend::info)
        }
        ClockMode::Real => {
            drive(s, QemuBackend::start(s, opts)?, &mut tick, QemuBackend::finish, QemuBackend::info)
        }
    };
    info.insert("clock".into(), serde_json::json!(opts.clock.name()));
    record_setup(&mut info, opts);
    let wall_s = wall.elapsed().as_secs_f64();
    info.insert("wall_s".into(), serde_json::json!((wall_s * 1000.0).round() / 1000.0));
    info.insert("speedup".into(), serde_json::json!((s.duration_s() / wall_s * 10.0).round() / 10.0));
    let mut report = Report::new(s, "qemu", obs, abort);
    report.backend_info = info;
    Ok(report)
}

type BackendInfo = std::collections::BTreeMap<String, serde_json::Value>;

/// `run_qemu`, and for a guest that never became ready an aborted report whose reason and
/// `backend_info` (`console_tail`, the set-up) say why, rather than an error.
pub fn run_qemu_or_abort(s: &Scenario, opts: &QemuOptions, progress: bool) -> Report {
    run_qemu(s, opts, progress).unwrap_or_else(|e| {
        let mut report = Report::new(
            s,
            "qemu",
            crate::model::observation::Observations::default(),
            Some(phc_qemu::chain(&e)),
        );
        let mut info = BackendInfo::new();
        if let Some(tail) = e.console_tail() {
            info.insert("console_tail".into(), serde_json::json!(tail));
        }
        info.insert("clock".into(), serde_json::json!(opts.clock.name()));
        record_setup(&mut info, opts);
        report.backend_info = info;
        report
    })
}

/// The set-up a QEMU run's figures depend on, as the harness launched it: the kernel release
/// (the booted folder's `VERSION`), QEMU's version, the CPU model (`host` under KVM, QEMU's
/// default `qemu64` under TCG) and the guest's kernel command line. `compare` refuses latency
/// across different ones.
fn record_setup(info: &mut BackendInfo, opts: &QemuOptions) {
    // The kernel the guest booted: the user's, else the cached one of the chosen line. A release
    // the backend read itself is kept.
    let kdir = opts.kernel_dir.clone().unwrap_or_else(|| {
        phc_qemu::image::ImageSpec::for_line(&opts.agent_bin, opts.kernel_line).kernel_dir
    });
    if let Some(r) = crate::run::kernel::release_of(&kdir) {
        info.entry("kernel_release".into()).or_insert_with(|| serde_json::json!(r));
    }
    if let Some(v) = crate::run::kernel::qemu_version() {
        info.insert("qemu_version".into(), serde_json::json!(v));
    }
    let kvm = info.get("accel").and_then(|a| a.as_str()) == Some("kvm");
    info.insert("cpu_model".into(), serde_json::json!(if kvm { "host" } else { "qemu64" }));
    // A guest that held was told so on its command line (`launcher::HOLD_CMDLINE`).
    let cmdline = if info.get("guest_holds").and_then(|h| h.as_bool()) == Some(true) {
        format!("{} {}", phc_qemu::launcher::DEFAULT_CMDLINE, phc_qemu::launcher::HOLD_CMDLINE)
    } else {
        phc_qemu::launcher::DEFAULT_CMDLINE.to_owned()
    };
    info.insert("guest_cmdline".into(), serde_json::json!(cmdline));
}

/// Runs the engine on a started QEMU backend: what it saw, why it stopped early (if it did), and
/// the backend's facts (`finish` after a whole run, `info` after an aborted one).
fn drive<B: engine::Backend<Error = phc_qemu::Error>>(
    s: &Scenario,
    mut b: B,
    tick: impl FnMut(f64, f64),
    finish: impl FnOnce(B) -> BackendInfo,
    info: impl FnOnce(&B) -> BackendInfo,
) -> (crate::model::observation::Observations, Option<String>, BackendInfo) {
    let (obs, r) = engine::run(s, &mut b, tick);
    match r {
        Ok(()) => (obs, None, finish(b)),
        Err(e) => (obs, Some(phc_qemu::chain(&e)), info(&b)),
    }
}

/// The folder of one run under the output folder. Scenario names are plain (checked at load),
/// so this stays inside `out`.
pub fn report_dir(out: &Path, report: &Report) -> PathBuf {
    out.join(format!("{}-{}-seed{}", report.scenario, report.backend, report.seed))
}

/// The folder of a scenario's repeated runs' distribution under the output folder.
pub fn distribution_dir(out: &Path, scenario: &str) -> PathBuf {
    out.join(format!("{scenario}-distribution"))
}

/// Writes `distribution.json` and `distribution.md` into `dir` (see `write_dir`).
pub fn write_distribution(d: &crate::judge::distribution::Distribution, dir: &Path) -> std::io::Result<()> {
    write_dir(dir, &[("distribution.json", d.to_json()), ("distribution.md", d.to_markdown())])
}

/// The folder of a sim-against-qemu comparison under the output folder.
pub fn fidelity_dir(out: &Path, scenario: &str) -> PathBuf {
    out.join(format!("{scenario}-fidelity"))
}

/// Writes every format of a report into `dir`, atomically (see `write_dir`). A series longer
/// than `decimate::MAX_JSON_SERIES` is thinned in report.json (`series_decimated` says so;
/// the metrics come from the whole series); `write_all_full` keeps it whole.
pub fn write_all(report: &Report, dir: &Path) -> std::io::Result<()> {
    match crate::judge::decimate::series(&report.series, crate::judge::decimate::MAX_JSON_SERIES) {
        Some((series, d)) => {
            let mut thin = report.clone();
            thin.series = series;
            thin.series_decimated = Some(d);
            // The plot too is drawn from the series as the file has it, so that a plot drawn
            // again from report.json (`merge`) is the same picture, byte for byte.
            write_formats(&thin, &thin.to_json(), dir)
        }
        None => write_all_full(report, dir),
    }
}

/// Writes every format of a report into `dir` with the whole series in report.json.
pub fn write_all_full(report: &Report, dir: &Path) -> std::io::Result<()> {
    write_formats(report, &report.to_json(), dir)
}

fn write_formats(report: &Report, json: &str, dir: &Path) -> std::io::Result<()> {
    write_dir(
        dir,
        &[
            ("report.json", json.to_owned()),
            ("report.md", report.to_markdown()),
            ("report.txt", report.to_text()),
            ("plot.svg", crate::judge::plot::svg(report)),
        ],
    )
}

/// Writes a comparison's Markdown and JSON into `dir`, atomically.
pub fn write_fidelity(f: &Fidelity, dir: &Path) -> std::io::Result<()> {
    write_dir(dir, &[("fidelity.md", f.to_markdown()), ("fidelity.json", f.to_json())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_names_in_one_run_are_refused() {
        let e = resolve(&["reboot".into(), "reboot.toml".into()]).unwrap_err().to_string();
        assert!(e.contains("names must be unique"), "{e}");
    }
}
