//! PTP ioctls over CUSE: which bytes of the caller's memory each served request code reads and
//! writes (as drivers/ptp/ptp_chardev.c copies them), the `phc::uapi` structs to and from those
//! bytes, and the answer to one FUSE_IOCTL from a [`PtpClock`]. Pure apart from the clock.

use nix::errno::Errno;
use phc::uapi::PtpSysOffsetPrecise;
use phc::uapi::{self, PtpClockCaps, PtpClockTime, PtpPinDesc, PtpSysOffset, PtpSysOffsetExtended};
use phc::{Form, PtpClock};

use super::proto::{IoctlIn, Iovec};

/// `sizeof(struct ptp_clock_caps)`.
pub const CAPS_LEN: usize = 80;
/// `sizeof(struct ptp_sys_offset)`.
pub const SYS_OFFSET_LEN: usize = 832;
/// `sizeof(struct ptp_sys_offset_extended)`.
pub const EXTENDED_LEN: usize = 1216;
/// `sizeof(struct ptp_sys_offset_precise)`.
pub const PRECISE_LEN: usize = 64;
/// `sizeof(struct ptp_pin_desc)`.
pub const PIN_DESC_LEN: usize = 96;

/// The request codes served, each with its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `PTP_CLOCK_GETCAPS(2)`.
    Caps(Form),
    /// `PTP_SYS_OFFSET(2)`.
    SysOffset(Form),
    /// `PTP_SYS_OFFSET_EXTENDED(2)`.
    Extended(Form),
    /// `PTP_SYS_OFFSET_PRECISE(2)`.
    Precise(Form),
    /// `PTP_PIN_GETFUNC(2)`.
    PinGetfunc(Form),
}

impl Served {
    /// The served request a code names, if any (everything else is ENOTTY).
    pub fn from_cmd(cmd: u32) -> Option<Self> {
        let c = |code: nix::sys::ioctl::ioctl_num_type| code as u32;
        Some(match cmd {
            x if x == c(uapi::PTP_CLOCK_GETCAPS) => Self::Caps(Form::Legacy),
            x if x == c(uapi::PTP_CLOCK_GETCAPS2) => Self::Caps(Form::V2),
            x if x == c(uapi::PTP_SYS_OFFSET) => Self::SysOffset(Form::Legacy),
            x if x == c(uapi::PTP_SYS_OFFSET2) => Self::SysOffset(Form::V2),
            x if x == c(uapi::PTP_SYS_OFFSET_EXTENDED) => Self::Extended(Form::Legacy),
            x if x == c(uapi::PTP_SYS_OFFSET_EXTENDED2) => Self::Extended(Form::V2),
            x if x == c(uapi::PTP_SYS_OFFSET_PRECISE) => Self::Precise(Form::Legacy),
            x if x == c(uapi::PTP_SYS_OFFSET_PRECISE2) => Self::Precise(Form::V2),
            x if x == c(uapi::PTP_PIN_GETFUNC) => Self::PinGetfunc(Form::Legacy),
            x if x == c(uapi::PTP_PIN_GETFUNC2) => Self::PinGetfunc(Form::V2),
            _ => return None,
        })
    }

    /// Bytes ptp_chardev.c copies in from the caller and out to the caller. `PTP_SYS_OFFSET` is
    /// `_IOW` but is written back (so restricted ioctls could not serve it); GETCAPS and PRECISE
    /// only write (6.12 fills PRECISE from a zeroed struct).
    pub fn io_sizes(self) -> (usize, usize) {
        match self {
            Self::Caps(_) => (0, CAPS_LEN),
            Self::SysOffset(_) => (SYS_OFFSET_LEN, SYS_OFFSET_LEN),
            Self::Extended(_) => (EXTENDED_LEN, EXTENDED_LEN),
            Self::Precise(_) => (0, PRECISE_LEN),
            Self::PinGetfunc(_) => (PIN_DESC_LEN, PIN_DESC_LEN),
        }
    }
}

