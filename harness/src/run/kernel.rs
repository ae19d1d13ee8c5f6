//! The user's own kernel for the QEMU backend (`--kernel PATH --modules DIR`, or `--kernel-deb
//! FILE.deb`): laid out as the image builder reads the cached Debian kernel (`vmlinuz`,
//! `VERSION`, `lib/modules/<release>/` with `modules.dep`), in a temp folder that lives as long
//! as the returned value. And the set-up facts a report records: kernel release, QEMU version.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use phc::input::{self, Links};

/// Largest kernel image accepted (`--kernel`): Debian's bzImage is about 10 MB.
pub const MAX_KERNEL_BYTES: u64 = 128 << 20;
/// Largest kernel package accepted (`--kernel-deb`): Debian's linux-image is about 100 MB.
pub const MAX_DEB_BYTES: u64 = 512 << 20;
/// Most bytes a package may unpack to (its data.tar's declared sizes, summed).
pub const MAX_UNPACKED_BYTES: u64 = 2 << 30;
/// Most bytes of `dpkg-deb -c` listing read (a package of endless tiny entries).
const MAX_LISTING_BYTES: u64 = 64 << 20;

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
    /// SIGINT or SIGTERM arrived while the kernel was prepared; the temp folder is gone.
    #[error("interrupted by {0}")]
    Interrupted(nix::sys::signal::Signal),
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

/// Waits for `child`, killing it when SIGINT or SIGTERM arrives (the handler of
/// `phc_qemu::signals` records them), so the caller's temp folder is removed on that path too.
fn wait(tool: &'static str, child: &mut Child) -> Result<std::process::ExitStatus, KernelError> {
    loop {
        if let Some(sig) = phc_qemu::signals::pending() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(KernelError::Interrupted(sig));
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(KernelError::Tool { tool, message: e.to_string() }),
        }
    }
}

/// Runs a tool to its end (interruptible), its stderr kept to 4 KiB for the message.
fn run(tool: &'static str, cmd: &mut Command) -> Result<(), KernelError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::Tool { tool, message: e.to_string() })?;
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(4096).read_to_end(&mut buf);
            let _ = std::io::copy(e, &mut std::io::sink());
        }
        buf
    });
    let status = wait(tool, &mut child)?;
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&stderr);
        let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Err(KernelError::Tool { tool, message: format!("{status}: {line}") })
    }
}

fn depmod(root: &Path, release: &str) -> Result<(), KernelError> {
    // The release passed check_name (no leading '-'); `--` ends the options all the same.
    run("depmod", Command::new("depmod").arg("-b").arg(root).arg("--").arg(release))
}

/// Checks a release name that becomes a path component and a depmod argument.
fn check_release(path: &Path, release: &str) -> Result<(), KernelError> {
    input::check_name(release).map_err(|why| KernelError::Invalid {
        path: path.to_owned(),
        message: format!("kernel release {why}"),
    })
}

/// Checks that `kernel` is an x86 bzImage before anything else reads it: a regular file (never a
/// FIFO or a device) of at most [`MAX_KERNEL_BYTES`], with the boot sector signature 0xAA55 at
/// 0x1FE, `HdrS` at 0x202 and a boot protocol of 2.00 or later. Reads 0x208 bytes.
pub fn check_bzimage(kernel: &Path) -> Result<(), KernelError> {
    let invalid = |message: String| KernelError::Invalid { path: kernel.to_owned(), message };
    let (f, _len) =
        input::open_regular(kernel, MAX_KERNEL_BYTES, Links::Follow).map_err(|e| invalid(e.to_string()))?;
    let mut head = Vec::with_capacity(0x208);
    f.take(0x208).read_to_end(&mut head).map_err(io(kernel))?;
    let u16_at = |at: usize| head.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if u16_at(0x1fe) != Some(0xaa55) || head.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(invalid("not an x86 bzImage (no 0xAA55 at 0x1FE and \"HdrS\" at 0x202)".into()));
    }
    match u16_at(0x206) {
        Some(v) if v >= 0x0200 => Ok(()),
        v => Err(invalid(format!("boot protocol {:#06x} is older than 2.00", v.unwrap_or(0)))),
    }
}

