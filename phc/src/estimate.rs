//! Turning a batch of (system, PHC, system) readings into one offset: linuxptp's rule (the
//! shortest window wins) and chrony's (reject a batch with a negative window, average the best).
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// One reading: system time before, PHC time, system time after, all in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// System clock before the PHC was read.
    pub sys_before_ns: i64,
    /// PHC time.
    pub phc_ns: i64,
    /// System clock after the PHC was read.
    pub sys_after_ns: i64,
}

impl Sample {
    /// The window the kernel reports around the PHC read (t2 - t1).
    pub fn delay_ns(&self) -> i64 {
        self.sys_after_ns - self.sys_before_ns
    }

    /// System minus PHC at the window's midpoint: (t1 + t2) / 2 - tphc, as linuxptp computes it.
    pub fn offset_ns(&self) -> i64 {
        // Halve each term first so the sum cannot overflow for times near i64::MAX.
        let mid = self.sys_before_ns / 2
            + self.sys_after_ns / 2
            + (self.sys_before_ns % 2 + self.sys_after_ns % 2) / 2;
        mid - self.phc_ns
    }
}

/// An offset estimate with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// System minus PHC.
    pub offset_ns: i64,
    /// The delay (window) the estimate rests on.
    pub delay_ns: i64,
    /// Half the window: the offset is known to within this, whatever the asymmetry.
    pub uncertainty_ns: i64,
    /// How many readings were combined.
    pub combined: usize,
}

/// Why chrony's rule threw a batch away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The batch was empty.
    #[error("no samples")]
    Empty,
    /// A reading's window was negative: the system clock stepped mid-batch.
    #[error("sample {index} has a negative delay ({delay_ns} ns)")]
    NegativeDelay {
        /// Index of the first bad reading.
        index: usize,
        /// Its delay.
        delay_ns: i64,
    },
}

/// linuxptp's rule (phc2sys `read_phc`): the reading with the shortest window wins, and its
/// offset is the midpoint of the window minus the PHC time. Ties go to the earliest reading.
pub fn linuxptp(samples: &[Sample]) -> Option<Estimate> {
    let best = samples.iter().min_by_key(|s| s.delay_ns())?;
    let delay_ns = best.delay_ns();
    Some(Estimate { offset_ns: best.offset_ns(), delay_ns, uncertainty_ns: delay_ns.abs() / 2, combined: 1 })
}

/// chrony's rule (`process_phc_readings` in sys_linux.c): reject the whole batch if any window is
/// negative; otherwise average every reading whose window is within `tolerance_ns` (chrony uses
/// the larger of the system and PHC precision) of the shortest, and report half the shortest
/// window (at least `tolerance_ns`) as the error.
pub fn chrony(samples: &[Sample], tolerance_ns: i64) -> Result<Estimate, Rejected> {
    if samples.is_empty() {
        return Err(Rejected::Empty);
    }
    if let Some((index, s)) = samples.iter().enumerate().find(|(_, s)| s.delay_ns() < 0) {
        return Err(Rejected::NegativeDelay { index, delay_ns: s.delay_ns() });
    }
    let min_delay = samples.iter().map(Sample::delay_ns).min().unwrap_or(0);
    let limit = min_delay.saturating_add(tolerance_ns.max(0));
    // Sum differences from the first reading, as chrony does, so the sums stay small: i64 holds
    // them for any batch of real readings; i128 takes over only for absurd spreads.
    let base = samples[0];
    let kept = samples.iter().filter(|s| s.delay_ns() <= limit);
    let rel = match sums_i64(kept.clone(), &base) {
        Some((phc_sum, sys_sum, n)) => i128::from((sys_sum - 2 * phc_sum) / (2 * n)),
        None => {
            let (mut phc_sum, mut sys_sum, mut n) = (0i128, 0i128, 0i128);
            for s in kept.clone() {
                phc_sum += i128::from(s.phc_ns) - i128::from(base.phc_ns);
                sys_sum += (i128::from(s.sys_before_ns) - i128::from(base.sys_before_ns)) * 2
                    + i128::from(s.delay_ns());
                n += 1;
            }
            (sys_sum - 2 * phc_sum) / (2 * n)
        }
    };
    let n = kept.count();
    // sys = base.sys_before + sys_sum / 2n and phc = base.phc + phc_sum / n; one division keeps
    // the difference exact when it is a whole number of nanoseconds.
    let offset_ns = (base.sys_before_ns - base.phc_ns) + rel as i64;
    Ok(Estimate {
        offset_ns,
        delay_ns: min_delay,
        uncertainty_ns: (min_delay / 2).max(tolerance_ns),
        combined: n,
    })
}

