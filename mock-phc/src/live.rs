//! The hyperv PHC in real time, as drivers/hv/hv_util.c has it: the last host time sample and the
//! guest reference counter when it applied; a read is that sample plus the counter's progress
//! since, in 100 ns units. The reference counter is stood in for by CLOCK_MONOTONIC_RAW. What the
//! CUSE server serves as `mock-phc serve --personality hyperv`.
//!
//! Differences from the driver, on purpose: before the first sample the driver would answer from a
//! zero host time (garbage unless 600 s of uptime have passed, then ESTALE); this clock answers
//! ESTALE. `gettime` returns the PHC time for in-process callers, but a client of the CUSE node
//! cannot `clock_gettime` it: a CUSE device is no POSIX dynamic clock.

use std::sync::Mutex;

use phc::uapi::PTP_MAX_SAMPLES;
use phc::uapi::{PtpClockTime, PtpPinDesc, PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};
use phc::{Caps, Driver, Error, Form, PtpClock, Result, Support};

/// hv_util.c `HOST_TIMESYNC_DELAY_THRESH`: a read is stale once the last sample is older.
pub const STALE_AFTER_NS: u64 = 600 * 1_000_000_000;

/// The guest's clocks a live PHC reads; tests substitute their own.
pub trait TimeSource {
    /// CLOCK_MONOTONIC_RAW, ns (the stand-in for Hyper-V's reference counter).
    fn monotonic_raw_ns(&self) -> i64;
    /// CLOCK_REALTIME, ns.
    fn realtime_ns(&self) -> i64;
}

/// The machine's own clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClocks;

impl TimeSource for SystemClocks {
    fn monotonic_raw_ns(&self) -> i64 {
        phc::device::clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap_or(0)
    }
    fn realtime_ns(&self) -> i64 {
        phc::device::clock_now_ns(libc::CLOCK_REALTIME).unwrap_or(0)
    }
}

/// A host time sample (hv_util.c's `host_ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSample {
    /// Host time, ns since the epoch.
    pub host_ns: i64,
    /// The guest's CLOCK_MONOTONIC_RAW when it applied.
    pub monotonic_raw_ns: i64,
}

/// The capabilities hv_utils registers (`hv_ptp_clock_info`): no adjustment, no pins, no
/// alarms, no PPS, no cross timestamps. One function so a shared caps table can replace it.
pub fn hyperv_caps() -> Caps {
    Caps {
        max_adj_ppb: 0,
        n_alarm: 0,
        n_ext_ts: 0,
        n_per_out: 0,
        pps: false,
        n_pins: 0,
        cross_timestamping: Driver::Hyperv.expected().precise == Support::Yes,
        adjust_phase: false,
        max_phase_adj_ns: 0,
    }
}

/// The hyperv PHC fed with host samples in real time.
#[derive(Debug, Default)]
pub struct HypervClock<T = SystemClocks> {
    src: T,
    last: Mutex<Option<HostSample>>,
}

impl HypervClock<SystemClocks> {
    /// A clock on the machine's clocks, with no sample yet.
    pub fn new() -> Self {
        Self::with_source(SystemClocks)
    }
}

fn to_time(ns: i64) -> PtpClockTime {
    // rem_euclid is in 0..1e9, which fits u32.
    PtpClockTime { sec: ns.div_euclid(1_000_000_000), nsec: ns.rem_euclid(1_000_000_000) as u32, reserved: 0 }
}

impl<T: TimeSource> HypervClock<T> {
    /// A clock reading `src`.
    pub fn with_source(src: T) -> Self {
        Self { src, last: Mutex::new(None) }
    }

    /// Stores a host sample (what hv_utils does with an ICTIMESYNCFLAG_SAMPLE or _SYNC message).
    pub fn apply(&self, sample: HostSample) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(sample);
    }

    /// The last sample.
    pub fn last(&self) -> Option<HostSample> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time source.
    pub fn source(&self) -> &T {
        &self.src
    }

    /// One PHC read (hv_util.c `hv_get_adj_host_time`): in 100 ns ticks, host time plus the
    /// counter's progress, the difference taken as an unsigned wrapping one; ESTALE when
    /// `diff * 100 > 600 s`.
    pub fn read_ns(&self) -> Result<i64> {
        let now = self.src.monotonic_raw_ns();
        let s = self.last().ok_or(Error::Stale)?;
        let diff_ticks = (now.div_euclid(100)).wrapping_sub(s.monotonic_raw_ns.div_euclid(100)) as u64;
        if diff_ticks.wrapping_mul(100) > STALE_AFTER_NS {
            return Err(Error::Stale);
        }
        let ticks = (s.host_ns.div_euclid(100) as u64).wrapping_add(diff_ticks);
        Ok((ticks as i64).wrapping_mul(100))
    }

    fn supported(s: Support) -> bool {
        s == Support::Yes
    }
}