/// Refuses a symlink or anything but a folder (`dir: true`) or a regular file at `path`.
fn plain(path: &Path, dir: bool, whose: &Path) -> Result<(), KernelError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let ok = if dir { meta.is_dir() } else { meta.is_file() };
    if ok {
        Ok(())
    } else {
        Err(KernelError::Invalid {
            path: whose.to_owned(),
            message: format!("{} is {}", path.display(), input::file_kind(&meta)),
        })
    }
}

/// A fresh temp folder in this user's private one (phc_qemu::tmp), removed on drop.
fn temp() -> Result<tempfile::TempDir, KernelError> {
    phc_qemu::tmp::dir("kernel", "")
        .map_err(|e| KernelError::Tool { tool: "mkdir", message: phc_qemu::error::chain(&e) })
}

/// Installs the SIGINT/SIGTERM handler, so an interrupted unpack ends through `wait` and its
/// temp folder is removed.
fn handle_signals() {
    if let Err(e) = phc_qemu::signals::install() {
        eprintln!("phc-harness: cannot handle SIGINT/SIGTERM: {e}");
    }
}

/// A kernel image with its modules folder (`.../lib/modules/<release>`, whose name is the
/// release). The modules are linked, not copied; `modules.dep` is made when missing.
pub fn from_parts(kernel: &Path, modules: &Path) -> Result<KernelDir, KernelError> {
    from_parts_for_shim(kernel, modules, false)
}

/// [`from_parts`]; with `shim`, the modules folder is always a linked copy (folders made, files
/// linked), so that [`build_shim`] can add to it without writing into the user's folder.
pub fn from_parts_for_shim(kernel: &Path, modules: &Path, shim: bool) -> Result<KernelDir, KernelError> {
    check_bzimage(kernel)?;
    let modules = std::fs::canonicalize(modules).map_err(io(modules))?;
    if !modules.join("kernel").is_dir() && !modules.join("modules.dep").is_file() {
        return Err(KernelError::Invalid {
            path: modules,
            message: "not a modules folder (lib/modules/<release>, with kernel/ or modules.dep)".into(),
        });
    }
    let release = modules.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    check_release(&modules, &release)?;
    handle_signals();
    let tmp = temp()?;
    let root = tmp.path().to_owned();
    std::fs::create_dir_all(root.join("lib/modules")).map_err(io(&root))?;
    let kernel = std::fs::canonicalize(kernel).map_err(io(kernel))?;
    std::os::unix::fs::symlink(&kernel, root.join("vmlinuz")).map_err(io(&root))?;
    let dest = root.join("lib/modules").join(&release);
    if modules.join("modules.dep").is_file() && !shim {
        std::os::unix::fs::symlink(&modules, &dest).map_err(io(&dest))?;
    } else {
        // depmod writes into the folder it indexes: index a linked copy of the tree instead.
        run("cp", Command::new("cp").arg("-rs").arg("--").arg(&modules).arg(&dest))?;
        plain(&dest, true, &modules)?;
        depmod(&root, &release)?;
    }
    std::fs::write(root.join("VERSION"), format!("{release}\n")).map_err(io(&root))?;
    Ok(KernelDir { path: root, release, _tmp: Some(tmp) })
}

/// One entry of a `dpkg-deb -c` listing (`perms owner size date time ./name[ -> target]`): its
/// type letter (`-`, `d`, `l`, `h`, ...), declared size and path (without `./` and a final `/`).
fn listing_entry(line: &str) -> Option<(char, u64, String)> {
    let mut rest = line;
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace)?;
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let size = fields[2].parse().ok()?;
    let name = rest.trim_start();
    let name = name.split(" -> ").next().unwrap_or(name);
    let name = name.split(" link to ").next().unwrap_or(name);
    Some((fields[0].chars().next()?, size, name.trim_start_matches("./").trim_end_matches('/').to_owned()))
}

