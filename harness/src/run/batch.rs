//! The one scenario x backend loop that `run` and `suite` both call, and the one type that says
//! whether a backend can run a scenario and with what. Each run's report is written under the
//! output folder as it ends, sim and QEMU are compared wherever both ran a scenario, and the
//! caller hears of every step (to print, or to build a suite's summary).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::backend::local::{self, LocalBackend};
use super::backend::qemu::{self, QemuOptions};
use super::{engine, runner};
use crate::judge::fidelity::Fidelity;
use crate::judge::report::Report;
use crate::model::observation::Observations;
use crate::model::scenario::Scenario;

/// A backend a scenario can run on, with everything it needs.
#[derive(Debug, Clone)]
pub enum Backend {
    /// mock-phc's world in virtual time.
    Sim,
    /// A QEMU guest with the real daemons.
    Qemu {
        /// How to start and run the guest.
        opts: QemuOptions,
        /// A shorter observation window for the guest than the scenario's (real time is slow);
        /// the sim always observes the scenario's whole window, so the two stay comparable.
        observe_s: Option<f64>,
        /// The user chose no clock: a scenario that needs real time (`qemu::needs_real_time`)
        /// runs in it although `opts.clock` is virtual.
        auto_clock: bool,
    },
    /// This machine's own PHC and daemon, in wall-clock time.
    Local {
        /// The PHC to observe.
        device: PathBuf,
        /// Whether `guest_step` scenarios may step this machine's clock.
        allow_clock_writes: bool,
    },
}

impl Backend {
    /// `sim`, `qemu` or `local`: the name reports and folders carry.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Qemu { .. } => "qemu",
            Self::Local { .. } => "local",
        }
    }

    /// The scenario as this backend runs it (the guest's shorter window, where one is set).
    fn scenario(&self, s: &Scenario) -> Scenario {
        let mut s = s.clone();
        if let Self::Qemu { observe_s: Some(o), .. } = self {
            s.timeline.observe_s = *o;
        }
        s
    }

    /// The QEMU clock `s` runs in when it differs from the one asked for, with the reason:
    /// only where the user chose no clock (`auto_clock`) and the scenario needs real time.
    pub fn clock_for(&self, s: &Scenario) -> Option<(qemu::ClockMode, String)> {
        match self {
            Self::Qemu { opts, auto_clock: true, .. } if opts.clock != qemu::ClockMode::Real => {
                qemu::needs_real_time(s).map(|why| (qemu::ClockMode::Real, why))
            }
            _ => None,
        }
    }

    /// The QEMU options `s` runs with (`clock_for`'s clock, where it chose one).
    fn qemu_opts(&self, opts: &QemuOptions, s: &Scenario) -> QemuOptions {
        let mut o = opts.clone();
        if let Some((clock, _)) = self.clock_for(s) {
            o.clock = clock;
        }
        o
    }

    /// Why this backend cannot run `s`, or `None` when it can: the one place that decides.
    pub fn unsupported(&self, s: &Scenario) -> Option<String> {
        match self {
            Self::Sim => None,
            Self::Qemu { opts, .. } => {
                let s = self.scenario(s);
                let opts = self.qemu_opts(opts, &s);
                qemu::unsupported_with(&s, &opts)
            }
            Self::Local { allow_clock_writes, .. } => local::unsupported(s, *allow_clock_writes),
        }
    }

    /// Runs `s` (which it can run, see `unsupported`). A guest or device that failed after the
    /// run began still gives a report, marked aborted; only the sim's refusal of a world is an
    /// error.
    fn run(&self, s: &Scenario, progress: bool) -> Result<Report, mock_phc::Error> {
        Ok(match self {
            Self::Sim => runner::run_sim(s)?,
            Self::Qemu { opts, .. } => {
                let s = self.scenario(s);
                runner::run_qemu_or_abort(&s, &self.qemu_opts(opts, &s), progress)
            }
            Self::Local { device, allow_clock_writes } => run_local(s, device, *allow_clock_writes),
        })
    }
}

