//! Suites: every scenario of a folder (filtered by name, split into shards) on one or more
//! backends, one report folder each, and the suite's own files beside them: `summary.json`,
//! `index.md`, a self-contained `index.html`, `junit.xml` and `results.ktap`. `merge` joins the
//! folders of shards into the suite they split.

use std::path::{Path, PathBuf};

use super::render;
use super::summary::{entry_from_report, DistributionEntry, Entry, FidelityEntry, Outcome, Shard, Summary};
use super::SuiteError;
use crate::model::scenario::Scenario;
pub use crate::run::batch::Backend;
use crate::run::batch::{self, Step};

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

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// Backends, in order, with what each needs.
    pub backends: Vec<Backend>,
    /// Name patterns (`*`, `?`), comma-separated; a scenario matching any runs.
    pub filter: Option<String>,
    /// Only this part of the selection.
    pub shard: Option<Shard>,
    /// Keep the whole offset series in report.json (otherwise long ones are decimated).
    pub full_series: bool,
    /// QEMU runs at once (`batch::Options::jobs`).
    pub jobs: usize,
    /// The suite folder.
    pub out: PathBuf,
    /// Runs per scenario (`--repeat`; the scenarios come as `batch::repeated` made them).
    pub repeat: usize,
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
/// Runs a suite: each scenario on each backend (the one loop, `run::batch`), its reports written
/// into the suite folder as it ends, then the suite's files. Gives the summary, and the signal
/// that stopped it early.
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
    let (mut done_s, mut total_s) = (0.0, 0.0);
    let batch = batch::Options {
        out: opts.out.clone(),
        full_series: opts.full_series,
        progress: false,
        jobs: opts.jobs,
        repeat: opts.repeat.max(1),
    };
    let mut dists = Vec::new();
    let stopped = batch::run(scenarios, &opts.backends, &batch, |step| match step {
        Step::Start { scenario, backend, k, n, done_s: d, total_s: t } => {
            (done_s, total_s) = (d + scenario.duration_s(), t);
            progress(Progress::Start(k, n, &scenario.name, backend, d, t));
        }
        Step::Skipped { scenario, backend, why } => {
            let e = skipped(scenario, backend, why);
            progress(Progress::Done(&e, done_s, total_s));
            entries.push(e);
        }
        Step::Ran { scenario, report, dir, .. } => {
            let e = entry_from_report(report, dir, &opts.out, scenario.tolerance.clone());
            progress(Progress::Done(&e, done_s, total_s));
            entries.push(e);
        }
        Step::Compared { scenario, fidelity, dir } => fid.push(FidelityEntry {
            scenario: scenario.name.clone(),
            agrees: fidelity.agrees,
            dir: dir.strip_prefix(&opts.out).unwrap_or(dir).to_string_lossy().into_owned(),
            seed: (opts.repeat > 1).then_some(scenario.world.seed),
        }),
        Step::Distribution { scenario, distribution, dir } => dists.push(DistributionEntry {
            scenario: scenario.name.clone(),
            agrees: distribution.fidelity.as_ref().map(|f| f.agrees),
            inside: distribution.fidelity.as_ref().map(|f| format!("{}/{}", f.runs_inside, f.runs)),
            dir: dir.strip_prefix(&opts.out).unwrap_or(dir).to_string_lossy().into_owned(),
        }),
        Step::Done { .. } => {}
    })?;
    let summary = Summary::new(
        opts.backends.iter().map(|b| b.name().to_owned()).collect(),
        opts.filter.clone(),
        opts.shard,
        selected,
        entries,
        fid,
    )
    .with_distributions(dists);
    remove_older(&opts.out, &older, &summary.folders())?;
    write_suite_files(&opts.out, &summary)?;
    Ok((summary, stopped))
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
    let plot = render::recovery_plot(s, dir).map(|svg| (render::RECOVERY_PLOT, svg));
    if plot.is_none() {
        // A plot left by an earlier suite in this folder would show other runs.
        let _ = std::fs::remove_file(dir.join(render::RECOVERY_PLOT));
    }
    for (name, text) in files.into_iter().chain(plot) {
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
        interval_s: Some(s.timeline.interval_s),
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