impl<T: TimeSource> PtpClock for HypervClock<T> {
    fn caps_raw(&self, _form: Form) -> Result<Caps> {
        Ok(hyperv_caps())
    }

    /// ptp_chardev.c: n_samples > 25 is EINVAL (0 is allowed and yields one system time); the
    /// reserved words are ignored in both forms; each PHC read is bracketed by CLOCK_REALTIME.
    fn sys_offset_raw(&self, _form: Form, req: &mut PtpSysOffset) -> Result<()> {
        let n = req.n_samples as usize;
        if n > PTP_MAX_SAMPLES {
            return Err(Error::InvalidArgument);
        }
        for i in 0..n {
            req.ts[2 * i] = to_time(self.src.realtime_ns());
            req.ts[2 * i + 1] = to_time(self.read_ns()?);
        }
        req.ts[2 * n] = to_time(self.src.realtime_ns());
        Ok(())
    }

    /// EOPNOTSUPP (hv_utils has no gettimex64); were the table to say otherwise, ptp_chardev.c's
    /// checks follow: n > 25, nonzero reserved words or an unknown clock id are EINVAL.
    fn sys_offset_extended_raw(&self, _form: Form, req: &mut PtpSysOffsetExtended) -> Result<()> {
        if !Self::supported(Driver::Hyperv.expected().extended) {
            return Err(Error::NotSupported);
        }
        let n = req.n_samples as usize;
        let clock = req.clockid;
        if n > PTP_MAX_SAMPLES
            || req.rsv != [0, 0]
            || ![libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC, libc::CLOCK_MONOTONIC_RAW].contains(&clock)
        {
            return Err(Error::InvalidArgument);
        }
        let sys = || phc::device::clock_now_ns(clock);
        for t in req.ts.iter_mut().take(n) {
            let before = sys()?;
            let phc = self.read_ns()?;
            *t = [to_time(before), to_time(phc), to_time(sys()?)];
        }
        Ok(())
    }

    /// EOPNOTSUPP: hv_utils has no getcrosststamp.
    fn sys_offset_precise_raw(&self, _form: Form, req: &mut PtpSysOffsetPrecise) -> Result<()> {
        if !Self::supported(Driver::Hyperv.expected().precise) {
            return Err(Error::NotSupported);
        }
        let phc = self.read_ns()?;
        *req = PtpSysOffsetPrecise {
            device: to_time(phc),
            sys_realtime: to_time(self.src.realtime_ns()),
            sys_monoraw: to_time(self.src.monotonic_raw_ns()),
            rsv: [0; 4],
        };
        Ok(())
    }

    /// ptp_chardev.c: the `*2` form rejects nonzero reserved words, then any index >= n_pins
    /// (0 here) is EINVAL.
    fn pin_getfunc_raw(&self, form: Form, desc: &mut PtpPinDesc) -> Result<()> {
        if form == Form::V2 && desc.rsv != [0; 5] {
            return Err(Error::InvalidArgument);
        }
        // No pin passes `index >= n_pins` with n_pins 0.
        let n_pins = u32::try_from(hyperv_caps().n_pins).unwrap_or(0);
        debug_assert!(desc.index >= n_pins);
        Err(Error::InvalidArgument)
    }

    /// The PHC time, for in-process callers (no POSIX clock stands behind the CUSE node).
    fn gettime(&self) -> Result<i64> {
        self.read_ns()
    }

    /// hv_ptp_settime: EOPNOTSUPP.
    fn settime(&self, _ns: i64) -> Result<()> {
        Err(Error::NotSupported)
    }

    /// `clock_adjtime` without modes answers the dialled frequency, 0.
    fn frequency(&self) -> Result<f64> {
        Ok(0.0)
    }

    /// ptp_clock_adjtime: beyond max_adj (0) is ERANGE; 0 reaches hv_ptp_adjfine, EOPNOTSUPP.
    fn adjfine(&self, freq_ppb: f64) -> Result<()> {
        if freq_ppb != 0.0 {
            return Err(Error::Other(nix::errno::Errno::ERANGE));
        }
        Err(Error::NotSupported)
    }

