//! The guest image: an initramfs written here (newc cpio) with busybox, the kernel modules the
//! scenario needs, the harness binary as the guest agent, chronyd and linuxptp tools with the
//! shared libraries they load, and a small init that loads the modules and starts the agent.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Writer;
use crate::Error;

/// Where setup (ci/setup-vm.sh) unpacks Debian's kernel package.
pub const DEFAULT_CACHE: &str = "/var/cache/phc-harness";

/// Modules loaded at boot, in dependency order. `ptp_kvm` fails to load without KVM; that is
/// reported on the console and is not an error (`Session::boot` leaves it out under TCG).
pub const DEFAULT_MODULES: &[&str] = &["dca", "i2c-algo-bit", "igb", "cuse", "ptp_kvm", "veth"];

/// Modules the guest needs before any other where the kernel builds them as modules (Debian's
/// 6.1 does; 6.12 and 7.2 build them in): the virtio PCI transport and the virtio console that
/// carries the agent's port. Loaded first, with their dependencies, when the kernel has them as
/// modules; a kernel with them built in has nothing to load.
pub const TRANSPORT_MODULES: &[&str] = &["virtio_pci", "virtio_console"];

/// Modules put into the image but not loaded at boot: the kernel's own hv_utils and the VMBus
/// shim ci/build-shim.sh builds for the kernel (`extra/`: a module, or a livepatch where VMBus is
/// built in). The agent loads them when a run asks for the real hv_utils (`StartHyperv`); a
/// kernel without them still boots.
pub const STAGED_MODULES: &[&str] = &["hv_utils", "vmbus_shim", "vmbus_shim_lp"];

/// The VMBus shim built for the kernel in `kernel_dir`, as (module name, path), where there is one.
pub fn vmbus_shim(kernel_dir: &Path) -> Option<(&'static str, PathBuf)> {
    let root = kernel_dir.join("lib/modules").join(release(kernel_dir).ok()?);
    ["vmbus_shim", "vmbus_shim_lp"].into_iter().find_map(|m| find_module(&root, m).map(|p| (m, p)))
}

/// Whether the kernel in `kernel_dir` has the driver `name` (`igb`), as a module or built in.
pub fn has_driver(kernel_dir: &Path, name: &str) -> bool {
    release(kernel_dir)
        .is_ok_and(|r| load_order(&kernel_dir.join("lib/modules").join(r), &[name.to_owned()]).is_ok())
}

/// The modules igb needs, igb last: what a kernel without igb leaves out of its image.
pub const IGB_MODULES: &[&str] = &["dca", "i2c-algo-bit", "igb"];

/// The folder under the cache where setup-vm.sh unpacks ntpd and timesyncd.
pub const NTP_DAEMONS_DIR: &str = "ntp-daemons";
/// ntpd (NTPsec), at its path in the guest and under `ImageSpec::ntp_daemons`.
pub const NTPD: &str = "usr/sbin/ntpd";
/// systemd-timesyncd, at its path in the guest and under `ImageSpec::ntp_daemons`.
pub const TIMESYNCD: &str = "lib/systemd/systemd-timesyncd";
/// Where timesyncd's private libsystemd-shared lives (its RUNPATH), under the unpacked root.
const SYSTEMD_PRIVATE_LIBS: &str = "usr/lib/x86_64-linux-gnu/systemd";
/// The user timesyncd drops to (it exits where passwd lacks it) and the one line for it.
const TIMESYNC_USER: &str = "systemd-timesync:x:998:998:systemd Time Synchronization:/:/bin/false\n";

