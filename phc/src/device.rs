//! The `Phc` handle: an owned descriptor on `/dev/ptpN` with every PTP ioctl and the dynamic
//! POSIX clock operations, each mapping the kernel's errno to `Error` and never panicking.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::estimate::Sample;
use crate::node::{self, Expect};
use crate::uapi::PTP_MAX_SAMPLES;
use crate::uapi::{self, PtpClockCaps, PtpPinDesc, PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};

/// How the descriptor is opened. Writes (settime, adjfine, step) need `ReadWrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// `O_RDONLY`: every read method works, every write fails with EACCES.
    ReadOnly,
    /// `O_RDWR`.
    ReadWrite,
}

/// Which generation of an ioctl to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// The original number: reserved fields are ignored.
    Legacy,
    /// The `*2` number: nonzero reserved fields are rejected with EINVAL.
    V2,
}

/// The system clock that `PTP_SYS_OFFSET_EXTENDED` pairs the PHC with (Linux 6.12+ for all but
/// REALTIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SysClock {
    /// `CLOCK_REALTIME`.
    Realtime,
    /// `CLOCK_MONOTONIC`.
    Monotonic,
    /// `CLOCK_MONOTONIC_RAW`.
    MonotonicRaw,
}

impl SysClock {
    /// Every clock id, REALTIME first.
    pub const ALL: [SysClock; 3] = [SysClock::Realtime, SysClock::Monotonic, SysClock::MonotonicRaw];

    /// The clock id the kernel takes.
    pub fn clockid(self) -> libc::clockid_t {
        match self {
            Self::Realtime => libc::CLOCK_REALTIME,
            Self::Monotonic => libc::CLOCK_MONOTONIC,
            Self::MonotonicRaw => libc::CLOCK_MONOTONIC_RAW,
        }
    }

    /// The name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Monotonic => "monotonic",
            Self::MonotonicRaw => "monotonic_raw",
        }
    }
}

impl std::str::FromStr for SysClock {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "realtime" => Ok(Self::Realtime),
            "monotonic" => Ok(Self::Monotonic),
            "monotonic_raw" | "monotonic-raw" | "raw" => Ok(Self::MonotonicRaw),
            _ => Err(format!("unknown clock {s:?} (realtime, monotonic, monotonic_raw)")),
        }
    }
}

/// The capabilities the driver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    /// Maximum frequency adjustment, ppb.
    pub max_adj_ppb: i32,
    /// Alarms.
    pub n_alarm: i32,
    /// External timestamp channels.
    pub n_ext_ts: i32,
    /// Periodic outputs.
    pub n_per_out: i32,
    /// PPS callback.
    pub pps: bool,
    /// Programmable pins.
    pub n_pins: i32,
    /// Precise cross timestamps (`PTP_SYS_OFFSET_PRECISE`).
    pub cross_timestamping: bool,
    /// Phase adjustment.
    pub adjust_phase: bool,
    /// Maximum phase adjustment, ns.
    pub max_phase_adj_ns: i32,
}

impl std::fmt::Display for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_adj {} ppb, pins {}, ext_ts {}, per_out {}, pps {}, cross_timestamping {}",
            self.max_adj_ppb,
            self.n_pins,
            self.n_ext_ts,
            self.n_per_out,
            u8::from(self.pps),
            u8::from(self.cross_timestamping)
        )
    }
}

impl From<PtpClockCaps> for Caps {
    fn from(c: PtpClockCaps) -> Self {
        Self {
            max_adj_ppb: c.max_adj,
            n_alarm: c.n_alarm,
            n_ext_ts: c.n_ext_ts,
            n_per_out: c.n_per_out,
            pps: c.pps != 0,
            n_pins: c.n_pins,
            cross_timestamping: c.cross_timestamping != 0,
            adjust_phase: c.adjust_phase != 0,
            max_phase_adj_ns: c.max_phase_adj,
        }
    }
}

impl From<Caps> for PtpClockCaps {
    fn from(c: Caps) -> Self {
        Self {
            max_adj: c.max_adj_ppb,
            n_alarm: c.n_alarm,
            n_ext_ts: c.n_ext_ts,
            n_per_out: c.n_per_out,
            pps: i32::from(c.pps),
            n_pins: c.n_pins,
            cross_timestamping: i32::from(c.cross_timestamping),
            adjust_phase: i32::from(c.adjust_phase),
            max_phase_adj: c.max_phase_adj_ns,
            rsv: [0; 11],
        }
    }
}

