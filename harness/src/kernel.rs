//! The user's own kernel for the QEMU backend (`--kernel PATH --modules DIR`, or `--kernel-deb
//! FILE.deb`): laid out as the image builder reads the cached Debian kernel (`vmlinuz`,
//! `VERSION`, `lib/modules/<release>/` with `modules.dep`), in a temp folder that lives as long
//! as the returned value. And the set-up facts a report records: kernel release, QEMU version.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel that could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A file or folder is missing or unreadable.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The input is not what it must be.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tool (dpkg-deb, depmod) failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Its stderr, or why it did not start.
        message: String,
    },
}

/// A kernel folder in the image builder's layout; a temp one is removed on drop.
#[derive(Debug)]
pub struct KernelDir {
    /// The folder (`vmlinuz`, `VERSION`, `lib/modules/<release>`).
    pub path: PathBuf,
    /// The kernel release (as the guest reports it).
    pub release: String,
    _tmp: Option<tempfile::TempDir>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io { path: path.to_owned(), source }
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), KernelError> {
    let out = cmd.output().map_err(|e| KernelError::Tool { tool, message: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KernelError::Tool { tool, message: String::from_utf8_lossy(&out.stderr).trim().to_owned() })
    }
}

fn depmod(root: &Path, release: &str) -> Result<(), KernelError> {
    run("depmod", Command::new("depmod").arg("-b").arg(root).arg(release))
}

/// A kernel image with its modules folder (`.../lib/modules/<release>`, whose name is the
/// release). The modules are linked, not copied; `modules.dep` is made when missing.
pub fn from_parts(kernel: &Path, modules: &Path) -> Result<KernelDir, KernelError> {
    let meta = std::fs::metadata(kernel).map_err(io(kernel))?;
    if !meta.is_file() {
        return Err(KernelError::Invalid {
            path: kernel.to_owned(),
            message: "not a kernel image file".into(),
        });
    }
    let modules = std::fs::canonicalize(modules).map_err(io(modules))?;
    if !modules.join("kernel").is_dir() && !modules.join("modules.dep").is_file() {
        return Err(KernelError::Invalid {
            path: modules,
            message: "not a modules folder (lib/modules/<release>, with kernel/ or modules.dep)".into(),
        });
    }
    let release = modules.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new().prefix("phc-kernel-").tempdir().map_err(io(Path::new("/tmp")))?;
    let root = tmp.path().to_owned();
    std::fs::create_dir_all(root.join("lib/modules")).map_err(io(&root))?;
    let kernel = std::fs::canonicalize(kernel).map_err(io(kernel))?;
    std::os::unix::fs::symlink(&kernel, root.join("vmlinuz")).map_err(io(&root))?;
    let dest = root.join("lib/modules").join(&release);
    if modules.join("modules.dep").is_file() {
        std::os::unix::fs::symlink(&modules, &dest).map_err(io(&dest))?;
    } else {
        // depmod writes into the folder it indexes: index a linked copy of the tree instead.
        run("cp", Command::new("cp").arg("-rs").arg(&modules).arg(&dest))?;
        depmod(&root, &release)?;
    }
    std::fs::write(root.join("VERSION"), format!("{release}\n")).map_err(io(&root))?;
    Ok(KernelDir { path: root, release, _tmp: Some(tmp) })
}

/// A Debian kernel package (`linux-image-*.deb`), unpacked with `dpkg-deb -x` and indexed with
/// `depmod` (the package ships no `modules.dep`), as ci/setup-vm.sh does for the cached one.
pub fn from_deb(deb: &Path) -> Result<KernelDir, KernelError> {
    std::fs::metadata(deb).map_err(io(deb))?;
    let tmp = tempfile::Builder::new().prefix("phc-kernel-").tempdir().map_err(io(Path::new("/tmp")))?;
    let x = tmp.path().join("x");
    run("dpkg-deb", Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x))?;
    let mods = x.join("lib/modules");
    let release = std::fs::read_dir(&mods)
        .ok()
        .and_then(|rd| rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).next())
        .ok_or_else(|| KernelError::Invalid {
            path: deb.to_owned(),
            message: "no lib/modules/<release> in the package".into(),
        })?;
    let image = x.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() {
        return Err(KernelError::Invalid {
            path: deb.to_owned(),
            message: format!("no boot/vmlinuz-{release} in the package (not a linux-image package?)"),
        });
    }
    let root = tmp.path().join("kernel");
    std::fs::create_dir_all(root.join("lib")).map_err(io(&root))?;
    std::fs::rename(&image, root.join("vmlinuz")).map_err(io(&image))?;
    std::fs::rename(&mods, root.join("lib/modules")).map_err(io(&mods))?;
    depmod(&root, &release)?;
    std::fs::write(root.join("VERSION"), format!("{release}\n")).map_err(io(&root))?;
    Ok(KernelDir { path: root, release, _tmp: Some(tmp) })
}

/// The release of the kernel in an image-builder folder (its `VERSION`).
pub fn release_of(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("VERSION")).ok().map(|v| v.trim().to_owned())
}

/// QEMU's version (`qemu-system-x86_64 --version`, first line), once per process.
pub fn qemu_version() -> Option<String> {
    static V: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let out = Command::new("qemu-system-x86_64").arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().map(|l| l.trim().to_owned())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = from_parts(&dir.path().join("vmlinuz"), dir.path()).unwrap_err().to_string();
        assert!(e.contains("vmlinuz"), "{e}");
        let k = dir.path().join("vmlinuz");
        std::fs::write(&k, "x").unwrap();
        let e = from_parts(&k, dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a modules folder"), "{e}");
        let e = from_deb(&dir.path().join("none.deb")).unwrap_err().to_string();
        assert!(e.contains("none.deb"), "{e}");
        let fake = dir.path().join("fake.deb");
        std::fs::write(&fake, "not a deb").unwrap();
        assert!(from_deb(&fake).is_err());
    }

    #[test]
    fn parts_with_an_index_are_linked_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let mods = dir.path().join("lib/modules/6.99.0-test");
        std::fs::create_dir_all(mods.join("kernel")).unwrap();
        std::fs::write(mods.join("modules.dep"), "").unwrap();
        let k = dir.path().join("bzImage");
        std::fs::write(&k, "x").unwrap();
        let kd = from_parts(&k, &mods).unwrap();
        assert_eq!(kd.release, "6.99.0-test");
        assert_eq!(release_of(&kd.path).as_deref(), Some("6.99.0-test"));
        assert!(kd.path.join("lib/modules/6.99.0-test/modules.dep").is_file());
        assert_eq!(std::fs::read(kd.path.join("vmlinuz")).unwrap(), b"x");
        let p = kd.path.clone();
        drop(kd);
        assert!(!p.exists(), "the temp folder goes with the value");
    }
}
