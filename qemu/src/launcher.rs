//! Starting a guest: a builder for the QEMU command line, a per-guest temp folder for sockets and
//! the console log, and a handle that owns QEMU's process group and kills and reaps it on drop, so
//! no QEMU outlives the harness, whatever path it leaves by.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::qmp::Qmp;
use crate::tmp::{self, TempDir};
use crate::{signals, Error, Waited};

/// CPU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Software emulation: works everywhere, slower.
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

impl Accel {
    /// The name QEMU's `-accel` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        }
    }
}

/// The QEMU binary by default, looked up in PATH.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// QEMU's minimal firmware (Debian's qemu-system-data ships it): it hands over to the kernel
/// sooner than SeaBIOS.
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// The kernel command line by default. Besides the console, each word cuts boot time under TCG
/// (measured with examples/boot_bench.rs) without touching what the tests look at: no CPU-bug
/// mitigations, no crypto self-tests (kdf108 runs its own, 0.15 s, whatever cryptomgr says), no
/// jitter-entropy start-up (0.35 s of timing loops; nothing here runs in FIPS mode), one
/// UART, no keyboard/mouse probing, no IO-APIC timer check. `quiet` matters too: every console
/// byte is an emulated port write. No `panic=`: a panicked guest halts with the panic as the
/// console tail, where a reboot would hide it.
///
/// The rest keeps an idle guest idle, which is what virtual time pays for (every timer that
/// wakes the guest is a hand-off between QEMU's threads; see `MACHINE_OPTIONS`), without
/// touching its clocks: no clocksource watchdog (`tsc=reliable`: it read the PM timer twice a
/// second to check a TSC that QEMU derives from the same virtual clock), no soft-lockup watchdog
/// (`nowatchdog`: an hrtimer every 4 s), no proactive compaction (kcompactd woke every 500 ms to
/// consider it) and vmstat folded every 10 s, not every second. An idle guest's local timer
/// interrupts went from 10.3 to 0.5 per guest second (examples/idle_probe.rs).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet mitigations=off cryptomgr.notests \
    initcall_blacklist=jent_mod_init,crypto_kdf108_init random.trust_cpu=on 8250.nr_uarts=1 \
    i8042.noaux i8042.nokbd i8042.nopnp no_timer_check tsc=reliable nowatchdog \
    sysctl.vm.compaction_proactiveness=0 sysctl.vm.stat_interval=10";

/// The machine's options: the default `pc` without its HPET. Linux keeps the HPET's counter
/// running (it registers it as a clocksource) and QEMU's HPET then schedules a timer on the
/// virtual clock for the counter's wrap and comparators whether or not an interrupt is enabled;
/// under icount with sleep=off every such timer is one more stop of the warp, a hand-off between
/// QEMU's main loop and its vCPU thread with nothing for the guest to do. An idle guest ran 150
/// guest seconds in 0.55 s without it against about 5 s with it (examples/idle_probe.rs, pinned
/// to one CPU), with the same timer interrupts. The guest's TSC is still calibrated against the
/// PIT (999.99 MHz under icount shift 0) and stays its clocksource; `pit=off` would not do: the
/// calibration then falls back to the PM timer, gets 315 MHz and marks the TSC unstable.
pub const MACHINE_OPTIONS: &str = "hpet=off";

/// Builds and starts a guest.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    append: String,
    bios: Option<PathBuf>,
    memory_mib: u32,
    accel: Accel,
    igb: bool,
    agent: bool,
    role: String,
    clock: GuestClock,
    extra: Vec<String>,
    hold: bool,
}

/// What QEMU says on stderr of a NIC without a network (igb here, `GuestBuilder::args`): igb is
/// there for its PHC only. Measured with `resume-without-sync` held between requests
/// (`PHC_HOLD=1`) on an idle machine, every run restored from one boot snapshot: with `-netdev
/// user` behind igb, seven runs first corrected 57.5, 73.5, 65.5, 65.5, 57.5, 57.5 and 89.5 s
/// after the resume; without it, four runs from one file all at 105.488 s (their chronyd
/// refclock logs the same to the nanosecond for 215-494 s) and two from another both at
/// 57.488 s. What still parts held runs is QEMU's (README, "Holding the guest").
pub const NO_PEER_WARNING: &str = "nic igb.0 has no peer";