/// What one FUSE_IOCTL gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoctlAnswer {
    /// Fail with this errno.
    Error(Errno),
    /// Ask the kernel to copy these ranges and ask again (a PTP ioctl names one struct).
    Retry {
        /// Copied in, if the kernel reads the struct.
        input: Option<Iovec>,
        /// Copied out.
        output: Iovec,
    },
    /// Success: the bytes for the out iovecs were appended to the caller's buffer.
    Data,
}

fn errno_of(e: &phc::Error) -> Errno {
    e.errno().unwrap_or(Errno::EIO)
}

/// Answers one FUSE_IOCTL: the first call of an unrestricted ioctl (no data) gets a RETRY naming
/// the caller's struct; the retried call, with exactly the bytes asked for, is decoded and answered
/// by `clock`, its struct appended to `out` (nothing is allocated). Sizes from the request are
/// checked, never trusted.
pub fn answer<C: PtpClock + ?Sized>(clock: &C, io: &IoctlIn, data: &[u8], out: &mut Vec<u8>) -> IoctlAnswer {
    let Some(served) = Served::from_cmd(io.cmd) else {
        return IoctlAnswer::Error(Errno::ENOTTY);
    };
    let (want_in, want_out) = served.io_sizes();
    let (got_in, got_out) = (io.in_size as usize, io.out_size as usize);
    if (got_in, got_out) != (want_in, want_out) || data.len() != want_in {
        if got_in != 0 || got_out != 0 || !data.is_empty() {
            // Not what a retry asked for (or a restricted call): asking again could loop.
            return IoctlAnswer::Error(Errno::EIO);
        }
        // ptp_chardev.c answers EOPNOTSUPP for a missing gettimex64/getcrosststamp before it
        // touches the caller's memory, and PRECISE reads nothing: ask the clock now, with a
        // zeroed request, so those answers come without a round trip (and without EFAULT).
        match served {
            Served::Extended(form) => {
                let mut probe = PtpSysOffsetExtended::default();
                if let Err(e @ phc::Error::NotSupported) = clock.sys_offset_extended_raw(form, &mut probe) {
                    return IoctlAnswer::Error(errno_of(&e));
                }
            }
            Served::Precise(form) => {
                if let Err(e) = clock.sys_offset_precise_raw(form, &mut PtpSysOffsetPrecise::default()) {
                    return IoctlAnswer::Error(errno_of(&e));
                }
            }
            _ => {}
        }
        let range = |len: usize| Iovec { base: io.arg, len: len as u64 };
        let input = (want_in > 0).then(|| range(want_in));
        return IoctlAnswer::Retry { input, output: range(want_out) };
    }
    let result = match served {
        Served::Caps(form) => clock.caps_raw(form).map(|c| put_caps(out, &PtpClockCaps::from(c))),
        Served::SysOffset(form) => {
            let mut req = sys_offset_from(data);
            clock.sys_offset_raw(form, &mut req).map(|()| put_sys_offset(out, &req))
        }
        Served::Extended(form) => {
            let mut req = extended_from(data);
            clock.sys_offset_extended_raw(form, &mut req).map(|()| put_extended(out, &req))
        }
        Served::Precise(form) => {
            let mut req = PtpSysOffsetPrecise::default();
            clock.sys_offset_precise_raw(form, &mut req).map(|()| put_precise(out, &req))
        }
        Served::PinGetfunc(form) => {
            let mut desc = pin_desc_from(data);
            clock.pin_getfunc_raw(form, &mut desc).map(|()| put_pin_desc(out, &desc))
        }
    };
    match result {
        Ok(()) => IoctlAnswer::Data,
        Err(e) => IoctlAnswer::Error(errno_of(&e)),
    }
}

/// A cursor that reads native-endian words and yields zeros past the end (callers check lengths).
struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some((head, rest)) = self.0.split_first_chunk::<N>() {
            a = *head;
            self.0 = rest;
        }
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_ne_bytes(self.take())
    }
    fn time(&mut self) -> PtpClockTime {
        PtpClockTime { sec: i64::from_ne_bytes(self.take()), nsec: self.u32(), reserved: self.u32() }
    }
}

