//! Suites: every scenario of a folder (filtered by name, split into shards) on one or more
//! backends, one report folder each, and the suite's own files beside them: `summary.json`,
//! `index.md`, a self-contained `index.html`, `junit.xml` and `results.ktap`. `merge` joins the
//! folders of shards into the suite they split.

use std::path::{Path, PathBuf};

use super::render;
use super::summary::{entry_from_report, Entry, FidelityEntry, Outcome, Shard, Summary};
use super::SuiteError;
use crate::judge::report::Report;
use crate::model::scenario::Scenario;
use crate::run::backend::qemu::{self, QemuOptions};
use crate::run::{engine, runner};

/// The lock file a suite or merge holds (`flock`, exclusive) in its output folder while it
/// writes there, so that two never mix their files in one folder.
pub const LOCK_FILE: &str = ".phc-harness.lock";

/// An exclusive hold on an output folder, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct OutLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Creates `dir` if needed and takes its lock without waiting: a second suite or merge into
/// the same folder is refused at once ([`SuiteError::Busy`]).
pub fn lock_out(dir: &Path) -> Result<OutLock, SuiteError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SuiteError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io(&path))?;
    let meta = f.metadata().map_err(io(&path))?;
    if !meta.is_file() {
        return Err(SuiteError::Malformed {
            path,
            message: format!("not a regular file ({})", phc::input::file_kind(&meta)),
        });
    }
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(OutLock(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(SuiteError::Busy { path: dir.to_owned() }),
        Err((_, e)) => Err(SuiteError::Io { path, source: e.into() }),
    }
}

/// The report folders of the suite an output folder held before (those its `summary.json`
/// lists; none when it has no summary). A summary that is there but cannot be read is refused:
/// it is the only record of which folders are the old suite's.
pub(crate) fn older_folders(out: &Path) -> Result<Vec<String>, SuiteError> {
    match std::fs::symlink_metadata(out.join("summary.json")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => {}
    }
    let old = Summary::load(out)?;
    Ok(old.folders().into_iter().map(str::to_owned).collect())
}

/// Removes the older suite's report folders that the new one did not write again: each a plain
/// name inside `out` (no symlink on the way, [`phc::input::join_inside`]) that is a real
/// folder; anything else is left alone.
pub(crate) fn remove_older(out: &Path, older: &[String], keep: &[&str]) -> Result<(), SuiteError> {
    for d in older.iter().filter(|d| !keep.contains(&d.as_str())) {
        let Ok(path) = phc::input::join_inside(out, d) else { continue };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path)
                .map_err(|source| SuiteError::Io { path: path.clone(), source })?,
            _ => {}
        }
    }
    Ok(())
}

/// A backend a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// mock-phc's world in virtual time.
    Sim,
    /// A QEMU guest with the real chronyd.
    Qemu,
    /// This machine's own PHC and daemon, in wall-clock time.
    Local,
}

impl Backend {
    /// `sim` or `qemu`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Qemu => "qemu",
            Self::Local => "local",
        }
    }
}

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// Backends, in order.
    pub backends: Vec<Backend>,
    /// QEMU options (needed when `backends` has `Qemu`).
    pub qemu: Option<QemuOptions>,
    /// Name patterns (`*`, `?`), comma-separated; a scenario matching any runs.
    pub filter: Option<String>,
    /// Only this part of the selection.
    pub shard: Option<Shard>,
    /// Keep the whole offset series in report.json (otherwise long ones are decimated).
    pub full_series: bool,
    /// The suite folder.
    pub out: PathBuf,
    /// The local backend: the PHC to observe, and whether the clock may be stepped.
    pub local: Option<(PathBuf, bool)>,
}

/// What a suite run tells its caller as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A run is starting: (1-based position, runs in all, scenario, backend, the scenario
    /// seconds of the runs done before it and of all runs, for an ETA).
    Start(usize, usize, &'a str, &'static str, f64, f64),
    /// A run ended: its entry, and the scenario seconds of the runs done and of all runs.
    Done(&'a Entry, f64, f64),
}

/// Whether `name` matches a glob `pattern` (`*` any run of characters, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The scenarios a suite runs, in name order: those the filter selects, then this shard's part.
/// Also gives how many the filter selected in all.
pub fn select(mut all: Vec<Scenario>, filter: Option<&str>, shard: Option<Shard>) -> (Vec<Scenario>, usize) {
    all.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(f) = filter {
        all.retain(|s| f.split(',').any(|p| glob_match(p.trim(), &s.name)));
    }
    let selected = all.len();
    let picked = match shard {
        Some(sh) => all.into_iter().enumerate().filter(|(k, _)| sh.holds(*k)).map(|(_, s)| s).collect(),
        None => all,
    };
    (picked, selected)
}

