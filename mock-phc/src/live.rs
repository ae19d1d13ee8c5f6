//! The hyperv PHC in real time, as drivers/hv/hv_util.c has it: the last host time sample and the
//! guest reference counter when it applied; a read is that sample plus the counter's progress
//! since, in 100 ns units. The reference counter is stood in for by CLOCK_MONOTONIC_RAW. What the
//! CUSE server serves as `mock-phc serve --personality hyperv`.
//!
//! Before the first sample it answers as the driver does (seen with Debian's hv_utils.ko on the
//! VMBus shim): from a zero host time (1601) and a zero counter, the wrapped u64 arithmetic gives
//! a time of about 6.8e18 ns since 1970 (the year 2185, some 5e9 s ahead), without error, until 600 s of counter (uptime) have passed, then
//! ESTALE. The difference from the driver left: `gettime` returns the PHC time for in-process
//! callers, but a client of the CUSE node cannot `clock_gettime` it: a CUSE device is no POSIX
//! dynamic clock.

use std::sync::Mutex;

use phc::{Driver, Error, Result, SysClock};

use crate::answer::{Answerer, TimeSource};

/// hv_util.c `HOST_TIMESYNC_DELAY_THRESH`: a read is stale once the last sample is older.
pub const STALE_AFTER_NS: u64 = 600 * 1_000_000_000;

/// include/linux/hyperv.h `WLTIMEDELTA`: 100 ns ticks from 1601 (the host's epoch) to 1970.
pub const WLTIMEDELTA: u64 = 116_444_736_000_000_000;

/// The guest's system clocks a live PHC reads; tests substitute their own.
pub trait Clocks: Send + Sync {
    /// CLOCK_MONOTONIC_RAW, ns (the stand-in for Hyper-V's reference counter).
    fn monotonic_raw_ns(&self) -> i64;
    /// CLOCK_REALTIME, ns.
    fn realtime_ns(&self) -> i64;
    /// CLOCK_MONOTONIC, ns.
    fn monotonic_ns(&self) -> i64 {
        self.monotonic_raw_ns()
    }
}

/// The machine's own clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClocks;

impl Clocks for SystemClocks {
    fn monotonic_raw_ns(&self) -> i64 {
        phc::device::clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap_or(0)
    }
    fn realtime_ns(&self) -> i64 {
        phc::device::clock_now_ns(libc::CLOCK_REALTIME).unwrap_or(0)
    }
    fn monotonic_ns(&self) -> i64 {
        phc::device::clock_now_ns(libc::CLOCK_MONOTONIC).unwrap_or(0)
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

/// hv_utils' time source: the last host sample and the reference counter since. Behind the
/// kernel's checks and the driver table ([`hyperv`]) it is the hyperv PHC.
#[derive(Debug, Default)]
pub struct HypervClock<T = SystemClocks> {
    src: T,
    last: Mutex<Option<HostSample>>,
    /// How much faster the reference counter runs than CLOCK_MONOTONIC_RAW, ppb.
    rate_ppb: std::sync::atomic::AtomicI64,
}

impl HypervClock<SystemClocks> {
    /// A clock on the machine's clocks, with no sample yet.
    pub fn new() -> Self {
        Self::with_source(SystemClocks)
    }
}

impl<T: Clocks> HypervClock<T> {
    /// A clock reading `src`.
    pub fn with_source(src: T) -> Self {
        Self { src, last: Mutex::new(None), rate_ppb: std::sync::atomic::AtomicI64::new(0) }
    }

    /// Stores a host sample (what hv_utils does with an ICTIMESYNCFLAG_SAMPLE or _SYNC message).
    pub fn apply(&self, sample: HostSample) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(sample);
    }

    /// Sets how much faster than CLOCK_MONOTONIC_RAW the reference counter runs, ppb. Hyper-V's
    /// reference counter runs at the host's rate; where the guest's oscillator is made to err
    /// against the host (the harness's virtual time, where the host clock is the igb PHC dialled
    /// off the guest's), CLOCK_MONOTONIC_RAW does not, and this puts the host's rate back.
    pub fn set_rate_ppb(&self, ppb: i64) {
        self.rate_ppb.store(ppb.clamp(-100_000_000, 100_000_000), std::sync::atomic::Ordering::Relaxed);
    }

    /// The last sample.
    pub fn last(&self) -> Option<HostSample> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The system clocks.
    pub fn source(&self) -> &T {
        &self.src
    }

    /// One PHC read (hv_util.c `hv_get_adj_host_time`): in 100 ns ticks, host time plus the
    /// counter's progress, the difference taken as an unsigned wrapping one; ESTALE when
    /// `diff * 100 > 600 s`.
    pub fn read_ns(&self) -> Result<i64> {
        let now = self.src.monotonic_raw_ns();
        // hv_utils' host_ts in its own units: host time in 100 ns ticks since 1601, and the
        // counter when it applied; before any sample both are zero (the counter starts at boot).
        let (host_ticks, ref_ns) = match self.last() {
            Some(s) => ((s.host_ns.div_euclid(100) as u64).wrapping_add(WLTIMEDELTA), s.monotonic_raw_ns),
            None => (0, 0),
        };
        // The driver's u64 arithmetic: reinterpreting the signed tick counts wraps as it does.
        let mut diff_ticks = (now.div_euclid(100)).wrapping_sub(ref_ns.div_euclid(100)) as u64;
        let rate = self.rate_ppb.load(std::sync::atomic::Ordering::Relaxed);
        if rate != 0 {
            // The reference counter's ticks at its own rate (|rate| <= 10%: no overflow in i128).
            let scaled = i128::from(diff_ticks as i64) * i128::from(1_000_000_000 + rate) / 1_000_000_000;
            diff_ticks = scaled as i64 as u64;
        }
        if diff_ticks.wrapping_mul(100) > STALE_AFTER_NS {
            return Err(Error::Stale);
        }
        // reftime_to_ns: (newtime - WLTIMEDELTA) * 100, as u64, then a signed nanosecond count.
        let ns = host_ticks.wrapping_add(diff_ticks).wrapping_sub(WLTIMEDELTA).wrapping_mul(100);
        Ok(ns as i64)
    }
}

impl<T: Clocks> TimeSource for HypervClock<T> {
    fn phc_ns(&self) -> Result<i64> {
        self.read_ns()
    }
    fn sys_ns(&self, clock: SysClock) -> i64 {
        match clock {
            SysClock::Realtime => self.src.realtime_ns(),
            SysClock::Monotonic => self.src.monotonic_ns(),
            SysClock::MonotonicRaw => self.src.monotonic_raw_ns(),
        }
    }
}

/// The hyperv PHC: hv_utils' clock behind the kernel's generic checks and the hyperv row of the
/// driver table (`phc::Driver::implements`), as the CUSE server serves it.
pub type HypervPhc<T = SystemClocks> = Answerer<HypervClock<T>>;

/// The hyperv PHC on `src`, with no sample yet.
pub fn hyperv<T: Clocks>(src: T) -> HypervPhc<T> {
    Answerer::new(Driver::Hyperv, HypervClock::with_source(src), true)
}

impl<T: Clocks> Answerer<HypervClock<T>> {
    /// Stores a host sample.
    pub fn apply(&self, sample: HostSample) {
        self.source().apply(sample);
    }

