//! chrony's statistics on one source, after samplefilt.c (the median filter a refclock's samples
//! pass through), regress.c (weighted regression with the runs test) and sourcestats.c (the
//! sample register, weights, and the estimates selection and tracking use).
//! Offsets here are local minus reference (positive: the guest is ahead); times are the guest's.

/// One sample: when (local time), how far off, how uncertain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) time_s: f64,
    pub(crate) offset_s: f64,
    pub(crate) disp_s: f64,
}

/// refclock.c combines the 60% of samples closest to the median.
const COMBINE_RATIO: f64 = 0.6;
/// sourcestats.c: at most 64 samples; regress.c: runs test over up to twice as many.
const MAX_SAMPLES: usize = 64;
const RUNS_RATIO: usize = 2;
const MIN_SAMPLES_FOR_REGRESS: usize = 3;
/// `minsamples` default (conf.c:169): the regression never prunes the register below it
/// (regress.c:284-286). A source's `minsamples` option sets it (`ChronyConfig::min_samples`).
pub const MIN_SAMPLES: usize = 6;
const SD_TO_DIST_RATIO: f64 = 0.7;
const MIN_SKEW: f64 = 1.0e-12;
const MAX_SKEW: f64 = 1.0e2;
const MIN_STDDEV: f64 = 1.0e-9;
const WORST_CASE_FREQ_BOUND: f64 = 2000.0 / 1.0e6;

/// regress.c's critical number of runs (5% region) by sample count.
const CRITICAL_RUNS: [u8; 130] = [
    0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 7, 8, 8, 9, 9, 9, 10, 10, 11, 11, 11, 12,
    12, 13, 13, 14, 14, 14, 15, 15, 16, 16, 17, 17, 18, 18, 18, 19, 19, 20, 20, 21, 21, 21, 22, 22, 23, 23,
    24, 24, 25, 25, 26, 26, 26, 27, 27, 28, 28, 29, 29, 30, 30, 30, 31, 31, 32, 32, 33, 33, 34, 34, 35, 35,
    35, 36, 36, 37, 37, 38, 38, 39, 39, 40, 40, 40, 41, 41, 42, 42, 43, 43, 44, 44, 45, 45, 46, 46, 46, 47,
    47, 48, 48, 49, 49, 50, 50, 51, 51, 52, 52, 52, 53, 53, 54, 54, 55, 55, 56,
];

/// Student's t at 99.95% by degrees of freedom (regress.c RGR_GetTCoef).
fn t_coef(dof: usize) -> f64 {
    const COEFS: [f64; 40] = [
        636.6, 31.6, 12.92, 8.61, 6.869, 5.959, 5.408, 5.041, 4.781, 4.587, 4.437, 4.318, 4.221, 4.140,
        4.073, 4.015, 3.965, 3.922, 3.883, 3.850, 3.819, 3.792, 3.768, 3.745, 3.725, 3.707, 3.690, 3.674,
        3.659, 3.646, 3.633, 3.622, 3.611, 3.601, 3.591, 3.582, 3.574, 3.566, 3.558, 3.551,
    ];
    if dof == 0 {
        COEFS[0]
    } else if dof <= 40 {
        COEFS[dof - 1]
    } else {
        3.5
    }
}

/// 90% quantile of chi-square by degrees of freedom (regress.c RGR_GetChi2Coef).
fn chi2_coef(dof: usize) -> f64 {
    const COEFS: [f64; 64] = [
        2.706, 4.605, 6.251, 7.779, 9.236, 10.645, 12.017, 13.362, 14.684, 15.987, 17.275, 18.549, 19.812,
        21.064, 22.307, 23.542, 24.769, 25.989, 27.204, 28.412, 29.615, 30.813, 32.007, 33.196, 34.382,
        35.563, 36.741, 37.916, 39.087, 40.256, 41.422, 42.585, 43.745, 44.903, 46.059, 47.212, 48.363,
        49.513, 50.660, 51.805, 52.949, 54.090, 55.230, 56.369, 57.505, 58.641, 59.774, 60.907, 62.038,
        63.167, 64.295, 65.422, 66.548, 67.673, 68.796, 69.919, 71.040, 72.160, 73.279, 74.397, 75.514,
        76.630, 77.745, 78.860,
    ];
    if dof == 0 {
        COEFS[0]
    } else if dof <= 64 {
        COEFS[dof - 1]
    } else {
        1.2 * dof as f64
    }
}