fn put_time(out: &mut Vec<u8>, t: &PtpClockTime) {
    out.extend_from_slice(&t.sec.to_ne_bytes());
    out.extend_from_slice(&t.nsec.to_ne_bytes());
    out.extend_from_slice(&t.reserved.to_ne_bytes());
}

/// `struct ptp_clock_caps` as bytes.
pub fn caps_bytes(c: &PtpClockCaps) -> Vec<u8> {
    let mut out = Vec::with_capacity(CAPS_LEN);
    put_caps(&mut out, c);
    out
}

fn put_caps(out: &mut Vec<u8>, c: &PtpClockCaps) {
    let head = [
        c.max_adj,
        c.n_alarm,
        c.n_ext_ts,
        c.n_per_out,
        c.pps,
        c.n_pins,
        c.cross_timestamping,
        c.adjust_phase,
        c.max_phase_adj,
    ];
    head.iter().chain(c.rsv.iter()).for_each(|v| out.extend_from_slice(&v.to_ne_bytes()));
}

/// `struct ptp_clock_caps` from bytes (zeros past the end).
pub fn caps_from(b: &[u8]) -> PtpClockCaps {
    let mut r = Rd(b);
    let mut c = PtpClockCaps {
        max_adj: r.i32(),
        n_alarm: r.i32(),
        n_ext_ts: r.i32(),
        n_per_out: r.i32(),
        pps: r.i32(),
        n_pins: r.i32(),
        cross_timestamping: r.i32(),
        adjust_phase: r.i32(),
        max_phase_adj: r.i32(),
        rsv: [0; 11],
    };
    for v in &mut c.rsv {
        *v = r.i32();
    }
    c
}

/// `struct ptp_sys_offset` from bytes.
pub fn sys_offset_from(b: &[u8]) -> PtpSysOffset {
    let mut r = Rd(b);
    let mut s = PtpSysOffset { n_samples: r.u32(), ..Default::default() };
    for v in &mut s.rsv {
        *v = r.u32();
    }
    for t in &mut s.ts {
        *t = r.time();
    }
    s
}

/// `struct ptp_sys_offset` as bytes.
pub fn sys_offset_bytes(s: &PtpSysOffset) -> Vec<u8> {
    let mut out = Vec::with_capacity(SYS_OFFSET_LEN);
    put_sys_offset(&mut out, s);
    out
}

fn put_sys_offset(out: &mut Vec<u8>, s: &PtpSysOffset) {
    out.extend_from_slice(&s.n_samples.to_ne_bytes());
    s.rsv.iter().for_each(|v| out.extend_from_slice(&v.to_ne_bytes()));
    s.ts.iter().for_each(|t| put_time(out, t));
}

/// `struct ptp_sys_offset_extended` from bytes.
pub fn extended_from(b: &[u8]) -> PtpSysOffsetExtended {
    let mut r = Rd(b);
    let mut s = PtpSysOffsetExtended { n_samples: r.u32(), clockid: r.i32(), ..Default::default() };
    for v in &mut s.rsv {
        *v = r.u32();
    }
    for t in s.ts.iter_mut().flatten() {
        *t = r.time();
    }
    s
}

/// `struct ptp_sys_offset_extended` as bytes.
pub fn extended_bytes(s: &PtpSysOffsetExtended) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXTENDED_LEN);
    put_extended(&mut out, s);
    out
}

fn put_extended(out: &mut Vec<u8>, s: &PtpSysOffsetExtended) {
    out.extend_from_slice(&s.n_samples.to_ne_bytes());
    out.extend_from_slice(&s.clockid.to_ne_bytes());
    s.rsv.iter().for_each(|v| out.extend_from_slice(&v.to_ne_bytes()));
    s.ts.iter().flatten().for_each(|t| put_time(out, t));
}

/// `struct ptp_sys_offset_precise` from bytes.
pub fn precise_from(b: &[u8]) -> PtpSysOffsetPrecise {
    let mut r = Rd(b);
    let mut p =
        PtpSysOffsetPrecise { device: r.time(), sys_realtime: r.time(), sys_monoraw: r.time(), rsv: [0; 4] };
    for v in &mut p.rsv {
        *v = r.u32();
    }
    p
}

