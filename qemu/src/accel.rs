//! Which acceleration guests get on this machine, decided once and remembered. A trial guest
//! under KVM decides (KVM when it reaches its init, TCG with the reason otherwise), and the answer
//! is cached under a key of everything that could change it: the host kernel, the QEMU binary,
//! /dev/kvm and the guest kernel. A KVM that neither boots nor fails costs the first decision the
//! few seconds it takes to see the guest's console stay quiet, and no later run anything.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::image::{self, TRIAL_LINE};
use crate::launcher::{Accel, Guest, GuestBuilder, DEFAULT_QEMU};
use crate::{chain, pvh, signals, tmp, Error};

/// The cache file's name, in the cache folder.
pub const CACHE_FILE: &str = "accel.json";

/// The trial's kernel command line: no `quiet` and an early console, so that a guest that runs
/// prints from its first moments and a silent one is seen to be stuck; `panic=-1` with QEMU's
/// `-no-reboot` turns a panic into an exit.
pub const TRIAL_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0 8250.nr_uarts=1 mitigations=off \
    panic=-1 i8042.noaux i8042.nokbd i8042.nopnp";

/// The identity of a file as far as a cache cares: where, how big, when last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// The path, symlinks resolved.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
}

impl FileId {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io { op: "read", path: path.to_owned(), source };
        let real = fs::canonicalize(path).map_err(io)?;
        let m = fs::metadata(&real).map_err(io)?;
        let mtime_ns = m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec());
        Ok(Self { path: real, size: m.size(), mtime_ns })
    }
}

/// Everything the decision depends on. A cached decision holds only while its key equals the
/// machine's key now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The host kernel: release and version (`uname -r`, `uname -v`).
    pub host_kernel: String,
    /// The QEMU binary.
    pub qemu: FileId,
    /// The first line of `qemu --version`.
    pub qemu_version: String,
    /// /dev/kvm's device number; `None` when there is none.
    pub kvm_rdev: Option<u64>,
    /// Why /dev/kvm cannot be opened read-write; `None` when it can.
    pub kvm_open_error: Option<String>,
    /// The guest kernel (the bzImage setup caches).
    pub guest_kernel: FileId,
}

impl Key {
    /// The key of this machine now, for QEMU `qemu` (a path, or a name looked up in PATH) and
    /// the guest kernel `guest_kernel`.
    pub fn current(qemu: &Path, guest_kernel: &Path) -> Result<Self, Error> {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
        let host_kernel =
            format!("{} {}", read("/proc/sys/kernel/osrelease"), read("/proc/sys/kernel/version"));
        let qemu_path = find_program(qemu).ok_or_else(|| Error::QemuMissing { program: qemu.to_owned() })?;
        let out = std::process::Command::new(&qemu_path)
            .arg("--version")
            .output()
            .map_err(|source| Error::Spawn { program: qemu_path.clone(), source })?;
        let qemu_version =
            String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_owned();
        let (kvm_rdev, kvm_open_error) = match fs::metadata("/dev/kvm") {
            Err(_) => (None, None),
            Ok(m) => {
                let open = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm");
                (Some(m.rdev()), open.err().map(|e| e.to_string()))
            }
        };
        Ok(Self {
            host_kernel,
            qemu: FileId::of(&qemu_path)?,
            qemu_version,
            kvm_rdev,
            kvm_open_error,
            guest_kernel: FileId::of(guest_kernel).map_err(|e| match e {
                Error::Io { path, source, .. } => Error::KernelMissing { path, source: Some(source) },
                other => other,
            })?,
        })
    }

    /// The names of the parts that differ from `other`.
    pub fn differences(&self, other: &Key) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.host_kernel != other.host_kernel {
            d.push("host kernel");
        }
        if self.qemu != other.qemu || self.qemu_version != other.qemu_version {
            d.push("QEMU");
        }
        if self.kvm_rdev != other.kvm_rdev || self.kvm_open_error != other.kvm_open_error {
            d.push("/dev/kvm");
        }
        if self.guest_kernel != other.guest_kernel {
            d.push("guest kernel");
        }
        d
    }
}

