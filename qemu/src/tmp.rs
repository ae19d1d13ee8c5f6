//! Temporary files and folders, all inside one private folder per user, `$TMPDIR/phc-harness-<uid>`
//! (made 0700, and used only while it is a real folder owned by this user that nobody else may
//! write: a symlink or a stranger's folder planted there is refused), under one naming scheme:
//! `phc-<kind>-<pid>-[<label>-]<random>`. Each is removed when its handle drops; what a killed
//! process left behind (SIGKILL runs no destructors) is removed by `sweep` once the pid in its
//! name is no longer alive. The sweep looks inside the private folder only: nothing else in the
//! temp dir is ever removed, whatever its name.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
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

/// The private folder's name in a temp dir: `phc-harness-<uid>` (the effective uid).
pub fn private_name() -> String {
    format!("phc-harness-{}", nix::unistd::geteuid().as_raw())
}

/// This user's private folder in the temp dir (`$TMPDIR/phc-harness-<uid>`), made when missing;
/// see [`private_in`].
pub fn base() -> Result<PathBuf, Error> {
    private_in(&std::env::temp_dir())
}

/// This user's private folder in `tmpdir`, made 0700 when missing. An existing one is used only
/// when it is a folder (not a symlink) owned by this user that no one else can write or enter
/// (mode `0o077` clear): anything else is refused, never followed, changed or removed.
pub fn private_in(tmpdir: &Path) -> Result<PathBuf, Error> {
    let path = tmpdir.join(private_name());
    let refuse = |why: String| Error::Io {
        op: "use the private temp folder",
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why),
    };
    match fs::DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(Error::Io { op: "create", path: path.clone(), source }),
    }
    let meta = fs::symlink_metadata(&path).map_err(|source| Error::Io {
        op: "use the private temp folder",
        path: path.clone(),
        source,
    })?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        return Err(refuse("a symlink, not this user's private folder".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("not a folder".into()));
    }
    if meta.uid() != uid {
        return Err(refuse(format!("owned by uid {}, not by this user ({uid})", meta.uid())));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:o}: others may use it (want 700)",
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(path)
}

/// A fresh folder in the private temp folder, removed (with its contents) on drop. `kind` is
/// lowercase letters; `label` (may be empty) says whose it is, so that tools can tell guests
/// apart by name.
pub fn dir(kind: &str, label: &str) -> Result<TempDir, Error> {
    let base = base()?;
    tempfile::Builder::new().prefix(&prefix(kind, label)).tempdir_in(&base).map_err(|source| Error::Io {
        op: "create a folder in",
        path: base,
        source,
    })
}

/// A fresh empty file in the private temp folder ending in `suffix`, removed on drop.
pub fn file(kind: &str, label: &str, suffix: &str) -> Result<TempPath, Error> {
    let base = base()?;
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

/// Removes from this user's private temp folder (never from the temp dir itself) what processes
/// of this scheme left behind; see `sweep_in`. Refuses, removing nothing, when the private
/// folder is not what [`private_in`] accepts.
pub fn sweep() -> Result<Vec<PathBuf>, Error> {
    Ok(sweep_in(&base()?))
}

/// Removes from `dir` (a private temp folder) what processes of this scheme left behind: entries
/// whose name carries the pid of a process that is gone, owned by this user. Live owners' files
/// (a concurrent run's) and this process's own are kept. A pid reused since by an unrelated
/// process keeps its leftover until that process ends too: erring that way never deletes a live
/// run's files. Returns what it removed.
pub(crate) fn sweep_in(dir: &Path) -> Vec<PathBuf> {
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
    fn the_sweep_keeps_the_users_files_and_removes_leftovers_in_the_private_folder_only() {
        let t = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        // The user's own files in the temp dir, named like this scheme (old or new): never swept.
        let users = [
            t.path().join(format!("phc-notes-{dead}-plan.txt")),
            t.path().join(format!("phc-qemu-{dead}-scenario-x1")),
            t.path().join(format!("phc-vmlinux-pvh-{dead}-5")),
        ];
        for u in &users {
            fs::write(u, b"mine").unwrap();
        }
        let private = private_in(t.path()).unwrap();
        assert_eq!(private, t.path().join(private_name()));
        let meta = fs::symlink_metadata(&private).unwrap();
        assert!(meta.is_dir() && meta.permissions().mode() & 0o777 == 0o700);
        let left = private.join(format!("phc-qemu-{dead}-scenario-x1"));
        fs::create_dir(&left).unwrap();
        fs::write(left.join("console.log"), b"x").unwrap();
        assert_eq!(sweep_in(&private_in(t.path()).unwrap()), vec![left.clone()]);
        assert!(!left.exists());
        for u in &users {
            assert_eq!(fs::read(u).unwrap(), b"mine", "{} was touched", u.display());
        }
    }

    #[test]
    fn a_planted_private_folder_is_refused_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).unwrap();
        let dead = dead_pid();
        let bait = elsewhere.join(format!("phc-qemu-{dead}-x"));
        fs::write(&bait, b"x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.path().join(private_name())).unwrap();
        let e = private_in(t.path()).unwrap_err();
        assert!(crate::error::chain(&e).contains("a symlink"), "{}", crate::error::chain(&e));
        assert!(bait.exists());
        // A folder others may write: refused too, and left as it was.
        let t2 = tempfile::tempdir().unwrap();
        let open = t2.path().join(private_name());
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = crate::error::chain(&private_in(t2.path()).unwrap_err());
        assert!(e.contains("mode 777"), "{e}");
        assert_eq!(fs::symlink_metadata(&open).unwrap().permissions().mode() & 0o777, 0o777);
        // A file planted there.
        let t3 = tempfile::tempdir().unwrap();
        fs::write(t3.path().join(private_name()), b"x").unwrap();
        assert!(crate::error::chain(&private_in(t3.path()).unwrap_err()).contains("not a folder"));
    }

    #[test]
    fn names_carry_kind_pid_and_label_and_go_on_drop() {
        let d = dir("qemu", "scenario").unwrap();
        assert_eq!(d.path().parent(), Some(base().unwrap().as_path()), "outside the private folder");
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
        let mut removed = sweep_in(t.path());
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
