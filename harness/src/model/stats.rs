//! Exact order statistics over stored samples: nearest-rank percentiles, a summary (min, p50, p90,
//! p99, p99.9, max, mean) and a log-spaced histogram. Pure: no I/O, no clocks; inputs are samples
//! in nanoseconds that the caller already measured.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// The value at percentile `p` (0..=100) of an ascending slice, by the nearest-rank definition:
/// the smallest sample such that at least `p` percent of all samples are less than or equal to
/// it, i.e. `sorted[ceil(p / 100 * n) - 1]`, with rank clamped to `1..=n` (so p = 0 gives the
/// minimum). No interpolation: every reported percentile is a value that was really measured.
/// `None` for an empty slice.
pub fn percentile_sorted(sorted: &[i64], p: f64) -> Option<i64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // Integer arithmetic on thousandths of a percent keeps p99.9 of 1000 samples exact (rank
    // 999), which `0.999 * 1000.0` in floating point would not guarantee.
    let p_milli = (p * 1000.0).round() as u128;
    let rank = (p_milli * n as u128).div_ceil(100_000) as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// One bucket of a histogram: how many samples are `<= le_ns` and above the previous bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Inclusive upper bound, nanoseconds. The first bucket also holds everything below it.
    pub le_ns: i64,
    /// Samples in the bucket.
    pub count: u64,
}

/// The figures of a distribution, all in nanoseconds. JSON keys drop the `_ns` suffix because the
/// enclosing key carries the unit (`"round_trip_ns": {"min": ..}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    #[serde(rename = "min")]
    pub min_ns: i64,
    /// Median (nearest rank).
    #[serde(rename = "p50")]
    pub p50_ns: i64,
    /// 90th percentile.
    #[serde(rename = "p90")]
    pub p90_ns: i64,
    /// 99th percentile.
    #[serde(rename = "p99")]
    pub p99_ns: i64,
    /// 99.9th percentile.
    #[serde(rename = "p999")]
    pub p999_ns: i64,
    /// Largest sample.
    #[serde(rename = "max")]
    pub max_ns: i64,
    /// Arithmetic mean.
    #[serde(rename = "mean")]
    pub mean_ns: f64,
    /// Log-spaced histogram, see [`histogram_sorted`].
    pub histogram: Vec<Bucket>,
}

/// Summarises samples (sorts a copy; the input order is left alone). `None` when empty.
pub fn summarize(samples: &[i64]) -> Option<Summary> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    summarize_sorted(&sorted)
}

/// Summarises an ascending slice.
pub fn summarize_sorted(sorted: &[i64]) -> Option<Summary> {
    let pct = |p| percentile_sorted(sorted, p);
    // i128 so that even 10^7 samples near i64::MAX cannot overflow the sum.
    let sum: i128 = sorted.iter().map(|&v| i128::from(v)).sum();
    Some(Summary {
        count: sorted.len(),
        min_ns: *sorted.first()?,
        p50_ns: pct(50.0)?,
        p90_ns: pct(90.0)?,
        p99_ns: pct(99.0)?,
        p999_ns: pct(99.9)?,
        max_ns: *sorted.last()?,
        mean_ns: sum as f64 / sorted.len() as f64,
        histogram: histogram_sorted(sorted),
    })
}

/// The bucket bounds of the 1-2-5 series (1, 2, 5, 10, 20, 50, ... ns): log-spaced, three per
/// decade, and numbers a reader recognises at a glance.
fn next_bound(b: i64) -> i64 {
    let mut decade = 1i64;
    while decade <= b / 10 {
        decade *= 10;
    }
    let next = match b / decade {
        0 => decade,
        1 => decade.saturating_mul(2),
        2..=4 => decade.saturating_mul(5),
        _ => decade.saturating_mul(10),
    };
    next.max(b.saturating_add(1))
}

/// A histogram of an ascending slice over 1-2-5 bounds, from the first bound at or above the
/// minimum to the first at or above the maximum, empty buckets in between included so the shape
/// reads right. Samples <= 0 (a window can be negative when the system clock steps) go into a
/// leading bucket with `le_ns` 0. Counts sum to the number of samples.
pub fn histogram_sorted(sorted: &[i64]) -> Vec<Bucket> {
    let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else { return Vec::new() };
    let mut bounds = Vec::new();
    if min <= 0 {
        bounds.push(0);
    }
    let mut b = 1i64;
    while b < min {
        b = next_bound(b);
    }
    if max > 0 {
        loop {
            bounds.push(b);
            if b >= max || b == i64::MAX {
                break;
            }
            b = next_bound(b);
        }
    }
    let mut buckets: Vec<Bucket> = bounds.into_iter().map(|le_ns| Bucket { le_ns, count: 0 }).collect();
    let mut i = 0;
    for &v in sorted {
        while buckets[i].le_ns < v {
            i += 1;
        }
        buckets[i].count += 1;
    }
    buckets
}

