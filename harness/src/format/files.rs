//! Files written whole or not at all: one file through a temp file renamed into place, a folder
//! through a staging folder renamed into place. A reader (or a second run writing the same
//! place) sees the old contents or the new, never a mix.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

/// Writes `path` whole or not at all: a temp file beside it, renamed into place, readable by
/// everyone as `std::fs::write` makes it (not the temp file's 0600).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

/// Replaces `dir` with a folder holding exactly `files`: they are written into a fresh hidden
/// folder beside it, which is then renamed into place (an older `dir` is renamed away first and
/// removed). A reader sees the old set or the new one, and two runs writing the same folder
/// leave one run's files, never a mix. Nothing is written outside `dir`'s parent.
pub fn write_dir(dir: &Path, files: &[(&str, String)]) -> std::io::Result<()> {
    replace_dir(dir, |staging| {
        for (name, text) in files {
            let mut f = std::fs::File::create_new(staging.join(name))?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        Ok(())
    })
}

/// [`write_dir`] with the files written by `fill` into the fresh staging folder it is given
/// (`merge` streams copies into it). When `fill` fails nothing replaces `dir`.
pub fn replace_dir(dir: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let leaf = dir.file_name().ok_or_else(|| std::io::Error::other("the report folder has no name"))?;
    std::fs::create_dir_all(parent)?;
    let tmp =
        tempfile::Builder::new().prefix(&format!(".{}.new-", leaf.to_string_lossy())).tempdir_in(parent)?;
    // A report folder is for anyone to read, as create_dir made it (not the temp folder's 0700).
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    fill(tmp.path())?;
    let staged = tmp.keep();
    let old = parent.join(format!(".{}.old-{}", leaf.to_string_lossy(), unique_suffix()));
    let moved_old = match std::fs::rename(dir, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
    };
    let placed = std::fs::rename(&staged, dir);
    if placed.is_err() {
        // Another run put its folder there between our two renames: keep theirs, whole.
        let _ = std::fs::remove_dir_all(&staged);
    }
    if moved_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    placed
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_dir_replaces_the_whole_folder() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("a-sim-seed1");
        write_dir(&dir, &[("report.json", "1".into()), ("extra.txt", "x".into())]).unwrap();
        write_dir(&dir, &[("report.json", "2".into())]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("report.json")).unwrap(), "2");
        assert!(!dir.join("extra.txt").exists(), "files of the older run must not stay beside the new");
        let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a-sim-seed1")], "no staging folders left");
    }

    #[test]
    fn concurrent_writers_never_mix() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("s-sim-seed1");
        std::thread::scope(|sc| {
            for w in 0..4 {
                let dir = &dir;
                sc.spawn(move || {
                    for _ in 0..50 {
                        let v = w.to_string();
                        let _ = write_dir(dir, &[("a", v.clone()), ("b", v)]);
                    }
                });
            }
        });
        let a = std::fs::read_to_string(dir.join("a")).unwrap();
        assert_eq!(a, std::fs::read_to_string(dir.join("b")).unwrap());
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    }
}