    /// hv_ptp_adjtime: EOPNOTSUPP.
    fn step(&self, _delta_ns: i64) -> Result<()> {
        Err(Error::NotSupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

    /// Clocks that stand still until moved.
    #[derive(Debug, Default)]
    struct Manual {
        raw: AtomicI64,
        real: AtomicI64,
    }
    impl TimeSource for Manual {
        fn monotonic_raw_ns(&self) -> i64 {
            self.raw.load(Relaxed)
        }
        fn realtime_ns(&self) -> i64 {
            self.real.load(Relaxed)
        }
    }

    fn clock() -> HypervClock<Manual> {
        HypervClock::with_source(Manual::default())
    }

    #[test]
    fn stale_before_the_first_sample_and_after_600_s() {
        let c = clock();
        assert!(matches!(c.gettime(), Err(Error::Stale)));
        c.apply(HostSample { host_ns: 1_700_000_000_000_000_000, monotonic_raw_ns: 10_000 });
        c.source().raw.store(10_000 + 1_234_567, Relaxed);
        assert_eq!(c.gettime().unwrap(), 1_700_000_000_000_000_000 + 1_234_500, "100 ns ticks");
        // Exactly 600 s is not stale (the driver compares with >); one tick more is.
        c.source().raw.store(10_000 + 600_000_000_000, Relaxed);
        assert!(c.gettime().is_ok());
        c.source().raw.store(10_000 + 600_000_000_100, Relaxed);
        assert!(matches!(c.gettime(), Err(Error::Stale)));
        let mut req = PtpSysOffset { n_samples: 3, ..Default::default() };
        assert!(matches!(c.sys_offset_raw(Form::V2, &mut req), Err(Error::Stale)));
        // A new sample revives it.
        c.apply(HostSample { host_ns: 5_000_000_000, monotonic_raw_ns: 10_000 + 600_000_000_100 });
        assert_eq!(c.gettime().unwrap(), 5_000_000_000);
    }

    #[test]
    fn sys_offset_brackets_each_read_with_realtime() {
        let c = clock();
        c.source().real.store(42_000_000_123, Relaxed);
        c.apply(HostSample { host_ns: 7_000_000_000, monotonic_raw_ns: 0 });
        let mut req = PtpSysOffset { n_samples: 2, rsv: [1, 2, 3], ..Default::default() };
        c.sys_offset_raw(Form::V2, &mut req).unwrap();
        assert_eq!(req.ts[0].as_ns(), 42_000_000_123);
        assert_eq!(req.ts[1].as_ns(), 7_000_000_000);
        assert_eq!(req.ts[4].as_ns(), 42_000_000_123);
        assert_eq!(req.ts[5].as_ns(), 0, "nothing past 2n+1");
        let mut zero = PtpSysOffset::default();
        c.sys_offset_raw(Form::Legacy, &mut zero).unwrap();
        assert_eq!(zero.ts[0].as_ns(), 42_000_000_123, "n_samples 0: one system time");
        let mut many = PtpSysOffset { n_samples: 26, ..Default::default() };
        assert!(matches!(c.sys_offset_raw(Form::V2, &mut many), Err(Error::InvalidArgument)));
    }

    #[test]
    fn the_rest_answers_as_hv_utils() {
        let c = clock();
        assert_eq!(c.caps().unwrap(), hyperv_caps());
        assert_eq!(hyperv_caps().max_adj_ppb, 0);
        let mut e = PtpSysOffsetExtended { n_samples: 1, ..Default::default() };
        assert!(matches!(c.sys_offset_extended_raw(Form::V2, &mut e), Err(Error::NotSupported)));
        let mut p = PtpSysOffsetPrecise::default();
        assert!(matches!(c.sys_offset_precise_raw(Form::V2, &mut p), Err(Error::NotSupported)));
        let mut d = PtpPinDesc::default();
        assert!(matches!(c.pin_getfunc_raw(Form::V2, &mut d), Err(Error::InvalidArgument)));
        d.rsv[4] = 1;
        assert!(matches!(c.pin_getfunc_raw(Form::V2, &mut d), Err(Error::InvalidArgument)));
        assert!(matches!(c.settime(0), Err(Error::NotSupported)));
        assert!(matches!(c.step(1), Err(Error::NotSupported)));
        assert!(matches!(c.adjfine(0.0), Err(Error::NotSupported)));
        assert!(matches!(c.adjfine(1.0), Err(Error::Other(nix::errno::Errno::ERANGE))));
        assert_eq!(c.frequency().unwrap(), 0.0);
    }
}