/// The mean of the values, or `None` for none.
pub fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_on_known_inputs() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&v, 10.0), Some(1));
        assert_eq!(percentile_sorted(&v, 11.0), Some(2));
        assert_eq!(percentile_sorted(&v, 50.0), Some(5));
        assert_eq!(percentile_sorted(&v, 90.0), Some(9));
        assert_eq!(percentile_sorted(&v, 99.0), Some(10));
        assert_eq!(percentile_sorted(&v, 100.0), Some(10));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 99.9), Some(7));
        let thousand: Vec<i64> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&thousand, 99.9), Some(999));
        assert_eq!(percentile_sorted(&thousand, 99.0), Some(990));
    }

    #[test]
    fn summary_of_known_inputs() {
        let s = summarize(&[30, 10, 20, 40]).unwrap();
        assert_eq!((s.min_ns, s.p50_ns, s.p90_ns, s.max_ns), (10, 20, 40, 40));
        assert_eq!(s.mean_ns, 25.0);
        assert_eq!(s.count, 4);
        assert_eq!(
            s.histogram,
            vec![
                Bucket { le_ns: 10, count: 1 },
                Bucket { le_ns: 20, count: 1 },
                Bucket { le_ns: 50, count: 2 },
            ]
        );
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn bounds_follow_the_1_2_5_series() {
        let mut b = 1;
        let mut seen = vec![];
        for _ in 0..8 {
            seen.push(b);
            b = next_bound(b);
        }
        assert_eq!(seen, [1, 2, 5, 10, 20, 50, 100, 200]);
        // Bounds that are not on the series move onto it.
        assert_eq!(next_bound(3), 5);
        assert_eq!(next_bound(7), 10);
    }

    #[test]
    fn non_positive_samples_land_in_the_zero_bucket() {
        let h = histogram_sorted(&[-5, 0, 3]);
        assert_eq!(
            h,
            vec![
                Bucket { le_ns: 0, count: 2 },
                Bucket { le_ns: 1, count: 0 },
                Bucket { le_ns: 2, count: 0 },
                Bucket { le_ns: 5, count: 1 }
            ]
        );
        assert_eq!(histogram_sorted(&[-3, -1]), vec![Bucket { le_ns: 0, count: 2 }]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn percentiles_are_monotone_and_bounded(
            mut v in prop::collection::vec(-1_000_000i64..1_000_000_000_000, 1..500),
            ps in prop::collection::vec(0.0f64..=100.0, 2..20),
        ) {
            v.sort_unstable();
            let mut ps = ps;
            ps.sort_by(f64::total_cmp);
            let values: Vec<i64> = ps.iter().map(|&p| percentile_sorted(&v, p).unwrap()).collect();
            prop_assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
            let s = summarize_sorted(&v).unwrap();
            prop_assert!(s.min_ns <= s.p50_ns && s.p50_ns <= s.p90_ns && s.p90_ns <= s.p99_ns);
            prop_assert!(s.p99_ns <= s.p999_ns && s.p999_ns <= s.max_ns);
            prop_assert!(s.mean_ns >= s.min_ns as f64 && s.mean_ns <= s.max_ns as f64);
            // Nearest rank: every percentile is one of the samples.
            prop_assert!(v.binary_search(&s.p50_ns).is_ok());
        }

        #[test]
        fn histogram_counts_sum_to_n_and_bounds_hold(
            v in prop::collection::vec(-1_000i64..10_000_000_000, 1..500),
        ) {
            let s = summarize(&v).unwrap();
            let h = &s.histogram;
            prop_assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), v.len() as u64);
            prop_assert!(h.windows(2).all(|w| w[0].le_ns < w[1].le_ns));
            prop_assert!(h.last().unwrap().le_ns >= s.max_ns);
            // Each sample sits in the first bucket whose bound is >= it.
            for &x in &v {
                let i = h.iter().position(|b| b.le_ns >= x).unwrap();
                prop_assert!(i == 0 || h[i - 1].le_ns < x);
            }
        }

        #[test]
        fn summarize_leaves_input_alone(v in prop::collection::vec(any::<i64>(), 0..50)) {
            let copy = v.clone();
            let _ = summarize(&v);
            prop_assert_eq!(v, copy);
        }
    }
}