/// One precise cross timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreciseSample {
    /// PHC time.
    pub phc_ns: i64,
    /// CLOCK_REALTIME at the same instant.
    pub realtime_ns: i64,
    /// CLOCK_MONOTONIC_RAW at the same instant.
    pub monotonic_raw_ns: i64,
}

/// A pin's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Name reported by the driver.
    pub name: String,
    /// Index.
    pub index: u32,
    /// Function number.
    pub func: u32,
    /// Channel.
    pub chan: u32,
}

/// An open PTP hardware clock.
#[derive(Debug)]
pub struct Phc {
    fd: OwnedFd,
    path: PathBuf,
    access: Access,
}

/// Converts a nix result into ours for calls on an open descriptor.
fn call<T>(r: nix::Result<T>) -> Result<T> {
    r.map_err(|e| Error::from_errno(e, Context::Call))
}

fn ns_to_timespec(ns: i64) -> libc::timespec {
    libc::timespec { tv_sec: ns.div_euclid(1_000_000_000), tv_nsec: ns.rem_euclid(1_000_000_000) }
}

fn timespec_to_ns(ts: &libc::timespec) -> i64 {
    ts.tv_sec.saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec)
}

impl Phc {
    /// Opens a kernel PHC: [`Phc::open_expecting`] with [`Expect::ptp`], so only a character
    /// device of sysfs class `ptp` is opened.
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        Self::open_expecting(path, access, &Expect::ptp())
    }

    /// Opens a PHC after checking, from `stat` and sysfs alone, that the node is what `expect`
    /// allows; anything else is `NotPtpNode` saying what it is, and nothing is opened. The open
    /// never blocks (a FIFO swapped in after the check) or takes a controlling terminal; the
    /// opened descriptor is checked again so that no ioctl reaches a node swapped in meanwhile.
    /// GETCAPS must then answer. Other failures are named: a missing path, missing permission.
    pub fn open_expecting(path: impl AsRef<Path>, access: Access, expect: &Expect) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| io_error(&e, Context::Open))?;
        node::check(&meta, expect)?;
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            // O_NONBLOCK stays set: ioctls and the dynamic clock ignore it, and nothing here reads
            // the event queue.
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io_error(&e, Context::Open))?;
        let opened = file.metadata().map_err(|e| io_error(&e, Context::Open))?;
        node::check(&opened, expect)?;
        let phc = Self { fd: file.into(), path: path.to_owned(), access };
        phc.caps()?;
        Ok(phc)
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it was opened.
    pub fn access(&self) -> Access {
        self.access
    }

    fn raw(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// The dynamic POSIX clock id of this descriptor: `((~fd) << 3) | 3` (FD_TO_CLOCKID).
    pub fn clock_id(&self) -> libc::clockid_t {
        fd_to_clockid(self.raw())
    }

    /// Capabilities, by `PTP_CLOCK_GETCAPS2`, falling back to `PTP_CLOCK_GETCAPS` on kernels that
    /// lack the `*2` form.
    pub fn caps(&self) -> Result<Caps> {
        match self.caps_raw(Form::V2) {
            Err(Error::NotPtpDevice) => self.caps_raw(Form::Legacy),
            other => other,
        }
    }

    /// Capabilities through the given form of GETCAPS.
    pub fn caps_raw(&self, form: Form) -> Result<Caps> {
        let mut caps = PtpClockCaps::default();
        // SAFETY: `caps` is a valid, writable `ptp_clock_caps` that outlives the call, and the
        // request code's size matches it.
        let r = unsafe {
            match form {
                Form::Legacy => uapi::getcaps(self.raw(), &mut caps),
                Form::V2 => uapi::getcaps2(self.raw(), &mut caps),
            }
        };
        call(r).map(|_| caps.into())
    }

    /// Issues `PTP_SYS_OFFSET` (or `*2`) with a caller-built request and leaves the kernel's answer
    /// in it. Nothing is checked here, so probes can send what the kernel must reject.
    pub fn sys_offset_raw(&self, form: Form, req: &mut PtpSysOffset) -> Result<()> {
        let ptr: *mut PtpSysOffset = req;
        // SAFETY: the ioctl is declared _IOW but the kernel copies the samples back through the
        // pointer; it comes from a unique `&mut` that is live for the call, so the write is sound.
        let r = unsafe {
            match form {
                Form::Legacy => uapi::sys_offset(self.raw(), ptr.cast_const()),
                Form::V2 => uapi::sys_offset2(self.raw(), ptr.cast_const()),
            }
        };
        call(r).map(drop)
    }

    /// Issues `PTP_SYS_OFFSET_EXTENDED` (or `*2`) with a caller-built request.
    pub fn sys_offset_extended_raw(&self, form: Form, req: &mut PtpSysOffsetExtended) -> Result<()> {
        // SAFETY: `req` is a valid, writable `ptp_sys_offset_extended` for the whole call.
        let r = unsafe {
            match form {
                Form::Legacy => uapi::sys_offset_extended(self.raw(), req),
                Form::V2 => uapi::sys_offset_extended2(self.raw(), req),
            }
        };
        call(r).map(drop)
    }

    /// Issues `PTP_SYS_OFFSET_PRECISE` (or `*2`) with a caller-built request.
    pub fn sys_offset_precise_raw(&self, form: Form, req: &mut PtpSysOffsetPrecise) -> Result<()> {
        // SAFETY: `req` is a valid, writable `ptp_sys_offset_precise` for the whole call.
        let r = unsafe {
            match form {
                Form::Legacy => uapi::sys_offset_precise(self.raw(), req),
                Form::V2 => uapi::sys_offset_precise2(self.raw(), req),
            }
        };
        call(r).map(drop)
    }

    /// `n` basic readings (1..=25) through `PTP_SYS_OFFSET2`, falling back to the legacy form.
    pub fn sys_offset(&self, n: usize) -> Result<Vec<Sample>> {
        check_n(n)?;
        let mut req = PtpSysOffset { n_samples: n as u32, ..Default::default() };
        match self.sys_offset_raw(Form::V2, &mut req) {
            Err(Error::NotPtpDevice) => self.sys_offset_raw(Form::Legacy, &mut req)?,
            other => other?,
        }
        Ok(samples_from_basic(&req))
    }

    /// `n` extended readings (1..=25) against `clock`. REALTIME works on every kernel with the
    /// ioctl; other clocks need Linux 6.12 and fail with `ClockIdRejected` on older kernels.
    pub fn sys_offset_extended(&self, n: usize, clock: SysClock) -> Result<Vec<Sample>> {
        check_n(n)?;
        let mut req =
            PtpSysOffsetExtended { n_samples: n as u32, clockid: clock.clockid(), ..Default::default() };
        let r = self.sys_offset_extended_raw(Form::V2, &mut req);
        match r {
            // Only the *2 form looks at clockid; the legacy one would silently use REALTIME.
            Err(Error::NotPtpDevice) if clock == SysClock::Realtime => {
                self.sys_offset_extended_raw(Form::Legacy, &mut req)?
            }
            Err(Error::InvalidArgument) if clock != SysClock::Realtime => {
                return Err(Error::ClockIdRejected(clock.name()));
            }
            other => other?,
        }
        Ok(samples_from_extended(&req))
    }

    /// One precise cross timestamp through `PTP_SYS_OFFSET_PRECISE2`, falling back to legacy.
    pub fn sys_offset_precise(&self) -> Result<PreciseSample> {
        let mut req = PtpSysOffsetPrecise::default();
        match self.sys_offset_precise_raw(Form::V2, &mut req) {
            Err(Error::NotPtpDevice) => self.sys_offset_precise_raw(Form::Legacy, &mut req)?,
            other => other?,
        }
        Ok(PreciseSample {
            phc_ns: req.device.as_ns(),
            realtime_ns: req.sys_realtime.as_ns(),
            monotonic_raw_ns: req.sys_monoraw.as_ns(),
        })
    }

    /// Issues `PTP_PIN_GETFUNC` (or `*2`) with a caller-built description.
    pub fn pin_getfunc_raw(&self, form: Form, desc: &mut PtpPinDesc) -> Result<()> {
        // SAFETY: `desc` is a valid, writable `ptp_pin_desc` for the whole call.
        let r = unsafe {
            match form {
                Form::Legacy => uapi::pin_getfunc(self.raw(), desc),
                Form::V2 => uapi::pin_getfunc2(self.raw(), desc),
            }
        };
        call(r).map(drop)
    }

    /// The description of pin `index` (`PTP_PIN_GETFUNC2`, falling back to legacy).
    pub fn pin_getfunc(&self, index: u32) -> Result<Pin> {
        let mut desc = PtpPinDesc { index, ..Default::default() };
        match self.pin_getfunc_raw(Form::V2, &mut desc) {
            Err(Error::NotPtpDevice) => self.pin_getfunc_raw(Form::Legacy, &mut desc)?,
            other => other?,
        };
        let end = desc.name.iter().position(|&b| b == 0).unwrap_or(desc.name.len());
        Ok(Pin {
            name: String::from_utf8_lossy(&desc.name[..end]).into_owned(),
            index: desc.index,
            func: desc.func,
            chan: desc.chan,
        })
    }

    /// PHC time by `clock_gettime` on the dynamic POSIX clock.
    pub fn gettime(&self) -> Result<i64> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; a clock id for a descriptor we own is at
        // worst rejected by the kernel with EINVAL.
        let r = unsafe { libc::clock_gettime(self.clock_id(), &mut ts) };
        call(Errno::result(r)).map(|_| timespec_to_ns(&ts))
    }

    /// Sets the PHC by `clock_settime` (needs `ReadWrite`).
    pub fn settime(&self, ns: i64) -> Result<()> {
        let ts = ns_to_timespec(ns);
        // SAFETY: `ts` is a valid timespec read by the kernel only during the call.
        let r = unsafe { libc::clock_settime(self.clock_id(), &ts) };
        call(Errno::result(r)).map(drop)
    }

    /// Steps the PHC by `delta_ns` with `ADJ_SETOFFSET` (needs `ReadWrite`).
    pub fn step(&self, delta_ns: i64) -> Result<()> {
        let mut tx = zero_timex();
        tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
        tx.time.tv_sec = delta_ns.div_euclid(1_000_000_000);
        tx.time.tv_usec = delta_ns.rem_euclid(1_000_000_000);
        self.adjtime(&mut tx)
    }

    /// Sets the frequency offset in ppb with `ADJ_FREQUENCY` (needs `ReadWrite`). The kernel
    /// answers ERANGE beyond the driver's `max_adj`.
    pub fn adjfine(&self, freq_ppb: f64) -> Result<()> {
        let mut tx = zero_timex();
        tx.modes = libc::ADJ_FREQUENCY;
        tx.freq = ppb_to_scaled_ppm(freq_ppb);
        self.adjtime(&mut tx)
    }

    /// The frequency offset last dialled, in ppb (`clock_adjtime` with no modes).
    pub fn frequency(&self) -> Result<f64> {
        let mut tx = zero_timex();
        self.adjtime(&mut tx)?;
        Ok(scaled_ppm_to_ppb(tx.freq))
    }

    fn adjtime(&self, tx: &mut libc::timex) -> Result<()> {
        // SAFETY: `tx` is a valid, writable timex for the whole call.
        let r = unsafe { libc::clock_adjtime(self.clock_id(), tx) };
        call(Errno::result(r)).map(drop)
    }
}

