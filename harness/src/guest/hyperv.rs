//! The guest agent as the Hyper-V host of the kernel's own hv_utils.ko: it loads the VMBus shim
//! (kmod/vmbus-shim) and hv_utils, plays the TimeSync integration component's side of the
//! protocol through `/dev/vmbus_shim` (negotiation, then SYNC and SAMPLE messages, as
//! include/linux/hyperv.h lays them out), and keeps the shim's reference counter at the host's
//! rate. What hv_utils does with the messages (the PHC it registers, the steps of the guest's
//! clock, ESTALE) is the driver's own.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use phc_qemu::agent::HypervStarted;

/// The shim's node.
pub const SHIM_DEVICE: &str = "/dev/vmbus_shim";
/// Where the image puts the modules (`qemu::image`: staged, not loaded at boot).
const MODULE_DIR: &str = "/lib/modules";
/// The two shim builds, by kernel: a module where VMBus is one, a livepatch where it is built in.
pub const SHIM_MODULES: [&str; 2] = ["vmbus_shim", "vmbus_shim_lp"];
/// How long hv_utils may take to open its channel after insmod (it probes asynchronously).
const BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SYNC may take to reach the guest's clock (hv_utils steps it from a work item).
const STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// 100 ns units between 1601-01-01 (Windows' epoch, the host's `parenttime`) and 1970-01-01.
pub use mock_phc::live::WLTIMEDELTA;

// include/linux/hyperv.h
const ICMSGTYPE_NEGOTIATE: u16 = 0;
const ICMSGTYPE_TIMESYNC: u16 = 4;
const ICMSGHDRFLAG_TRANSACTION: u8 = 1;
const ICMSGHDRFLAG_REQUEST: u8 = 2;
const ICMSGHDRFLAG_RESPONSE: u8 = 4;
/// ICTIMESYNCFLAG_SYNC and _SAMPLE.
pub const FLAG_SYNC: u8 = 1;
/// A plain sample.
pub const FLAG_SAMPLE: u8 = 2;
/// struct vmbuspipe_hdr (8) + struct icmsg_hdr (20), both packed.
const ICMSG_HDR: usize = 28;
/// The framework versions a Hyper-V host offers (UTIL_FW_VERSION 3.0, UTIL_WS2K8_FW_VERSION 1.0).
const FW_VERSIONS: [[u16; 2]; 2] = [[3, 0], [1, 0]];

/// The TimeSync version negotiated, and with it the message layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

