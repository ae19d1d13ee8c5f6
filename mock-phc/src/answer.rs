//! A driver personality answering PHC requests in real time: the kernel's generic checks
//! (drivers/ptp/ptp_chardev.c, ptp_clock.c, kernel/time/posix-clock.c) around what the driver
//! implements (`phc::Driver::implements`, the one table), over a [`TimeSource`]. The same
//! [`Answerer`] stands behind `probe`/`latency --backend sim --driver D` and behind the CUSE
//! device, so a personality answers identically in both.
//!
//! Unlike the rest of this crate, this module reads real clocks (through [`TimeSource::sys_ns`]).

use std::sync::Mutex;

use nix::errno::Errno;
use phc::uapi::{PtpClockTime, PtpPinDesc, PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};
use phc::{Caps, Driver, Error, Form, Implements, PtpClock, ReadRequest, Result, SysClock};

/// Where PHC time comes from, and the system clocks it is read against.
pub trait TimeSource: Send + Sync {
    /// PHC time now, before any adjustment made through the clock interface, or the driver's
    /// error (ESTALE for a hyperv clock without a fresh host sample).
    fn phc_ns(&self) -> Result<i64>;
    /// A system clock now.
    fn sys_ns(&self, clock: SysClock) -> i64 {
        phc::device::clock_now_ns(clock.clockid()).unwrap_or(0)
    }
}

impl<T: TimeSource + ?Sized> TimeSource for Box<T> {
    fn phc_ns(&self) -> Result<i64> {
        (**self).phc_ns()
    }
    fn sys_ns(&self, clock: SysClock) -> i64 {
        (**self).sys_ns(clock)
    }
}

/// `driver`'s personality on its own, without a device or a guest: a hyperv clock that received
/// a host sample (CLOCK_REALTIME) just now, any other a free-running clock set to CLOCK_REALTIME.
/// What `probe`/`latency --backend sim` answer from.
pub fn simulated(driver: Driver, writable: bool) -> Answerer<Box<dyn TimeSource>> {
    let source: Box<dyn TimeSource> = match driver {
        Driver::Hyperv => {
            let s = crate::live::HypervClock::new();
            let clocks = crate::live::SystemClocks;
            use crate::live::Clocks;
            s.apply(crate::live::HostSample {
                host_ns: clocks.realtime_ns(),
                monotonic_raw_ns: clocks.monotonic_raw_ns(),
            });
            Box::new(s)
        }
        _ => Box::new(FreeRunning::new()),
    };
    Answerer::new(driver, source, writable)
}

/// PHC time that is CLOCK_MONOTONIC_RAW plus a fixed offset: a free-running clock that never
/// slews, set to CLOCK_REALTIME when created.
#[derive(Debug)]
pub struct FreeRunning {
    offset_ns: i64,
}

impl FreeRunning {
    /// A clock reading CLOCK_REALTIME now.
    pub fn new() -> Self {
        let rt = phc::device::clock_now_ns(libc::CLOCK_REALTIME).unwrap_or(0);
        let raw = phc::device::clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap_or(0);
        Self { offset_ns: rt.saturating_sub(raw) }
    }
}

impl Default for FreeRunning {
    fn default() -> Self {
        Self::new()
    }
}

impl TimeSource for FreeRunning {
    fn phc_ns(&self) -> Result<i64> {
        Ok(self.sys_ns(SysClock::MonotonicRaw).saturating_add(self.offset_ns))
    }
}

/// Adjustments made through the clock interface (drivers that implement them).
#[derive(Debug, Default, Clone, Copy)]
struct Adjust {
    /// Steps and settime so far, ns.
    offset_ns: i64,
    /// The dialled frequency, ppb.
    freq_ppb: f64,
    /// CLOCK_MONOTONIC_RAW when the frequency was last dialled.
    since_raw_ns: i64,
}

/// One personality answering requests: the kernel's checks, the driver's row, a time source.
#[derive(Debug)]
pub struct Answerer<S> {
    driver: Driver,
    implements: Implements,
    source: S,
    writable: bool,
    adjust: Mutex<Adjust>,
}

fn to_clock_time(ns: i64) -> PtpClockTime {
    let sec = ns.div_euclid(1_000_000_000);
    // rem_euclid is in 0..1e9, which fits u32.
    let nsec = u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    PtpClockTime { sec, nsec, reserved: 0 }
}

fn sys_clock(id: i32) -> Option<SysClock> {
    SysClock::ALL.into_iter().find(|c| c.clockid() == id)
}

impl<S: TimeSource> Answerer<S> {
    /// `driver`'s personality over `source`, on a descriptor opened read-write or read-only (the
    /// kernel refuses clock writes on a read-only one with EACCES).
    pub fn new(driver: Driver, source: S, writable: bool) -> Self {
        Self {
            driver,
            implements: driver.implements(),
            source,
            writable,
            adjust: Mutex::new(Adjust::default()),
        }
    }