/// Reads the package's listing (bounded, interruptible) and checks it before anything is
/// unpacked: the declared sizes sum to at most [`MAX_UNPACKED_BYTES`], and nothing on the paths
/// used (`boot/vmlinuz-*`, `lib/modules/...`) is other than a folder or a regular file.
fn check_listing(deb: &Path) -> Result<(), KernelError> {
    check_listing_capped(deb, MAX_UNPACKED_BYTES)
}

/// [`check_listing`] with the unpacked size capped at `cap`.
fn check_listing_capped(deb: &Path, cap: u64) -> Result<(), KernelError> {
    check_listing_with(deb, cap, |name| {
        name == "boot"
            || name.starts_with("boot/vmlinuz")
            || name.starts_with("boot/config")
            || name == "lib"
            || name == "lib/modules"
            || name.starts_with("lib/modules/")
    })
}

/// The listing check with the paths used named by `used` (each must be a folder or a regular
/// file in the package).
fn check_listing_with(deb: &Path, cap: u64, used: impl Fn(&str) -> bool) -> Result<(), KernelError> {
    let invalid = |message: String| KernelError::Invalid { path: deb.to_owned(), message };
    let mut child = Command::new("dpkg-deb")
        .arg("-c")
        .arg("--")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| KernelError::Tool { tool: "dpkg-deb", message: e.to_string() })?;
    let out = child.stdout.take().ok_or_else(|| invalid("no listing".into()))?;
    let mut lines = BufReader::new(out.take(MAX_LISTING_BYTES));
    let mut total: u64 = 0;
    let mut read: u64 = 0;
    let mut line = String::new();
    let verdict = loop {
        if let Some(sig) = phc_qemu::signals::pending() {
            break Err(KernelError::Interrupted(sig));
        }
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => break Ok(()),
            Ok(n) => read += n as u64,
            Err(e) => break Err(invalid(format!("listing: {e}"))),
        }
        if read >= MAX_LISTING_BYTES {
            break Err(invalid(format!("a listing of over {MAX_LISTING_BYTES} bytes")));
        }
        let Some((kind, size, name)) = listing_entry(line.trim_end_matches('\n')) else {
            break Err(invalid(format!("unreadable listing line {:?}", line.trim_end())));
        };
        total = total.saturating_add(size);
        if total > cap {
            break Err(invalid(format!("unpacks to over {cap} bytes")));
        }
        if used(&name) && !matches!(kind, '-' | 'd') {
            let what = match kind {
                'l' => "a symlink",
                'h' => "a hard link",
                _ => "not a file or folder",
            };
            break Err(invalid(format!("{name} is {what} in the package")));
        }
    };
    if verdict.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return verdict;
    }
    let status = wait("dpkg-deb", &mut child)?;
    if !status.success() {
        return Err(KernelError::Tool {
            tool: "dpkg-deb",
            message: format!("{status}: cannot list {}", deb.display()),
        });
    }
    Ok(())
}