    /// Sets the reference counter's rate against CLOCK_MONOTONIC_RAW (see
    /// [`HypervClock::set_rate_ppb`]).
    pub fn set_rate_ppb(&self, ppb: i64) {
        self.source().set_rate_ppb(ppb);
    }

    /// The system clocks the PHC reads.
    pub fn clocks(&self) -> &T {
        self.source().source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phc::uapi::{PtpPinDesc, PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};
    use phc::{Form, PtpClock};
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

    /// Clocks that stand still until moved.
    #[derive(Debug, Default)]
    struct Manual {
        raw: AtomicI64,
        real: AtomicI64,
    }
    impl Clocks for Manual {
        fn monotonic_raw_ns(&self) -> i64 {
            self.raw.load(Relaxed)
        }
        fn realtime_ns(&self) -> i64 {
            self.real.load(Relaxed)
        }
    }

    fn clock() -> HypervPhc<Manual> {
        hyperv(Manual::default())
    }

    #[test]
    fn wrapped_before_the_first_sample_and_stale_after_600_s() {
        let c = clock();
        // No sample, 10 s of uptime: the driver's wrapped value, about 6.8e18 ns, no error.
        c.clocks().raw.store(10_000_000_000, Relaxed);
        let wrapped = c.gettime().unwrap();
        assert_eq!(wrapped, (100_000_000u64.wrapping_sub(WLTIMEDELTA).wrapping_mul(100)) as i64);
        assert!((6.7e18..6.9e18).contains(&(wrapped as f64)), "{wrapped}");
        // Past 600 s of uptime with still no sample: stale.
        c.clocks().raw.store(600_000_000_100, Relaxed);
        assert!(matches!(c.gettime(), Err(Error::Stale)));
        c.clocks().raw.store(0, Relaxed);
        c.apply(HostSample { host_ns: 1_700_000_000_000_000_000, monotonic_raw_ns: 10_000 });
        c.clocks().raw.store(10_000 + 1_234_567, Relaxed);
        assert_eq!(c.gettime().unwrap(), 1_700_000_000_000_000_000 + 1_234_500, "100 ns ticks");
        // Exactly 600 s is not stale (the driver compares with >); one tick more is.
        c.clocks().raw.store(10_000 + 600_000_000_000, Relaxed);
        assert!(c.gettime().is_ok());
        c.clocks().raw.store(10_000 + 600_000_000_100, Relaxed);
        assert!(matches!(c.gettime(), Err(Error::Stale)));
        let mut req = PtpSysOffset { n_samples: 3, ..Default::default() };
        assert!(matches!(c.sys_offset_raw(Form::V2, &mut req), Err(Error::Stale)));
        // A reference counter 10 ppm faster than CLOCK_MONOTONIC_RAW: 100 s read as 100.001 s.
        c.apply(HostSample { host_ns: 0, monotonic_raw_ns: 10_000 });
        c.set_rate_ppb(10_000);
        c.clocks().raw.store(10_000 + 100_000_000_000, Relaxed);
        assert_eq!(c.gettime().unwrap(), 100_001_000_000);
        c.set_rate_ppb(0);
        c.clocks().raw.store(10_000 + 600_000_000_100, Relaxed);
        // A new sample revives it.
        c.apply(HostSample { host_ns: 5_000_000_000, monotonic_raw_ns: 10_000 + 600_000_000_100 });
        assert_eq!(c.gettime().unwrap(), 5_000_000_000);
    }

    #[test]
    fn sys_offset_brackets_each_read_with_realtime() {
        let c = clock();
        c.clocks().real.store(42_000_000_123, Relaxed);
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
        assert_eq!(c.caps().unwrap().max_adj_ppb, 0);
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