    /// The driver this personality imitates.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The time source.
    pub fn source(&self) -> &S {
        &self.source
    }

    fn adjust(&self) -> Adjust {
        *self.adjust.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// PHC time now, adjustments included.
    fn read(&self) -> Result<i64> {
        let raw = self.source.phc_ns()?;
        let a = self.adjust();
        if a.freq_ppb == 0.0 {
            return Ok(raw.saturating_add(a.offset_ns));
        }
        let elapsed = self.source.sys_ns(SysClock::MonotonicRaw).saturating_sub(a.since_raw_ns);
        // |freq| <= max_adj (< 1e9 ppb) and elapsed fits i64, so the product stays finite.
        let drift = (elapsed as f64 * a.freq_ppb * 1e-9).round();
        Ok(raw.saturating_add(a.offset_ns).saturating_add(drift as i64))
    }

    fn check_write(&self, works: bool) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        if works {
            Ok(())
        } else {
            Err(Error::NotSupported)
        }
    }

    /// Folds the drift so far into the offset, then applies `f`.
    fn rebase(&self, f: impl FnOnce(&mut Adjust)) -> Result<()> {
        let now = self.read()?;
        let raw = self.source.phc_ns()?;
        let mut a = self.adjust.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        a.offset_ns = now.saturating_sub(raw);
        a.since_raw_ns = self.source.sys_ns(SysClock::MonotonicRaw);
        f(&mut a);
        Ok(())
    }
}

impl<S: TimeSource> PtpClock for Answerer<S> {
    fn caps_raw(&self, _form: Form) -> Result<Caps> {
        Ok(self.implements.caps)
    }

    fn sys_offset_raw(&self, _form: Form, req: &mut PtpSysOffset) -> Result<()> {
        let n = req.n_samples as usize;
        self.implements.check_read(ReadRequest::Basic { n_samples: n })?;
        for i in 0..n {
            req.ts[2 * i] = to_clock_time(self.source.sys_ns(SysClock::Realtime));
            req.ts[2 * i + 1] = to_clock_time(self.read()?);
        }
        req.ts[2 * n] = to_clock_time(self.source.sys_ns(SysClock::Realtime));
        Ok(())
    }

    fn sys_offset_extended_raw(&self, _form: Form, req: &mut PtpSysOffsetExtended) -> Result<()> {
        let clock = sys_clock(req.clockid);
        let n = req.n_samples as usize;
        self.implements.check_read(ReadRequest::Extended {
            n_samples: n,
            clock_ok: clock.is_some(),
            rsv_zero: req.rsv == [0, 0],
        })?;
        let clock = clock.ok_or(Error::InvalidArgument)?;
        for sample in req.ts.iter_mut().take(n) {
            let before = self.source.sys_ns(clock);
            let phc = self.read()?;
            let after = self.source.sys_ns(clock);
            *sample = [to_clock_time(before), to_clock_time(phc), to_clock_time(after)];
        }
        Ok(())
    }

    fn sys_offset_precise_raw(&self, _form: Form, req: &mut PtpSysOffsetPrecise) -> Result<()> {
        self.implements.check_read(ReadRequest::Precise)?;
        let phc = self.read()?;
        *req = PtpSysOffsetPrecise {
            device: to_clock_time(phc),
            sys_realtime: to_clock_time(self.source.sys_ns(SysClock::Realtime)),
            sys_monoraw: to_clock_time(self.source.sys_ns(SysClock::MonotonicRaw)),
            rsv: [0; 4],
        };
        Ok(())
    }

    fn pin_getfunc_raw(&self, form: Form, desc: &mut PtpPinDesc) -> Result<()> {
        // ptp_chardev.c: the *2 form rejects nonzero reserved words, then the index is checked.
        if form == Form::V2 && desc.rsv != [0; 5] {
            return Err(Error::InvalidArgument);
        }
        let n_pins = u32::try_from(self.implements.caps.n_pins).unwrap_or(0);
        if desc.index >= n_pins {
            return Err(Error::InvalidArgument);
        }
        // No personality in the table has pins.
        Err(Error::InvalidArgument)
    }

    fn gettime(&self) -> Result<i64> {
        self.read()
    }

    fn settime(&self, ns: i64) -> Result<()> {
        self.check_write(self.implements.settime)?;
        let raw = self.source.phc_ns()?;
        let since = self.source.sys_ns(SysClock::MonotonicRaw);
        let mut a = self.adjust.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        a.offset_ns = ns.saturating_sub(raw);
        a.since_raw_ns = since;
        Ok(())
    }

    fn frequency(&self) -> Result<f64> {
        // posix-clock.c refuses every clock_adjtime on a read-only descriptor, reads included.
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        Ok(self.adjust().freq_ppb)
    }