/// A Debian kernel package (`linux-image-*.deb`), unpacked with `dpkg-deb -x` and indexed with
/// `depmod` (the package ships no `modules.dep`), as ci/setup-vm.sh does for the cached one.
/// The package is checked first (a regular file of at most [`MAX_DEB_BYTES`], a listing whose
/// sizes sum to at most [`MAX_UNPACKED_BYTES`] and with no link on the paths used); after the
/// unpack, the paths used are checked again (no symlink) and the release must pass
/// `check_name`. SIGINT/SIGTERM end it with the temp folder removed.
pub fn from_deb(deb: &Path) -> Result<KernelDir, KernelError> {
    input::open_regular(deb, MAX_DEB_BYTES, Links::Follow)
        .map_err(|e| KernelError::Invalid { path: deb.to_owned(), message: e.to_string() })?;
    handle_signals();
    check_listing(deb)?;
    let tmp = temp()?;
    let x = tmp.path().join("x");
    run("dpkg-deb", Command::new("dpkg-deb").arg("-x").arg("--").arg(deb).arg(&x))?;
    let mods = x.join("lib/modules");
    plain(&x.join("lib"), true, deb)?;
    plain(&mods, true, deb)?;
    let mut releases: Vec<String> = std::fs::read_dir(&mods)
        .map_err(io(&mods))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    let release = releases.into_iter().next().ok_or_else(|| KernelError::Invalid {
        path: deb.to_owned(),
        message: "no lib/modules/<release> in the package".into(),
    })?;
    check_release(deb, &release)?;
    plain(&mods.join(&release), true, deb)?;
    plain(&x.join("boot"), true, deb).map_err(|_| KernelError::Invalid {
        path: deb.to_owned(),
        message: format!("no boot/vmlinuz-{release} in the package (not a linux-image package?)"),
    })?;
    let image = x.join("boot").join(format!("vmlinuz-{release}"));
    if std::fs::symlink_metadata(&image).is_err() {
        return Err(KernelError::Invalid {
            path: deb.to_owned(),
            message: format!("no boot/vmlinuz-{release} in the package (not a linux-image package?)"),
        });
    }
    plain(&image, false, deb)?;
    check_bzimage(&image)?;
    let root = tmp.path().join("kernel");
    std::fs::create_dir_all(root.join("lib")).map_err(io(&root))?;
    std::fs::rename(&image, root.join("vmlinuz")).map_err(io(&image))?;
    std::fs::rename(&mods, root.join("lib/modules")).map_err(io(&mods))?;
    // The build configuration (what a shim build and the report's checks read), where shipped.
    let config = x.join("boot").join(format!("config-{release}"));
    if plain(&config, false, deb).is_ok() {
        std::fs::rename(&config, root.join("config")).map_err(io(&config))?;
    }
    let (package, version) = control(deb)?;
    std::fs::write(root.join("PACKAGE"), format!("{package} {version}\n")).map_err(io(&root))?;
    depmod(&root, &release)?;
    std::fs::write(root.join("VERSION"), format!("{release}\n")).map_err(io(&root))?;
    Ok(KernelDir { path: root, release, _tmp: Some(tmp) })
}

/// Runs a tool to its end (interruptible) and returns its stdout, at most 64 KiB of it.
fn capture(tool: &'static str, cmd: &mut Command) -> Result<String, KernelError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| KernelError::Tool { tool, message: e.to_string() })?;
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut o) = out {
            let _ = o.by_ref().take(64 << 10).read_to_end(&mut buf);
            let _ = std::io::copy(&mut o, &mut std::io::sink());
        }
        buf
    });
    let status = wait(tool, &mut child)?;
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(KernelError::Tool { tool, message: format!("{status}") });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A package's name and version (`dpkg-deb -f`), each checked as a plain name.
fn control(deb: &Path) -> Result<(String, String), KernelError> {
    let text = capture(
        "dpkg-deb",
        Command::new("dpkg-deb").arg("-f").arg("--").arg(deb).args(["Package", "Version"]),
    )
    .map_err(|_| KernelError::Invalid { path: deb.to_owned(), message: "not a Debian package".into() })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
            .filter(|v| {
                !v.is_empty()
                    && !v.starts_with('-')
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c))
            })
            .ok_or_else(|| KernelError::Invalid {
                path: deb.to_owned(),
                message: format!("no plain {name} in the package's control fields"),
            })
    };
    Ok((field("Package")?, field("Version")?))
}

