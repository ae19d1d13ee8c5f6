//! Temporary files and folders, under one naming scheme: `phc-<kind>-<pid>-[<label>-]<random>`.
//! Each is removed when its handle drops; what a killed process left behind (SIGKILL runs no
//! destructors) is removed by `sweep` once the pid in its name is no longer alive.
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::Pid;

pub use tempfile::{TempDir, TempPath};

use crate::Error;

/// The start of every name this process makes for `kind` and `label`; a random part follows.
pub(crate) fn prefix(kind: &str, label: &str) -> String {
    debug_assert!(!kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase()), "kind {kind:?}");
    let pid = std::process::id();
    if label.is_empty() {
        format!("phc-{kind}-{pid}-")
    } else {
        format!("phc-{kind}-{pid}-{label}-")
    }
}

/// A fresh folder in the temp dir, removed (with its contents) on drop. `kind` is lowercase
/// letters; `label` (may be empty) says whose it is, so that tools can tell guests apart by name.
pub fn dir(kind: &str, label: &str) -> Result<TempDir, Error> {
    let base = std::env::temp_dir();
    tempfile::Builder::new().prefix(&prefix(kind, label)).tempdir_in(&base).map_err(|source| Error::Io {
        op: "create a folder in",
        path: base,
        source,
    })
}

/// A fresh empty file in the temp dir ending in `suffix`, removed on drop.
pub fn file(kind: &str, label: &str, suffix: &str) -> Result<TempPath, Error> {
    let base = std::env::temp_dir();
    tempfile::Builder::new()
        .prefix(&prefix(kind, label))
        .suffix(suffix)
        .tempfile_in(&base)
        .map(tempfile::NamedTempFile::into_temp_path)
        .map_err(|source| Error::Io { op: "create a file in", path: base, source })
}

/// The pid in a name of this scheme (`phc-<kind>-<pid>-...`, or the older `phc-<kind>-<pid>.ext`),
/// or `None` for any other name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let (kind, rest) = name.strip_prefix("phc-")?.split_once('-')?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    let (pid, tail) = rest.split_at(end);
    let well_ended = (tail.starts_with('-') || tail.starts_with('.')) && tail.len() > 1;
    if pid.is_empty() || !well_ended {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this pid exists (EPERM: it does, and is someone else's).
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    if raw <= 0 {
        return false;
    }
    !matches!(nix::sys::signal::kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Removes from `dir` what processes of this scheme left behind: entries whose name carries the
/// pid of a process that is gone, owned by this user. Live owners' files (a concurrent run's) and
/// this process's own are kept. A pid reused since by an unrelated process keeps its leftover
/// until that process ends too: erring that way never deletes a live run's files. Returns what it
/// removed.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let me = std::process::id();
    let uid = nix::unistd::geteuid().as_raw();
    let mut removed = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else { continue };
        if pid == me || alive(pid) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.uid() != uid {
            continue;
        }
        let gone = if meta.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that was just alive and is not any more (reaped, so not even a zombie).
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!alive(pid), "pid {pid} reused at once");
        pid
    }

    #[test]
    fn names_carry_kind_pid_and_label_and_go_on_drop() {
        let d = dir("qemu", "scenario").unwrap();
        let name = d.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(&format!("phc-qemu-{}-scenario-", std::process::id())), "{name}");
        assert_eq!(owner_pid(&name), Some(std::process::id()));
        fs::write(d.path().join("console.log"), b"x").unwrap();
        let f = file("initrd", "", ".cpio").unwrap();
        let fname = f.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            fname.starts_with(&format!("phc-initrd-{}-", std::process::id())) && fname.ends_with(".cpio")
        );
        let (dp, fp) = (d.path().to_owned(), f.to_path_buf());
        assert!(dp.is_dir() && fp.is_file());
        drop(d);
        drop(f);
        assert!(!dp.exists(), "folder left after drop");
        assert!(!fp.exists(), "file left after drop");
        // Two of the same kind never share a name.
        let (a, b) = (dir("qemu", "").unwrap(), dir("qemu", "").unwrap());
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn owner_pid_reads_only_this_scheme() {
        assert_eq!(owner_pid("phc-qemu-123-scenario-AbC9"), Some(123));
        assert_eq!(owner_pid("phc-qemu-123-0"), Some(123));
        assert_eq!(owner_pid("phc-initrd-77.cpio"), Some(77));
        assert_eq!(owner_pid("phc-initrd-77-x.cpio"), Some(77));
        for other in [
            "phc-vmlinux-pvh-1234-5678",
            "phc-qemu-123",
            "phc-qemu-123-",
            "phc-qemu--1-x",
            "phc-Qemu-1-x",
            "phc--1-x",
            "tmp-phc-qemu-1-x",
            "phc-harness-ci-runs",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn sweep_removes_dead_owners_leftovers_only() {
        let t = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let me = std::process::id();
        let dead_dir = t.path().join(format!("phc-qemu-{dead}-scenario-x1"));
        fs::create_dir(&dead_dir).unwrap();
        fs::write(dead_dir.join("qmp.sock"), b"").unwrap();
        let dead_file = t.path().join(format!("phc-initrd-{dead}-y2.cpio"));
        fs::write(&dead_file, b"cpio").unwrap();
        let legacy = t.path().join(format!("phc-initrd-{dead}.cpio"));
        fs::write(&legacy, b"cpio").unwrap();
        let keep = [
            t.path().join(format!("phc-qemu-{me}-guest-z3")),
            t.path().join("phc-qemu-1-guest-z4"), // pid 1 is always alive
            t.path().join(format!("phc-vmlinux-pvh-{dead}-5")),
            t.path().join(format!("other-{dead}-x")),
        ];
        for k in &keep {
            fs::create_dir(k).unwrap();
        }
        let mut removed = sweep(t.path());
        removed.sort();
        let mut want = vec![dead_dir.clone(), dead_file.clone(), legacy.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(!dead_dir.exists() && !dead_file.exists() && !legacy.exists());
        for k in &keep {
            assert!(k.exists(), "{} was swept", k.display());
        }
    }
}