    fn adjfine(&self, freq_ppb: f64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        // ptp_clock_adjtime checks the range against max_adj before asking the driver.
        let max = f64::from(self.implements.caps.max_adj_ppb);
        if !freq_ppb.is_finite() || freq_ppb.abs() > max {
            return Err(Error::Other(Errno::ERANGE));
        }
        self.check_write(self.implements.adjust)?;
        self.rebase(|a| a.freq_ppb = freq_ppb)
    }

    fn step(&self, delta_ns: i64) -> Result<()> {
        self.check_write(self.implements.adjust)?;
        self.rebase(|a| a.offset_ns = a.offset_ns.saturating_add(delta_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{self, Clocks, HostSample, HypervPhc};
    use std::sync::atomic::{AtomicI64, Ordering};

    fn code<T>(r: &Result<T>) -> &'static str {
        r.as_ref().map_or_else(Error::code, |_| "ok")
    }

    /// Clocks that move only when told.
    struct Manual {
        raw: AtomicI64,
    }

    impl Clocks for Manual {
        fn monotonic_raw_ns(&self) -> i64 {
            self.raw.load(Ordering::SeqCst)
        }
        fn realtime_ns(&self) -> i64 {
            self.raw.load(Ordering::SeqCst) + 5_000
        }
    }

    fn hyperv() -> HypervPhc<Manual> {
        live::hyperv(Manual { raw: AtomicI64::new(1_000_000_000_000) })
    }

    #[test]
    fn hyperv_answers_last_sample_plus_elapsed_and_goes_stale() {
        let a = hyperv();
        assert_eq!(code(&a.gettime()), "ESTALE", "no sample in 1000 s of uptime");
        let raw = a.clocks().monotonic_raw_ns();
        a.apply(HostSample { host_ns: 42_000_000_000, monotonic_raw_ns: raw });
        a.clocks().raw.fetch_add(3_000_000_000, Ordering::SeqCst);
        assert_eq!(a.gettime().unwrap(), 45_000_000_000);
        let mut req = PtpSysOffset { n_samples: 2, ..Default::default() };
        a.sys_offset_raw(Form::V2, &mut req).unwrap();
        assert_eq!(req.ts[1].as_ns(), 45_000_000_000);
        assert_eq!(req.ts[0].as_ns(), raw + 3_000_000_000 + 5_000);
        a.clocks().raw.fetch_add(601_000_000_000, Ordering::SeqCst);
        assert_eq!(code(&a.sys_offset_raw(Form::V2, &mut req)), "ESTALE");
    }

    #[test]
    fn the_table_decides_the_errnos() {
        let a = hyperv();
        let mut ext = PtpSysOffsetExtended { n_samples: 1, ..Default::default() };
        assert_eq!(code(&a.sys_offset_extended_raw(Form::V2, &mut ext)), "EOPNOTSUPP");
        let mut p = PtpSysOffsetPrecise::default();
        assert_eq!(code(&a.sys_offset_precise_raw(Form::V2, &mut p)), "EOPNOTSUPP");
        assert_eq!(code(&a.step(0)), "EOPNOTSUPP");
        assert_eq!(code(&a.adjfine(1.0)), "ERANGE", "max_adj 0: range check first");
        assert_eq!(code(&a.adjfine(0.0)), "EOPNOTSUPP");
        let mut req = PtpSysOffset { n_samples: 26, ..Default::default() };
        assert_eq!(code(&a.sys_offset_raw(Form::V2, &mut req)), "EINVAL");
        let mut pin = PtpPinDesc::default();
        assert_eq!(code(&a.pin_getfunc_raw(Form::V2, &mut pin)), "EINVAL");
        assert_eq!(a.caps_raw(Form::V2).unwrap(), Driver::Hyperv.implements().caps);

        let ro = Answerer::new(Driver::Nic, FreeRunning::new(), false);
        assert_eq!(code(&ro.settime(0)), "EACCES");
        let nic = Answerer::new(Driver::Nic, FreeRunning::new(), true);
        let mut ext =
            PtpSysOffsetExtended { n_samples: 3, clockid: libc::CLOCK_MONOTONIC_RAW, ..Default::default() };
        nic.sys_offset_extended_raw(Form::V2, &mut ext).unwrap();
        assert!(ext.ts[2][0].as_ns() <= ext.ts[2][2].as_ns());
        ext.clockid = 12345;
        assert_eq!(code(&nic.sys_offset_extended_raw(Form::V2, &mut ext)), "EINVAL");
    }

    #[test]
    fn writes_move_a_nic_clock() {
        let nic = Answerer::new(Driver::Nic, FreeRunning::new(), true);
        let before = nic.gettime().unwrap();
        nic.step(10_000_000_000).unwrap();
        let after = nic.gettime().unwrap();
        assert!((after - before - 10_000_000_000).abs() < 50_000_000, "{}", after - before);
        nic.adjfine(1000.0).unwrap();
        assert_eq!(nic.frequency().unwrap(), 1000.0);
        assert!(nic.adjfine(2e9).is_err());
    }
}