impl Version {
    /// Whether samples carry the host's reference time (`struct ictimesync_ref_data`, 4.0 on).
    pub fn has_reference_time(self) -> bool {
        (self.major, self.minor) > (3, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The IC header every message starts with: the pipe header, then `struct icmsg_hdr`.
fn header(msgtype: u16, payload: usize, txid: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(ICMSG_HDR + payload);
    m.extend_from_slice(&0u32.to_le_bytes()); // vmbuspipe_hdr.flags
    m.extend_from_slice(&((20 + payload) as u32).to_le_bytes()); // .msgsize
    m.extend_from_slice(&[1, 0, 0, 0]); // icverframe 1.0
    m.extend_from_slice(&msgtype.to_le_bytes());
    m.extend_from_slice(&[1, 0, 0, 0]); // icvermsg 1.0
    m.extend_from_slice(&(payload as u16).to_le_bytes()); // icmsgsize
    m.extend_from_slice(&0u32.to_le_bytes()); // status
    m.push(txid);
    m.push(ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST);
    m.extend_from_slice(&[0, 0]);
    debug_assert_eq!(m.len(), ICMSG_HDR);
    m
}

/// The host's negotiation: framework versions, then message versions, each (major, minor).
pub fn negotiate_message(fw: &[[u16; 2]], msg: &[[u16; 2]], txid: u8) -> Vec<u8> {
    let payload = 8 + 4 * (fw.len() + msg.len());
    let mut m = header(ICMSGTYPE_NEGOTIATE, payload, txid);
    m.extend_from_slice(&(fw.len() as u16).to_le_bytes());
    m.extend_from_slice(&(msg.len() as u16).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    for v in fw.iter().chain(msg) {
        m.extend_from_slice(&v[0].to_le_bytes());
        m.extend_from_slice(&v[1].to_le_bytes());
    }
    m
}

/// A time sample: `parenttime` (100 ns since 1601), with 4.0 and later the reference counter
/// reading it was taken at (`struct ictimesync_ref_data`), before that `struct ictimesync_data`.
pub fn timesync_message(v: Version, parenttime: u64, vmreferencetime: u64, flags: u8, txid: u8) -> Vec<u8> {
    if v.has_reference_time() {
        let mut m = header(ICMSGTYPE_TIMESYNC, 22, txid);
        m.extend_from_slice(&parenttime.to_le_bytes());
        m.extend_from_slice(&vmreferencetime.to_le_bytes());
        m.push(flags);
        m.extend_from_slice(&[0, 0, 0, 0, 0]); // leapflags, stratum, reserved[3]
        m
    } else {
        let mut m = header(ICMSGTYPE_TIMESYNC, 25, txid);
        m.extend_from_slice(&parenttime.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes()); // childtime
        m.extend_from_slice(&0u64.to_le_bytes()); // roundtriptime
        m.push(flags);
        m
    }
}

/// What the guest answered to a negotiation: its framework and message versions, or why not.
pub fn parse_negotiate_reply(r: &[u8]) -> Result<(Version, Version), String> {
    check_reply(r, ICMSGTYPE_NEGOTIATE)?;
    let p = &r[ICMSG_HDR..];
    if p.len() < 16 {
        return Err(format!("negotiation reply of {} bytes", r.len()));
    }
    let u16at = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
    let (nfw, nmsg) = (u16at(0), u16at(2));
    let fw = Version { major: u16at(8), minor: u16at(10) };
    let msg = Version { major: u16at(12), minor: u16at(14) };
    if (nfw, nmsg) != (1, 1) {
        return Err(format!("hv_utils found no common version (it answered counts {nfw}/{nmsg})"));
    }
    Ok((fw, msg))
}

/// Checks a reply is the guest's response to a message of `msgtype` with status 0.
fn check_reply(r: &[u8], msgtype: u16) -> Result<(), String> {
    if r.len() < ICMSG_HDR {
        return Err(format!("a reply of {} bytes", r.len()));
    }
    let t = u16::from_le_bytes([r[12], r[13]]);
    // pipe header 0..8; icverframe 8..12, icmsgtype 12..14, icvermsg 14..18, icmsgsize 18..20,
    // status 20..24, ictransaction_id 24, icflags 25, reserved 26..28.
    let status = u32::from_le_bytes([r[20], r[21], r[22], r[23]]);
    let flags = r[25];
    if t != msgtype {
        return Err(format!("a reply of type {t} to a message of type {msgtype}"));
    }
    if flags != ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE {
        return Err(format!("reply flags {flags:#x}, not TRANSACTION|RESPONSE"));
    }
    if status != 0 {
        return Err(format!("reply status {status:#x}"));
    }
    Ok(())
}

/// The shim's reference counter as the last rate set anchored it: `ref(raw)` as the shim
/// computes it (shim_bus.c, `shim_ref_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// CLOCK_MONOTONIC_RAW at the anchor.
    pub raw_ns: u64,
    /// The counter there, 100 ns units.
    pub reference: u64,
    /// Rate against CLOCK_MONOTONIC_RAW, ppb.
    pub rate_ppb: i64,
}

impl Anchor {
    /// The counter at CLOCK_MONOTONIC_RAW `raw_ns` (before the anchor too, by the same line).
    pub fn reference_at(&self, raw_ns: i64) -> u64 {
        let d = i128::from(raw_ns) - i128::from(self.raw_ns);
        let adj = d * i128::from(self.rate_ppb) / 1_000_000_000;
        let r = i128::from(self.reference) + (d + adj) / 100;
        r.clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// uapi.h
#[repr(C)]
#[derive(Default)]
struct ShimRate {
    rate_ppb: i64,
    anchor_raw_ns: u64,
    anchor_ref: u64,
}
mod uapi {
    nix::ioctl_read!(shim_ref_read, b'v', 0x01, u64);
    nix::ioctl_readwrite!(shim_rate_set, b'v', 0x02, super::ShimRate);
    nix::ioctl_write_ptr!(shim_ref_shift, b'v', 0x03, u64);
}
use uapi::{shim_rate_set, shim_ref_read, shim_ref_shift};

/// The host side of the TimeSync channel, once negotiated.
#[derive(Debug)]
pub struct HypervHost {
    node: File,
    version: Version,
    anchor: Anchor,
    implicit: bool,
    txid: u8,
    /// The link to the PHC.
    pub device: String,
    /// Which shim runs (its module name).
    pub shim: &'static str,
}

impl HypervHost {
    /// Loads the shim and hv_utils, negotiates, links `/dev/<name>`.
    pub fn start(
        implicit: bool,
        ts_versions: &[[u16; 2]],
        name: &str,
    ) -> Result<(Self, HypervStarted), String> {
        phc::input::check_name(name).map_err(|e| format!("start_hyperv: {e}"))?;
        if ts_versions.is_empty() || ts_versions.len() > 16 {
            return Err("start_hyperv: offer 1 to 16 TimeSync versions".into());
        }
        let mut log = KernelLog::open();
        // A second start replaces the first: hv_utils first, it uses the shim.
        let _ = unload("hv_utils");
        let shim = SHIM_MODULES
            .into_iter()
            .find(|m| Path::new(&format!("{MODULE_DIR}/{m}.ko")).is_file())
            .ok_or("start_hyperv: no VMBus shim in the image (ci/build-shim.sh builds it for the kernel)")?;
        for m in SHIM_MODULES {
            if is_loaded(m) {
                if m.ends_with("_lp") {
                    // A livepatch is disabled before it can go.
                    let _ = std::fs::write(format!("/sys/kernel/livepatch/{m}/enabled"), "0");
                    wait_for(Duration::from_secs(5), || {
                        !Path::new(&format!("/sys/kernel/livepatch/{m}")).exists()
                    });
                }
                let _ = unload(m);
            }
        }
        let fail =
            |log: &mut KernelLog, what: String| format!("{what}; kernel log: {}", log.lines().join(" | "));
        load(shim, "").map_err(|e| fail(&mut log, e))?;
        let params = if implicit { "timesync_implicit=1" } else { "timesync_implicit=0" };
        load("hv_utils", params).map_err(|e| fail(&mut log, e))?;
        let node = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(SHIM_DEVICE)
            .map_err(|e| fail(&mut log, format!("{SHIM_DEVICE}: {e}")))?;
        let mut host = Self {
            node,
            version: Version { major: 0, minor: 0 },
            anchor: Anchor { raw_ns: 0, reference: 0, rate_ppb: 0 },
            implicit,
            txid: 0,
            device: format!("/dev/{name}"),
            shim,
        };
        host.anchor = host.set_rate(0)?;
        // hv_utils probes asynchronously: its channel opens a moment after insmod returns.
        let neg = negotiate_message(&FW_VERSIONS, ts_versions, host.next_txid());
        let deadline = Instant::now() + BIND_TIMEOUT;
        let reply = loop {
            match host.exchange(&neg) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(fail(&mut log, format!("negotiation: {SHIM_DEVICE}: {e}"))),
                Ok(r) => break r,
            }
        };
        let (fw, ts) = parse_negotiate_reply(&reply).map_err(|e| fail(&mut log, e))?;
        host.version = ts;
        let ptp = find_ptp("hyperv")
            .ok_or_else(|| fail(&mut log, "hv_utils registered no PHC named hyperv".into()))?;
        let link = host.device.clone();
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                let _ = std::fs::remove_file(&link);
            }
            Ok(_) => return Err(format!("{link} exists and is no link (a mock running?)")),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&ptp, &link).map_err(|e| format!("{link}: {e}"))?;
        let started = HypervStarted {
            device: link,
            ptp,
            ts_version: ts.to_string(),
            fw_version: fw.to_string(),
            driver: describe_driver(),
            shim: format!("{shim}.ko, {}", if shim.ends_with("_lp") { "livepatch" } else { "module" }),
            kernel_log: log.lines(),
        };
        Ok((host, started))
    }

    fn next_txid(&mut self) -> u8 {
        self.txid = self.txid.wrapping_add(1);
        self.txid
    }

    /// Writes one message and reads hv_utils' reply.
    fn exchange(&mut self, m: &[u8]) -> std::io::Result<Vec<u8>> {
        let n = self.node.write(m)?;
        if n != m.len() {
            return Err(std::io::Error::other(format!("wrote {n} of {} bytes", m.len())));
        }
        let mut buf = vec![0u8; 4096];
        let n = self.node.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sets the reference counter's rate against CLOCK_MONOTONIC_RAW from now on.
    fn set_rate(&mut self, rate_ppb: i64) -> Result<Anchor, String> {
        let mut r = ShimRate { rate_ppb, ..Default::default() };
        // SAFETY: `r` is a live ShimRate, the layout uapi.h gives the ioctl.
        unsafe { shim_rate_set(self.node.as_raw_fd(), &mut r) }
            .map_err(|e| format!("{SHIM_DEVICE}: VMBUS_SHIM_RATE_SET: {e}"))?;
        Ok(Anchor { raw_ns: r.anchor_raw_ns, reference: r.anchor_ref, rate_ppb })
    }

    /// The reference counter now.
    pub fn reference_now(&self) -> Result<u64, String> {
        let mut v = 0u64;
        // SAFETY: `v` is a live u64.
        unsafe { shim_ref_read(self.node.as_raw_fd(), &mut v) }.map_err(|e| format!("{SHIM_DEVICE}: {e}"))?;
        Ok(v)
    }

    /// Moves the reference counter forward by `ticks` (100 ns units).
    pub fn shift_reference(&self, ticks: u64) -> Result<(), String> {
        // SAFETY: `ticks` is a live u64.
        unsafe { shim_ref_shift(self.node.as_raw_fd(), &ticks) }
            .map_err(|e| format!("{SHIM_DEVICE}: {e}"))?;
        Ok(())
    }

    /// Sends hv_utils host time `host_ns` taken at CLOCK_MONOTONIC_RAW `raw_ns`, the host's
    /// clock (the reference counter) running `rate_ppb` faster than CLOCK_MONOTONIC_RAW from
    /// now; a SYNC with `sync`. Answers the step of CLOCK_REALTIME it brought, if any.
    pub fn sample(
        &mut self,
        host_ns: i64,
        raw_ns: i64,
        rate_ppb: i64,
        sync: bool,
    ) -> Result<Option<i64>, String> {
        self.anchor = self.set_rate(rate_ppb)?;
        let host = u64::try_from(host_ns).map_err(|_| format!("host time {host_ns} before 1970"))?;
        // parenttime has 100 ns steps: the reference time is taken where host time was whole.
        let rem = (host % 100) as i64;
        let parenttime = host / 100 + WLTIMEDELTA;
        let vmref = self.anchor.reference_at(raw_ns - rem);
        let flags = if sync { FLAG_SYNC } else { FLAG_SAMPLE };
        let realtime = phc::device::clock_now_ns(libc::CLOCK_REALTIME).map_err(|e| e.to_string())?;
        let behind = host_ns - realtime >= 4_900_000_000;
        let watch = (sync || (self.implicit && behind)).then(ClockSetWatch::new).transpose()?;
        let before = realtime_less_monotonic()?;
        let txid = self.next_txid();
        let m = timesync_message(self.version, parenttime, vmref, flags, txid);
        let reply = self.exchange(&m).map_err(|e| format!("{SHIM_DEVICE}: time sample: {e}"))?;
        check_reply(&reply, ICMSGTYPE_TIMESYNC)?;
        let Some(watch) = watch else { return Ok(None) };
        // hv_utils steps the clock from a work item: wait for the set, if it comes.
        let timeout = if sync { STEP_TIMEOUT } else { Duration::from_millis(200) };
        if watch.wait(timeout)? {
            Ok(Some(realtime_less_monotonic()? - before))
        } else if sync {
            Err(format!("hv_utils did not set the clock within {} s of a SYNC", timeout.as_secs()))
        } else {
            Ok(None)
        }
    }
}

impl Drop for HypervHost {
    /// The link goes with the host (a mock may take the name next); the modules stay loaded
    /// until the next start replaces them.
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.device).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&self.device);
        }
    }
}

