//! `merge`: joins the folders of `suite --shard 1/N` ... `N/N` into the suite folder the whole
//! run would have written. Shards are CI artifacts anyone with upload rights controls, so every
//! name, folder and file they hold is checked before anything is written, and copies stream
//! through bounded, non-following opens.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::suite::{lock_out, older_folders, remove_older, write_suite_files};
use super::summary::Summary;
use super::SuiteError;

/// Largest file `merge` copies from a shard's report folder: a report.json with `--full-series`
/// is the largest thing a suite writes (see `report::MAX_REPORT_BYTES`).
pub const MAX_COPY_BYTES: u64 = crate::judge::report::MAX_REPORT_BYTES;

/// Most files `merge` copies from one report folder (a suite writes four, a fidelity folder two).
pub const MAX_FILES_PER_FOLDER: usize = 64;

/// Joins the folders of a suite's shards into `out`: their report folders copied, one summary
/// (as the unsharded suite would have written it) and the suite's files. The shards must be of
/// one suite (backends, filter, shard count) and each shard there once. Everything read is
/// checked before anything is written: each report folder a summary lists is a plain name, a
/// real folder (not a symlink) inside its shard holding only regular files of at most
/// [`MAX_COPY_BYTES`], and lands on a plain name inside `out`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Summary, SuiteError> {
    let sums: Vec<Summary> = dirs.iter().map(|d| Summary::load(d)).collect::<Result<_, _>>()?;
    let first = sums.first().ok_or_else(|| SuiteError::Merge("no folders given".into()))?;
    let mut seen = Vec::new();
    for (s, d) in sums.iter().zip(dirs) {
        if !s.distributions.is_empty() || s.fidelity.iter().any(|f| f.seed.is_some()) {
            return Err(SuiteError::Merge(format!(
                "{}: a suite of repeated runs (--repeat), which is never sharded",
                d.display()
            )));
        }
        if s.backends != first.backends || s.filter != first.filter || s.selected != first.selected {
            return Err(SuiteError::Merge(format!(
                "{} is of another suite (backends, filter or selection differ from {})",
                d.display(),
                dirs[0].display()
            )));
        }
        match (s.shard, first.shard) {
            (Some(a), Some(b)) if a.count == b.count => {
                if seen.contains(&a.index) {
                    return Err(SuiteError::Merge(format!("shard {}/{} given twice", a.index, a.count)));
                }
                seen.push(a.index);
            }
            _ => {
                return Err(SuiteError::Merge(format!(
                    "{} is not a shard of the same count as {} (run with --shard I/N)",
                    d.display(),
                    dirs[0].display()
                )))
            }
        }
    }
    // Summary::load checked 1 <= index <= count <= MAX_SHARDS, so this loop is bounded.
    let count = first.shard.map_or(0, |s| s.count);
    if seen.len() != count {
        let missing: Vec<String> =
            (1..=count).filter(|i| !seen.contains(i)).map(|i| format!("{i}/{count}")).collect();
        let shown = missing.len().min(20);
        let more = if missing.len() > shown {
            format!(" and {} more", missing.len() - shown)
        } else {
            String::new()
        };
        return Err(SuiteError::Merge(format!("shards missing: {}{more}", missing[..shown].join(", "))));
    }
    if let Ok(o) = out.canonicalize() {
        if let Some(d) = dirs.iter().find(|d| d.canonicalize().is_ok_and(|d| d == o)) {
            return Err(SuiteError::Merge(format!("--out {} is one of the shard folders", d.display())));
        }
    }
    // Every folder, its files and its place in `out`, checked before anything is written.
    let mut plan: Vec<(PathBuf, Vec<String>, String)> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (s, d) in sums.iter().zip(dirs) {
        for f in s.folders() {
            if !names.insert(f.to_owned()) {
                return Err(SuiteError::Merge(format!("{f}: listed by two shards")));
            }
            let from =
                phc::input::join_inside(d, f).map_err(|source| SuiteError::Io { path: d.clone(), source })?;
            let files = list_report_folder(&from)?;
            plan.push((from, files, f.to_owned()));
        }
    }
    let _lock = lock_out(out)?;
    let older = older_folders(out)?;
    for (_, _, f) in &plan {
        let to = phc::input::join_inside(out, f)
            .map_err(|source| SuiteError::Io { path: out.to_owned(), source })?;
        match std::fs::symlink_metadata(&to) {
            Ok(m) if !m.is_dir() => {
                return Err(SuiteError::Malformed {
                    path: to,
                    message: format!(
                        "{} where a report folder goes; not replaced",
                        phc::input::file_kind(&m)
                    ),
                })
            }
            _ => {}
        }
    }
    let mut entries = Vec::new();
    let mut fid = Vec::new();
    for (from, files, f) in &plan {
        copy_folder(from, files, &out.join(f))?;
    }
    for s in &sums {
        entries.extend(s.entries.iter().cloned());
        fid.extend(s.fidelity.iter().cloned());
    }
    // The unsharded order: scenario names, then backends in run order.
    let order = |b: &str| first.backends.iter().position(|x| x == b).unwrap_or(usize::MAX);
    entries.sort_by(|a, b| {
        (a.scenario.as_str(), order(&a.backend)).cmp(&(b.scenario.as_str(), order(&b.backend)))
    });
    fid.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    let merged =
        Summary::new(first.backends.clone(), first.filter.clone(), None, first.selected, entries, fid);
    remove_older(out, &older, &merged.folders())?;
    write_suite_files(out, &merged)?;
    Ok(merged)
}

