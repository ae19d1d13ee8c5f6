//! Thinning long offset series for files people open: per time bucket the observations with the
//! smallest and largest |offset| are kept (so spikes and recoveries stay visible), with every
//! change between readable and unreadable and the first and last observation. A simulated day
//! at 0.5 s is 172,800 observations; the plot draws a few thousand of them.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::model::observation::Observation;

/// report.json keeps series up to this many observations whole; longer ones are decimated
/// (unless `--full-series`).
pub const MAX_JSON_SERIES: usize = 5_000;

/// How a series was thinned (`series_decimated` in report.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decimation {
    /// Observations the run made.
    pub from: usize,
    /// Observations kept.
    pub to: usize,
    /// `minmax`: per time bucket, the smallest and largest |offset|.
    pub method: String,
    /// Time buckets.
    pub buckets: usize,
}

/// Indices of `values` (time, |value| or `None`) to keep with `buckets` time buckets over the
/// series' span: per bucket the smallest and largest value, every `None` that follows a value
/// or precedes one (the edges of gaps), and the first and last point. In time order.
pub fn minmax_indices(values: &[(f64, Option<f64>)], buckets: usize) -> Vec<usize> {
    let n = values.len();
    if n <= 2 * buckets.max(1) + 2 {
        return (0..n).collect();
    }
    let (t0, t1) = (values[0].0, values[n - 1].0);
    let span = (t1 - t0).max(f64::MIN_POSITIVE);
    let mut keep = vec![false; n];
    keep[0] = true;
    keep[n - 1] = true;
    // (index of min, index of max) per bucket.
    let mut best: Vec<Option<(usize, usize)>> = vec![None; buckets];
    for (i, (t, v)) in values.iter().enumerate() {
        let Some(v) = v else {
            let edge = i == 0 || i == n - 1 || values[i - 1].1.is_some() || values[i + 1].1.is_some();
            keep[i] |= edge;
            continue;
        };
        let frac = ((t - t0) / span).clamp(0.0, 1.0);
        // In 0..buckets by the clamp; the float-to-int conversion saturates.
        let b = ((frac * buckets as f64) as usize).min(buckets - 1);
        best[b] = Some(match best[b] {
            None => (i, i),
            Some((lo, hi)) => {
                let val = |k: usize| values[k].1.unwrap_or(0.0);
                (if *v < val(lo) { i } else { lo }, if *v > val(hi) { i } else { hi })
            }
        });
    }
    for (lo, hi) in best.into_iter().flatten() {
        keep[lo] = true;
        keep[hi] = true;
    }
    (0..n).filter(|&i| keep[i]).collect()
}

/// Decimates an offset series by |guest offset| (the PHC's offset follows the same indices),
/// keeping every observation with a PHC read error at a change of error. `None` when the
/// series is short enough to keep whole.
pub fn series(series: &[Observation], max: usize) -> Option<(Vec<Observation>, Decimation)> {
    if series.len() <= max {
        return None;
    }
    let buckets = (max / 2).max(1);
    let vals: Vec<(f64, Option<f64>)> =
        series.iter().map(|o| (o.t_s, o.guest_offset_ns.map(|v| v.unsigned_abs() as f64))).collect();
    let mut keep = vec![false; series.len()];
    for i in minmax_indices(&vals, buckets) {
        keep[i] = true;
    }
    for i in 1..series.len() {
        if series[i].phc_error != series[i - 1].phc_error {
            keep[i] = true;
            keep[i - 1] = true;
        }
    }
    let out: Vec<Observation> =
        series.iter().zip(&keep).filter(|(_, k)| **k).map(|(o, _)| o.clone()).collect();
    let d = Decimation { from: series.len(), to: out.len(), method: "minmax".into(), buckets };
    Some((out, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(t: f64, v: Option<i64>) -> Observation {
        Observation { t_s: t, guest_offset_ns: v, phc_offset_ns: None, phc_error: None }
    }

    #[test]
    fn keeps_spikes_gaps_and_ends() {
        let mut s: Vec<Observation> =
            (0..100_000).map(|i| obs(f64::from(i) * 0.5, Some(10 + i64::from(i % 7)))).collect();
        s[54_321].guest_offset_ns = Some(30_000_000_000);
        for o in &mut s[70_000..70_100] {
            o.guest_offset_ns = None;
        }
        let (d, info) = series(&s, 2_000).unwrap();
        assert_eq!(info.from, 100_000);
        assert!(d.len() <= 2_000 + 10, "{}", d.len());
        assert_eq!(d.len(), info.to);
        assert!(d.iter().any(|o| o.guest_offset_ns == Some(30_000_000_000)), "the spike survives");
        assert!(d.iter().any(|o| o.t_s == 35_000.0 && o.guest_offset_ns.is_none()), "the gap's first edge");
        assert!(d.iter().any(|o| o.t_s == 35_049.5 && o.guest_offset_ns.is_none()), "the gap's last edge");
        assert_eq!(d.first().unwrap().t_s, 0.0);
        assert_eq!(d.last().unwrap().t_s, s.last().unwrap().t_s);
        assert!(d.windows(2).all(|w| w[0].t_s < w[1].t_s), "time order");
        assert!(series(&s[..100], 2_000).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn decimation_keeps_order_ends_and_extremes(
            vals in proptest::collection::vec(proptest::option::weighted(0.95, -1_000_000_000i64..1_000_000_000), 3..3000),
            max in 4usize..400,
        ) {
            let s: Vec<Observation> = vals.iter().enumerate().map(|(i, v)| obs(i as f64 * 0.5, *v)).collect();
            match series(&s, max) {
                None => proptest::prop_assert!(s.len() <= max),
                Some((d, info)) => {
                    proptest::prop_assert_eq!(d.len(), info.to);
                    proptest::prop_assert!(d.windows(2).all(|w| w[0].t_s < w[1].t_s));
                    proptest::prop_assert_eq!(d.first().unwrap().t_s, 0.0);
                    proptest::prop_assert_eq!(d.last().unwrap().t_s, s.last().unwrap().t_s);
                    let peak = s.iter().filter_map(|o| o.guest_offset_ns).map(i64::unsigned_abs).max();
                    let kept = d.iter().filter_map(|o| o.guest_offset_ns).map(i64::unsigned_abs).max();
                    proptest::prop_assert_eq!(peak, kept);
                }
            }
        }
    }
}