/// A line the init prints once the agent is about to start.
pub const READY_LINE: &str = "phc-init: agent starting";

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Unpacked kernel package: `vmlinuz`, `VERSION`, `lib/modules/<version>/`.
    pub kernel_dir: PathBuf,
    /// A static busybox.
    pub busybox: PathBuf,
    /// The agent binary (the harness, built static), installed as /bin/phc-harness.
    pub agent: PathBuf,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// Modules copied in where the kernel has them, not loaded at boot (`STAGED_MODULES`).
    pub staged: Vec<String>,
    /// Programs to install at their own paths with their shared libraries (chronyd, chronyc,
    /// phc_ctl); missing ones are an error.
    pub programs: Vec<PathBuf>,
    /// The CUSE mock PHC server (mock-phc, built static), installed as /bin/mock-phc.
    pub mock: Option<PathBuf>,
    /// Debian's ntpd (NTPsec) and systemd-timesyncd unpacked under this folder (setup-vm.sh:
    /// `$PHC_CACHE/ntp-daemons`), installed at their own paths with their libraries; None (or
    /// a folder without them): the image has neither.
    pub ntp_daemons: Option<PathBuf>,
    /// Whether the guest gets QEMU's `-device vmclock` (`Session::start` adds it).
    pub vmclock: bool,
}

impl ImageSpec {
    /// The defaults: kernel from the setup cache (or `PHC_CACHE`), Debian's busybox-static,
    /// chronyd, chronyc, phc_ctl and phc2sys, and the mock PHC server from [`default_mock`].
    pub fn with_agent(agent: impl Into<PathBuf>) -> Self {
        let cache = cache_dir();
        let agent = agent.into();
        Self {
            kernel_dir: cache.join("kernel"),
            busybox: "/bin/busybox".into(),
            mock: default_mock(&agent),
            agent,
            modules: DEFAULT_MODULES.iter().map(|s| (*s).to_owned()).collect(),
            staged: STAGED_MODULES.iter().map(|s| (*s).to_owned()).collect(),
            programs: ["/usr/sbin/chronyd", "/usr/bin/chronyc", "/usr/sbin/phc_ctl", "/usr/sbin/phc2sys"]
                .map(PathBuf::from)
                .to_vec(),
            vmclock: false,
            ntp_daemons: Some(cache.join(NTP_DAEMONS_DIR)).filter(|d| d.join(NTPD).is_file()),
        }
    }

    /// `with_agent` on a kernel line: its cache folder, its modules, vmclock where it has it.
    pub fn for_line(agent: impl Into<PathBuf>, line: crate::KernelLine) -> Self {
        Self {
            kernel_dir: line.dir_in(&cache_dir()),
            modules: line.modules(),
            vmclock: line.has_vmclock(),
            ..Self::with_agent(agent)
        }
    }

    /// The kernel release the image boots (the cache's `VERSION`).
    pub fn kernel_release(&self) -> Result<String, Error> {
        release(&self.kernel_dir)
    }

    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.kernel_dir.join("vmlinuz")
    }

    fn modules_root(&self) -> Result<PathBuf, Error> {
        Ok(self.kernel_dir.join("lib/modules").join(release(&self.kernel_dir)?))
    }
}

/// The kernel release cached in `kernel_dir` (its `VERSION`, `uname -r` in the guest): a small
/// regular file holding a plain name, since the release names the `lib/modules` folder.
pub fn release(kernel_dir: &Path) -> Result<String, Error> {
    let path = kernel_dir.join("VERSION");
    let missing = |source| Error::KernelMissing { path: path.clone(), source: Some(source) };
    let v = phc::input::read_text(&path, 4096, phc::input::Links::Follow).map_err(missing)?;
    let v = v.trim().to_owned();
    phc::input::check_name(&v).map_err(|why| {
        missing(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("release {why}")))
    })?;
    Ok(v)
}