/// `name` itself when it holds a slash, else the first match in PATH.
pub(crate) fn find_program(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// What the cache file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: Key,
    accel: Accel,
    why: String,
    probed_unix_s: u64,
    probe_s: f64,
}

/// Where decisions are remembered: the first file that holds one for the current key wins; a
/// new one is written to the first file that can be written.
#[derive(Debug, Clone)]
pub struct Cache {
    files: Vec<PathBuf>,
}

impl Cache {
    /// `PHC_CACHE` (default /var/cache/phc-harness, as ci/setup-vm.sh uses it), then the user's
    /// cache folder (`XDG_CACHE_HOME` or ~/.cache) for when the first is not writable.
    pub fn default_locations() -> Self {
        let mut files = vec![image::cache_dir().join(CACHE_FILE)];
        let user = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        if let Some(u) = user {
            let f = u.join("phc-harness").join(CACHE_FILE);
            if !files.contains(&f) {
                files.push(f);
            }
        }
        Self { files }
    }

    /// A cache in exactly these files (tests).
    pub fn at(files: Vec<PathBuf>) -> Self {
        Self { files }
    }

    /// The record for `key`, or why there is none.
    fn lookup(&self, key: &Key) -> Result<(PathBuf, Record), String> {
        let mut why = Vec::new();
        for f in &self.files {
            let text = match fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    why.push(format!("{} unreadable: {e}", f.display()));
                    continue;
                }
            };
            match serde_json::from_str::<Record>(&text) {
                Ok(r) if r.key == *key => return Ok((f.clone(), r)),
                Ok(r) => why.push(format!(
                    "{} was decided for another {}",
                    f.display(),
                    r.key.differences(key).join(", ")
                )),
                Err(e) => why.push(format!("{} is corrupt ({e}), ignored", f.display())),
            }
        }
        Err(if why.is_empty() { "nothing cached".into() } else { why.join("; ") })
    }

    /// Writes `rec` by rename (readers never see half a file) to the first writable location.
    fn save(&self, rec: &Record) -> Result<PathBuf, String> {
        let text = serde_json::to_string_pretty(rec).expect("plain data");
        let mut why = Vec::new();
        for f in &self.files {
            let dir = f.parent().unwrap_or(Path::new("."));
            let written = fs::create_dir_all(dir)
                .and_then(|()| tempfile::Builder::new().prefix(".accel").tempfile_in(dir))
                .and_then(|mut t| t.write_all(text.as_bytes()).map(|()| t))
                .and_then(|t| t.persist(f).map_err(|e| e.error));
            match written {
                Ok(file) => {
                    // Readable by every user of the machine, whatever this process's umask.
                    let _ = file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
                    return Ok(f.clone());
                }
                Err(e) => why.push(format!("{}: {e}", f.display())),
            }
        }
        Err(why.join("; "))
    }
}

/// How a decision was made.
#[derive(Debug, Clone, PartialEq)]
pub enum How {
    /// The caller named the acceleration (`--accel`).
    Asked,
    /// Read from the cache, where a trial on the same key left it.
    Cached {
        /// The cache file.
        file: PathBuf,
        /// How long ago the trial ran.
        age: Duration,
    },
    /// A trial ran now.
    Probed {
        /// How long it took.
        took: Duration,
        /// Why the cache was not used.
        because: String,
        /// Where it was saved, or why it could not be.
        saved: Result<PathBuf, String>,
    },
}

/// The acceleration to use, why, and how that was found out.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The acceleration.
    pub accel: Accel,
    /// Why KVM does or does not work here (empty when asked for).
    pub why: String,
    /// How the choice was made.
    pub how: How,
}

impl Decision {
    /// The caller's choice.
    pub fn asked(accel: Accel) -> Self {
        Self { accel, why: String::new(), how: How::Asked }
    }

