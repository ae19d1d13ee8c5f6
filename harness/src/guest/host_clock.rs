//! The clock the agent reads host time from in virtual time: a kernel PHC (QEMU's igb, whose
//! clock under icount is QEMU's virtual clock), or, on a kernel built without igb (Debian's
//! `cloud` flavour), the agent's own clock on CLOCK_MONOTONIC_RAW ([`AgentClock`]), which under
//! icount follows the same virtual clock. Both answer the few operations the host asks of its
//! clock: read it against a system clock, set, step, re-rate it.

use std::cell::Cell;

use phc::estimate::Sample;
use phc::{Phc, PreciseSample, SysClock};

/// What the agent does with the host's clock.
pub trait HostPhc {
    /// Its time now.
    fn gettime(&self) -> phc::Result<i64>;
    /// Sets it.
    fn settime(&self, ns: i64) -> phc::Result<()>;
    /// Steps it by `delta_ns`.
    fn step(&self, delta_ns: i64) -> phc::Result<()>;
    /// Its frequency against its source, in ppb.
    fn adjfine(&self, ppb: f64) -> phc::Result<()>;
    /// `n` readings, each between two readings of `clock` (PTP_SYS_OFFSET_EXTENDED).
    fn sys_offset_extended(&self, n: usize, clock: SysClock) -> phc::Result<Vec<Sample>>;
    /// `n` readings between two of CLOCK_REALTIME (PTP_SYS_OFFSET).
    fn sys_offset(&self, n: usize) -> phc::Result<Vec<Sample>>;
    /// A cross timestamp (PTP_SYS_OFFSET_PRECISE).
    fn sys_offset_precise(&self) -> phc::Result<PreciseSample>;
    /// The kernel device behind it, where there is one.
    fn device(&self) -> Option<&Phc>;
}

impl HostPhc for Phc {
    fn gettime(&self) -> phc::Result<i64> {
        Phc::gettime(self)
    }
    fn settime(&self, ns: i64) -> phc::Result<()> {
        Phc::settime(self, ns)
    }
    fn step(&self, delta_ns: i64) -> phc::Result<()> {
        Phc::step(self, delta_ns)
    }
    fn adjfine(&self, ppb: f64) -> phc::Result<()> {
        Phc::adjfine(self, ppb)
    }
    fn sys_offset_extended(&self, n: usize, clock: SysClock) -> phc::Result<Vec<Sample>> {
        Phc::sys_offset_extended(self, n, clock)
    }
    fn sys_offset(&self, n: usize) -> phc::Result<Vec<Sample>> {
        Phc::sys_offset(self, n)
    }
    fn sys_offset_precise(&self) -> phc::Result<PreciseSample> {
        Phc::sys_offset_precise(self)
    }
    fn device(&self) -> Option<&Phc> {
        Some(self)
    }
}

/// Where the agent clock was last set: `at_ns` at CLOCK_MONOTONIC_RAW `raw_ns`, running `ppb`
/// fast against it from there.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Anchor {
    raw_ns: i64,
    at_ns: i64,
    ppb: f64,
}

impl Anchor {
    /// The clock's time at CLOCK_MONOTONIC_RAW `raw_ns`: whole nanoseconds, the rate's share
    /// rounded (exact to a nanosecond over any span: f64 carries 2^53 ns, 104 days, exactly).
    fn at(&self, raw_ns: i64) -> i64 {
        let d = raw_ns - self.raw_ns;
        self.at_ns + d + (d as f64 * self.ppb / 1e9).round() as i64
    }
}

/// A host clock kept by the agent on CLOCK_MONOTONIC_RAW (a `device` named
/// [`phc_qemu::agent::AGENT_CLOCK`]): read, set, stepped and re-rated as the host asks, like a
/// PHC, but in arithmetic. A reading's "window" is CLOCK_MONOTONIC_RAW itself (zero wide), or
/// CLOCK_REALTIME read on either side of it.
#[derive(Debug)]
pub struct AgentClock {
    anchor: Cell<Anchor>,
}

fn raw_now() -> phc::Result<i64> {
    phc::device::clock_now_ns(libc::CLOCK_MONOTONIC_RAW)
}

impl AgentClock {
    /// A clock reading CLOCK_REALTIME's time now, at CLOCK_MONOTONIC_RAW's rate.
    pub fn new() -> phc::Result<Self> {
        let at_ns = phc::device::clock_now_ns(libc::CLOCK_REALTIME)?;
        Ok(Self { anchor: Cell::new(Anchor { raw_ns: raw_now()?, at_ns, ppb: 0.0 }) })
    }

    /// Re-anchors at CLOCK_MONOTONIC_RAW now, with `f` applied to the time there.
    fn rebase(&self, f: impl FnOnce(&mut Anchor, i64)) -> phc::Result<()> {
        let raw = raw_now()?;
        let mut a = self.anchor.get();
        let now = a.at(raw);
        a.raw_ns = raw;
        a.at_ns = now;
        f(&mut a, now);
        self.anchor.set(a);
        Ok(())
    }
}