/// A weighted least-squares line; `w` are variances (large: less reliable), as in regress.c.
struct Fit {
    b0: f64,
    b1: f64,
    /// Weighted residual sum, divided by n - 2.
    ss: f64,
    u: f64,
    v: f64,
    w_sum: f64,
}

/// Fits `pts` (x, y) with variances `w`.
fn fit(pts: &[(f64, f64)], w: &[f64]) -> Fit {
    let w_sum: f64 = w.iter().map(|w| 1.0 / w).sum();
    let u = pts.iter().zip(w).map(|((x, _), w)| x / w).sum::<f64>() / w_sum;
    let (mut p, mut q, mut v) = (0.0, 0.0, 0.0);
    for ((x, y), w) in pts.iter().zip(w) {
        let ui = x - u;
        p += y / w;
        q += y * ui / w;
        v += ui * ui / w;
    }
    let b1 = if v > 0.0 { q / v } else { 0.0 };
    let b0 = p / w_sum - b1 * u;
    let n = pts.len();
    let ss = pts.iter().zip(w).map(|((x, y), w)| (y - b0 - b1 * x).powi(2) / w).sum::<f64>()
        / (n.saturating_sub(2).max(1)) as f64;
    Fit { b0, b1, ss, u, v, w_sum }
}

impl Fit {
    fn sb1(&self) -> f64 {
        if self.v > 0.0 {
            (self.ss / self.v).sqrt()
        } else {
            MAX_SKEW
        }
    }
    fn sb0(&self) -> f64 {
        let aa = self.u * self.sb1();
        (self.ss / self.w_sum + aa * aa).sqrt()
    }
}

/// An integer whose order is f64::total_cmp's (the sign bit flips the rest for negatives).
fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// Runs of residuals of `f` over `pts` (regress.c n_runs_from_residuals): a new run starts
/// unless two neighbours are both negative or both positive.
fn n_runs(pts: &[(f64, f64)], f: &Fit) -> usize {
    let mut runs = 1;
    let mut prev: Option<f64> = None;
    for &(x, y) in pts {
        let r = y - f.b0 - f.b1 * x;
        if let Some(p) = prev {
            if !((p < 0.0 && r < 0.0) || (p > 0.0 && r > 0.0)) {
                runs += 1;
            }
        }
        prev = Some(r);
    }
    runs
}

/// samplefilt.c: collects a poll's worth of samples and turns them into one.
#[derive(Debug, Clone)]
pub(crate) struct MedianFilter {
    max_samples: usize,
    min_samples: usize,
    samples: Vec<Sample>,
    avg_var: f64,
    avg_var_n: usize,
    /// Scratch for `take`, kept to spare the hot path its allocations.
    idx: Vec<usize>,
    keyed: Vec<(i64, usize)>,
    pts: Vec<(f64, f64)>,
    w: Vec<f64>,
}

impl MedianFilter {
    pub(crate) fn new(length: usize, precision_s: f64) -> Self {
        let max_samples = length.clamp(1, 256);
        Self {
            max_samples,
            min_samples: max_samples.min(4),
            samples: Vec::with_capacity(max_samples),
            avg_var: precision_s * precision_s,
            avg_var_n: 0,
            idx: Vec::with_capacity(max_samples),
            keyed: Vec::with_capacity(max_samples),
            pts: Vec::with_capacity(max_samples),
            w: Vec::with_capacity(max_samples),
        }
    }