    /// How the choice was made, in words: `asked for with --accel`, `cached in FILE (...)`,
    /// `probed in 0.8 s (...)`.
    pub fn how_text(&self) -> String {
        match &self.how {
            How::Asked => "asked for with --accel".into(),
            How::Cached { file, age } => format!(
                "cached in {} (probed {} ago on this host kernel, QEMU and /dev/kvm)",
                file.display(),
                ago(*age)
            ),
            How::Probed { took, because, saved } => {
                let saved = match saved {
                    Ok(f) => format!("saved in {}", f.display()),
                    Err(e) => format!("not saved: {e}"),
                };
                format!("probed in {:.2} s ({because}; {saved})", took.as_secs_f64())
            }
        }
    }

    /// One line for reports: how the choice was made, then why.
    pub fn reason(&self) -> String {
        if self.why.is_empty() {
            self.how_text()
        } else {
            format!("{}: {}", self.how_text(), self.why)
        }
    }
}

fn ago(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The cached decision for `key`, or a new one from `probe` (saved for next time). `refresh`
/// skips the cache. A probe that fails (interrupted, image not buildable) decides nothing and
/// leaves the cache alone.
pub fn decide(
    cache: &Cache,
    key: &Key,
    refresh: bool,
    probe: impl FnOnce() -> Result<(Accel, String), Error>,
) -> Result<Decision, Error> {
    let because = if refresh {
        "--refresh".to_owned()
    } else {
        match cache.lookup(key) {
            Ok((file, r)) => {
                let age = Duration::from_secs(unix_now_s().saturating_sub(r.probed_unix_s));
                return Ok(Decision { accel: r.accel, why: r.why, how: How::Cached { file, age } });
            }
            Err(why) => why,
        }
    };
    let t0 = Instant::now();
    let (accel, why) = probe()?;
    let took = t0.elapsed();
    let rec = Record {
        key: key.clone(),
        accel,
        why: why.clone(),
        probed_unix_s: unix_now_s(),
        probe_s: took.as_secs_f64(),
    };
    let saved = cache.save(&rec);
    Ok(Decision { accel, why, how: How::Probed { took, because, saved } })
}

/// What a trial boots.
#[derive(Debug, Clone)]
pub struct Trial {
    /// QEMU.
    pub qemu: PathBuf,
    /// The guest kernel (bzImage; its PVH vmlinux is booted when there is one).
    pub kernel: PathBuf,
    /// A static busybox for the trial's init.
    pub busybox: PathBuf,
    /// The longest a trial lasts.
    pub deadline: Duration,
    /// A console silent this long before init means the guest is stuck.
    pub quiet_limit: Duration,
}

impl Trial {
    /// What setup installs: QEMU from PATH, the cached Debian kernel, Debian's busybox-static.
    pub fn this_machine() -> Self {
        Self {
            qemu: DEFAULT_QEMU.into(),
            kernel: image::cache_dir().join("kernel/vmlinuz"),
            busybox: "/bin/busybox".into(),
            deadline: Duration::from_secs(30),
            quiet_limit: Duration::from_secs(5),
        }
    }

    /// Boots a KVM guest and watches it: KVM when it reaches its init, TCG with the reason when
    /// /dev/kvm cannot be used, QEMU fails or stops the guest, the console stays quiet for
    /// `quiet_limit`, or `deadline` passes.
    pub fn run(&self, key: &Key) -> Result<(Accel, String), Error> {
        if key.kvm_rdev.is_none() {
            return Ok((Accel::Tcg, "/dev/kvm does not exist".into()));
        }
        if let Some(e) = &key.kvm_open_error {
            return Ok((Accel::Tcg, format!("/dev/kvm: {e}")));
        }
        let initrd = tmp::file("initrd", "accel-trial", ".cpio")?;
        image::build_trial(&self.busybox, &initrd)?;
        let kernel = pvh::vmlinux_for(&self.kernel).unwrap_or_else(|_| self.kernel.clone());
        let builder = GuestBuilder::new(kernel, &initrd)
            .qemu(&self.qemu)
            .accel(Accel::Kvm)
            .role("accel-trial")
            .append(TRIAL_CMDLINE)
            .memory_mib(256)
            .igb(false)
            .agent(false)
            .arg("-no-reboot");
        let t0 = Instant::now();
        let mut guest = match builder.start(t0 + self.deadline) {
            Ok(g) => g,
            Err(e @ (Error::Interrupted { .. } | Error::Spawn { .. })) => return Err(e),
            Err(e) => return Ok((Accel::Tcg, format!("a KVM guest did not start: {}", chain(&e)))),
        };
        self.watch(&mut guest, t0)
    }

    fn watch(&self, guest: &mut Guest, t0: Instant) -> Result<(Accel, String), Error> {
        let reached =
            |t0: Instant| Ok((Accel::Kvm, format!("a KVM guest reached its init in {:.1} s", secs(t0))));
        let (mut seen, mut changed) = (0, Instant::now());
        loop {
            let console = guest.console();
            if console.contains(TRIAL_LINE) {
                return reached(t0);
            }
            if let Some(e) = guest.exit_error() {
                // Init prints and powers off: the line may have come after the look above.
                if guest.console().contains(TRIAL_LINE) {
                    return reached(t0);
                }
                return Ok((
                    Accel::Tcg,
                    format!("a KVM guest failed: {e}; console tail: {}", tail(&console)),
                ));
            }
            signals::check()?;
            match guest.qmp().status(Instant::now() + Duration::from_secs(2)) {
                Ok(st) if matches!(st.as_str(), "internal-error" | "guest-panicked" | "shutdown") => {
                    return Ok((Accel::Tcg, format!("a KVM guest stopped in state {st}: {}", gist(guest))));
                }
                Ok(_) => {}
                Err(e @ Error::Interrupted { .. }) => return Err(e),
                Err(e) => {
                    return Ok((Accel::Tcg, format!("a KVM guest's QEMU stopped answering: {}", chain(&e))))
                }
            }
            let now = Instant::now();
            if console.len() != seen {
                (seen, changed) = (console.len(), now);
            } else if now - changed >= self.quiet_limit {
                let quiet = self.quiet_limit.as_secs_f64();
                return Ok((
                    Accel::Tcg,
                    if seen == 0 {
                        format!("a KVM guest printed nothing in {quiet:.0} s: its vCPU does not run")
                    } else {
                        format!(
                            "a KVM guest stalled: its console was quiet for {quiet:.0} s before init; console tail: {}",
                            tail(&console)
                        )
                    },
                ));
            }
            if now >= t0 + self.deadline {
                return Ok((Accel::Tcg, format!("a KVM guest did not reach its init in {:.0} s", secs(t0))));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// The console's last non-empty lines.
fn tail(console: &str) -> String {
    let last: Vec<&str> = console.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
    if last.is_empty() {
        return "(empty)".into();
    }
    last.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// What QEMU said about a stopped guest: its first error line (a KVM internal error is followed
/// by a register dump), else the end of its stderr.
fn gist(guest: &Guest) -> String {
    let err = fs::read_to_string(guest.dir().join("qemu.stderr")).unwrap_or_default();
    err.lines()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .map(str::to_owned)
        .unwrap_or_else(|| guest.stderr_tail())
}

/// The decision for this machine: cached, or found by a trial (`Trial::this_machine`) and saved.
pub fn decide_here(refresh: bool) -> Result<Decision, Error> {
    let trial = Trial::this_machine();
    let key = Key::current(&trial.qemu, &trial.kernel)?;
    decide(&Cache::default_locations(), &key, refresh, || trial.run(&key))
}

#[cfg(test)]
#[path = "accel_tests.rs"]
mod tests;