impl AsFd for Phc {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Reads a system clock (`CLOCK_REALTIME`, `CLOCK_MONOTONIC_RAW`, ...) in nanoseconds.
pub fn clock_now_ns(clock: libc::clockid_t) -> Result<i64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; an invalid clock id is answered with EINVAL.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    call(Errno::result(r)).map(|_| timespec_to_ns(&ts))
}

/// `a` less `b` now: `a` read between two reads of `b`, against their midpoint. CLOCK_REALTIME
/// less CLOCK_MONOTONIC moves only when the clock is set (both slew alike); less
/// CLOCK_MONOTONIC_RAW it carries a reading of one over to the other.
pub fn clock_difference_ns(a: libc::clockid_t, b: libc::clockid_t) -> Result<i64> {
    let b0 = clock_now_ns(b)?;
    let at = clock_now_ns(a)?;
    let b1 = clock_now_ns(b)?;
    Ok(at - (b0 + (b1 - b0) / 2))
}

/// Steps a system clock by `delta_ns` with `ADJ_SETOFFSET` (needs CAP_SYS_TIME): what hv_utils
/// and chronyd's makestep do, without the read-modify-write race of settime.
pub fn clock_step_ns(clock: libc::clockid_t, delta_ns: i64) -> Result<()> {
    let mut tx = zero_timex();
    tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    tx.time.tv_sec = delta_ns.div_euclid(1_000_000_000);
    tx.time.tv_usec = delta_ns.rem_euclid(1_000_000_000);
    // SAFETY: `tx` is a valid, writable timex for the whole call.
    let r = unsafe { libc::clock_adjtime(clock, &mut tx) };
    call(Errno::result(r)).map(drop)
}