    pub(crate) fn add(&mut self, s: Sample) {
        if self.samples.last().is_some_and(|last| last.time_s >= s.time_s) {
            return;
        }
        if self.samples.len() == self.max_samples {
            self.samples.remove(0);
        }
        self.samples.push(s);
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// The clock was changed: re-express stored samples against the new clock.
    pub(crate) fn adjust(&mut self, now_s: f64, dfreq: f64, doffset_s: f64) {
        for s in &mut self.samples {
            s.offset_s += doffset_s + (s.time_s - now_s) * dfreq;
        }
    }

    /// SPF_GetFilteredSample: the mean of the samples closest to the median, with a dispersion
    /// from a line fitted through them; the filter is emptied.
    pub(crate) fn take(&mut self) -> Option<Sample> {
        let n_all = self.samples.len();
        if n_all < self.min_samples {
            return None;
        }
        let mut idx = std::mem::take(&mut self.idx);
        idx.clear();
        if n_all > 4 {
            let min_disp = self.samples.iter().map(|s| s.disp_s).fold(f64::INFINITY, f64::min);
            idx.extend((0..n_all).filter(|&i| self.samples[i].disp_s <= 1.5 * min_disp));
        }
        if idx.len() < 4 {
            idx.clear();
            idx.extend(0..n_all);
        }
        // samplefilt.c:199-215 sorts by chrony's offset, reference minus local: ours with the sign
        // turned, so descending here. glibc's qsort is a stable merge sort for arrays this small,
        // and equal offsets (a noise-free PHC, a jump) stay in time order: which of them the
        // 60% keeps depends on the direction, and with it the filtered sample's time and
        // dispersion (a real chronyd kept the readings on either side of a jump). The index
        // breaks ties, which makes the unstable sort a stable one.
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        keyed.extend(idx.iter().map(|&i| (!total_order_key(self.samples[i].offset_s), i)));
        keyed.sort_unstable();
        idx.clear();
        idx.extend(keyed.iter().map(|&(_, i)| i));
        self.keyed = keyed;
        let j = idx.len();
        let from =
            if j > 2 { ((j as f64 * (1.0 - COMBINE_RATIO) / 2.0) as usize).clamp(1, (j - 1) / 2) } else { 0 };
        idx.truncate(j - from);
        idx.drain(..from);
        idx.sort_unstable();
        let out = self.combine(&idx);
        self.idx = idx;
        self.samples.clear();
        out
    }

    /// Combines the samples at `sel` (indices in time order).
    fn combine(&mut self, sel: &[usize]) -> Option<Sample> {
        let n = sel.len();
        let last = self.samples[sel[n - 1]];
        let (mut sum_x, mut sum_y) = (0.0, 0.0);
        for &i in sel {
            sum_x += self.samples[i].time_s - last.time_s;
            sum_y += self.samples[i].offset_s;
        }
        let mean_x = sum_x / n as f64;
        let mean_y = sum_y / n as f64;
        let (mut var, mut disp, dof) = if n >= 4 {
            self.pts.clear();
            self.w.clear();
            for &i in sel {
                let s = self.samples[i];
                self.pts.push((s.time_s - last.time_s - mean_x, s.offset_s));
                self.w.push(s.disp_s.max(1e-12));
            }
            let f = fit(&self.pts, &self.w);
            (f.ss * n as f64 / f.w_sum, f.sb0(), n - 2)
        } else if n >= 2 {
            let var = sel.iter().map(|&i| (self.samples[i].offset_s - mean_y).powi(2)).sum::<f64>()
                / (n - 1) as f64;
            (var, var.sqrt(), n - 1)
        } else {
            (self.avg_var, self.avg_var.sqrt(), 1)
        };
        if var < 1e-20 {
            var = 1e-20;
            disp = var.sqrt();
        }
        let mut prev_avg_var = self.avg_var;
        // An exponential moving average of the variance, quick to start.
        if self.avg_var_n > 50 {
            self.avg_var += dof as f64 / (dof as f64 + 50.0) * (var - self.avg_var);
        } else {
            self.avg_var =
                (self.avg_var * self.avg_var_n as f64 + var * dof as f64) / (dof + self.avg_var_n) as f64;
            if self.avg_var_n == 0 {
                prev_avg_var = self.avg_var;
            }
            self.avg_var_n += dof;
        }
        // chrony trusts the long-term variance unless this batch is clearly better; this is
        // what keeps a source unselectable for a while after a jump passed through the filter.
        if var * dof as f64 / chi2_coef(dof) < prev_avg_var {
            disp = self.avg_var.sqrt() * disp / var.sqrt();
        }
        let mean_disp = sel.iter().map(|&i| self.samples[i].disp_s).sum::<f64>() / n as f64;
        Some(Sample { time_s: last.time_s + mean_x, offset_s: mean_y, disp_s: disp.max(mean_disp) })
    }
}

/// sourcestats.c: the register of filtered samples and the regression over it.
#[derive(Debug, Clone)]
pub(crate) struct SourceStats {
    /// The fewest samples the regression keeps (`minsamples`).
    min_samples: usize,
    samples: Vec<Sample>,
    /// Older samples the regression dropped, kept to extend the runs test.
    runs: Vec<Sample>,
    precision_s: f64,
    pub(crate) regression_ok: bool,
    pub(crate) freq: f64,
    pub(crate) freq_sd: f64,
    pub(crate) skew: f64,
    pub(crate) offset_s: f64,
    pub(crate) offset_time_s: f64,
    pub(crate) offset_sd_s: f64,
    pub(crate) std_dev_s: f64,
    best: usize,
    /// Scratch for `regress`, kept to spare the hot path its allocations.
    pts: Vec<(f64, f64)>,
    w: Vec<f64>,
    sorted: Vec<f64>,
}

/// What source selection looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selection {
    /// The offset now, from the best sample and the estimated frequency: the middle of the
    /// source's interval (sourcestats.c SST_GetSelectionData).
    pub(crate) offset_s: f64,
    pub(crate) root_distance_s: f64,
    pub(crate) std_dev_s: f64,
    pub(crate) select_ok: bool,
    /// How long ago the register's oldest and newest samples were taken.
    pub(crate) first_sample_ago_s: f64,
    pub(crate) last_sample_ago_s: f64,
}