/// The files of a shard's report folder, by name: `from` must be a real folder (not a symlink)
/// holding at most [`MAX_FILES_PER_FOLDER`] regular files, each a plain name of at most
/// [`MAX_COPY_BYTES`]. Anything else in it (a symlink, a FIFO, a folder) is refused.
fn list_report_folder(from: &Path) -> Result<Vec<String>, SuiteError> {
    let bad = |path: &Path, message: String| SuiteError::Malformed { path: path.to_owned(), message };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SuiteError::Io { path, source }
    };
    let meta = std::fs::symlink_metadata(from).map_err(io(from))?;
    if !meta.is_dir() {
        return Err(bad(from, format!("not a report folder ({})", phc::input::file_kind(&meta))));
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(from).map_err(io(from))? {
        let e = e.map_err(io(from))?;
        let path = e.path();
        let name =
            e.file_name().to_str().map(str::to_owned).ok_or_else(|| bad(&path, "not a UTF-8 name".into()))?;
        phc::input::check_name(&name).map_err(|why| bad(&path, format!("not copied: {why}")))?;
        let m = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if !m.is_file() {
            return Err(bad(
                &path,
                format!("{} in a report folder, which is not copied", phc::input::file_kind(&m)),
            ));
        }
        if m.len() > MAX_COPY_BYTES {
            return Err(bad(&path, format!("{} bytes, over the limit of {MAX_COPY_BYTES}", m.len())));
        }
        files.push(name);
        if files.len() > MAX_FILES_PER_FOLDER {
            return Err(bad(from, format!("more than {MAX_FILES_PER_FOLDER} files in a report folder")));
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the checked `files` of `from` into a fresh `to` (replacing it whole, see
/// `format::files::replace_dir`), each streamed from a bounded, non-following open. A shard's
/// `plot.svg` is not copied but drawn again from the copied `report.json`: an SVG opened on its
/// own runs whatever script a shard's uploader put in it.
fn copy_folder(from: &Path, files: &[String], to: &Path) -> Result<(), SuiteError> {
    let mut failed: Option<PathBuf> = None;
    let r = crate::format::files::replace_dir(to, |staging| {
        for name in files.iter().filter(|n| *n != "plot.svg") {
            let src = from.join(name);
            failed = Some(src.clone());
            let (f, _) = phc::input::open_regular(&src, MAX_COPY_BYTES, phc::input::Links::Refuse)?;
            let mut dst = std::fs::File::create_new(staging.join(name))?;
            let n = std::io::copy(&mut std::io::Read::take(f, MAX_COPY_BYTES + 1), &mut dst)?;
            if n > MAX_COPY_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("grew past the limit of {MAX_COPY_BYTES} bytes while copied"),
                ));
            }
            dst.sync_data()?;
        }
        if files.iter().any(|n| n == "report.json") {
            let report = staging.join("report.json");
            failed = Some(from.join("report.json"));
            let r = crate::judge::report::Report::load(&report)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            std::fs::write(staging.join("plot.svg"), crate::judge::plot::svg(&r))?;
        }
        failed = None;
        Ok(())
    });
    r.map_err(|source| SuiteError::Io { path: failed.unwrap_or_else(|| to.to_owned()), source })
}
