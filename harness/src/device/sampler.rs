//! The latency sampler: one loop that times any call between two CLOCK_MONOTONIC_RAW reads and
//! stores the result in storage allocated (and touched) before the loop, so the same code measures
//! a PHC ioctl, the `clock_gettime` baseline and the benchmark's bare syscall.

use nix::time::{clock_gettime, ClockId};

/// Samples between two calls of the progress callback: the only work besides the measured call
/// that the loop does, kept out of the inner loop.
pub const CHUNK: usize = 1024;

/// Something the sampler can time.
pub trait Measured {
    /// What a failed call returns.
    type Error;
    /// Whether [`Measured::window_ns`] means anything; a constant so the loop carries no branch
    /// for it.
    const HAS_WINDOW: bool;
    /// The call being timed, and nothing else.
    fn call(&mut self) -> Result<(), Self::Error>;
    /// The window the kernel reported inside the last call (t2 - t1 of its best reading). Read
    /// after the closing timestamp, so extracting it is not part of the round trip.
    fn window_ns(&self) -> i64;
}

/// A plain closure as a [`Measured`] without a window.
pub struct FnCall<F>(pub F);

impl<E, F: FnMut() -> Result<(), E>> Measured for FnCall<F> {
    type Error = E;
    const HAS_WINDOW: bool = false;
    #[inline(always)]
    fn call(&mut self) -> Result<(), E> {
        (self.0)()
    }
    fn window_ns(&self) -> i64 {
        0
    }
}

/// The stored samples of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    /// Syscall round trip per sample: CLOCK_MONOTONIC_RAW after minus before.
    pub round_trip_ns: Vec<i64>,
    /// Kernel-reported window per sample; empty when the method has none.
    pub window_ns: Vec<i64>,
}

/// Call `index` (0-based) failed; the run stopped there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<E> {
    /// Which call failed.
    pub index: usize,
    /// Its error.
    pub error: E,
}

/// CLOCK_MONOTONIC_RAW in nanoseconds: not slewed by NTP, so a round trip is never stretched or
/// shrunk by a frequency correction running at the same time.
#[inline(always)]
pub fn monotonic_raw_ns() -> i64 {
    // MONOTONIC_RAW cannot fail on Linux >= 2.6.28; 0 would show up as an absurd round trip.
    clock_gettime(ClockId::CLOCK_MONOTONIC_RAW).map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec()).unwrap_or(0)
}

/// Storage of `n` samples, written once before the loop: a fresh allocation is backed by
/// untouched (or shared zero) pages, and the page faults of first writes would otherwise land
/// inside the measured loop.
fn prefaulted(n: usize) -> Vec<i64> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, -1);
    v
}

/// Times `f` `n` times. The closure form of [`sample_measured`], for calls without a window.
pub fn sample<E, F: FnMut() -> Result<(), E>>(n: usize, f: F) -> Result<Series, Failure<E>> {
    sample_measured(n, &mut FnCall(f), |_| {})
}

/// Times `m.call()` `n` times and calls `progress(done)` after every [`CHUNK`] samples. The first
/// failing call stops the run and is returned with its index.
pub fn sample_measured<M: Measured>(
    n: usize,
    m: &mut M,
    mut progress: impl FnMut(usize),
) -> Result<Series, Failure<M::Error>> {
    let mut round_trip_ns = prefaulted(n);
    let mut window_ns = if M::HAS_WINDOW { prefaulted(n) } else { Vec::new() };
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        for i in start..end {
            let t0 = monotonic_raw_ns();
            let r = m.call();
            let t1 = monotonic_raw_ns();
            if let Err(error) = r {
                return Err(Failure { index: i, error });
            }
            round_trip_ns[i] = t1 - t0;
            if M::HAS_WINDOW {
                window_ns[i] = m.window_ns();
            }
        }
        progress(end);
        start = end;
    }
    Ok(Series { round_trip_ns, window_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_one_round_trip_per_call() {
        let mut calls = 0;
        let s = sample(3000, || -> Result<(), ()> {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 3000);
        assert_eq!(s.round_trip_ns.len(), 3000);
        assert!(s.round_trip_ns.iter().all(|&d| d >= 0), "MONOTONIC_RAW went backwards");
        assert!(s.window_ns.is_empty());
    }

    /// Plays a device that answers with a fixed window and disappears at call `gone_at`.
    struct Vanishing {
        calls: usize,
        gone_at: usize,
    }

    impl Measured for Vanishing {
        type Error = phc::Error;
        const HAS_WINDOW: bool = true;
        fn call(&mut self) -> Result<(), phc::Error> {
            self.calls += 1;
            if self.calls > self.gone_at {
                return Err(phc::Error::NoDevice);
            }
            Ok(())
        }
        fn window_ns(&self) -> i64 {
            self.calls as i64 * 10
        }
    }

    #[test]
    fn an_error_on_call_k_stops_the_run_there() {
        let mut m = Vanishing { calls: 0, gone_at: 1500 };
        let mut reported = vec![];
        let e = sample_measured(5000, &mut m, |done| reported.push(done)).unwrap_err();
        assert_eq!(e.index, 1500);
        assert!(matches!(e.error, phc::Error::NoDevice));
        assert_eq!(m.calls, 1501, "the sampler kept calling after the failure");
        assert_eq!(reported, [CHUNK], "progress after the first full chunk only");
    }

    #[test]
    fn windows_are_read_after_each_call_and_progress_reaches_n() {
        let mut m = Vanishing { calls: 0, gone_at: usize::MAX };
        let mut last = 0;
        let s = sample_measured(2050, &mut m, |done| last = done).unwrap();
        assert_eq!(last, 2050);
        assert_eq!(s.window_ns[0], 10);
        assert_eq!(s.window_ns[2049], 20_500);
        assert!(sample(0, || -> Result<(), ()> { panic!("no calls for n = 0") }).is_ok());
    }
}