impl SourceStats {
    pub(crate) fn new(precision_s: f64, min_samples: usize) -> Self {
        Self {
            min_samples,
            samples: Vec::new(),
            runs: Vec::new(),
            precision_s,
            regression_ok: false,
            freq: 0.0,
            freq_sd: WORST_CASE_FREQ_BOUND,
            skew: WORST_CASE_FREQ_BOUND,
            offset_s: 0.0,
            offset_time_s: 0.0,
            offset_sd_s: 0.0,
            std_dev_s: 4.0,
            best: 0,
            pts: Vec::with_capacity(MAX_SAMPLES * RUNS_RATIO),
            w: Vec::with_capacity(MAX_SAMPLES),
            sorted: Vec::with_capacity(MAX_SAMPLES),
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.precision_s, self.min_samples);
    }

    pub(crate) fn accumulate(&mut self, s: Sample) {
        if self.samples.len() == MAX_SAMPLES {
            self.prune(1);
        }
        if self.samples.last().is_some_and(|last| last.time_s >= s.time_s) {
            self.reset();
        }
        self.samples.push(s);
    }

    fn prune(&mut self, k: usize) {
        let k = k.min(self.samples.len());
        self.runs.extend(self.samples.drain(..k));
        let keep = self.samples.len() * (RUNS_RATIO - 1);
        if self.runs.len() > keep {
            let extra = self.runs.len() - keep;
            self.runs.drain(..extra);
        }
    }

    /// The clock was changed: re-express the register against the new clock.
    pub(crate) fn adjust(&mut self, now_s: f64, dfreq: f64, doffset_s: f64) {
        for s in self.samples.iter_mut().chain(self.runs.iter_mut()) {
            s.offset_s += doffset_s + (s.time_s - now_s) * dfreq;
        }
        self.offset_s += doffset_s + (self.offset_time_s - now_s) * dfreq;
        self.freq += dfreq;
    }