impl HostPhc for AgentClock {
    fn gettime(&self) -> phc::Result<i64> {
        Ok(self.anchor.get().at(raw_now()?))
    }
    fn settime(&self, ns: i64) -> phc::Result<()> {
        self.rebase(|a, _| a.at_ns = ns)
    }
    fn step(&self, delta_ns: i64) -> phc::Result<()> {
        let mut a = self.anchor.get();
        a.at_ns = a.at_ns.checked_add(delta_ns).ok_or(phc::Error::InvalidArgument)?;
        self.anchor.set(a);
        Ok(())
    }
    fn adjfine(&self, ppb: f64) -> phc::Result<()> {
        // A PHC's range: a frequency beyond 50% is no oscillator's.
        if !ppb.is_finite() || ppb.abs() > 5e8 {
            return Err(phc::Error::InvalidArgument);
        }
        self.rebase(|a, _| a.ppb = ppb)
    }
    fn sys_offset_extended(&self, n: usize, clock: SysClock) -> phc::Result<Vec<Sample>> {
        if n == 0 || n > phc::uapi::PTP_MAX_SAMPLES {
            return Err(phc::Error::InvalidArgument);
        }
        let a = self.anchor.get();
        (0..n)
            .map(|_| {
                if clock == SysClock::MonotonicRaw {
                    let raw = raw_now()?;
                    return Ok(Sample { sys_before_ns: raw, phc_ns: a.at(raw), sys_after_ns: raw });
                }
                let before = phc::device::clock_now_ns(clock.clockid())?;
                let raw = raw_now()?;
                let after = phc::device::clock_now_ns(clock.clockid())?;
                Ok(Sample { sys_before_ns: before, phc_ns: a.at(raw), sys_after_ns: after })
            })
            .collect()
    }
    fn sys_offset(&self, n: usize) -> phc::Result<Vec<Sample>> {
        self.sys_offset_extended(n, SysClock::Realtime)
    }
    fn sys_offset_precise(&self) -> phc::Result<PreciseSample> {
        Err(phc::Error::NotSupported)
    }
    fn device(&self) -> Option<&Phc> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_clock_is_set_stepped_and_rerated_as_a_phc_is() {
        let c = AgentClock::new().unwrap();
        c.settime(1_000_000_000_000).unwrap();
        let t0 = c.gettime().unwrap();
        assert!((1_000_000_000_000..1_000_001_000_000).contains(&t0), "{t0}");
        c.step(30_000_000_000).unwrap();
        let t1 = c.gettime().unwrap();
        assert!(t1 - t0 >= 30_000_000_000 && t1 - t0 < 30_001_000_000, "{}", t1 - t0);
        // Against CLOCK_MONOTONIC_RAW: exact, a zero-wide window, at the rate asked.
        let raw = |c: &AgentClock| {
            let s = c.sys_offset_extended(3, SysClock::MonotonicRaw).unwrap();
            assert!(s.iter().all(|s| s.delay_ns() == 0));
            (s[2].phc_ns, s[2].sys_before_ns)
        };
        c.adjfine(-50_000.0).unwrap();
        let (p0, r0) = raw(&c);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (p1, r1) = raw(&c);
        let ppb = ((p1 - p0) - (r1 - r0)) as f64 / (r1 - r0) as f64 * 1e9;
        // Each reading rounds to a nanosecond: 2 ns over 50 ms is 40 ppb.
        assert!((ppb + 50_000.0).abs() < 50.0, "{ppb}");
        // A re-rate is no step: the clock is continuous across it.
        let before = c.sys_offset_extended(1, SysClock::MonotonicRaw).unwrap()[0];
        c.adjfine(20_000.0).unwrap();
        let after = c.sys_offset_extended(1, SysClock::MonotonicRaw).unwrap()[0];
        let expected = before.phc_ns + (after.sys_before_ns - before.sys_before_ns);
        assert!((after.phc_ns - expected).abs() < 10_000, "{}", after.phc_ns - expected);
        // Against CLOCK_REALTIME: a window around the reading, and no cross timestamp.
        let s = c.sys_offset(5).unwrap();
        assert!(s.iter().all(|s| s.delay_ns() >= 0 && s.delay_ns() < 1_000_000_000));
        assert!(matches!(c.sys_offset_precise(), Err(phc::Error::NotSupported)));
        assert!(matches!(c.adjfine(f64::NAN), Err(phc::Error::InvalidArgument)));
        assert!(matches!(c.sys_offset(0), Err(phc::Error::InvalidArgument)));
        assert!(c.device().is_none());
    }

    #[test]
    fn an_anchor_reads_whole_nanoseconds_at_its_rate() {
        let a = Anchor { raw_ns: 1_000, at_ns: 5_000, ppb: 1_000_000.0 };
        assert_eq!(a.at(1_000), 5_000);
        // 1e9 ns of raw time at +1000 ppm is 1e9 + 1e6 of the clock's.
        assert_eq!(a.at(1_000 + 1_000_000_000), 5_000 + 1_001_000_000);
        assert_eq!(a.at(1_000 - 1_000_000_000), 5_000 - 1_001_000_000);
    }
}