/// Runs a scenario on this machine's PHC, and steps the clock back where the run moved it.
fn run_local(s: &Scenario, device: &Path, writes: bool) -> Report {
    let mut b = match LocalBackend::open(device, writes) {
        Ok(b) => b,
        Err(e) => return Report::new(s, "local", Observations::default(), Some(e.to_string())),
    };
    let (obs, r) = engine::run(s, &mut b, |_, _| {});
    let restored = b.restore();
    let mut abort = r.err().map(|e| e.to_string());
    let mut info = std::collections::BTreeMap::new();
    info.insert("device".to_owned(), serde_json::json!(device.display().to_string()));
    match restored {
        Ok(Some(ns)) => {
            info.insert("clock_restored_step_ns".to_owned(), serde_json::json!(ns));
        }
        Ok(None) => {}
        Err(e) => abort = Some(abort.map_or_else(|| e.to_string(), |a| format!("{a}; {e}"))),
    }
    let mut report = Report::new(s, "local", obs, abort);
    report.backend_info = info;
    report
}

/// Where and how a batch writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The output folder: one report folder per run, one fidelity folder per comparison.
    pub out: PathBuf,
    /// Keep whole offset series in report.json (long ones are thinned otherwise).
    pub full_series: bool,
    /// Say on stderr how a QEMU run goes (boot, scenario seconds done).
    pub progress: bool,
    /// QEMU runs at once (`--jobs`): above 1, QEMU runs go ahead on that many threads while the
    /// caller still hears of every step in order (and without the per-run progress lines).
    pub jobs: usize,
    /// Runs per scenario (`--repeat`): the scenarios come as groups of this many consecutive
    /// seeds of one scenario (`repeated` makes them), and after each group its distribution is
    /// written and judged. 1: no distribution.
    pub repeat: usize,
}

/// Each scenario `n` times, seeds s, s+1, ..., s+n-1 (s its own), consecutively: what
/// `Options::repeat` expects. A seed past u64's range is an error naming the scenario.
pub fn repeated(scenarios: &[Scenario], n: usize) -> Result<Vec<Scenario>, String> {
    let mut out = Vec::with_capacity(scenarios.len() * n);
    for s in scenarios {
        for r in 0..n as u64 {
            let mut c = s.clone();
            c.world.seed =
                s.world.seed.checked_add(r).ok_or_else(|| {
                    format!("{}: seed {} + {r} is past the largest seed", s.name, s.world.seed)
                })?;
            out.push(c);
        }
    }
    Ok(out)
}

/// What the loop tells its caller, in order.
#[derive(Debug)]
pub enum Step<'a> {
    /// A run starts: its position (1-based) of all runs, and the scenario seconds of the runs
    /// before it and of all runs, for an ETA.
    Start {
        /// The scenario.
        scenario: &'a Scenario,
        /// The backend.
        backend: &'static str,
        /// Position, 1-based.
        k: usize,
        /// Runs in all.
        n: usize,
        /// Scenario seconds of the runs before this one.
        done_s: f64,
        /// Scenario seconds of all runs.
        total_s: f64,
    },
    /// The backend cannot run the scenario.
    Skipped {
        /// The scenario.
        scenario: &'a Scenario,
        /// The backend.
        backend: &'static str,
        /// Why.
        why: String,
    },
    /// A run ended; its report is written in `dir`.
    Ran {
        /// The scenario.
        scenario: &'a Scenario,
        /// Its report.
        report: &'a Report,
        /// Its folder.
        dir: &'a Path,
        /// Wall time it took.
        took: Duration,
    },
    /// Sim and QEMU compared on the scenario; written in `dir`.
    Compared {
        /// The scenario.
        scenario: &'a Scenario,
        /// The comparison.
        fidelity: &'a Fidelity,
        /// Its folder.
        dir: &'a Path,
    },
    /// The last of a scenario's repeated runs ended (`Options::repeat` above 1): the
    /// distribution of its runs, written in `dir`.
    Distribution {
        /// The scenario (its last run's seed).
        scenario: &'a Scenario,
        /// The runs' distribution, judged sim against QEMU where both ran.
        distribution: &'a crate::judge::distribution::Distribution,
        /// Its folder.
        dir: &'a Path,
    },
    /// Every backend had the scenario: its reports, and the comparison where there was one.
    Done {
        /// The scenario.
        scenario: &'a Scenario,
        /// The reports, in backend order.
        reports: &'a [Report],
        /// The comparison.
        fidelity: Option<&'a Fidelity>,
    },
}

/// Why a batch stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The simulator refused a scenario's world.
    #[error("{scenario}: {source}")]
    Sim {
        /// The scenario.
        scenario: String,
        /// Why.
        #[source]
        source: mock_phc::Error,
    },
    /// A report could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs every scenario on every backend, in order, writing each report under `opts.out` as it