/// The mock-phc binary for the guest: `PHC_MOCK_BIN` when set, else `mock-phc-guest` or
/// `mock-phc` next to the agent (where ci/build-agent.sh puts them), if there.
pub fn default_mock(agent: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PHC_MOCK_BIN") {
        return Some(PathBuf::from(p));
    }
    let dir = agent.parent()?;
    ["mock-phc-guest", "mock-phc"].iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The kernel cache folder: `PHC_CACHE` (default `/var/cache/phc-harness`), as setup uses it.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PHC_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Largest file put into the image (busybox, the agent, chrony's binaries and libraries, one
/// module decompressed): the static agent is the largest, tens of MB.
const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Reads a file for the image: a regular file (symlinks followed: /usr/lib is full of them) of
/// at most `MAX_IMAGE_FILE_BYTES`, never blocking on a FIFO or reading a device.
fn read(p: &Path) -> Result<Vec<u8>, Error> {
    phc::input::read_bytes(p, MAX_IMAGE_FILE_BYTES, phc::input::Links::Follow).map_err(|source| Error::Io {
        op: "read",
        path: p.to_owned(),
        source,
    })
}

/// The modules to load at boot, in an order that loads each after what it depends on: the
/// transport modules where the kernel has them as modules, then `wanted`, each preceded by its
/// dependencies from `modules.dep`. A wanted module the kernel builds in (`modules.builtin`) is
/// left out; one it has neither way is an error. Names are the files' (`i2c-algo-bit`).
pub fn load_order(root: &Path, wanted: &[String]) -> Result<Vec<(String, PathBuf)>, Error> {
    let read = |f: &str| -> String {
        phc::input::read_text(&root.join(f), MAX_IMAGE_FILE_BYTES, phc::input::Links::Follow)
            .unwrap_or_default()
    };
    let norm = |n: &str| n.replace('-', "_");
    let stem = |path: &str| -> String {
        let f = path.rsplit('/').next().unwrap_or(path);
        f.split(".ko").next().unwrap_or(f).to_owned()
    };
    // module (normalised) -> (file name, relative path, its dependencies, normalised)
    let mut dep = std::collections::HashMap::new();
    for line in read("modules.dep").lines() {
        let Some((path, deps)) = line.split_once(':') else { continue };
        let deps: Vec<String> = deps.split_whitespace().map(|d| norm(&stem(d))).collect();
        dep.insert(norm(&stem(path)), (stem(path), path.to_owned(), deps));
    }
    let builtin: BTreeSet<String> = read("modules.builtin").lines().map(|l| norm(&stem(l))).collect();
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let mut seen = BTreeSet::new();
    // Depth first, dependencies before the module; a loop in a forged modules.dep ends at `seen`.
    fn visit(
        key: &str,
        dep: &std::collections::HashMap<String, (String, String, Vec<String>)>,
        root: &Path,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<(String, PathBuf)>,
    ) {
        if !seen.insert(key.to_owned()) {
            return;
        }
        let Some((name, path, deps)) = dep.get(key) else { return };
        for d in deps {
            visit(d, dep, root, seen, out);
        }
        out.push((name.clone(), root.join(path)));
    }
    for m in TRANSPORT_MODULES {
        visit(&norm(m), &dep, root, &mut seen, &mut out);
    }
    for m in wanted {
        let key = norm(m);
        if dep.contains_key(&key) {
            visit(&key, &dep, root, &mut seen, &mut out);
        } else if let Some(p) = find_module(root, m) {
            // Not indexed (a tree without modules.dep, or an out-of-tree build).
            if seen.insert(key) {
                out.push((m.clone(), p));
            }
        } else if !builtin.contains(&key) {
            return Err(Error::ModuleMissing { name: m.clone(), root: root.to_owned() });
        }
    }
    // Only files inside the tree, never a path modules.dep made up.
    out.retain(|(_, p)| p.starts_with(root) && !p.components().any(|c| c == std::path::Component::ParentDir));
    Ok(out)
}

fn find_module(root: &Path, name: &str) -> Option<PathBuf> {
    // The distribution's tree, then what was built for it out of tree.
    let mut stack = vec![root.join("extra"), root.join("kernel")];
    let alt = name.replace('-', "_");
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            // The entry's own type: a symlinked folder (a loop, or a way out of the tree) is
            // not walked into.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str()) {
                let stem = f.split(".ko").next().unwrap_or("");
                if f.contains(".ko") && (stem == name || stem == alt) {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// A module's bytes, decompressed on the host (busybox insmod takes plain ELF objects).
fn module_bytes(path: &Path) -> Result<Vec<u8>, Error> {
    let name = path.display().to_string();
    let tool: &'static str = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return read(path);
    };
    // The compressed file is checked as any other input first (regular, bounded).
    phc::input::open_regular(path, MAX_IMAGE_FILE_BYTES, phc::input::Links::Follow)
        .map_err(|source| Error::Io { op: "read", path: path.to_owned(), source })?;
    match crate::pvh::decompress_capped(tool, path, MAX_IMAGE_FILE_BYTES)? {
        Some((out, true)) => Ok(out),
        Some((_, false)) => Err(Error::Io {
            op: "decompress",
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{tool} -d failed")),
        }),
        None => Err(Error::Io {
            op: "decompress",
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than {MAX_IMAGE_FILE_BYTES} bytes decompressed"),
            ),
        }),
    }
}

/// The shared libraries (and loader) a dynamic program needs, by ldd.
fn shared_libs(prog: &Path) -> Result<Vec<PathBuf>, Error> {
    shared_libs_in(prog, None)
}

/// `shared_libs`, with `lib_path` searched first (LD_LIBRARY_PATH: before a RUNPATH).
fn shared_libs_in(prog: &Path, lib_path: Option<&Path>) -> Result<Vec<PathBuf>, Error> {
    let mut cmd = Command::new("ldd");
    cmd.arg(prog);
    if let Some(p) = lib_path {
        cmd.env("LD_LIBRARY_PATH", p);
    }
    let out = cmd.output().map_err(|source| Error::Spawn { program: "ldd".into(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || !out.status.success() {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// The init script: mount, load modules, bring up loopback (chronyc needs it), find the agent's
/// virtio port by name, run the agent, power off when it ends.
pub fn init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
read up_init _ </proc/uptime
mkdir -p /dev/pts /run /tmp; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p -m 0750 /run/chrony; mkdir -p /var/lib/chrony
for m in {mods}; do insmod /lib/modules/$m.ko 2>/dev/null || echo "phc-init: module $m not loaded"; done
read up_mods _ </proc/uptime
ip link set lo up
port=
for d in /sys/class/virtio-ports/*; do [ "$(cat $d/name 2>/dev/null)" = phc.agent ] && port=/dev/$(basename $d); done
echo "phc-init: ptp: $(ls /dev/ptp* 2>/dev/null | tr '\n' ' ')"
# Kernel-side boot timing for the logs (a builtin read: no process to start).
echo "phc-init: uptime at init ${{up_init}} s, after modules ${{up_mods}} s"
echo "{ready} on ${{port:-no port}}"
/bin/phc-harness agent --port "$port"
echo "phc-init: agent exited with $?"
poweroff -f
"#,
        mods = modules.join(" "),
        ready = READY_LINE
    )
}

/// Writes the initramfs to `out` and returns the kernel image path to boot it with: the
/// uncompressed PVH `vmlinux` (pvh.rs: faster under TCG) when it can be extracted, else the
/// bzImage itself, which boots the same guest more slowly.
pub fn build(spec: &ImageSpec, out: &Path) -> Result<PathBuf, Error> {
    let root = spec.modules_root()?;
    let vmlinuz = spec.vmlinuz();
    if !vmlinuz.exists() {
        return Err(Error::KernelMissing { path: vmlinuz, source: None });
    }
    let file =
        fs::File::create(out).map_err(|source| Error::Io { op: "create", path: out.to_owned(), source })?;
    let mut w = Writer::new(std::io::BufWriter::new(file));
    let io = |source: std::io::Error| Error::Io { op: "write", path: out.to_owned(), source };
    let mut dirs = BTreeSet::new();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "root",
        "var",
        "var/lib",
        "var/run",
        "lib",
        "lib/modules",
    ] {
        dirs.insert(d.to_owned());
        w.dir(d, 0o755).map_err(io)?;
    }
    let mut add_parents = |w: &mut Writer<_>, path: &str| -> Result<(), Error> {
        let mut acc = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            if dirs.insert(acc.clone()) {
                w.dir(&acc, 0o755).map_err(io)?;
            }
        }
        Ok(())
    };
    w.file("bin/busybox", 0o755, &read(&spec.busybox)?).map_err(io)?;
    for applet in [
        "sh", "mount", "insmod", "ip", "ls", "cat", "echo", "mkdir", "poweroff", "sleep", "tr", "date", "ps",
        "kill", "unshare", "nsenter",
    ] {
        w.symlink(&format!("bin/{applet}"), "busybox").map_err(io)?;
    }
    w.file("bin/phc-harness", 0o755, &read(&spec.agent)?).map_err(io)?;
    if let Some(mock) = &spec.mock {
        w.file("bin/mock-phc", 0o755, &read(mock)?).map_err(io)?;
    }
    let load = load_order(&root, &spec.modules)?;
    for (m, p) in &load {
        w.file(&format!("lib/modules/{m}.ko"), 0o644, &module_bytes(p)?).map_err(io)?;
    }
    for m in spec.staged.iter().filter(|m| !spec.modules.contains(m)) {
        if let Some(p) = find_module(&root, m) {
            w.file(&format!("lib/modules/{m}.ko"), 0o644, &module_bytes(&p)?).map_err(io)?;
        }
    }
    let mut libs = BTreeSet::new();
    for prog in &spec.programs {
        if !prog.exists() {
            return Err(Error::ProgramMissing { path: prog.clone() });
        }
        let name = prog.display().to_string();
        add_parents(&mut w, &name)?;
        w.file(&name, 0o755, &read(prog)?).map_err(io)?;
        libs.extend(shared_libs(prog)?);
    }
    // ntpd and timesyncd from their unpacked packages, at their own paths; libraries under the
    // unpacked root at theirs, the host's with the programs' above.
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    let mut root_libs = BTreeSet::new();
    if let Some(root) = spec.ntp_daemons.as_ref().filter(|r| r.join(NTPD).is_file()) {
        let private = root.join(SYSTEMD_PRIVATE_LIBS);
        for rel in [NTPD, TIMESYNCD] {
            let prog = root.join(rel);
            add_parents(&mut w, rel)?;
            w.file(rel, 0o755, &read(&prog)?).map_err(io)?;
            for lib in shared_libs_in(&prog, Some(&private))? {
                match lib.strip_prefix(root) {
                    Ok(inside) => root_libs.insert((inside.display().to_string(), lib.clone())),
                    Err(_) => libs.insert(lib),
                };
            }
        }
        passwd.push_str(TIMESYNC_USER);
        group.push_str("systemd-timesync:x:998:\n");
    }
    for (name, lib) in root_libs {
        add_parents(&mut w, &name)?;
        w.file(&name, 0o755, &read(&lib)?).map_err(io)?;
    }
    for lib in libs {
        let name = lib.display().to_string();
        add_parents(&mut w, &name)?;
        // Follow symlinks: the guest needs the bytes at the name the loader asks for.
        w.file(&name, 0o755, &read(&lib)?).map_err(io)?;
    }
    w.file("etc/passwd", 0o644, passwd.as_bytes()).map_err(io)?;
    w.file("etc/group", 0o644, group.as_bytes()).map_err(io)?;
    let names: Vec<String> = load.into_iter().map(|(m, _)| m).collect();
    w.file("init", 0o755, init_script(&names).as_bytes()).map_err(io)?;
    w.finish().map_err(io)?;
    Ok(crate::pvh::vmlinux_for(&vmlinuz).unwrap_or(vmlinuz))
}

/// The line the trial image's init prints (`accel`): the kernel reached userspace.
pub const TRIAL_LINE: &str = "phc-init: accel trial reached init";

/// Writes the smallest image that shows a kernel reaching userspace: busybox and an init that
/// prints `TRIAL_LINE` and powers off. No modules, no agent: a trial of the acceleration needs
/// neither, and a 2 MB image boots faster than the 18 MB one.
pub fn build_trial(busybox: &Path, out: &Path) -> Result<(), Error> {
    let file =
        fs::File::create(out).map_err(|source| Error::Io { op: "create", path: out.to_owned(), source })?;
    let io = |source: std::io::Error| Error::Io { op: "write", path: out.to_owned(), source };
    let mut w = Writer::new(std::io::BufWriter::new(file));
    for d in ["bin", "dev", "proc"] {
        w.dir(d, 0o755).map_err(io)?;
    }
    w.file("bin/busybox", 0o755, &read(busybox)?).map_err(io)?;
    w.symlink("bin/sh", "busybox").map_err(io)?;
    let init = format!("#!/bin/sh\necho \"{TRIAL_LINE}\"\n/bin/busybox poweroff -f\n");
    w.file("init", 0o755, init.as_bytes()).map_err(io)?;
    w.finish().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_a_small_file_holding_a_plain_name() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("VERSION");
        std::fs::write(&v, "6.12.118+deb12-amd64\n").unwrap();
        assert_eq!(release(d.path()).unwrap(), "6.12.118+deb12-amd64");
        for bad in ["../../etc", "-rf", "a/b", ""] {
            std::fs::write(&v, bad).unwrap();
            assert!(release(d.path()).is_err(), "{bad:?} accepted");
        }
        std::fs::remove_file(&v).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &v).unwrap();
        assert!(release(d.path()).is_err());
    }

    #[test]
    fn a_modules_tree_with_a_symlink_loop_or_a_bomb_ends_with_an_error() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel/drivers");
        fs::create_dir_all(&k).unwrap();
        // A loop back up the tree and a way out of it: neither is walked into.
        std::os::unix::fs::symlink("..", k.join("loop")).ok();
        std::os::unix::fs::symlink("/usr/lib/modules", k.join("out")).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(find_module(d.path(), "igb"), None);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        fs::write(k.join("igb.ko"), b"\x7fELF").unwrap();
        assert_eq!(find_module(d.path(), "igb"), Some(k.join("igb.ko")));
        // A compressed module that decompresses past the cap is cut off, never held whole.
        let bomb = k.join("zeros.ko.gz");
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("head -c 1048576 /dev/zero | gzip -c > {}", bomb.display()))
            .status()
            .unwrap();
        assert!(st.success());
        assert!(crate::pvh::decompress_capped("gzip", &bomb, 1000).unwrap().is_none());
        let (out, ok) = crate::pvh::decompress_capped("gzip", &bomb, 2 << 20).unwrap().unwrap();
        assert!(ok && out.len() == 1 << 20);
        // Not a gzip stream: an error naming the file, not a module.
        fs::write(k.join("bad.ko.gz"), b"not gzip").unwrap();
        let e = module_bytes(&k.join("bad.ko.gz")).unwrap_err().to_string();
        assert!(e.contains("bad.ko.gz"), "{e}");
    }

    #[test]
    fn init_loads_modules_in_order_and_starts_the_agent() {
        let s = init_script(&["dca".into(), "igb".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("for m in dca igb; do insmod /lib/modules/$m.ko"));
        assert!(s.contains("/bin/phc-harness agent --port \"$port\""));
        assert!(s.contains(READY_LINE));
    }

    #[test]
    fn modules_load_after_their_dependencies_and_built_in_ones_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let dep = "kernel/drivers/net/igb.ko.xz: kernel/drivers/dca/dca.ko.xz kernel/drivers/i2c/i2c-algo-bit.ko.xz\n\
                   kernel/drivers/dca/dca.ko.xz:\n\
                   kernel/drivers/i2c/i2c-algo-bit.ko.xz:\n\
                   kernel/fs/fuse/cuse.ko: kernel/fs/fuse/fuse.ko\n\
                   kernel/fs/fuse/fuse.ko:\n\
                   kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/drivers/virtio/virtio_ring.ko:\n\
                   kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/a.ko: kernel/b.ko\n\
                   kernel/b.ko: kernel/a.ko\n\
                   kernel/evil.ko: ../../../etc/passwd\n";
        fs::write(r.join("modules.dep"), dep).unwrap();
        fs::write(r.join("modules.builtin"), "kernel/drivers/ptp/ptp_kvm.ko\n").unwrap();
        let want = |m: &[&str]| -> Vec<String> {
            let m: Vec<String> = m.iter().map(|s| (*s).to_owned()).collect();
            load_order(r, &m).unwrap().into_iter().map(|(n, _)| n).collect()
        };
        // The transport first (6.1's virtio modules), each module after its dependencies, a
        // module the kernel builds in (ptp_kvm here) left out, a dash spelling as the file has it.
        assert_eq!(
            want(&["igb", "cuse", "ptp_kvm", "i2c_algo_bit"]),
            ["virtio_ring", "virtio_pci", "virtio_console", "dca", "i2c-algo-bit", "igb", "fuse", "cuse"]
        );
        // A dependency loop ends; a path out of the tree is never taken.
        assert_eq!(want(&["a"])[3..], ["b", "a"]);
        assert!(load_order(r, &["evil".to_owned()]).unwrap().iter().all(|(_, p)| p.starts_with(r)));
        // Neither a module nor built in: the error names it.
        let e = load_order(r, &["nosuch".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("module nosuch not found"), "{e}");
    }

    #[test]
    fn finds_modules_by_either_spelling() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("kernel/drivers/i2c/algos");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("i2c-algo-bit.ko.xz"), b"x").unwrap();
        assert!(find_module(t.path(), "i2c-algo-bit").is_some());
        assert!(find_module(t.path(), "i2c_algo_bit").is_none());
        assert!(find_module(t.path(), "igb").is_none());
    }

    #[test]
    fn the_mock_server_is_found_next_to_the_agent() {
        let t = tempfile::tempdir().unwrap();
        let agent = t.path().join("phc-harness-guest");
        fs::write(&agent, b"x").unwrap();
        if std::env::var_os("PHC_MOCK_BIN").is_none() {
            assert_eq!(default_mock(&agent), None);
            fs::write(t.path().join("mock-phc"), b"x").unwrap();
            assert_eq!(default_mock(&agent), Some(t.path().join("mock-phc")));
            fs::write(t.path().join("mock-phc-guest"), b"x").unwrap();
            assert_eq!(default_mock(&agent), Some(t.path().join("mock-phc-guest")));
        }
    }

    #[test]
    fn missing_kernel_cache_is_a_clear_error() {
        let mut spec = ImageSpec::with_agent("/bin/true");
        spec.kernel_dir = "/nonexistent".into();
        let out = crate::tmp::file("test", "", ".cpio").unwrap();
        let e = build(&spec, &out).unwrap_err();
        assert!(matches!(&e, Error::KernelMissing { source: Some(_), .. }), "{e:?}");
        assert!(e.to_string().contains("run ci/setup-vm.sh"), "{e}");
    }

    #[test]
    fn the_trial_image_holds_busybox_and_an_init_that_prints_the_line() {
        let out = crate::tmp::file("test", "", ".cpio").unwrap();
        build_trial(Path::new("/bin/true"), &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in ["bin/busybox", "bin/sh", "init", TRIAL_LINE, "TRAILER!!!"] {
            assert!(text.contains(needle), "{needle} missing from the trial image");
        }
    }
}
