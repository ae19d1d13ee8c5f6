//! Repeated runs of one scenario (`run --repeat N`: seeds s, s+1, ...): each backend's
//! distribution of every recovery metric and the shares of its outcomes, and sim against QEMU
//! judged on the distributions rather than one draw each.
//!
//! Judging, row by row over the fidelity rows that are judged (`fidelity::compare` pairs the
//! runs of one seed, which fixes each row's value and tolerance the same way for one run):
//! - a number: the medians within the row's tolerance (the median of the pairs' tolerances),
//!   and every real run inside the sim's range widened by that tolerance;
//! - a class (step count, step direction: tolerance 0): every real class present among the
//!   sim's runs, the shares shown side by side;
//! - never (a time not reached): counted apart; a real never needs a sim never, and medians
//!   are of the runs that reached it.
//!
//! For time rows a rank-sum test of the two sides' poll counts is shown beside (not judged).
//!
//! `k/N` is the number of real runs inside on every judged row. With one real run (N = 1) the
//! run is one draw, labelled weak evidence: inside where it falls in the sim's central 80% (p10
//! to p90) widened by the tolerance; in the tail where it falls outside that but inside the sim's
//! range (min to max) widened by the tolerance, which still agrees: a draw from a distribution
//! lands outside its central 80% one time in five, and a verdict that said so would call one
//! real run in five of a faithful sim a disagreement (measured: resume-without-sync's real
//! chronyd first corrected 113.5 s after the resume in one CI run, against an ensemble whose
//! p90 was 81.3 s in that run and 105.3 s in another; the ensemble itself had runs at 113-129 s).
//! Outside the sim's range it disagrees.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::judge::fidelity::{self, Fidelity};
use crate::judge::report::{Report, Verdict};

/// One metric over a backend's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Runs with a value.
    pub n: usize,
    /// Runs without one (a time never reached, no step).
    pub never: usize,
    /// Median, 10th and 90th percentile (nearest rank), minimum and maximum of the values.
    pub median: Option<f64>,
    /// 10th percentile.
    pub p10: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

impl Stat {
    /// The statistics of `values` (None: never).
    pub fn of(values: &[Option<f64>]) -> Self {
        let mut v: Vec<f64> = values.iter().flatten().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            // Nearest rank.
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            Some(v[i])
        };
        let median = match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        };
        Self {
            n: v.len(),
            never: values.len() - v.len(),
            median,
            p10: at(0.1),
            p90: at(0.9),
            min: v.first().copied(),
            max: v.last().copied(),
        }
    }
}

/// How many runs fell in one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The class (`1` step, `step`, `pass`, ...).
    pub class: String,
    /// Runs in it.
    pub count: usize,
}

fn shares(values: impl IntoIterator<Item = String>) -> Vec<Share> {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        *m.entry(v).or_default() += 1;
    }
    m.into_iter().map(|(class, count)| Share { class, count }).collect()
}

/// The confidence interval of the median of `values`' numbers by order statistics: the k-th
/// smallest to the k-th largest, k the largest with P(Binomial(n, 1/2) < k) <= 5%, so it holds
/// the true median at least 90% of the time (five runs: their min to max, 93.8%). None without
/// numbers. Five runs of a scenario whose first correction scatters over polls put their median
/// anywhere in that scatter: `resume-without-sync` gave 73.5 s in one set of five real runs and
/// 57.5 s over 48, where the sim's is 57.2 s.
pub fn median_interval(values: &[Option<f64>]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().flatten().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // P(Binomial(n, 1/2) <= j), summed term by term.
    // k = j + 1 for the largest j with P(X <= j) <= 5%; at least 1 (min to max), at most the
    // middle.
    let mut k = 1;
    let (mut below, mut term) = (0.0, 0.5f64.powi(n as i32));
    for j in 0..n.div_ceil(2) {
        below += term;
        if below > 0.05 {
            break;
        }
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    Some((v[k - 1], v[n - k]))
}

/// One backend's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    /// Backend.
    pub backend: String,
    /// The seeds, in run order.
    pub seeds: Vec<u64>,
    /// Verdicts.
    pub verdicts: Vec<Share>,
    /// Step counts after the disturbance.
    pub steps: Vec<Share>,
    /// How the error was corrected.
    pub correction: Vec<Share>,
    /// Every recovery metric, in the baselines' order.
    pub metrics: Vec<NamedStat>,
}