/// `struct ptp_sys_offset_precise` as bytes.
pub fn precise_bytes(p: &PtpSysOffsetPrecise) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRECISE_LEN);
    put_precise(&mut out, p);
    out
}

fn put_precise(out: &mut Vec<u8>, p: &PtpSysOffsetPrecise) {
    for t in [&p.device, &p.sys_realtime, &p.sys_monoraw] {
        put_time(out, t);
    }
    p.rsv.iter().for_each(|v| out.extend_from_slice(&v.to_ne_bytes()));
}

/// `struct ptp_pin_desc` from bytes.
pub fn pin_desc_from(b: &[u8]) -> PtpPinDesc {
    let mut r = Rd(b);
    let mut d = PtpPinDesc { name: r.take(), index: r.u32(), func: r.u32(), chan: r.u32(), rsv: [0; 5] };
    for v in &mut d.rsv {
        *v = r.u32();
    }
    d
}

/// `struct ptp_pin_desc` as bytes.
pub fn pin_desc_bytes(d: &PtpPinDesc) -> Vec<u8> {
    let mut out = Vec::with_capacity(PIN_DESC_LEN);
    put_pin_desc(&mut out, d);
    out
}

fn put_pin_desc(out: &mut Vec<u8>, d: &PtpPinDesc) {
    out.extend_from_slice(&d.name);
    for v in [d.index, d.func, d.chan].iter().chain(d.rsv.iter()) {
        out.extend_from_slice(&v.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_uapi_structs() {
        use std::mem::size_of;
        assert_eq!(CAPS_LEN, size_of::<PtpClockCaps>());
        assert_eq!(SYS_OFFSET_LEN, size_of::<PtpSysOffset>());
        assert_eq!(EXTENDED_LEN, size_of::<PtpSysOffsetExtended>());
        assert_eq!(PRECISE_LEN, size_of::<PtpSysOffsetPrecise>());
        assert_eq!(PIN_DESC_LEN, size_of::<PtpPinDesc>());
        assert_eq!(caps_bytes(&PtpClockCaps::default()).len(), CAPS_LEN);
        assert_eq!(sys_offset_bytes(&PtpSysOffset::default()).len(), SYS_OFFSET_LEN);
        assert_eq!(extended_bytes(&PtpSysOffsetExtended::default()).len(), EXTENDED_LEN);
        assert_eq!(precise_bytes(&PtpSysOffsetPrecise::default()).len(), PRECISE_LEN);
        assert_eq!(pin_desc_bytes(&PtpPinDesc::default()).len(), PIN_DESC_LEN);
    }

    #[test]
    fn every_served_code_and_no_other() {
        let served: Vec<_> =
            uapi::ALL_CODES.iter().filter(|(_, c)| Served::from_cmd(*c as u32).is_some()).collect();
        let mut names: Vec<&str> = served.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let mut want = [
            "PTP_CLOCK_GETCAPS",
            "PTP_CLOCK_GETCAPS2",
            "PTP_PIN_GETFUNC",
            "PTP_PIN_GETFUNC2",
            "PTP_SYS_OFFSET",
            "PTP_SYS_OFFSET2",
            "PTP_SYS_OFFSET_EXTENDED",
            "PTP_SYS_OFFSET_EXTENDED2",
            "PTP_SYS_OFFSET_PRECISE",
            "PTP_SYS_OFFSET_PRECISE2",
        ];
        want.sort_unstable();
        assert_eq!(names, want);
        assert_eq!(served.len(), 10);
        // The in/out sizes are the _IOC_SIZE of each code.
        for (name, code) in served {
            let s = Served::from_cmd(*code as u32).unwrap();
            let ioc_size = ((*code as u32) >> 16) & 0x3fff;
            assert_eq!(s.io_sizes().1, ioc_size as usize, "{name}");
        }
    }
}
