//! The noise chronyd works with, estimated the same way from the sim's model and from the real
//! chronyd's logs, so that a sim run can be given the noise a real guest shows. Whether old
//! samples survive a jump in chronyd's regression turns on the runs test over their residuals
//! (regress.c:283), so how far a recovery time can move from run to run rests on this noise; the
//! fidelity judgement (harness `ensemble::fidelity`) runs the sim at the guest's.
//!
//! Two figures. **The regression's standard deviation** (`Std dev'n` in the statistics log,
//! sourcestats.c's `sqrt(variance)`): the median over the first `REGRESSIONS` regressions. It is
//! what the runs test sees: the scatter of the filtered samples about the fit, at the poll's
//! scale, slow noise included (the mock's 5 s sawtooth, the host's timing). **The sample noise**
//! (the refclocks log's raw offsets): the robust standard deviation (1.4826 x the median absolute deviation) of the
//! second differences of successive raw offsets, divided by sqrt(6) (white noise of sd s gives
//! second differences of variance 6 s^2). Second differences take out a constant offset and a
//! constant slew; steps and frequency changes are a few outliers the median ignores. Samples more
//! than `MAX_OFFSET_S` off are left out: chronyd prints 7 significant digits, so a 30 s offset is
//! read to 1 us.
#![forbid(unsafe_code)]

/// How many samples from the start of a run the estimate uses (512 s at `dpoll -2`): the warm-up
/// of the shipped scenarios, and what the guest agent reads of a log (its 256 KiB cap).
pub const SAMPLES: usize = 2048;
/// Samples further off than this are left out (see the module's comment).
pub const MAX_OFFSET_S: f64 = 1e-3;
/// Fewer second differences than this give no estimate.
const MIN_DIFFERENCES: usize = 16;
/// How many regressions from the start of a run the regression's figure uses (512 s at `poll 3`).
pub const REGRESSIONS: usize = 64;
/// Fewer regressions than this give no figure.
const MIN_REGRESSIONS: usize = 8;

/// The two figures, ns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    /// The read noise of one sample (`estimate_ns`).
    pub sample_ns: Option<f64>,
    /// The median standard deviation of the regression (`regression_sd_ns`).
    pub regression_sd_ns: Option<f64>,
    /// The share of the refclock's PHC polls that gave chronyd no sample (hwclock.c dropped the
    /// poll, `chrony_hwclock`), where known.
    pub dropped_share: Option<f64>,
}

impl Noise {
    /// Both figures from raw offsets and regression standard deviations, seconds, in time order.
    pub fn new(raw_offsets_s: &[f64], regression_sds_s: &[f64]) -> Self {
        Self {
            sample_ns: estimate_ns(raw_offsets_s),
            regression_sd_ns: regression_sd_ns(regression_sds_s),
            dropped_share: None,
        }
    }
}

/// The median of the first `REGRESSIONS` standard deviations (seconds), ns; None with fewer
/// than `MIN_REGRESSIONS`.
pub fn regression_sd_ns(sds_s: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = sds_s.iter().take(REGRESSIONS).copied().filter(|v| v.is_finite()).collect();
    if v.len() < MIN_REGRESSIONS {
        return None;
    }
    Some(median(&mut v) * 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The noise of one sample, ns, from raw offsets in seconds in time order (only the first
/// `SAMPLES` are used); None with too few usable samples.
pub fn estimate_ns(offsets_s: &[f64]) -> Option<f64> {
    let x = &offsets_s[..offsets_s.len().min(SAMPLES)];
    let mut d2: Vec<f64> = x
        .windows(3)
        .filter(|w| w.iter().all(|v| v.is_finite() && v.abs() <= MAX_OFFSET_S))
        .map(|w| w[2] - 2.0 * w[1] + w[0])
        .collect();
    if d2.len() < MIN_DIFFERENCES {
        return None;
    }
    let m = median(&mut d2);
    let mut dev: Vec<f64> = d2.iter().map(|d| (d - m).abs()).collect();
    let sd = 1.4826 * median(&mut dev);
    Some(sd / 6f64.sqrt() * 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
        // Box-Muller.
        let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    #[test]
    fn white_noise_is_found_through_an_offset_a_slew_and_a_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let sd = 30e-9;
        let x: Vec<f64> = (0..SAMPLES)
            .map(|i| {
                let t = i as f64 * 0.25;
                let step = if i > 1000 { 200e-6 } else { 0.0 };
                -50e-6 + 1e-6 * t + step + sd * gaussian(&mut rng)
            })
            .collect();
        let est = estimate_ns(&x).unwrap();
        assert!((est - 30.0).abs() < 3.0, "estimated {est} ns for 30 ns");
    }

    #[test]
    fn the_regression_figure_is_the_median_of_the_first_ones() {
        let mut sds = vec![40e-9; 20];
        sds.extend([2.0, 3.0, 1e-9]);
        assert!((regression_sd_ns(&sds).unwrap() - 40.0).abs() < 1e-9);
        sds.extend(vec![1.0; REGRESSIONS]);
        assert!((regression_sd_ns(&sds).unwrap() - 1e9).abs() < 1e-6, "only the first {REGRESSIONS} count");
        assert_eq!(regression_sd_ns(&[40e-9; 7]), None);
    }

    #[test]
    fn far_offsets_and_short_runs_give_nothing() {
        assert_eq!(estimate_ns(&[30.0; 100]), None);
        assert_eq!(estimate_ns(&[0.0; 10]), None);
        // Samples past SAMPLES are not read: noise only there is not seen.
        let mut x = vec![0.0; SAMPLES];
        x.extend((0..SAMPLES).map(|i| if i % 2 == 0 { 1e-6 } else { -1e-6 }));
        assert_eq!(estimate_ns(&x), Some(0.0));
    }
}