/// A timerfd that fires ECANCELED when CLOCK_REALTIME is set: how the agent sees hv_utils'
/// do_settimeofday64, a step of zero included.
struct ClockSetWatch(std::os::fd::OwnedFd);

impl ClockSetWatch {
    fn new() -> Result<Self, String> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls on a new fd owned here.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
        if fd < 0 {
            return Err(format!("timerfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is the new timerfd, owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let far = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: i64::MAX / 4, tv_nsec: 0 },
        };
        let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
        // SAFETY: `far` is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &far, std::ptr::null_mut()) } != 0 {
            return Err(format!("timerfd_settime: {}", std::io::Error::last_os_error()));
        }
        Ok(Self(fd))
    }

    /// Whether the clock was set within `timeout`.
    fn wait(&self, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into `v`.
            let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::ECANCELED) => return Ok(true),
                    Some(libc::EAGAIN) => {}
                    _ => return Err(format!("timerfd: {}", std::io::Error::last_os_error())),
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// CLOCK_REALTIME less CLOCK_MONOTONIC: changes by a set of the clock only (both slew alike).
fn realtime_less_monotonic() -> Result<i64, String> {
    phc::device::clock_difference_ns(libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC).map_err(|e| e.to_string())
}

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn is_loaded(module: &str) -> bool {
    Path::new(&format!("/sys/module/{module}")).exists()
}

/// finit_module of `/lib/modules/<name>.ko` with `params`.
fn load(name: &str, params: &str) -> Result<(), String> {
    let path = format!("{MODULE_DIR}/{name}.ko");
    let f = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let params = std::ffi::CString::new(params).map_err(|_| "module parameters with a NUL".to_owned())?;
    // SAFETY: a valid fd and a NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r != 0 {
        return Err(format!("insmod {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn unload(name: &str) -> Result<(), String> {
    let c = std::ffi::CString::new(name).map_err(|_| "a module name with a NUL".to_owned())?;
    // SAFETY: a NUL-terminated module name.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) };
    if r != 0 {
        return Err(format!("rmmod {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The `/dev/ptpN` whose clock_name is `name`.
fn find_ptp(name: &str) -> Option<String> {
    let mut found = None;
    wait_for(BIND_TIMEOUT, || {
        found = std::fs::read_dir("/sys/class/ptp").ok().and_then(|dir| {
            dir.flatten().find_map(|e| {
                let n = std::fs::read_to_string(e.path().join("clock_name")).ok()?;
                (n.trim() == name).then(|| format!("/dev/{}", e.file_name().to_string_lossy()))
            })
        });
        found.as_ref().is_some_and(|d| Path::new(d).exists())
    });
    found
}

/// hv_utils.ko as it runs: the kernel release, its srcversion where the module has one (Debian's
/// has none), and its GNU build ID (which names the exact build).
fn describe_driver() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut s = format!("hv_utils.ko of Linux {}", release.trim());
    if let Ok(v) = std::fs::read_to_string("/sys/module/hv_utils/srcversion") {
        s.push_str(&format!(", srcversion {}", v.trim()));
    }
    match std::fs::read("/sys/module/hv_utils/notes/.note.gnu.build-id").ok().and_then(|b| build_id(&b)) {
        Some(id) => s.push_str(&format!(", build-id {id}")),
        None => s.push_str(", no build-id"),
    }
    s
}

/// The descriptor of an ELF note (namesz, descsz, type, name padded to 4, desc), as hex.
fn build_id(note: &[u8]) -> Option<String> {
    let word = |i: usize| note.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let (namesz, descsz) = (word(0)?, word(4)?);
    let start = 12 + namesz.div_ceil(4) * 4;
    let desc = note.get(start..start.checked_add(descsz)?)?;
    (!desc.is_empty()).then(|| desc.iter().map(|x| format!("{x:02x}")).collect())
}

/// The kernel's log from when it was opened on: the lines of the modules at work.
struct KernelLog(Option<File>);

impl KernelLog {
    fn open() -> Self {
        let f =
            OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open("/dev/kmsg");
        let mut log = Self(f.ok());
        // Skip what was there before.
        if let Some(f) = &log.0 {
            // SAFETY: lseek on an owned fd; /dev/kmsg's SEEK_END goes past the records so far.
            unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        }
        let _ = log.lines();
        log
    }

    /// The records since the last call whose text names hv_utils, the shim, VMBus or TimeSync
    /// (at most 40, the last ones).
    fn lines(&mut self) -> Vec<String> {
        let Some(f) = self.0.as_mut() else { return Vec::new() };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let text =
                        rec.split_once(';').map_or(rec.as_ref(), |(_, t)| t).lines().next().unwrap_or("");
                    let l = text.to_ascii_lowercase();
                    if ["hv_util", "vmbus", "timesync", "ptp", "livepatch", "taint", "module"]
                        .iter()
                        .any(|k| l.contains(k))
                    {
                        out.push(text.trim().to_owned());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        let skip = out.len().saturating_sub(40);
        out.split_off(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_kernel_layout() {
        let n = negotiate_message(&FW_VERSIONS, &[[4, 0], [3, 0]], 7);
        // ICMSG_NEGOTIATE_PKT_SIZE(2, 2) = 28 + 8 + 4 * 4
        assert_eq!(n.len(), 28 + 8 + 16);
        assert_eq!(u16::from_le_bytes([n[12], n[13]]), ICMSGTYPE_NEGOTIATE);
        assert_eq!(u16::from_le_bytes([n[18], n[19]]), 8 + 16);
        assert_eq!(n[24], 7);
        assert_eq!(n[25], ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST);
        assert_eq!(&n[28..32], &[2, 0, 2, 0]);
        assert_eq!(&n[36..40], &[3, 0, 0, 0]);
        assert_eq!(&n[44..48], &[4, 0, 0, 0]);
        let v4 = timesync_message(Version { major: 4, minor: 0 }, 5, 6, FLAG_SYNC, 1);
        assert_eq!(v4.len(), 28 + 22);
        assert_eq!(u16::from_le_bytes([v4[12], v4[13]]), ICMSGTYPE_TIMESYNC);
        assert_eq!(u64::from_le_bytes(v4[28..36].try_into().unwrap()), 5);
        assert_eq!(u64::from_le_bytes(v4[36..44].try_into().unwrap()), 6);
        assert_eq!(v4[44], FLAG_SYNC);
        let v3 = timesync_message(Version { major: 3, minor: 0 }, 5, 6, FLAG_SAMPLE, 1);
        assert_eq!(v3.len(), 28 + 25);
        assert_eq!(v3[28 + 24], FLAG_SAMPLE);
    }

    #[test]
    fn a_negotiation_reply_is_read_and_a_refusal_is_an_error() {
        let mut r = negotiate_message(&FW_VERSIONS, &[[4, 0], [3, 0]], 1);
        r[25] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE;
        r[28..30].copy_from_slice(&1u16.to_le_bytes());
        r[30..32].copy_from_slice(&1u16.to_le_bytes());
        r[36..40].copy_from_slice(&[3, 0, 0, 0]);
        r[40..44].copy_from_slice(&[4, 0, 0, 0]);
        let (fw, ts) = parse_negotiate_reply(&r).unwrap();
        assert_eq!((fw.to_string(), ts.to_string()), ("3.0".into(), "4.0".into()));
        assert!(ts.has_reference_time());
        r[28] = 0;
        assert!(parse_negotiate_reply(&r).unwrap_err().contains("no common version"));
        r[25] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST;
        assert!(parse_negotiate_reply(&r).is_err());
        r[25] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE;
        r[28] = 1;
        r[20] = 0x05; // a failure status
        assert!(parse_negotiate_reply(&r).unwrap_err().contains("status"));
        assert!(parse_negotiate_reply(&r[..20]).is_err());
    }

    #[test]
    fn a_build_id_note_is_read() {
        let mut n = vec![4, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0];
        n.extend_from_slice(b"GNU\0");
        n.extend_from_slice(&[0xab, 0xcd, 0xef]);
        assert_eq!(build_id(&n).as_deref(), Some("abcdef"));
        assert_eq!(build_id(&n[..14]), None);
        assert_eq!(build_id(&[]), None);
    }

    #[test]
    fn the_reference_counter_follows_the_shims_line() {
        let a = Anchor { raw_ns: 1_000_000_000, reference: 10_000_000, rate_ppb: 0 };
        assert_eq!(a.reference_at(1_000_000_000), 10_000_000);
        assert_eq!(a.reference_at(2_000_000_000), 20_000_000);
        assert_eq!(a.reference_at(0), 0);
        // 12 ppm fast: 12 us more per second, 120 ticks.
        let f = Anchor { rate_ppb: 12_000, ..a };
        assert_eq!(f.reference_at(2_000_000_000), 20_000_120);
        // Host time 600 s on the counter.
        assert_eq!(a.reference_at(601_000_000_000) - a.reference, 6_000_000_000);
    }
}
