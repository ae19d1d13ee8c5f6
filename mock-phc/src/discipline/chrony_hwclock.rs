//! hwclock.c's model of the PHC against the system clock, as far as chrony 4.3's PHC refclock
//! leans on it: whether a poll whose readings all missed the delay window gives a sample.
//!
//! refclock_phc.c:155-163 combines a poll's readings in HCL_ProcessReadings and then feeds the
//! result to HCL_AccumulateSample (hwclock.c:243-303), a robust regression of PHC time on local
//! time over up to 16 samples (refclock_phc.c:77). Where no reading's delay lies between the first
//! and second deciles of the delays seen, hwclock.c:228-236 keeps the quickest reading only if
//! the regression is not valid yet, or if the local time it predicts for that reading's PHC time
//! lies more than the reading's error *before* the reading's own (the difference is signed:
//! `pred_err > *err`); otherwise the poll gives no sample, and the refclocks log has no line
//! with that poll's number. So a PHC that jumped forward against the system clock (the guest
//! restored behind the host, its PHC set to host time) loses every such poll until one with a
//! reading in the window resets the regression, and one that jumped back keeps them.
//!
//! The model fits a least-squares line instead of chrony's robust one, over the same samples:
//! the decisions it feeds (a prediction against a reading's error, a fit against the last
//! sample's error) are the same for samples whose noise is well inside their error.

use std::collections::VecDeque;

/// refclock_phc.c:77 `HCL_CreateInstance(0, 16, ...)`: at most 16 samples.
const MAX_SAMPLES: usize = 16;
/// hwclock.c:41: a regression needs two samples.
const MIN_SAMPLES: usize = 2;
/// hwclock.c:45: a fitted frequency further than this from 1 resets the model.
const MAX_FREQ_OFFSET: f64 = 2.0 / 3.0;

/// The model: samples of (local time, local time minus PHC time: the sign of chrony's offsets and
/// the sim's) since its last reset, in seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct HwClock {
    samples: VecDeque<(f64, f64)>,
    /// The fit through them (`valid_coefs`): offset at `x0` and slope.
    fit: Option<Fit>,
}

#[derive(Debug, Clone, Copy)]
struct Fit {
    x0: f64,
    y0: f64,
    slope: f64,
}

impl Fit {
    fn at(&self, x: f64) -> f64 {
        self.y0 + self.slope * (x - self.x0)
    }
}

impl HwClock {
    /// hwclock.c:228-236 for a poll whose readings all missed the window: whether its quickest
    /// reading, local minus PHC `y_s` at local time `x_s` with error `err_s`, is kept.
    pub(crate) fn keeps_outside_window(&self, x_s: f64, y_s: f64, err_s: f64) -> bool {
        match self.fit {
            None => true,
            // pred_err = local - HCL_CookTime(phc): the local time read less the one the model
            // gives the PHC's, which is the offset measured less the one predicted.
            Some(f) => y_s - f.at(x_s) > err_s,
        }
    }

    /// HCL_AccumulateSample: adds a sample and refits; a fit that misses the sample's error
    /// interval, or whose frequency is not sane, drops every sample (hwclock.c:288-295), as a
    /// PHC that went back does before the sample is added.
    pub(crate) fn accumulate(&mut self, x_s: f64, y_s: f64, err_s: f64) {
        // hwclock.c:262-265: a PHC (local less the offset) that did not move forward starts the
        // model again.
        if self.samples.back().is_some_and(|&(x, y)| (x_s - y_s) - (x - y) <= 0.0) {
            self.samples.clear();
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((x_s, y_s));
        self.fit = None;
        if self.samples.len() < MIN_SAMPLES {
            return;
        }
        let n = self.samples.len() as f64;
        let mx = self.samples.iter().map(|s| s.0).sum::<f64>() / n;
        let my = self.samples.iter().map(|s| s.1).sum::<f64>() / n;
        let sxx: f64 = self.samples.iter().map(|s| (s.0 - mx) * (s.0 - mx)).sum();
        let sxy: f64 = self.samples.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum();
        if sxx <= 0.0 {
            self.samples.clear();
            return;
        }
        let fit = Fit { x0: mx, y0: my, slope: sxy / sxx };
        if (fit.at(x_s) - y_s).abs() > err_s || fit.slope.abs() > MAX_FREQ_OFFSET {
            self.samples.clear();
            return;
        }
        self.fit = Some(fit);
    }

    /// chronyd changed the local clock (hwclock.c handle_slew): the samples are re-expressed
    /// against it, as the source's are.
    pub(crate) fn adjust(&mut self, now_s: f64, dfreq: f64, doffset_s: f64) {
        for s in &mut self.samples {
            s.1 += doffset_s + (s.0 - now_s) * dfreq;
        }
        if let Some(f) = &mut self.fit {
            f.y0 += doffset_s + (f.x0 - now_s) * dfreq;
            f.slope += dfreq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(n: usize) -> HwClock {
        let mut h = HwClock::default();
        for i in 0..n {
            h.accumulate(i as f64 * 0.25, 1e-6 + 1e-9 * i as f64, 50e-9);
        }
        h
    }

    #[test]
    fn no_fit_keeps_the_quickest_reading_and_a_fit_drops_it_unless_it_predicts_later() {
        assert!(HwClock::default().keeps_outside_window(0.0, 0.0, 1e-7), "no regression yet");
        let h = steady(8);
        let x = 8.0 * 0.25;
        let y = 1e-6 + 8e-9;
        assert!(!h.keeps_outside_window(x, y, 1e-7), "the prediction holds: dropped");
        // The PHC jumped 10 s forward: local minus PHC is 10 s below the prediction, pred_err is
        // -10 s, and the reading is dropped all the same (the signed test).
        assert!(!h.keeps_outside_window(x, y - 10.0, 1e-7));
        // 10 s back: pred_err is +10 s, kept.
        assert!(h.keeps_outside_window(x, y + 10.0, 1e-7));
    }

    #[test]
    fn a_jump_resets_the_fit_and_two_samples_make_a_new_one() {
        let mut h = steady(8);
        assert!(h.fit.is_some());
        // The PHC 10 s forward: local minus PHC 10 s down.
        h.accumulate(2.0, -10.0, 1e-7);
        assert!(h.fit.is_none(), "the fit misses the jumped sample's interval");
        assert!(h.keeps_outside_window(2.25, -10.0, 1e-7));
        h.accumulate(2.25, -10.0, 1e-7);
        assert!(h.fit.is_none(), "one sample makes no regression");
        h.accumulate(2.5, -10.0 + 1e-9, 1e-7);
        assert!(h.fit.is_some());
        assert!(!h.keeps_outside_window(2.75, -10.0 + 2e-9, 1e-7));
        // The PHC set 20 s back (local minus PHC up by 20 s): the model starts again from that
        // sample.
        h.accumulate(2.75, 10.0, 1e-7);
        assert!(h.fit.is_none());
        assert_eq!(h.samples.len(), 1);
    }

    #[test]
    fn chronyds_own_step_is_followed_not_taken_for_a_jump() {
        let mut h = steady(8);
        // chronyd steps the local clock 10 s forward: local minus PHC grows by 10 s.
        h.adjust(2.0, 0.0, 10.0);
        let (x, y) = (2.0, 1e-6 + 8e-9 + 10.0);
        assert!(!h.keeps_outside_window(x, y, 1e-7));
        h.accumulate(x, y, 1e-7);
        assert!(h.fit.is_some(), "no reset");
    }
}