/// Environment facts of a report: the set-up keys of its backend info.
/// Runs a suite: each scenario on each backend, its reports written into the suite folder as
/// it ends, then the suite's files. Gives the summary, and the signal that stopped it early.
pub fn run(
    scenarios: &[Scenario],
    selected: usize,
    opts: &Options,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<(Summary, Option<nix::sys::signal::Signal>), SuiteError> {
    let _lock = lock_out(&opts.out)?;
    let older = older_folders(&opts.out)?;
    let mut entries = Vec::new();
    let mut fid = Vec::new();
    let total_runs = scenarios.len() * opts.backends.len();
    let total_s: f64 = scenarios.iter().map(|s| s.duration_s()).sum::<f64>() * opts.backends.len() as f64;
    let (mut done_s, mut k) = (0.0, 0);
    let mut stopped = None;
    'outer: for s in scenarios {
        let mut reports: Vec<Report> = Vec::new();
        for b in &opts.backends {
            k += 1;
            progress(Progress::Start(k, total_runs, &s.name, b.name(), done_s, total_s));
            done_s += s.duration_s();
            let report = match b {
                Backend::Sim => runner::run_sim(s)
                    .map_err(|source| SuiteError::Sim { scenario: s.name.clone(), source })?,
                Backend::Local => {
                    let Some((device, writes)) = &opts.local else { continue };
                    if let Some(why) = crate::run::backend::local::unsupported(s, *writes) {
                        let e = skipped(s, "local", why);
                        progress(Progress::Done(&e, done_s, total_s));
                        entries.push(e);
                        continue;
                    }
                    run_local(s, device, *writes)
                }
                Backend::Qemu => {
                    let clock = opts.qemu.as_ref().map_or(Default::default(), |o| o.clock);
                    let why = match &opts.qemu {
                        None => Some("no QEMU options (agent binary) given".to_owned()),
                        Some(o) => qemu::unsupported(s, clock, qemu::GuestPhc::for_scenario(o.phc, s)),
                    };
                    if let Some(why) = why {
                        let e = skipped(s, "qemu", why);
                        progress(Progress::Done(&e, done_s, total_s));
                        entries.push(e);
                        continue;
                    }
                    let q = opts.qemu.as_ref().expect("checked above");
                    runner::run_qemu_or_abort(s, q, false)
                }
            };
            let dir = runner::report_dir(&opts.out, &report);
            let written = if opts.full_series {
                runner::write_all_full(&report, &dir)
            } else {
                runner::write_all(&report, &dir)
            };
            written.map_err(|source| SuiteError::Io { path: dir.clone(), source })?;
            let e = entry_from_report(&report, &dir, &opts.out, s.tolerance.clone());
            progress(Progress::Done(&e, done_s, total_s));
            entries.push(e);
            reports.push(report);
            if let Some(sig) = phc_qemu::signals::pending() {
                stopped = Some(sig);
                break 'outer;
            }
        }
        if let [sim, q] = &reports[..] {
            if sim.backend == "sim" && q.backend == "qemu" {
                let f = crate::run::ensemble::fidelity(s, sim, q);
                let dir = runner::fidelity_dir(&opts.out, &s.name);
                runner::write_fidelity(&f, &dir)
                    .map_err(|source| SuiteError::Io { path: dir.clone(), source })?;
                fid.push(FidelityEntry {
                    scenario: s.name.clone(),
                    agrees: f.agrees,
                    dir: dir.strip_prefix(&opts.out).unwrap_or(&dir).to_string_lossy().into_owned(),
                });
            }
        }
    }
    let summary = Summary::new(
        opts.backends.iter().map(|b| b.name().to_owned()).collect(),
        opts.filter.clone(),
        opts.shard,
        selected,
        entries,
        fid,
    );
    remove_older(&opts.out, &older, &summary.folders())?;
    write_suite_files(&opts.out, &summary)?;
    Ok((summary, stopped))
}

/// One scenario on this machine's PHC; a failure after the start gives an aborted report.
fn run_local(s: &Scenario, device: &Path, writes: bool) -> Report {
    let mut b = match crate::run::backend::local::LocalBackend::open(device, writes) {
        Ok(b) => b,
        Err(e) => {
            return Report::new(
                s,
                "local",
                crate::model::observation::Observations::default(),
                Some(e.to_string()),
            )
        }
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

/// Writes `summary.json`, `index.md`, `index.html`, `junit.xml` and `results.ktap` into the
/// suite folder, each atomically (written beside, then renamed into place).
pub fn write_suite_files(dir: &Path, s: &Summary) -> Result<(), SuiteError> {
    let files = [
        ("summary.json", s.to_json()),
        ("index.md", render::markdown(s)),
        ("index.html", render::html(s, dir)),
        ("junit.xml", crate::regress::results::junit(s)),
        ("results.ktap", crate::regress::results::ktap(s)),
    ];
    std::fs::create_dir_all(dir).map_err(|source| SuiteError::Io { path: dir.to_owned(), source })?;
    for (name, text) in files {
        let path = dir.join(name);
        crate::format::files::write_file_atomic(&path, text.as_bytes())
            .map_err(|source| SuiteError::Io { path, source })?;
    }
    Ok(())
}

/// The entry of a run the backend cannot do, with why.
fn skipped(s: &Scenario, backend: &str, why: String) -> Entry {
    Entry {
        scenario: s.name.clone(),
        backend: backend.into(),
        seed: s.world.seed,
        outcome: Outcome::Skipped,
        reason: Some(why),
        dir: None,
        checks: Vec::new(),
        recovery: None,
        environment: Default::default(),
        tolerance: s.tolerance.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*", "reboot", true),
            ("pause-*", "pause-30s-ntpd", true),
            ("pause-*", "azure-pause-30s", false),
            ("*pause*", "azure-pause-30s", true),
            ("re?oot", "reboot", true),
            ("re?oot", "rebooot", false),
            ("*-2-*", "date-back-2-years", true),
            ("", "x", false),
            ("a*b*c", "abxbc", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }
}