/// `FD_TO_CLOCKID`: the dynamic POSIX clock id of a descriptor.
pub fn fd_to_clockid(fd: libc::c_int) -> libc::clockid_t {
    ((!fd) << 3) | 3
}

fn zero_timex() -> libc::timex {
    // SAFETY: timex is a plain C struct of integers (and padding) for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// ppb to the kernel's scaled ppm (ppm with a 16-bit binary fraction).
pub fn ppb_to_scaled_ppm(freq_ppb: f64) -> libc::c_long {
    (freq_ppb * 65.536).round() as libc::c_long
}

/// The kernel's scaled ppm to ppb.
pub fn scaled_ppm_to_ppb(scaled: libc::c_long) -> f64 {
    scaled as f64 / 65.536
}

fn check_n(n: usize) -> Result<()> {
    if (1..=PTP_MAX_SAMPLES).contains(&n) {
        Ok(())
    } else {
        Err(Error::InvalidArgument)
    }
}

fn io_error(e: &std::io::Error, ctx: Context) -> Error {
    match e.raw_os_error() {
        Some(raw) => Error::from_errno(Errno::from_raw(raw), ctx),
        None => Error::Other(Errno::EIO),
    }
}

/// The readings of a completed basic request: sample i is `(ts[2i], ts[2i+1], ts[2i+2])`.
pub fn samples_from_basic(req: &PtpSysOffset) -> Vec<Sample> {
    let n = (req.n_samples as usize).min(PTP_MAX_SAMPLES);
    (0..n)
        .map(|i| Sample {
            sys_before_ns: req.ts[2 * i].as_ns(),
            phc_ns: req.ts[2 * i + 1].as_ns(),
            sys_after_ns: req.ts[2 * i + 2].as_ns(),
        })
        .collect()
}

/// The readings of a completed extended request.
pub fn samples_from_extended(req: &PtpSysOffsetExtended) -> Vec<Sample> {
    let n = (req.n_samples as usize).min(PTP_MAX_SAMPLES);
    req.ts[..n]
        .iter()
        .map(|t| Sample { sys_before_ns: t[0].as_ns(), phc_ns: t[1].as_ns(), sys_after_ns: t[2].as_ns() })
        .collect()
}

impl crate::PtpClock for Phc {
    fn caps_raw(&self, form: Form) -> Result<Caps> {
        Phc::caps_raw(self, form)
    }
    fn sys_offset_raw(&self, form: Form, req: &mut PtpSysOffset) -> Result<()> {
        Phc::sys_offset_raw(self, form, req)
    }
    fn sys_offset_extended_raw(&self, form: Form, req: &mut PtpSysOffsetExtended) -> Result<()> {
        Phc::sys_offset_extended_raw(self, form, req)
    }
    fn sys_offset_precise_raw(&self, form: Form, req: &mut PtpSysOffsetPrecise) -> Result<()> {
        Phc::sys_offset_precise_raw(self, form, req)
    }
    fn pin_getfunc_raw(&self, form: Form, desc: &mut PtpPinDesc) -> Result<()> {
        Phc::pin_getfunc_raw(self, form, desc)
    }
    fn gettime(&self) -> Result<i64> {
        Phc::gettime(self)
    }
    fn settime(&self, ns: i64) -> Result<()> {
        Phc::settime(self, ns)
    }
    fn frequency(&self) -> Result<f64> {
        Phc::frequency(self)
    }
    fn adjfine(&self, freq_ppb: f64) -> Result<()> {
        Phc::adjfine(self, freq_ppb)
    }
    fn step(&self, delta_ns: i64) -> Result<()> {
        Phc::step(self, delta_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::PtpClockTime;

    fn t(ns: i64) -> PtpClockTime {
        PtpClockTime {
            sec: ns.div_euclid(1_000_000_000),
            nsec: ns.rem_euclid(1_000_000_000) as u32,
            reserved: 0,
        }
    }

    #[test]
    fn basic_layout_interleaves_system_and_phc() {
        let mut req = PtpSysOffset { n_samples: 2, ..Default::default() };
        for (i, v) in [10, 20, 30, 40, 50].into_iter().enumerate() {
            req.ts[i] = t(v);
        }
        let s = samples_from_basic(&req);
        assert_eq!(
            s,
            vec![
                Sample { sys_before_ns: 10, phc_ns: 20, sys_after_ns: 30 },
                Sample { sys_before_ns: 30, phc_ns: 40, sys_after_ns: 50 },
            ]
        );
    }

    #[test]
    fn hostile_sample_counts_do_not_panic() {
        let req = PtpSysOffset { n_samples: u32::MAX, ..Default::default() };
        assert_eq!(samples_from_basic(&req).len(), PTP_MAX_SAMPLES);
        let req = PtpSysOffsetExtended { n_samples: 1000, ..Default::default() };
        assert_eq!(samples_from_extended(&req).len(), PTP_MAX_SAMPLES);
        assert!(matches!(check_n(0), Err(Error::InvalidArgument)));
        assert!(matches!(check_n(26), Err(Error::InvalidArgument)));
    }

    #[test]
    fn system_clocks_read_and_unprivileged_steps_are_refused_cleanly() {
        let a = clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap();
        let b = clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap();
        assert!(b >= a && a > 0);
        assert!(matches!(clock_now_ns(12345), Err(Error::InvalidArgument)));
        // MONOTONIC cannot be stepped by anyone: the kernel answers EINVAL, never a panic.
        assert!(clock_step_ns(libc::CLOCK_MONOTONIC, 1).is_err());
    }

    #[test]
    fn scaled_ppm_round_trips() {
        assert_eq!(ppb_to_scaled_ppm(1000.0), 65536);
        assert_eq!(scaled_ppm_to_ppb(65536), 1000.0);
        assert_eq!(ppb_to_scaled_ppm(-500.0), -32768);
    }

    #[test]
    fn timespec_conversion_handles_negative_times() {
        let ts = ns_to_timespec(-1);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (-1, 999_999_999));
        assert_eq!(timespec_to_ns(&ts), -1);
    }

    #[test]
    fn fd_to_clockid_matches_the_kernel_macro() {
        // FD_TO_CLOCKID(fd) = ((~(clockid_t)(fd)) << 3) | 3; CLOCKFD = 3 marks a dynamic clock.
        assert_eq!(fd_to_clockid(3), -29);
        assert_eq!(fd_to_clockid(0), -5);
        assert_eq!(fd_to_clockid(1023) & 7, 3);
    }

    #[test]
    fn dynamic_clock_calls_on_a_non_clock_fd_fail_cleanly() {
        // What a CUSE device looks like to clock_gettime: an fd that is no POSIX clock.
        let phc = Phc {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            path: "/dev/null".into(),
            access: Access::ReadOnly,
        };
        assert!(matches!(phc.gettime(), Err(Error::InvalidArgument)));
        assert!(phc.frequency().is_err());
        assert!(matches!(phc.sys_offset(5), Err(Error::NotPtpDevice)));
        assert!(matches!(phc.sys_offset(26), Err(Error::InvalidArgument)));
        assert!(matches!(phc.sys_offset_extended(3, SysClock::Monotonic), Err(Error::NotPtpDevice)));
        assert!(matches!(phc.sys_offset_precise(), Err(Error::NotPtpDevice)));
    }
}