/// A metric's statistics, with its (baseline) name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedStat {
    /// The metric.
    pub metric: String,
    /// Over the runs.
    #[serde(flatten)]
    pub stat: Stat,
}

/// The recovery metrics of a run by their baseline names.
fn metrics_of(r: &Report) -> Vec<(&'static str, Option<f64>)> {
    let rec = &r.recovery;
    let within = |k: &str| rec.time_to_within_s.get(k).copied().flatten();
    vec![
        ("offset_after_disturbance_s", rec.offset_after_disturbance_ns.map(|v| v as f64 / 1e9)),
        ("time_to_first_correction_s", rec.time_to_first_correction_s),
        ("time_to_within_1ms_s", within("1ms")),
        ("time_to_within_100us_s", within("100us")),
        ("time_to_within_1us_s", within("1us")),
        ("steps", Some(rec.steps.len() as f64)),
        ("slew_duration_s", rec.slew_duration_s),
        ("max_abs_offset_s", Some(rec.max_abs_offset_ns as f64 / 1e9)),
        ("rms_after_recovery_ns", rec.rms_after_recovery_ns),
    ]
}

impl Side {
    /// The distribution of `runs` (one backend's, any order).
    pub fn of(runs: &[&Report]) -> Self {
        let mut metrics: Vec<(&'static str, Vec<Option<f64>>)> = Vec::new();
        for r in runs {
            for (i, (k, v)) in metrics_of(r).into_iter().enumerate() {
                if metrics.len() <= i {
                    metrics.push((k, Vec::new()));
                }
                metrics[i].1.push(v);
            }
        }
        let verdict = |v: Verdict| {
            match v {
                Verdict::Pass => "pass",
                Verdict::Fail => "fail",
                Verdict::NoChecks => "no_checks",
                Verdict::Aborted => "aborted",
            }
            .to_owned()
        };
        Self {
            backend: runs.first().map(|r| r.backend.clone()).unwrap_or_default(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            verdicts: shares(runs.iter().map(|r| verdict(r.verdict))),
            steps: shares(runs.iter().map(|r| r.recovery.steps.len().to_string())),
            correction: shares(runs.iter().map(|r| format!("{:?}", r.recovery.correction).to_lowercase())),
            metrics: metrics
                .into_iter()
                .map(|(k, v)| NamedStat { metric: k.to_owned(), stat: Stat::of(&v) })
                .collect(),
        }
    }
}

/// One fidelity row judged on the distributions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    /// The fidelity row's metric.
    pub metric: String,
    /// The sim's runs.
    pub sim: Stat,
    /// The real runs.
    pub qemu: Stat,
    /// For a class row: the shares of each side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<(Vec<Share>, Vec<Share>)>,
    /// The tolerance (the median of the pairs').
    pub tolerance: f64,
    /// The medians within it (class rows: every real class among the sim's).
    pub medians_agree: bool,
    /// Real runs inside the sim's range (widened by the tolerance), or of its classes; one real
    /// run (weak): inside the sim's central 80% widened by the tolerance.
    pub inside: usize,
    /// One real run (weak) only: 1 where it fell outside the sim's central 80% but inside its
    /// range, both widened by the tolerance (a draw from the sim's tail, which agrees).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tail: usize,
    /// Real runs.
    pub runs: usize,
    /// For a time row: the two-sided p of a rank-sum (Mann-Whitney) test between the two sides'
    /// values in whole poll intervals (the runs test decides by polls; the guest sees each poll
    /// a fraction of a second later than the sim). Shown, not judged: below `SHIFT_P` the real
    /// runs sit a poll or more one way of the sim's, though each lies inside its range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_p: Option<f64>,
    /// The row agrees.
    pub agrees: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Below this rank-sum p the two sides' times are told apart (`Judged::shift_p`, shown).
pub const SHIFT_P: f64 = 0.05;
/// The fewest runs on each side the rank-sum test is made with.
const SHIFT_MIN_RUNS: usize = 4;

/// The two-sided p of the Mann-Whitney U test of `a` against `b` (normal approximation with the
/// tie correction and a continuity correction); None with fewer than `SHIFT_MIN_RUNS` on a side,
/// or with every value tied.
pub fn rank_sum_p(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len(), b.len());
    if n1 < SHIFT_MIN_RUNS || n2 < SHIFT_MIN_RUNS {
        return None;
    }
    let mut all: Vec<(f64, bool)> =
        a.iter().map(|v| (*v, true)).chain(b.iter().map(|v| (*v, false))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    // Mid-ranks over ties, and the ties' correction term sum(t^3 - t).
    let (mut r1, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        r1 += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = r1 - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    Some((2.0 * (1.0 - normal_cdf(z))).clamp(0.0, 1.0))
}

/// The standard normal distribution function (Abramowitz and Stegun 26.2.17, |error| < 7.5e-8).
fn normal_cdf(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.231_641_9 * z.abs());
    let poly = t
        * (0.319_381_530
            + t * (-0.356_563_782 + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    let tail = (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly;
    if z >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// Below this raw refclock sample noise (ns) a guest's readings are exactly linear between
/// polls: it has no read noise, and the sim's is not scaled to its regression's scatter
/// (`run::ensemble`).
pub const NO_READ_NOISE_NS: f64 = 0.5;

/// How the sim runs the real ones are judged against were given the guest's noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The scenario's read noise (`world.guest.phase_noise_ns`).
    pub scenario_phase_noise_ns: f64,
    /// The read noise the judging sim runs ran at.
    pub phase_noise_ns: f64,
    /// The median of the real runs' chronyd regression standard deviation, ns (none: not
    /// measured, the scenario's own noise used).
    pub regression_sd_ns_guest: Option<f64>,
    /// The median of the real runs' raw refclock sample noise, ns: under [`NO_READ_NOISE_NS`]
    /// the readings have no read noise and the scenario's own noise is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_noise_ns_guest: Option<f64>,
    /// How the sim runs read the PHC beyond the noise.
    #[serde(default, skip_serializing_if = "crate::judge::ensemble::ReadPath::is_plain")]
    pub read_path: crate::judge::ensemble::ReadPath,
}

/// Sim against QEMU over repeated runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionFidelity {
    /// Poll interval the time tolerances rest on, seconds.
    pub poll_interval_s: f64,
    /// How the judging sim runs were given the guest's noise (none: the scenario's own sim
    /// runs judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Every judged row.
    pub rows: Vec<Judged>,
    /// Real runs inside on every row (`k` of `k/N`).
    pub runs_inside: usize,
    /// Real runs (`N`).
    pub runs: usize,
    /// Sim runs.
    pub sim_runs: usize,
    /// One real run only: judged as one draw from the sim's distribution, weak evidence.
    pub weak: bool,
    /// Every row agrees.
    pub agrees: bool,
}

/// A scenario's repeated runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Scenario.
    pub scenario: String,
    /// Each backend's runs, in backend order.
    pub sides: Vec<Side>,
    /// Sim against QEMU, where both ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<DistributionFidelity>,
}

/// Largest `distribution.json` read.
pub const MAX_DISTRIBUTION_BYTES: u64 = 16 << 20;

/// Judges `qemu`'s runs against `sim`'s (each paired with the sim run of its seed where there
/// is one, else with the sim's first, for the rows' values and tolerances).
pub fn judge(sim: &[&Report], qemu: &[&Report], poll_interval_s: f64) -> Option<DistributionFidelity> {
    let first_sim = sim.first()?;
    if qemu.is_empty() {
        return None;
    }
    // The pairs' fidelity rows: the sim's values from every sim run (paired with itself, which
    // makes its rows' values the sim's), the real values and tolerances from each real run.
    let sims: Vec<Fidelity> = sim.iter().map(|s| fidelity::compare(s, s, poll_interval_s)).collect();
    let reals: Vec<Fidelity> = qemu
        .iter()
        .map(|q| {
            let s = sim.iter().find(|s| s.seed == q.seed).unwrap_or(first_sim);
            fidelity::compare(s, q, poll_interval_s)
        })
        .collect();
    let weak = qemu.len() == 1;
    let mut rows = Vec::new();
    let mut inside_all = vec![true; qemu.len()];
    for (i, row) in reals[0].rows.iter().enumerate() {
        if row.tolerance.is_none() {
            continue;
        }
        let sv: Vec<Option<f64>> = sims.iter().map(|f| f.rows.get(i).and_then(|r| r.sim)).collect();
        let qv: Vec<Option<f64>> = reals.iter().map(|f| f.rows.get(i).and_then(|r| r.qemu)).collect();
        let tols: Vec<Option<f64>> = reals.iter().map(|f| f.rows.get(i).and_then(|r| r.tolerance)).collect();
        let tolerance = Stat::of(&tols).median.unwrap_or(0.0);
        let (ss, qs) = (Stat::of(&sv), Stat::of(&qv));
        let class_row = tolerance == 0.0;
        let key = |v: &Option<f64>| v.map_or_else(|| "none".to_owned(), |x| format!("{x}"));
        let within = |v: &Option<f64>, lo: Option<f64>, hi: Option<f64>| match (v, lo, hi) {
            (Some(x), Some(lo), Some(hi)) => *x >= lo - tolerance && *x <= hi + tolerance,
            (None, _, _) => ss.never > 0,
            _ => false,
        };
        let mut tail = 0;
        let (medians_agree, inside_each, classes) = if class_row {
            let sim_classes: Vec<String> = sv.iter().map(key).collect();
            let each: Vec<bool> = qv.iter().map(|v| sim_classes.contains(&key(v))).collect();
            let all = each.iter().all(|b| *b);
            (all, each, Some((shares(sim_classes), shares(qv.iter().map(key)))))
        } else {
            // The real median is of a few runs: the sim's median must fall inside its confidence
            // interval (`median_interval`), widened by the tolerance.
            let medians = match (ss.median, median_interval(&qv)) {
                (Some(a), Some((lo, hi))) => a >= lo - tolerance && a <= hi + tolerance,
                (None, None) => true,
                _ => false,
            };
            // The range a real value must fall in: the sim's, or (one real run) its central 80%,
            // with the rest of the sim's range as its tail.
            let (lo, hi) = if weak { (ss.p10, ss.p90) } else { (ss.min, ss.max) };
            let each: Vec<bool> = qv.iter().map(|v| within(v, lo, hi)).collect();
            if weak {
                tail = qv.iter().zip(&each).filter(|(v, c)| !**c && within(v, ss.min, ss.max)).count();
            }
            (medians, each, None)
        };
        for (a, b) in inside_all.iter_mut().zip(&inside_each) {
            *a &= *b;
        }
        let inside = inside_each.iter().filter(|b| **b).count();
        let shift_p = if row.metric.starts_with("time_to") && poll_interval_s > 0.0 {
            let polls = |v: &[Option<f64>]| -> Vec<f64> {
                v.iter().flatten().map(|x| (x / poll_interval_s).round()).collect()
            };
            rank_sum_p(&polls(&sv), &polls(&qv))
        } else {
            None
        };
        // The rank-sum's p is shown, not judged: two sides that barely scatter are told apart by
        // any constant difference, however small against the tolerance (measured: phc2sys's
        // 302 s against 307 s within 1 ms, p 0.000, at a tolerance of 31.7 s).
        // One real run is one draw: it agrees where it falls inside or in the tail; its value is
        // no median to hold against the sim's (a draw from the tail of a scattered outcome is
        // still a draw).
        let agrees = if weak { inside + tail == 1 } else { medians_agree && inside == qemu.len() };
        rows.push(Judged {
            metric: row.metric.clone(),
            sim: ss,
            qemu: qs,
            classes,
            tolerance,
            medians_agree,
            inside,
            tail,
            runs: qemu.len(),
            shift_p,
            agrees,
        });
    }
    let agrees = rows.iter().all(|r| r.agrees);
    Some(DistributionFidelity {
        poll_interval_s,
        calibration: None,
        rows,
        runs_inside: inside_all.iter().filter(|b| **b).count(),
        runs: qemu.len(),
        sim_runs: sim.len(),
        weak,
        agrees,
    })
}

impl Distribution {
    /// The distribution of a scenario's `reports` (every backend's, any order), judged sim
    /// against QEMU where both ran: against `judging`'s sim runs where given (the sim at the
    /// guest's noise, see `run::ensemble::calibrated_sims`), else the sim runs among `reports`.
    pub fn judged_against(
        scenario: &str,
        reports: &[Report],
        poll_interval_s: f64,
        judging: Option<(&[Report], Calibration)>,
    ) -> Self {
        let mut backends: Vec<&str> = Vec::new();
        for r in reports {
            if !backends.contains(&r.backend.as_str()) {
                backends.push(&r.backend);
            }
        }
        let runs = |b: &str| -> Vec<&Report> {
            reports.iter().filter(|r| r.backend == b && r.verdict != Verdict::Aborted).collect()
        };
        let sides = backends
            .iter()
            .map(|b| Side::of(&reports.iter().filter(|r| r.backend == *b).collect::<Vec<_>>()))
            .collect();
        let (own, qemu) = (runs("sim"), runs("qemu"));
        // Judged where both ran: against the given sim runs, else the sim's own among `reports`.
        let fidelity = match judging {
            _ if own.is_empty() => None,
            Some((sims, calibration)) => judge(&sims.iter().collect::<Vec<_>>(), &qemu, poll_interval_s)
                .map(|f| DistributionFidelity { calibration: Some(calibration), ..f }),
            None => judge(&own, &qemu, poll_interval_s),
        };
        Self { scenario: scenario.to_owned(), sides, fidelity }
    }

    /// The distribution of a scenario's `reports` (every backend's, any order), judged sim
    /// against QEMU where both ran.
    pub fn of(scenario: &str, reports: &[Report], poll_interval_s: f64) -> Self {
        Self::judged_against(scenario, reports, poll_interval_s, None)
    }

    /// The document written to `distribution.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a `distribution.json` through the bounded reader.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = phc::input::read_text(path, MAX_DISTRIBUTION_BYTES, phc::input::Links::Refuse)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a distribution document: {e}", path.display()))
    }

    /// Tables for the terminal and Markdown.
    pub fn to_markdown(&self) -> String {
        use crate::format::escape::markdown_cell as md;
        let num =
            |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{}", (v * 1e6).round() / 1e6));
        let share = |s: &[Share], n: usize| {
            s.iter().map(|x| format!("{} {}/{n}", md(&x.class), x.count)).collect::<Vec<_>>().join(", ")
        };
        let mut s = format!("## Distribution: {}\n\n", md(&self.scenario));
        for side in &self.sides {
            let n = side.seeds.len();
            let seeds = match (side.seeds.iter().min(), side.seeds.iter().max()) {
                (Some(a), Some(b)) if a != b => format!("seeds {a}-{b}"),
                (Some(a), _) => format!("seed {a}"),
                _ => "no runs".to_owned(),
            };
            s.push_str(&format!(
                "### {} ({n} runs, {seeds})\n\nVerdicts: {}. Steps: {}. Correction: {}.\n\n\
                 | metric | median | p10 | p90 | min | max | never |\n|---|---|---|---|---|---|---|\n",
                md(&side.backend),
                share(&side.verdicts, n),
                share(&side.steps, n),
                share(&side.correction, n),
            ));
            for NamedStat { metric: k, stat: st } in &side.metrics {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {}/{n} |\n",
                    md(k),
                    num(st.median),
                    num(st.p10),
                    num(st.p90),
                    num(st.min),
                    num(st.max),
                    st.never
                ));
            }
            s.push('\n');
        }
        if let Some(f) = &self.fidelity {
            let range = if f.weak { "p10-p90" } else { "min-max" };
            // Which sim runs the real ones were held against.
            let against = match &f.calibration {
                Some(c) => {
                    let guest = c
                        .regression_sd_ns_guest
                        .map_or_else(|| "not measured".to_owned(), |v| format!("{v:.1} ns"));
                    match c.sample_noise_ns_guest {
                        Some(n) if n < NO_READ_NOISE_NS && c.phase_noise_ns == c.scenario_phase_noise_ns => format!(
                            "sim runs at the scenario's read noise ({:.1} ns: the guest's raw samples have none, \
                             {n:.1} ns, so its chronyd regression's scatter, {guest}, is not read noise): ",
                            c.phase_noise_ns
                        ),
                        _ => format!(
                            "sim runs at the guest's noise (read noise {:.1} ns, the scenario's {:.1} ns scaled so \
                             that the sim's chronyd regression scatters as the guest's, {guest}): ",
                            c.phase_noise_ns, c.scenario_phase_noise_ns
                        ),
                    }
                }
                None => String::new(),
            };
            s.push_str(&format!(
                "### Sim against QEMU on the distributions\n\n{} real run(s) against {against}{} sim run(s), poll interval {} s.{} \
                 Numbers: {}every real run inside the sim's {range} widened by it; \
                 for times the rank-sum p of the two sides' poll counts is shown (below {SHIFT_P}: told apart), not judged; classes \
                 (step count, direction): every real class among the sim's runs.{}\n\n\
                 | metric | sim median [{range}] | qemu median [min-max] | tolerance | real inside | shift p | agrees |\n\
                 |---|---|---|---|---|---|---|\n",
                f.runs,
                f.sim_runs,
                f.poll_interval_s,
                f.calibration.as_ref().map(|c| c.read_path.to_markdown()).unwrap_or_default(),
                if f.weak {
                    ""
                } else {
                    "the sim's median inside the real median's confidence interval (order statistics, at least 90%) \
                     widened by the tolerance, and "
                },
                if f.weak {
                    " One real run: one draw from the sim's distribution, weak evidence; outside the p10-p90 but \
                     inside the sim's min-max, widened alike, it is a draw from the sim's tail and agrees."
                } else {
                    ""
                },
            ));
            for r in &f.rows {
                let (slo, shi) = if f.weak { (r.sim.p10, r.sim.p90) } else { (r.sim.min, r.sim.max) };
                let never =
                    |st: &Stat| if st.never > 0 { format!(", never {}", st.never) } else { String::new() };
                let (sim, qemu) = match &r.classes {
                    Some((a, b)) => (share(a, f.sim_runs), share(b, f.runs)),
                    None => (
                        format!("{} [{} - {}]{}", num(r.sim.median), num(slo), num(shi), never(&r.sim)),
                        format!(
                            "{} [{} - {}]{}",
                            num(r.qemu.median),
                            num(r.qemu.min),
                            num(r.qemu.max),
                            never(&r.qemu)
                        ),
                    ),
                };
                let p = r.shift_p.map_or_else(|| "-".to_owned(), |p| format!("{p:.3}"));
                s.push_str(&format!(
                    "| {} | {sim} | {qemu} | {} | {}/{}{} | {p} | {} |\n",
                    md(&r.metric),
                    num(Some(r.tolerance)),
                    r.inside,
                    r.runs,
                    if r.tail > 0 { ", in the tail" } else { "" },
                    if r.agrees { "yes" } else { "**NO**" }
                ));
            }
            s.push_str(&format!(
                "\nReal runs inside on every row: {}/{}. Overall: {}{}\n",
                f.runs_inside,
                f.runs,
                if f.agrees { "agrees" } else { "DISAGREES" },
                if f.weak { " (weak evidence: one real run)" } else { "" }
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// azure-pause-30s on the sim, `n` times, each with its own seed and first correction.
    fn runs(backend: &str, firsts: &[Option<f64>], steps: &[usize]) -> Vec<Report> {
        let s = crate::run::runner::builtin("azure-pause-30s").unwrap().unwrap();
        let base = crate::run::runner::run_sim(&s).unwrap();
        firsts
            .iter()
            .zip(steps)
            .enumerate()
            .map(|(i, (t, n))| {
                let mut r = base.clone();
                r.backend = backend.into();
                r.seed = i as u64 + 1;
                r.recovery.time_to_first_correction_s = *t;
                r.recovery.steps.truncate((*n).min(r.recovery.steps.len()));
                while r.recovery.steps.len() < *n {
                    let extra = r.recovery.steps[0].clone();
                    r.recovery.steps.push(extra);
                }
                r
            })
            .collect()
    }

    fn row<'a>(f: &'a DistributionFidelity, metric: &str) -> &'a Judged {
        f.rows.iter().find(|r| r.metric == metric).unwrap_or_else(|| panic!("no {metric} row"))
    }

    #[test]
    fn real_runs_inside_the_sims_range_agree_and_outliers_are_counted() {
        let sim =
            runs("sim", &[Some(40.0), Some(60.0), Some(80.0), Some(100.0), Some(120.0)], &[1, 1, 1, 2, 1]);
        let poll = 8.0;
        // Real runs spread like the sim's, with a two-step run the sim also had.
        let real =
            runs("qemu", &[Some(45.0), Some(70.0), Some(90.0), Some(118.0), Some(66.0)], &[1, 1, 2, 1, 1]);
        let all: Vec<Report> = sim.iter().chain(&real).cloned().collect();
        let d = Distribution::of("azure-pause-30s", &all, poll);
        let f = d.fidelity.as_ref().unwrap();
        assert!(f.agrees && !f.weak, "{}", d.to_markdown());
        assert_eq!((f.runs_inside, f.runs, f.sim_runs), (5, 5, 5));
        let t = row(f, "time_to_first_correction_s");
        assert_eq!((t.sim.median, t.qemu.median, t.inside), (Some(80.0), Some(70.0), 5));
        assert!(
            d.to_markdown().contains("Real runs inside on every row: 5/5. Overall: agrees"),
            "{}",
            d.to_markdown()
        );
        // One real run far out (300 s, outside 40-120 s widened by 8 s + 10%) and a step count
        // the sim never had: counted, and the distributions disagree.
        let real =
            runs("qemu", &[Some(45.0), Some(70.0), Some(300.0), Some(118.0), Some(66.0)], &[1, 1, 1, 3, 1]);
        let all: Vec<Report> = sim.iter().chain(&real).cloned().collect();
        let d = Distribution::of("azure-pause-30s", &all, poll);
        let f = d.fidelity.as_ref().unwrap();
        assert!(!f.agrees);
        assert_eq!(f.runs_inside, 3, "{}", d.to_markdown());
        assert_eq!(row(f, "time_to_first_correction_s").inside, 4);
        let steps = row(f, "steps");
        assert!(!steps.agrees && steps.inside == 4, "{steps:?}");
        assert!(d.to_markdown().contains("DISAGREES"));
        // A real never where the sim always corrected: outside.
        let real = runs("qemu", &[None, Some(70.0)], &[1, 1]);
        let all: Vec<Report> = sim.iter().chain(&real).cloned().collect();
        let f = Distribution::of("x", &all, poll).fidelity.unwrap();
        assert_eq!(row(&f, "time_to_first_correction_s").inside, 1);
    }

    #[test]
    fn the_median_of_a_few_runs_is_an_interval() {
        let v = |xs: &[f64]| xs.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        // Five runs: min to max (the true median inside 93.8% of the time).
        assert_eq!(median_interval(&v(&[73.5, 57.5, 97.5, 65.5, 89.5])), Some((57.5, 97.5)));
        // Eight: the 2nd to the 7th (93.0%).
        let eight: Vec<f64> = (1..=8).map(f64::from).collect();
        assert_eq!(median_interval(&v(&eight)), Some((2.0, 7.0)));
        // 48: the 18th to the 31st.
        let many: Vec<f64> = (1..=48).map(f64::from).collect();
        assert_eq!(median_interval(&v(&many)), Some((18.0, 31.0)));
        assert_eq!(median_interval(&v(&[3.0])), Some((3.0, 3.0)));
        assert_eq!(median_interval(&[None, None]), None);
    }

    #[test]
    fn one_real_run_is_one_draw_inside_the_sims_central_80_percent_its_tail_or_outside() {
        let firsts: Vec<Option<f64>> = (0..10).map(|i| Some(40.0 + 20.0 * f64::from(i))).collect();
        let sim = runs("sim", &firsts, &[1; 10]);
        // 40..220 s; p10 40, p90 200, widened by 8 s + 10% of the larger: 230 s is inside
        // (200 + 31 = 231); 250 s is outside the central 80% (200 + 33) but inside the range
        // (220 + 33 = 253), a draw from the tail, which agrees; 270 s is outside the range.
        for (t, inside, tail) in [(230.0, 1, 0), (250.0, 0, 1), (270.0, 0, 0)] {
            let real = runs("qemu", &[Some(t)], &[1]);
            let all: Vec<Report> = sim.iter().chain(&real).cloned().collect();
            let d = Distribution::of("x", &all, 8.0);
            let f = d.fidelity.as_ref().unwrap();
            assert!(f.weak);
            let r = row(f, "time_to_first_correction_s");
            assert_eq!((r.inside, r.tail), (inside, tail), "{t}: {}", d.to_markdown());
            assert_eq!(r.agrees, inside + tail == 1, "{t}");
            assert_eq!(f.agrees, inside + tail == 1, "{t}: {}", d.to_markdown());
            assert!(d.to_markdown().contains("weak evidence"));
            assert_eq!(d.to_markdown().contains("0/1, in the tail"), tail == 1, "{}", d.to_markdown());
        }
    }

    #[test]
    fn each_backends_side_has_every_metric_and_the_outcome_shares() {
        let sim = runs("sim", &[Some(1.0), Some(2.0), None], &[1, 2, 0]);
        let d = Distribution::of("x", &sim, 8.0);
        assert!(d.fidelity.is_none());
        let side = &d.sides[0];
        assert_eq!(side.seeds, [1, 2, 3]);
        assert_eq!(side.metrics[1].metric, "time_to_first_correction_s");
        assert_eq!((side.metrics[1].stat.n, side.metrics[1].stat.never), (2, 1));
        let classes: Vec<(&str, usize)> = side.steps.iter().map(|s| (s.class.as_str(), s.count)).collect();
        assert_eq!(classes, [("0", 1), ("1", 1), ("2", 1)]);
        let back: Distribution = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn the_rank_sum_test_tells_shifted_samples_apart_and_not_alike_ones() {
        // Five against five, fully separated: U = 0; the normal approximation with continuity
        // correction gives p = 0.012 (the exact two-sided p is 0.008).
        let p = rank_sum_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
        assert!((p - 0.0122).abs() < 0.001, "{p}");
        // The same values: no evidence of a shift.
        let p = rank_sum_p(&[7.0, 7.0, 8.0, 9.0], &[7.0, 7.0, 8.0, 9.0]).unwrap();
        assert!(p > 0.9, "{p}");
        // Polls: most sim runs one or two polls early, the real ones on time.
        let sim = [5.0, 5.0, 6.0, 6.0, 6.0, 7.0, 7.0, 5.0, 6.0, 7.0, 12.0, 6.0];
        let p = rank_sum_p(&sim, &[7.0, 7.0, 7.0, 8.0, 9.0]).unwrap();
        assert!(p < SHIFT_P, "{p}");
        // Too few runs, or every value tied: no test.
        assert_eq!(rank_sum_p(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0, 7.0]), None);
        assert_eq!(rank_sum_p(&[7.0; 5], &[7.0; 5]), None);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7 && (normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }

    #[test]
    fn statistics_take_nearest_ranks_and_count_nevers() {
        let s = Stat::of(&[Some(3.0), None, Some(1.0), Some(2.0), Some(10.0)]);
        assert_eq!((s.n, s.never), (4, 1));
        assert_eq!(s.median, Some(2.5));
        assert_eq!((s.min, s.max), (Some(1.0), Some(10.0)));
        assert_eq!((s.p10, s.p90), (Some(1.0), Some(10.0)));
        let e = Stat::of(&[None, None]);
        assert_eq!((e.n, e.never, e.median, e.min), (0, 2, None, None));
        let one = Stat::of(&[Some(5.0)]);
        assert_eq!((one.median, one.p10, one.p90), (Some(5.0), Some(5.0), Some(5.0)));
    }
}