/// (Σ phc - phc0, Σ 2(sys - sys0) + delay, n) in i64, or `None` on overflow.
fn sums_i64<'a>(kept: impl Iterator<Item = &'a Sample>, base: &Sample) -> Option<(i64, i64, i64)> {
    let (mut phc_sum, mut sys_sum, mut n) = (0i64, 0i64, 0i64);
    for s in kept {
        phc_sum = phc_sum.checked_add(s.phc_ns.checked_sub(base.phc_ns)?)?;
        let d = s.sys_before_ns.checked_sub(base.sys_before_ns)?.checked_mul(2)?.checked_add(s.delay_ns())?;
        sys_sum = sys_sum.checked_add(d)?;
        n += 1;
    }
    // The final combination must fit too.
    sys_sum.checked_sub(phc_sum.checked_mul(2)?)?;
    Some((phc_sum, sys_sum, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn symmetric(t1: i64, delay: i64, offset: i64) -> Sample {
        // The PHC is read exactly at the window's midpoint.
        Sample { sys_before_ns: t1, phc_ns: t1 + delay / 2 - offset, sys_after_ns: t1 + delay }
    }

    #[test]
    fn negative_delay_rejects_the_batch() {
        let good = symmetric(1_000, 100, 5);
        let bad = Sample { sys_after_ns: 900, ..good };
        assert_eq!(chrony(&[good, bad], 0), Err(Rejected::NegativeDelay { index: 1, delay_ns: -100 }));
        assert!(linuxptp(&[good, bad]).is_some());
        assert_eq!(chrony(&[], 0), Err(Rejected::Empty));
        assert_eq!(linuxptp(&[]), None);
    }

    #[test]
    fn chrony_averages_only_readings_near_the_fastest() {
        let a = symmetric(0, 100, 10);
        let b = symmetric(1_000, 110, 30);
        let slow = symmetric(2_000, 5_000, 9_999);
        let e = chrony(&[a, b, slow], 20).unwrap();
        assert_eq!(e.combined, 2);
        assert_eq!(e.offset_ns, 20);
        assert_eq!(e.delay_ns, 100);
    }

    #[test]
    fn absurd_spreads_fall_back_to_wide_arithmetic() {
        // 2 x 4.6e18 overflows i64: the i128 path must give the same exact answer.
        let a = symmetric(-4_600_000_000_000_000_000, 100, 7);
        let b = symmetric(4_600_000_000_000_000_000, 100, 7);
        assert!(sums_i64([a, b].iter(), &a).is_none());
        assert_eq!(chrony(&[a, b], 0).unwrap().offset_ns, 7);
        assert_eq!(chrony(&[a, b], 0).unwrap().combined, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn symmetric_delays_give_the_exact_offset(
            t0 in -1_000_000_000_000i64..4_000_000_000_000_000_000,
            offset in -40_000_000_000i64..40_000_000_000,
            windows in prop::collection::vec((0i64..50_000, 0i64..1_000_000), 1..25),
        ) {
            let samples: Vec<Sample> = windows
                .iter()
                .map(|&(half, gap)| symmetric(t0 + gap, half * 2, offset))
                .collect();
            prop_assert_eq!(linuxptp(&samples).unwrap().offset_ns, offset);
            prop_assert_eq!(chrony(&samples, 0).unwrap().offset_ns, offset);
        }

        #[test]
        fn linuxptp_picks_the_shortest_window(
            windows in prop::collection::vec((0i64..1_000_000, -1_000i64..1_000), 1..25),
        ) {
            let samples: Vec<Sample> = windows
                .iter()
                .enumerate()
                .map(|(i, &(delay, skew))| Sample {
                    sys_before_ns: i as i64 * 2_000_000,
                    phc_ns: i as i64 * 2_000_000 + skew,
                    sys_after_ns: i as i64 * 2_000_000 + delay,
                })
                .collect();
            let shortest = samples.iter().map(Sample::delay_ns).min().unwrap();
            let first = samples.iter().find(|s| s.delay_ns() == shortest).unwrap();
            let e = linuxptp(&samples).unwrap();
            prop_assert_eq!(e.delay_ns, shortest);
            prop_assert_eq!(e.offset_ns, first.offset_ns());
            prop_assert_eq!(e.uncertainty_ns, shortest / 2);
        }
    }
}