/// Where ci/build-shim.sh is: `PHC_BUILD_SHIM`, beside a checkout's binary
/// (`<checkout>/target/<profile>/phc-harness` -> `<checkout>/ci/`), the working folder's `ci/`,
/// or the Debian package's copy.
pub fn build_shim_script() -> Option<PathBuf> {
    let exe_ci =
        std::env::current_exe().ok().and_then(|e| e.ancestors().nth(3).map(|r| r.join("ci/build-shim.sh")));
    std::env::var_os("PHC_BUILD_SHIM")
        .map(PathBuf::from)
        .into_iter()
        .chain(exe_ci)
        .chain([PathBuf::from("ci/build-shim.sh"), PathBuf::from(PACKAGED_BUILD_SHIM)])
        .find(|p| p.is_file())
}

/// Where the Debian package (ci/build-deb.sh) installs ci/build-shim.sh.
pub const PACKAGED_BUILD_SHIM: &str = "/usr/lib/phc-harness/build-shim.sh";

/// Builds the VMBus shim (kmod/vmbus-shim, with ci/build-shim.sh) for the user's kernel in
/// `dir` against that kernel's own Debian packages `debs` (`--kernel-headers`): its
/// `linux-headers-<release>` package, and any of its -common, linux-kbuild and linux-source
/// packages (the archive supplies what is not given). A `--kernel` folder without a build
/// configuration or a package name takes both from the headers package (its `.config`). The
/// script's progress goes to stderr; a kernel whose shim cannot be built is an error naming why
/// (the script's last line says it above), never a fallback.
pub fn build_shim(dir: &KernelDir, debs: &[PathBuf]) -> Result<(), KernelError> {
    let headers = format!("linux-headers-{}", dir.release);
    let mut own = None;
    for deb in debs {
        input::open_regular(deb, MAX_DEB_BYTES, Links::Follow)
            .map_err(|e| KernelError::Invalid { path: deb.to_owned(), message: e.to_string() })?;
        if deb.to_string_lossy().contains('\n') {
            return Err(KernelError::Invalid {
                path: deb.to_owned(),
                message: "a path with a newline".into(),
            });
        }
        let (package, version) = control(deb)?;
        if !["linux-headers-", "linux-kbuild-", "linux-source-"].iter().any(|p| package.starts_with(p)) {
            return Err(KernelError::Invalid {
                path: deb.to_owned(),
                message: format!("{package} is not a linux-headers, linux-kbuild or linux-source package"),
            });
        }
        if package == headers {
            own = Some((deb.clone(), version));
        }
    }
    let Some((own, version)) = own else {
        return Err(KernelError::Invalid {
            path: debs.first().cloned().unwrap_or_default(),
            message: format!("none of the --kernel-headers packages is {headers}, the kernel's own"),
        });
    };
    if !dir.path.join("config").is_file() {
        // The headers package carries the kernel's .config (its other links, lib/modules/REL/build
        // and the like, are not followed: only the .config and the folders above it are used).
        let config_path = format!("usr/src/{headers}/.config");
        check_listing_with(&own, MAX_UNPACKED_BYTES, |name| {
            config_path.starts_with(name) && !name.is_empty()
        })?;
        let x = temp()?;
        run("dpkg-deb", Command::new("dpkg-deb").arg("-x").arg("--").arg(&own).arg(x.path()))?;
        let config = x.path().join("usr/src").join(&headers).join(".config");
        plain(&config, false, &own)?;
        std::fs::copy(&config, dir.path.join("config")).map_err(io(&config))?;
    }
    let package = dir.path.join("PACKAGE");
    if !package.is_file() {
        std::fs::write(&package, format!("{headers} {version}\n")).map_err(io(&package))?;
    }
    let script = build_shim_script().ok_or_else(|| KernelError::Tool {
        tool: "build-shim.sh",
        message: format!("not found (set PHC_BUILD_SHIM, or install the package: {PACKAGED_BUILD_SHIM})"),
    })?;
    eprintln!(
        "phc-harness: building the VMBus shim for {} against {} {version} ({}) ...",
        dir.release,
        headers,
        script.display()
    );
    let list: Vec<String> = debs.iter().map(|d| d.to_string_lossy().into_owned()).collect();
    let mut child = Command::new("bash")
        .arg("--")
        .arg(&script)
        .arg(&dir.path)
        .env("PHC_SHIM_DEBS", list.join("\n"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::from(std::io::stderr()))
        .spawn()
        .map_err(|e| KernelError::Tool { tool: "build-shim.sh", message: e.to_string() })?;
    let status = wait("build-shim.sh", &mut child)?;
    if !status.success() {
        return Err(KernelError::Tool {
            tool: "build-shim.sh",
            message: format!("{status}: no VMBus shim for {} (its reason is the line above)", dir.release),
        });
    }
    if phc_qemu::image::vmbus_shim(&dir.path).is_none() {
        return Err(KernelError::Tool {
            tool: "build-shim.sh",
            message: format!("it ended well but left no shim module for {}", dir.release),
        });
    }
    Ok(())
}

/// The release of the kernel in an image-builder folder (its `VERSION`).
pub fn release_of(dir: &Path) -> Option<String> {
    phc_qemu::image::release(dir).ok()
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
        std::fs::write(&k, bzimage()).unwrap();
        let e = from_parts(&k, dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a modules folder"), "{e}");
        let e = from_deb(&dir.path().join("none.deb")).unwrap_err().to_string();
        assert!(e.contains("none.deb"), "{e}");
        let fake = dir.path().join("fake.deb");
        std::fs::write(&fake, "not a deb").unwrap();
        assert!(from_deb(&fake).is_err());
    }

    /// The smallest file the bzImage check accepts: boot protocol 2.15.
    fn bzimage() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b
    }

    #[test]
    fn kernel_files_that_are_no_bzimage_are_refused_before_they_are_read() {
        let d = tempfile::tempdir().unwrap();
        let mods = d.path().join("lib/modules/6.99.0-test");
        std::fs::create_dir_all(mods.join("kernel")).unwrap();
        std::fs::write(mods.join("modules.dep"), "").unwrap();
        let refused = |k: &Path| from_parts(k, &mods).unwrap_err().to_string();
        let mz = d.path().join("mz");
        std::fs::write(&mz, b"MZ\x1f\x8b\x08 a gzip stream follows").unwrap();
        assert!(refused(&mz).contains("not an x86 bzImage"), "{}", refused(&mz));
        let mut old = bzimage();
        old[0x206..0x208].copy_from_slice(&0x0105u16.to_le_bytes());
        let oldf = d.path().join("old");
        std::fs::write(&oldf, old).unwrap();
        assert!(refused(&oldf).contains("boot protocol 0x0105"), "{}", refused(&oldf));
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(refused(&fifo).contains("a FIFO"), "{}", refused(&fifo));
        assert!(refused(Path::new("/dev/zero")).contains("character device"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(refused(&link).contains("character device"));
        let big = d.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_KERNEL_BYTES + 1).unwrap();
        assert!(refused(&big).contains("over the limit"), "{}", refused(&big));
        // A release that reads as an option is refused before depmod sees it.
        let opt = d.path().join("lib/modules/-x");
        std::fs::create_dir_all(opt.join("kernel")).unwrap();
        let k = d.path().join("bzImage");
        std::fs::write(&k, bzimage()).unwrap();
        let e = from_parts(&k, &opt).unwrap_err().to_string();
        assert!(e.contains("kernel release") && e.contains("starts with"), "{e}");
    }

    /// Builds a .deb from `tree` (a folder) with dpkg-deb, gzip at level 1.
    fn deb(tree: &Path, out: &Path) {
        deb_named(tree, out, "linux-image-test", "1");
    }

    fn deb_named(tree: &Path, out: &Path, package: &str, version: &str) {
        std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
            ),
        )
        .unwrap();
        let st = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-z1", "-b"])
            .arg(tree)
            .arg(out)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn hostile_packages_are_refused_and_nothing_is_written_outside() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // lib/modules/REL a symlink out of the temp folder: depmod would write modules.dep there.
        let t1 = d.path().join("t1");
        std::fs::create_dir_all(t1.join("lib/modules")).unwrap();
        std::fs::create_dir_all(t1.join("boot")).unwrap();
        std::fs::write(t1.join("boot/vmlinuz-6.99"), bzimage()).unwrap();
        std::os::unix::fs::symlink(&outside, t1.join("lib/modules/6.99")).unwrap();
        let p1 = d.path().join("link.deb");
        deb(&t1, &p1);
        let e = from_deb(&p1).unwrap_err().to_string();
        assert!(e.contains("lib/modules/6.99 is a symlink"), "{e}");
        // A release named like an option.
        let t2 = d.path().join("t2");
        std::fs::create_dir_all(t2.join("lib/modules/-x/kernel")).unwrap();
        std::fs::create_dir_all(t2.join("boot")).unwrap();
        std::fs::write(t2.join("boot/vmlinuz--x"), bzimage()).unwrap();
        let p2 = d.path().join("opt.deb");
        deb(&t2, &p2);
        let e = from_deb(&p2).unwrap_err().to_string();
        assert!(e.contains("kernel release") && e.contains("starts with"), "{e}");
        // The image is no bzImage.
        let t3 = d.path().join("t3");
        std::fs::create_dir_all(t3.join("lib/modules/6.99/kernel")).unwrap();
        std::fs::create_dir_all(t3.join("boot")).unwrap();
        std::fs::write(t3.join("boot/vmlinuz-6.99"), b"MZ not a kernel").unwrap();
        let p3 = d.path().join("notk.deb");
        deb(&t3, &p3);
        let e = from_deb(&p3).unwrap_err().to_string();
        assert!(e.contains("not an x86 bzImage"), "{e}");
        // Declared sizes over the cap: refused from the listing, before anything is unpacked.
        let t4 = d.path().join("t4");
        std::fs::create_dir_all(t4.join("lib/modules/6.99/kernel")).unwrap();
        let f = std::fs::File::create(t4.join("lib/modules/6.99/kernel/big.ko")).unwrap();
        f.set_len(MAX_UNPACKED_BYTES / 64).unwrap();
        drop(f);
        let p4 = d.path().join("big.deb");
        deb(&t4, &p4);
        let e = check_listing_capped(&p4, MAX_UNPACKED_BYTES / 128).unwrap_err().to_string();
        assert!(e.contains("unpacks to over"), "{e}");
        // FIFO, device, oversize package files.
        let fifo = d.path().join("fifo.deb");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(from_deb(&fifo).unwrap_err().to_string().contains("a FIFO"));
        assert!(from_deb(Path::new("/dev/zero")).unwrap_err().to_string().contains("character device"));
        let big = d.path().join("huge.deb");
        std::fs::File::create(&big).unwrap().set_len(MAX_DEB_BYTES + 1).unwrap();
        assert!(from_deb(&big).unwrap_err().to_string().contains("over the limit"));
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "written outside the temp folder");
    }

    /// A minimal linux-image package of release 6.99.0-test, with its build configuration.
    fn image_deb(d: &Path) -> PathBuf {
        let t = d.join("img");
        std::fs::create_dir_all(t.join("lib/modules/6.99.0-test/kernel")).unwrap();
        std::fs::create_dir_all(t.join("boot")).unwrap();
        std::fs::write(t.join("boot/vmlinuz-6.99.0-test"), bzimage()).unwrap();
        std::fs::write(t.join("boot/config-6.99.0-test"), "CONFIG_HYPERV=m\n").unwrap();
        let p = d.join("linux-image-6.99.0-test_6.99.1-1_amd64.deb");
        deb_named(&t, &p, "linux-image-6.99.0-test-unsigned", "6.99.1-1");
        p
    }

    #[test]
    fn a_kernel_package_keeps_its_configuration_and_names_itself() {
        let d = tempfile::tempdir().unwrap();
        let k = from_deb(&image_deb(d.path())).unwrap();
        assert_eq!(k.release, "6.99.0-test");
        assert_eq!(std::fs::read_to_string(k.path.join("config")).unwrap(), "CONFIG_HYPERV=m\n");
        assert_eq!(
            std::fs::read_to_string(k.path.join("PACKAGE")).unwrap(),
            "linux-image-6.99.0-test-unsigned 6.99.1-1\n"
        );
    }

    #[test]
    fn headers_that_are_not_the_kernels_own_are_refused_before_any_build() {
        let d = tempfile::tempdir().unwrap();
        let k = from_deb(&image_deb(d.path())).unwrap();
        let pkg = |name: &str, version: &str| {
            let t = d.path().join(format!("t-{name}"));
            std::fs::create_dir_all(t.join("usr/src")).unwrap();
            let p = d.path().join(format!("{name}.deb"));
            deb_named(&t, &p, name, version);
            p
        };
        // Another flavour's headers: not this kernel's.
        let other = pkg("linux-headers-6.99.0-test-cloud", "6.99.1-1");
        let e = build_shim(&k, std::slice::from_ref(&other)).unwrap_err().to_string();
        assert!(e.contains("none of the --kernel-headers packages is linux-headers-6.99.0-test"), "{e}");
        // A package that is no kernel package at all.
        let stray = pkg("busybox-static", "1");
        let e =
            build_shim(&k, &[pkg("linux-headers-6.99.0-test", "6.99.1-1"), stray]).unwrap_err().to_string();
        assert!(
            e.contains("busybox-static is not a linux-headers, linux-kbuild or linux-source package"),
            "{e}"
        );
        // Not a package; a FIFO.
        let text = d.path().join("notes.deb");
        std::fs::write(&text, "not ar").unwrap();
        let e = build_shim(&k, &[text]).unwrap_err().to_string();
        assert!(e.contains("not a Debian package"), "{e}");
        let fifo = d.path().join("fifo.deb");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(build_shim(&k, &[fifo]).unwrap_err().to_string().contains("a FIFO"));
        // None of it reached the kernel's folder.
        assert!(phc_qemu::image::vmbus_shim(&k.path).is_none());
    }

    #[test]
    fn listing_lines_parse() {
        assert_eq!(
            listing_entry("lrwxrwxrwx root/root         0 2024-01-01 00:00 ./lib/modules/6.1 -> /tmp"),
            Some(('l', 0, "lib/modules/6.1".into()))
        );
        assert_eq!(
            listing_entry("-rw-r--r-- 1000/1000      1234 2024-01-01 00:00 ./boot/vmlinuz 6.1"),
            Some(('-', 1234, "boot/vmlinuz 6.1".into()))
        );
        assert_eq!(listing_entry("garbage"), None);
    }

    #[test]
    fn parts_with_an_index_are_linked_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let mods = dir.path().join("lib/modules/6.99.0-test");
        std::fs::create_dir_all(mods.join("kernel")).unwrap();
        std::fs::write(mods.join("modules.dep"), "").unwrap();
        let k = dir.path().join("bzImage");
        std::fs::write(&k, bzimage()).unwrap();
        let kd = from_parts(&k, &mods).unwrap();
        assert_eq!(kd.release, "6.99.0-test");
        assert_eq!(release_of(&kd.path).as_deref(), Some("6.99.0-test"));
        assert!(kd.path.join("lib/modules/6.99.0-test/modules.dep").is_file());
        assert_eq!(std::fs::read(kd.path.join("vmlinuz")).unwrap(), bzimage());
        let p = kd.path.clone();
        drop(kd);
        assert!(!p.exists(), "the temp folder goes with the value");
    }
}