/// ends and comparing sim with QEMU wherever both ran a scenario. Stops after the report in
/// flight when SIGINT or SIGTERM arrived (and gives that signal).
pub fn run(
    scenarios: &[Scenario],
    backends: &[Backend],
    opts: &Options,
    step: impl FnMut(Step<'_>),
) -> Result<Option<Signal>, BatchError> {
    // The QEMU runs that will happen, in the loop's order, for the threads to take ahead.
    let ahead: Vec<(usize, usize)> = if opts.jobs > 1 {
        let mut v = Vec::new();
        for (i, s) in scenarios.iter().enumerate() {
            for (j, b) in backends.iter().enumerate() {
                if matches!(b, Backend::Qemu { .. }) && b.unsupported(s).is_none() {
                    v.push((i, j));
                }
            }
        }
        v
    } else {
        Vec::new()
    };
    if ahead.len() < 2 {
        return run_in_order(scenarios, backends, opts, step, &|i, j| {
            timed(|| backends[j].run(&scenarios[i], opts.progress))
        });
    }
    let slots: Vec<Slot> = ahead.iter().map(|_| Slot::default()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let workers = opts.jobs.min(ahead.len());
    // Each guest on a CPU of its own, with the thread that drives it (QEMU inherits the thread's
    // CPU), where there are CPUs enough: two guests sharing CPUs slowed each other's hosts, and an
    // idle guest's virtual time then ran further ahead between its host's requests.
    let cpus = phc_qemu::launcher::allowed_cpus();
    let pinned = cpus.len() >= workers;
    if pinned {
        eprintln!(
            "phc-harness: {workers} QEMU runs at once, each on a CPU of its own ({:?})",
            &cpus[..workers]
        );
    }
    std::thread::scope(|sc| {
        for cpu in (0..workers).map(|w| cpus.get(w).copied().filter(|_| pinned)) {
            let (next, stop, slots, ahead) = (&next, &stop, &slots, &ahead);
            sc.spawn(move || {
                if let Some(c) = cpu {
                    phc_qemu::launcher::pin_this_thread(c);
                }
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if k >= ahead.len() || stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let (i, j) = ahead[k];
                    slots[k].put(timed(|| backends[j].run(&scenarios[i], false)));
                }
            });
        }
        let take = |i: usize, j: usize| match ahead.iter().position(|&p| p == (i, j)) {
            Some(k) => slots[k].take(),
            None => timed(|| backends[j].run(&scenarios[i], opts.progress)),
        };
        let r = run_in_order(scenarios, backends, opts, step, &take);
        // A stop (a signal, an error) leaves what the threads have not begun undone.
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    })
}

/// `--jobs` as given, else one per CPU this process may use (at least 1).
pub fn default_jobs(given: Option<u16>) -> usize {
    given.map_or_else(|| phc_qemu::launcher::allowed_cpus().len().max(1), usize::from)
}

/// A run's result and the wall time it took.
type Ran = (Result<Report, mock_phc::Error>, Duration);

fn timed(f: impl FnOnce() -> Result<Report, mock_phc::Error>) -> Ran {
    let t0 = Instant::now();
    let r = f();
    (r, t0.elapsed())
}

/// One run's result, handed from the thread that ran it to the loop.
#[derive(Default)]
struct Slot {
    value: std::sync::Mutex<Option<Ran>>,
    ready: std::sync::Condvar,
}

impl Slot {
    fn put(&self, r: Ran) {
        *self.value.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
        self.ready.notify_all();
    }
    fn take(&self) -> Ran {
        let mut v = self.value.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(r) = v.take() {
                return r;
            }
            v = self.ready.wait(v).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// The loop itself, in order; `ran(i, j)` gives scenario i's report on backend j.
fn run_in_order(
    scenarios: &[Scenario],
    backends: &[Backend],
    opts: &Options,
    mut step: impl FnMut(Step<'_>),
    ran: &dyn Fn(usize, usize) -> Ran,
) -> Result<Option<Signal>, BatchError> {
    let n = scenarios.len() * backends.len();
    let total_s: f64 = scenarios.iter().map(Scenario::duration_s).sum::<f64>() * backends.len() as f64;
    let (mut k, mut done_s) = (0, 0.0);
    let repeat = opts.repeat.max(1);
    let mut group: Vec<Report> = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let mut reports: Vec<Report> = Vec::new();
        let mut stopped = None;
        for (j, b) in backends.iter().enumerate() {
            k += 1;
            step(Step::Start { scenario: s, backend: b.name(), k, n, done_s, total_s });
            done_s += s.duration_s();
            if let Some(why) = b.unsupported(s) {
                step(Step::Skipped { scenario: s, backend: b.name(), why });
                continue;
            }
            let (report, took) = ran(i, j);
            let report = report.map_err(|source| BatchError::Sim { scenario: s.name.clone(), source })?;
            let dir = runner::report_dir(&opts.out, &report);
            let written = if opts.full_series {
                runner::write_all_full(&report, &dir)
            } else {
                runner::write_all(&report, &dir)
            };
            written.map_err(|source| BatchError::Write { path: dir.clone(), source })?;
            step(Step::Ran { scenario: s, report: &report, dir: &dir, took });
            reports.push(report);
            if let Some(sig) = phc_qemu::signals::pending() {
                stopped = Some(sig);
                break;
            }
        }
        let sim = reports.iter().find(|r| r.backend == "sim");
        let real = reports.iter().find(|r| r.backend == "qemu");
        let fidelity = match (sim, real) {
            (Some(sim), Some(q)) if stopped.is_none() => {
                let f = super::ensemble::fidelity(s, sim, q);
                let dir = if repeat > 1 {
                    runner::fidelity_dir(&opts.out, &format!("{}-seed{}", s.name, s.world.seed))
                } else {
                    runner::fidelity_dir(&opts.out, &s.name)
                };
                runner::write_fidelity(&f, &dir)
                    .map_err(|source| BatchError::Write { path: dir.clone(), source })?;
                step(Step::Compared { scenario: s, fidelity: &f, dir: &dir });
                Some(f)
            }
            _ => None,
        };
        step(Step::Done { scenario: s, reports: &reports, fidelity: fidelity.as_ref() });
        if repeat > 1 {
            group.extend(reports);
            if (i + 1) % repeat == 0 && stopped.is_none() {
                let reports = std::mem::take(&mut group);
                // The real runs are judged against the sim at the guest's noise.
                let qemu: Vec<&Report> = reports
                    .iter()
                    .filter(|r| r.backend == "qemu" && r.verdict != crate::judge::report::Verdict::Aborted)
                    .collect();
                let has_sim = reports.iter().any(|r| r.backend == "sim");
                // From the group's first seed (`s` is its last).
                let first = &scenarios[i + 1 - repeat];
                let judging =
                    (has_sim && !qemu.is_empty()).then(|| super::ensemble::calibrated_sims(first, &qemu));
                let d = crate::judge::distribution::Distribution::judged_against(
                    &s.name,
                    &reports,
                    s.poll_interval_s(),
                    judging.as_ref().map(|(r, c)| (r.as_slice(), c.clone())),
                );
                let dir = runner::distribution_dir(&opts.out, &s.name);
                runner::write_distribution(&d, &dir)
                    .map_err(|source| BatchError::Write { path: dir.clone(), source })?;
                step(Step::Distribution { scenario: s, distribution: &d, dir: &dir });
            }
        }
        if stopped.is_some() {
            return Ok(stopped);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::backend::qemu::{ClockMode, HostClock};

    fn qemu(clock: ClockMode, auto_clock: bool) -> Backend {
        let mut opts = QemuOptions::new("agent".into());
        opts.clock = clock;
        Backend::Qemu { opts, observe_s: None, auto_clock }
    }

    fn builtin(name: &str) -> Scenario {
        runner::builtin(name).expect("built in").expect("valid")
    }

    #[test]
    fn a_scenario_that_needs_real_time_gets_it_only_where_no_clock_was_chosen() {
        let restore = builtin("snapshot-restore");
        let (clock, why) = qemu(ClockMode::Virtual, true).clock_for(&restore).expect("real time chosen");
        assert_eq!(clock, ClockMode::Real);
        assert!(why.contains("snapshot_restore"), "{why}");
        assert_eq!(qemu(ClockMode::Virtual, true).unsupported(&restore), None);
        // --clock virtual given: kept, and the run is refused with the reason.
        assert!(qemu(ClockMode::Virtual, false).clock_for(&restore).is_none());
        assert!(qemu(ClockMode::Virtual, false).unsupported(&restore).is_some());
        // Nothing to choose for a scenario virtual time runs, or on the sim.
        assert!(qemu(ClockMode::Virtual, true).clock_for(&builtin("azure-pause-30s")).is_none());
        assert!(Backend::Sim.clock_for(&restore).is_none());
    }

    #[test]
    fn a_kernel_without_igb_runs_hyperv_clocks_on_the_agents_clock_and_refuses_the_rest() {
        let k = tempfile::tempdir().unwrap();
        std::fs::write(k.path().join("VERSION"), "6.1.0-99-cloud-amd64\n").unwrap();
        let mods = k.path().join("lib/modules/6.1.0-99-cloud-amd64");
        std::fs::create_dir_all(mods.join("kernel/drivers/ptp")).unwrap();
        std::fs::write(mods.join("modules.builtin"), "kernel/drivers/ptp/ptp.ko\n").unwrap();
        let with = |clock, host_clock| {
            let mut opts = QemuOptions::new("agent".into());
            opts.clock = clock;
            opts.host_clock = host_clock;
            opts.kernel_dir = Some(k.path().to_owned());
            Backend::Qemu { opts, observe_s: None, auto_clock: false }
        };
        let (pause, jump) = (builtin("azure-pause-30s"), builtin("phc-jump-10s"));
        assert_eq!(with(ClockMode::Virtual, HostClock::Auto).unsupported(&pause), None);
        let why = with(ClockMode::Virtual, HostClock::Auto).unsupported(&jump).unwrap();
        assert!(why.contains("reads igb's PHC") && why.contains("cloud flavour"), "{why}");
        let why = with(ClockMode::Virtual, HostClock::Igb).unsupported(&pause).unwrap();
        assert!(why.contains("no igb driver"), "{why}");
        let why = with(ClockMode::Real, HostClock::Auto).unsupported(&pause).unwrap();
        assert!(why.contains("real time feeds host time to igb"), "{why}");
        // With igb: everything as before, and the agent's clock only where asked.
        std::fs::create_dir_all(mods.join("kernel/drivers/net")).unwrap();
        std::fs::write(mods.join("kernel/drivers/net/igb.ko"), "").unwrap();
        assert_eq!(with(ClockMode::Virtual, HostClock::Auto).unsupported(&jump), None);
        assert_eq!(with(ClockMode::Virtual, HostClock::Igb).unsupported(&pause), None);
        let why = with(ClockMode::Virtual, HostClock::Agent).unsupported(&jump).unwrap();
        assert!(why.contains("--host-clock agent"), "{why}");
        assert_eq!(with(ClockMode::Virtual, HostClock::Agent).unsupported(&pause), None);
        assert!(with(ClockMode::Real, HostClock::Agent).unsupported(&pause).is_some());
    }

    #[test]
    fn qemu_runs_taken_ahead_on_threads_still_come_in_order() {
        // No agent binary: every QEMU run ends at once in an aborted report, which is enough to
        // see the loop hand each one to the caller in the order of the scenarios and backends.
        let scenarios: Vec<Scenario> =
            ["azure-pause-30s", "reboot", "phc-jump-10s", "hyperv-stale-samples"].map(builtin).to_vec();
        let mut opts = QemuOptions::new("/nonexistent/phc-harness-guest".into());
        opts.clock = ClockMode::Virtual;
        let backends = [Backend::Sim, Backend::Qemu { opts, observe_s: None, auto_clock: false }];
        let out = tempfile::tempdir().unwrap();
        let mut seen: Vec<(String, String, String)> = Vec::new();
        let mut order: Vec<usize> = Vec::new();
        let o = Options { out: out.path().into(), full_series: false, progress: false, jobs: 3, repeat: 1 };
        let r = run(&scenarios, &backends, &o, |st| match st {
            Step::Start { k, .. } => order.push(k),
            Step::Ran { scenario, report, .. } => {
                seen.push((scenario.name.clone(), report.backend.clone(), format!("{:?}", report.verdict)))
            }
            _ => {}
        });
        assert!(r.unwrap().is_none());
        assert_eq!(order, (1..=8).collect::<Vec<_>>());
        let names: Vec<(&str, &str)> = seen.iter().map(|(n, b, _)| (n.as_str(), b.as_str())).collect();
        let want: Vec<(&str, &str)> =
            scenarios.iter().flat_map(|s| [(s.name.as_str(), "sim"), (s.name.as_str(), "qemu")]).collect();
        assert_eq!(names, want);
        for (n, b, v) in &seen {
            if b == "qemu" {
                assert_eq!(v, "Aborted", "{n}");
            }
        }
    }
}