/// The last three lines of QEMU's stderr `err` that say something, joined by ` | `.
fn tail_of_stderr(err: &str) -> String {
    let last: Vec<&str> =
        err.lines().filter(|l| !l.trim().is_empty() && !l.ends_with(NO_PEER_WARNING)).rev().take(3).collect();
    last.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// icount's shift in virtual time (`PHC_ICOUNT_SHIFT` overrides it): each instruction counts
/// 2^shift ns of virtual time. A fixed shift, not `auto`: `auto` retunes the shift to the host's
/// speed, so a loaded host gives the guest a slower virtual CPU. 0 (one instruction a
/// nanosecond, the closest to a real CPU) matched what `auto` gives on an idle host, at about the
/// same wall time (azure-pause-30s as written: 31.8 s at 0, 30.3 s at 2, 29.6 s at 4). The
/// host's own timing would still reach the guest between requests (an idle guest leaps through
/// its timers while the host thinks) but for the agent's hold (`agent::Op::Hold`).
pub const ICOUNT_SHIFT: &str = "0";

/// On the kernel command line of a guest that holds (`GuestBuilder::holds`): the agent holds
/// the guest before its first request, so that from its very start nothing the host does takes
/// guest time.
pub const HOLD_CMDLINE: &str = "phc_agent.hold=1";

/// The file, in QEMU's folder, behind the memory a holding guest's requests pass through.
pub const HOLD_FILE: &str = "hold.shm";

/// Whether guests in virtual time hold between requests (`GuestBuilder::holds`): with
/// `PHC_HOLD=1` only. The hold keeps the host's think time out of the guest's virtual time, at
/// about 1.4x the wall time, but a run still moves with the host's load (README, "Holding the
/// guest between requests"), so it is not the default.
pub fn hold_wanted() -> bool {
    std::env::var("PHC_HOLD").is_ok_and(|v| v == "1")
}

/// Which clock the guest's time follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestClock {
    /// The host's: wall-clock time (QEMU's default).
    #[default]
    Real,
    /// QEMU's virtual clock under TCG with `-icount shift=N,sleep=off,align=off` (`ICOUNT_SHIFT`): an idle
    /// guest's time jumps to its next timer, so it runs faster than real time, and every guest
    /// clock (TSC, HPET, the igb PHC, the RTC with `clock=vm`) follows it. The RTC starts at
    /// `rtc_base_s` (seconds since the epoch).
    Virtual {
        /// The RTC's time when QEMU starts.
        rtc_base_s: i64,
    },
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for `-rtc base=`.
fn rtc_base_text(unix_s: i64) -> String {
    // Civil from days (Howard Hinnant's algorithm).
    let (days, secs) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

impl GuestBuilder {
    /// A guest booting `kernel` with `initrd`, under TCG, 512 MiB, with an igb NIC and the agent
    /// channel.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        Self {
            qemu: DEFAULT_QEMU.into(),
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: DEFAULT_CMDLINE.into(),
            bios: Path::new(QBOOT).is_file().then(|| QBOOT.into()),
            memory_mib: 512,
            accel: Accel::Tcg,
            igb: true,
            agent: true,
            role: "guest".into(),
            clock: GuestClock::Real,
            extra: Vec::new(),
            hold: hold_wanted(),
        }
    }

    /// The QEMU binary.
    pub fn qemu(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu = path.into();
        self
    }

    /// The initramfs (a restore boots a copy of the saved guest's).
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd = path.into();
        self
    }

    /// The kernel command line.
    pub fn append(mut self, cmdline: impl Into<String>) -> Self {
        self.append = cmdline.into();
        self
    }

    /// The kernel command line this builder boots with.
    pub fn cmdline(&self) -> &str {
        &self.append
    }

    /// Whether the guest's agent holds it between requests (`agent::held`), from its start: in
    /// virtual time, where asked for (`hold`, `PHC_HOLD=1`). QEMU then has a pvpanic device that pauses the guest
    /// (`-action panic=pause`) and an ivshmem device for the requests, and the kernel command
    /// line tells the agent (`HOLD_CMDLINE`).
    pub fn holds(&self) -> bool {
        matches!(self.clock, GuestClock::Virtual { .. }) && self.hold
    }

    /// Whether a guest in virtual time holds between requests (`holds`); the default is
    /// `hold_wanted`.
    pub fn hold(mut self, on: bool) -> Self {
        self.hold = on;
        self
    }

    /// The QEMU program this builder starts.
    pub fn program(&self) -> &Path {
        &self.qemu
    }

    /// The kernel this builder boots.
    pub fn kernel_path(&self) -> &Path {
        &self.kernel
    }

    /// The initramfs this builder boots.
    pub fn initrd_path(&self) -> &Path {
        &self.initrd
    }

    /// The firmware (`-bios`); `None` is QEMU's default, SeaBIOS. Defaults to qboot when
    /// installed.
    pub fn bios(mut self, path: Option<PathBuf>) -> Self {
        self.bios = path;
        self
    }

    /// Guest memory.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Acceleration.
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Whether to add `-device igb` (the guest PHC under TCG).
    pub fn igb(mut self, on: bool) -> Self {
        self.igb = on;
        self
    }

    /// Whether to add the virtio-serial agent channel.
    pub fn agent(mut self, on: bool) -> Self {
        self.agent = on;
        self
    }

    /// What the guest is for, in lowercase letters and dashes (`scenario`, `accel-trial`): it
    /// names the guest's temp folder (`phc-qemu-<pid>-<role>-<random>`, so it shows on QEMU's
    /// command line) and QEMU's `-name` (`phc-<role>`, which QMP `query-name` returns). Tools
    /// that look for a harness's guests tell them apart by it.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// The clock the guest's time follows; `Virtual` needs TCG (QEMU refuses icount with KVM).
    pub fn clock(mut self, clock: GuestClock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock this builder's guest runs on.
    pub fn guest_clock(&self) -> GuestClock {
        self.clock
    }

    /// Extra QEMU arguments.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// The command line this builder runs, with `dir` as the guest folder.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        let d = dir.display();
        let mut a: Vec<String> = vec![
            // No -no-reboot: with it, QMP system_reset (a scenario's reboot) makes QEMU exit.
            "-nodefaults".into(),
            "-name".into(),
            format!("phc-{}", self.role),
            "-display".into(),
            "none".into(),
            "-accel".into(),
            self.accel.name().into(),
            "-machine".into(),
            MACHINE_OPTIONS.into(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            if self.holds() { format!("{} {HOLD_CMDLINE}", self.append) } else { self.append.clone() },
            "-serial".into(),
            format!("file:{d}/console.log"),
            "-qmp".into(),
            format!("unix:{d}/qmp.sock,server=on,wait=off"),
        ];
        if let Some(bios) = &self.bios {
            a.extend(["-bios".into(), bios.display().to_string()]);
        }
        if self.accel == Accel::Kvm {
            a.extend(["-cpu".into(), "host".into()]);
        }
        if self.igb {
            // No network behind it: the guest never brings the interface up, and the PHC ticks
            // without a link. A user-mode network (slirp) ran on QEMU's main loop at moments of
            // the host's choosing and made virtual-time runs of one seed differ (see
            // `NO_PEER_WARNING`).
            a.extend(["-device".into(), "igb".into()]);
        }
        if self.agent {
            a.extend([
                "-device".into(),
                "virtio-serial-pci".into(),
                "-chardev".into(),
                format!("socket,id=agent,path={d}/agent.sock,server=on,wait=off"),
                "-device".into(),
                "virtserialport,chardev=agent,name=phc.agent".into(),
            ]);
        }
        if let GuestClock::Virtual { rtc_base_s } = self.clock {
            let shift = std::env::var("PHC_ICOUNT_SHIFT").unwrap_or_else(|_| ICOUNT_SHIFT.into());
            a.extend([
                "-icount".into(),
                format!("shift={shift},sleep=off,align=off"),
                "-rtc".into(),
                format!("base={},clock=vm", rtc_base_text(rtc_base_s)),
            ]);
        }
        if self.holds() {
            // What the agent pauses the guest with between requests, and the memory the
            // requests and answers pass through (agent::held).
            a.extend([
                "-device".into(),
                "pvpanic".into(),
                "-action".into(),
                "panic=pause".into(),
                "-object".into(),
                format!(
                    "memory-backend-file,id=phc-hold,size={},share=on,mem-path={d}/{HOLD_FILE}",
                    crate::agent::held::SIZE
                ),
                // master=on: the memory is migrated with the guest (the boot snapshot).
                "-device".into(),
                "ivshmem-plain,memdev=phc-hold,master=on".into(),
            ]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts QEMU in its own process group and connects QMP before `deadline`.
    ///
    /// QEMU gets SIGKILL when the *thread* that called this exits (PR_SET_PDEATHSIG follows the
    /// forking thread), so start a guest on a thread that outlives it.
    pub fn start(&self, deadline: Instant) -> Result<Guest, Error> {
        signals::check()?;
        let dir = tmp::dir("qemu", &self.role)?;
        let args = self.args(dir.path());
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|source| Error::Io {
            op: "create",
            path: stderr_path,
            source,
        })?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which
        // is async-signal-safe; it allocates nothing and touches no parent state.
        unsafe {
            cmd.pre_exec(|| {
                // If the harness dies, the kernel kills QEMU too.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn { program: self.qemu.clone(), source })?;
        let mut guest = Guest {
            child: Some(child),
            dir,
            qmp: None,
            accel: self.accel,
            started: Instant::now(),
            reaped: false,
            exit_status: None,
        };
        // Wait for the socket while watching QEMU, so a QEMU that dies before creating it (a KVM
        // that cannot run this guest aborts at once) is reported at once, not at the deadline.
        // The guest drops on every early return: QEMU is killed and reaped, the folder removed.
        let sock = guest.dir().join("qmp.sock");
        while !sock.exists() {
            if let Some(e) = guest.exit_error() {
                return Err(e);
            }
            signals::check()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout { what: Waited::QmpSocket, console_tail: String::new() });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match Qmp::connect(&sock, deadline) {
            Ok(q) => guest.qmp = Some(q),
            // QEMU may have exited with a reason on stderr; that is the better message. The socket
            // breaks a moment before QEMU can be reaped: give it that moment.
            Err(e) => return Err(guest.exit_within(Duration::from_secs(1)).unwrap_or(e)),
        }
        Ok(guest)
    }
}

/// The CPUs this process may run on, in order (none where that cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, zero is an empty set, and sched_getaffinity writes at most
    // the size it is given; CPU_ISSET reads within the set for indices below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Pins the calling thread, and what it starts from now on (QEMU inherits it), to `cpu`; a CPU
/// that cannot be had leaves the thread where it was.
pub fn pin_this_thread(cpu: usize) {
    // SAFETY: as in `allowed_cpus`; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A running guest. Dropping it kills QEMU's process group, reaps it and removes its folder
/// (kept, for a post-mortem, when `PHC_KEEP_GUEST_DIR` is set).
pub struct Guest {
    child: Option<Child>,
    dir: TempDir,
    qmp: Option<Qmp>,
    accel: Accel,
    started: Instant,
    reaped: bool,
    exit_status: Option<ExitStatus>,
}

impl Guest {
    /// The guest's folder (sockets, console log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent socket (connect to talk to the guest agent).
    pub fn agent_socket(&self) -> PathBuf {
        self.dir().join("agent.sock")
    }

    /// The file behind the memory a holding guest's requests pass through (`agent::held`).
    pub fn hold_file(&self) -> PathBuf {
        self.dir().join(HOLD_FILE)
    }

    /// Acceleration in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The QMP connection.
    pub fn qmp(&mut self) -> &mut Qmp {
        self.qmp.as_mut().expect("connected in start()")
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir().join("console.log")).unwrap_or_default()
    }

    /// QEMU's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether QEMU is still running.
    pub fn alive(&mut self) -> bool {
        self.child.is_some() && self.poll_exit().is_none()
    }

    /// QEMU's exit status once it has exited (without blocking). On exit the rest of its process
    /// group is killed and QEMU reaped, in that order: once reaped, its pid (which is also the
    /// group id) may be reused, and a later `killpg` could hit a stranger.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_some() {
            return self.exit_status;
        }
        let c = self.child.as_mut()?;
        let pid = Pid::from_raw(c.id() as i32);
        // WNOWAIT leaves the zombie in place, so the group id stays ours until we kill the group.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => {}
            // Already reaped elsewhere (or never ours): nothing left to wait for.
            Err(_) => {}
        }
        let _ = killpg(pid, Signal::SIGKILL);
        let status = c.wait().ok()?;
        self.reaped = true;
        self.exit_status = Some(status);
        self.exit_status
    }

    /// The last lines QEMU wrote to stderr, joined by ` | ` (its warning about igb's missing
    /// network left out).
    pub fn stderr_tail(&self) -> String {
        tail_of_stderr(&std::fs::read_to_string(self.dir().join("qemu.stderr")).unwrap_or_default())
    }

    /// `Error::QemuExited` with the exit status and the end of stderr, once QEMU has exited.
    pub fn exit_error(&mut self) -> Option<Error> {
        let status = self.poll_exit()?;
        Some(Error::QemuExited { status, stderr_tail: self.stderr_tail(), console_tail: String::new() })
    }

    /// `exit_error`, waiting up to `wait` for QEMU to exit: for when a broken socket says it is
    /// dying.
    pub fn exit_within(&mut self, wait: Duration) -> Option<Error> {
        let until = Instant::now() + wait;
        loop {
            if let Some(e) = self.exit_error() {
                return Some(e);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Why QEMU exited, if it did, as `exit_error` prints it.
    pub fn exit_reason(&mut self) -> Option<String> {
        self.exit_error().map(|e| e.to_string())
    }

    /// Waits until `needle` appears on the console, or fails at `deadline` or when QEMU exits.
    pub fn wait_console(&mut self, needle: &str, deadline: Instant) -> Result<(), Error> {
        loop {
            if self.console().contains(needle) {
                return Ok(());
            }
            if let Some(e) = self.exit_error() {
                return Err(e);
            }
            signals::check()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: Waited::Console(needle.into()),
                    console_tail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Asks QEMU to quit, then kills whatever is left. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(q) = self.qmp.as_mut() {
            let _ = q.quit(Instant::now() + Duration::from_secs(2));
        }
        self.qmp = None;
        self.reap_quietly();
    }

    fn reap_quietly(&mut self) {
        if self.reaped {
            return;
        }
        if let Some(c) = self.child.as_mut() {
            // The group id is QEMU's pid (process_group(0)); killing the group catches helpers.
            // Until we reap it, that pid cannot be reused, so the signal cannot hit a stranger.
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            if let Ok(status) = c.wait() {
                self.exit_status.get_or_insert(status);
            }
            self.reaped = true;
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.shutdown();
        // The folder itself goes when `dir` drops, after this.
        if std::env::var_os("PHC_KEEP_GUEST_DIR").is_some() {
            self.dir.disable_cleanup(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_adds_icount_and_a_vm_rtc() {
        assert_eq!(rtc_base_text(1_767_225_600), "2026-01-01T00:00:00");
        assert_eq!(rtc_base_text(951_825_601), "2000-02-29T12:00:01");
        let b = GuestBuilder::new("k", "i").clock(GuestClock::Virtual { rtc_base_s: 1_767_225_600 });
        let a = b.args(Path::new("/d")).join(" ");
        let shift = std::env::var("PHC_ICOUNT_SHIFT").unwrap_or_else(|_| ICOUNT_SHIFT.into());
        let want =
            format!("-icount shift={shift},sleep=off,align=off -rtc base=2026-01-01T00:00:00,clock=vm");
        assert!(a.contains(&want), "{a}");
        assert!(!GuestBuilder::new("k", "i").args(Path::new("/d")).join(" ").contains("icount"));
        // igb for its PHC, with no network behind it to run at the host's moments.
        assert!(a.contains("-device igb") && !a.contains("-netdev"), "{a}");
    }

    #[test]
    fn the_stderr_tail_leaves_out_igbs_missing_network() {
        let err =
            format!("qemu-system-x86_64: warning: {NO_PEER_WARNING}\n\nqemu-system-x86_64: real trouble\n");
        assert_eq!(tail_of_stderr(&err), "qemu-system-x86_64: real trouble");
        assert_eq!(tail_of_stderr("a\nb\nc\nd\n"), "b | c | d");
    }

    #[test]
    fn a_guest_that_holds_gets_pvpanic_pausing_and_tells_its_agent() {
        let b = GuestBuilder::new("k", "i").clock(GuestClock::Virtual { rtc_base_s: 0 }).hold(true);
        let a = b.args(Path::new("/d"));
        let real = GuestBuilder::new("k", "i").hold(true).args(Path::new("/d"));
        {
            assert!(b.holds());
            let joined = a.join(" ");
            assert!(joined.contains("-device pvpanic -action panic=pause"), "{joined}");
            assert!(joined.contains(&format!("share=on,mem-path=/d/{HOLD_FILE}")), "{joined}");
            assert!(joined.contains("-device ivshmem-plain,memdev=phc-hold,master=on"), "{joined}");
            let cmdline = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
            assert!(cmdline.ends_with(&format!(" {HOLD_CMDLINE}")), "{cmdline}");
        }
        assert!(!GuestBuilder::new("k", "i").hold(true).holds(), "real time never holds");
        let unheld = GuestBuilder::new("k", "i").clock(GuestClock::Virtual { rtc_base_s: 0 }).hold(false);
        assert!(!unheld.holds() && !unheld.args(Path::new("/d")).join(" ").contains("pvpanic"));
        assert!(!real.join(" ").contains("pvpanic") && !real.join(" ").contains(HOLD_CMDLINE));
    }
}