    /// SST_DoNewRegression.
    pub(crate) fn regress(&mut self) {
        let n = self.samples.len();
        if n == 0 {
            return;
        }
        let last_t = self.samples[n - 1].time_s;
        let min_d = self.samples.iter().map(|s| s.disp_s).fold(f64::INFINITY, f64::min);
        self.sorted.clear();
        self.sorted.extend(self.samples.iter().map(|s| s.disp_s));
        // The median (RGR_FindMedian): the middle one, or the mean of the middle two.
        let (below, &mut upper, _) = self.sorted.select_nth_unstable_by(n / 2, f64::total_cmp);
        let median = if n % 2 == 1 {
            upper
        } else {
            0.5 * (upper + below.iter().copied().fold(f64::NEG_INFINITY, f64::max))
        };
        let sd = ((median - min_d) / SD_TO_DIST_RATIO).max(self.precision_s).min(min_d.max(self.precision_s));
        let min_d = min_d + self.precision_s;
        self.w.clear();
        self.w.extend(self.samples.iter().map(|s| {
            let d = s.disp_s;
            if d > min_d {
                (1.0 + (d - min_d) / sd).powi(2)
            } else {
                1.0
            }
        }));

        if n >= MIN_SAMPLES_FOR_REGRESS {
            // All samples, the runs extension first, as x (time back from the last) and y.
            self.pts.clear();
            self.pts.extend(self.runs.iter().chain(&self.samples).map(|s| (s.time_s - last_t, s.offset_s)));
            let (all, w) = (&self.pts, &self.w);
            let m = self.runs.len();
            let mut start = 0;
            let f = loop {
                let f = fit(&all[m + start..], &w[start..]);
                let resid_start = (m + start).saturating_sub((n - start) * (RUNS_RATIO - 1));
                let resid = &all[resid_start..];
                let runs = n_runs(resid, &f);
                if runs > CRITICAL_RUNS[resid.len().min(CRITICAL_RUNS.len() - 1)] as usize
                    || n - start <= MIN_SAMPLES_FOR_REGRESS
                    || n - start <= self.min_samples
                {
                    break f;
                }
                start += 1;
            };
            let npoints = n - start;
            let dof = npoints - 2;
            self.regression_ok = true;
            self.freq = f.b1;
            self.freq_sd = f.sb1().clamp(MIN_SKEW, MAX_SKEW);
            self.skew = (f.sb1() * t_coef(dof)).clamp(MIN_SKEW, MAX_SKEW);
            self.offset_s = f.b0;
            self.offset_time_s = last_t;
            self.offset_sd_s = f.sb0();
            self.std_dev_s = (f.ss * npoints as f64 / f.w_sum).sqrt().max(MIN_STDDEV);
            self.prune(start);
        } else {
            self.regression_ok = false;
            self.freq = 0.0;
            self.freq_sd = WORST_CASE_FREQ_BOUND;
            self.skew = WORST_CASE_FREQ_BOUND;
        }
        // The sample giving the tightest bound on root distance with this skew.
        let last_t = self.samples[self.samples.len() - 1].time_s;
        self.best = (0..self.samples.len())
            .min_by(|&a, &b| {
                let d = |i: usize| self.samples[i].disp_s + (last_t - self.samples[i].time_s) * self.skew;
                d(a).total_cmp(&d(b))
            })
            .unwrap_or(0);
    }

    /// Samples in the register (SST_Samples).
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// SST_PredictOffset at `time_s` (sourcestats.c:814-833): the regression's offset, or with
    /// fewer than 3 samples the last one's (0 without any).
    pub(crate) fn predict(&self, time_s: f64) -> f64 {
        if self.samples.len() < MIN_SAMPLES_FOR_REGRESS {
            self.samples.last().map_or(0.0, |s| s.offset_s)
        } else {
            self.offset_s + (time_s - self.offset_time_s) * self.freq
        }
    }

    /// SST_GetSelectionData at local time `now_s`.
    pub(crate) fn selection(&self, now_s: f64) -> Option<Selection> {
        let s = self.samples.get(self.best)?;
        let elapsed = (now_s - s.time_s).abs();
        Some(Selection {
            offset_s: s.offset_s + (now_s - s.time_s) * self.freq,
            first_sample_ago_s: self.samples.first().map_or(0.0, |f| now_s - f.time_s),
            last_sample_ago_s: self.samples.last().map_or(0.0, |l| now_s - l.time_s),
            root_distance_s: s.disp_s + elapsed * self.skew,
            std_dev_s: self.std_dev_s,
            select_ok: self.regression_ok,
        })
    }
}
