//! Seconds and nanoseconds: the one place where f64 seconds become i64 nanoseconds, and the bounds
//! that every accepted world and timeline stays inside, so that no time in the simulation can
//! leave i64 nanoseconds (about +-292 years) and a run's memory stays bounded.

/// Longest scenario (warm-up plus observation) a timeline may script: 7 days.
pub const MAX_SCENARIO_S: f64 = 7.0 * 86_400.0;
/// Largest single step of either clock: about 10 years (`date-back-2-years` needs 2).
pub const MAX_STEP_S: f64 = 10.0 * 366.0 * 86_400.0;
/// Largest total of all steps of a timeline, so realtime stays far from i64's end.
pub const MAX_TOTAL_STEP_S: f64 = 2.0 * MAX_STEP_S;
/// Largest frequency error of the guest oscillator, also after frequency jumps: beyond 10% no
/// kernel could correct it, and the bound keeps every clock running forwards.
pub const MAX_FREQ_ERROR_PPM: f64 = 100_000.0;
/// Latest start time: 2100-01-01T00:00:00Z.
pub const MAX_START_REALTIME_NS: i64 = 4_102_444_800 * 1_000_000_000;
/// Any time, offset or duration the simulation handles stays within this many seconds: the start
/// time plus every bound above, with a wide margin to i64's 9.2e9 s.
pub const MAX_ABS_S: f64 = 4.0e9;

/// A time in seconds that has no i64 nanosecond value (NaN, infinite, or beyond about 292 years).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{0} s is not a representable time (finite, within +-{MAX_ABS_S} s)")]
pub struct OutOfRange(pub f64);

/// Seconds to whole nanoseconds, rounded half away from zero; `Err` instead of a saturated or
/// wrapped value.
pub fn secs_to_ns(s: f64) -> Result<i64, OutOfRange> {
    if s.is_finite() && s.abs() <= MAX_ABS_S {
        Ok(secs_to_ns_in_range(s))
    } else {
        Err(OutOfRange(s))
    }
}

/// Seconds to whole nanoseconds for values the validated world keeps within `MAX_ABS_S`: the hot
/// path of day-long runs, where f64::round (a libm call on baseline x86-64) showed in profiles.
pub(crate) fn secs_to_ns_in_range(s: f64) -> i64 {
    debug_assert!(s.is_finite() && s.abs() <= MAX_ABS_S, "{s} s outside the validated range");
    let ns = s * 1e9;
    // Cannot saturate: |ns| <= 4e18 < i64::MAX (9.2e18) by the bound above.
    (ns + 0.5f64.copysign(ns)) as i64
}

/// Checks that `v` is finite and within `lo..=hi`; the message names the range.
pub(crate) fn check_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), crate::Error> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(crate::Error::invalid(key, format!("must be within {lo}..={hi}, got {v}")))
    }
}

/// Like `check_range`, but `lo` itself is excluded (durations that must be positive).
pub(crate) fn check_positive(key: &str, v: f64, hi: f64) -> Result<(), crate::Error> {
    if v.is_finite() && v > 0.0 && v <= hi {
        Ok(())
    } else {
        Err(crate::Error::invalid(key, format!("must be > 0 and at most {hi}, got {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_has_no_nanosecond_value() {
        for s in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e12, -1e12, 9.3e9] {
            assert!(secs_to_ns(s).is_err(), "{s}");
        }
        assert_eq!(secs_to_ns(1.5e-9), Ok(2));
        assert_eq!(secs_to_ns(-1.5e-9), Ok(-2));
        assert_eq!(secs_to_ns(-30.0), Ok(-30_000_000_000));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn in_range_matches_round(s in -MAX_ABS_S..MAX_ABS_S) {
            let ns = secs_to_ns(s).unwrap();
            prop_assert!((ns as f64 - (s * 1e9).round()).abs() <= 1.0);
        }
    }
}
