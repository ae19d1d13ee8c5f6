//! Recovery analysis: from an offset series and its events, when the guest was hit, when the
//! first correction came, when it stayed within 1 ms / 100 us / 1 us, how it got there (step or
//! slew), and the verdicts against the scenario's expectations.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use mock_phc::EventKind;
use serde::{Deserialize, Serialize};

use crate::model::observation::Observations;
use crate::model::scenario::{Correction, Range, Scenario};

/// Thresholds the report follows, with their JSON keys.
pub const THRESHOLDS: [(&str, i64); 3] = [("1ms", 1_000_000), ("100us", 100_000), ("1us", 1_000)];

/// Seconds as reports keep them: to 1 ns, the clocks' own resolution, so that float noise in
/// the last digits (a difference of two scenario times) never reaches a report.
pub fn round_s(v: f64) -> f64 {
    round_to(v, 1e9)
}

/// A statistic in nanoseconds (an RMS) as reports keep it: to 0.1 ns, as the baselines do.
pub fn round_ns(v: f64) -> f64 {
    round_to(v, 10.0)
}

/// A frequency in ppb as reports keep it: to 0.001 ppb, finer than the kernel's adjfine
/// (2^-16 ppm, about 0.015 ppb).
pub fn round_ppb(v: f64) -> f64 {
    round_to(v, 1e3)
}

/// `v` rounded to 1 / `per_unit`; a value too large to scale is kept as it is.
fn round_to(v: f64, per_unit: f64) -> f64 {
    let scaled = v * per_unit;
    if scaled.is_finite() && scaled.abs() < 1e15 {
        scaled.round() / per_unit
    } else {
        v
    }
}

/// One step of the guest clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When, seconds after the end of the disturbance (negative: before it).
    pub t_s: f64,
    /// By how much.
    pub delta_ns: i64,
    /// Who stepped (`chrony`, `hv_utils`, ...).
    pub source: String,
}

/// Recovery metrics, measured from the end of the first disturbance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Scenario time the disturbance ended (the guest was back), seconds.
    pub disturbance_end_s: Option<f64>,
    /// Guest offset at the first observation after the disturbance ended.
    pub offset_after_disturbance_ns: Option<i64>,
    /// Seconds until the first step, or until |offset| first fell measurably: by 1 ms or 0.1% of
    /// its value, whichever is more.
    pub time_to_first_correction_s: Option<f64>,
    /// Seconds until |offset| stayed under each threshold for the rest of the run (null: never).
    pub time_to_within_s: BTreeMap<String, Option<f64>>,
    /// Steps after the disturbance.
    pub steps: Vec<Step>,
    /// How the error was corrected.
    pub correction: Correction,
    /// Seconds spent slewing: from the last step (else the first correction, else the end of the
    /// disturbance) until |offset| stayed within 1 ms; 0 when the first observation from then on
    /// was already within it (a step that removed the error, or an offset that never left 1 ms:
    /// nothing was left to slew). Null only when the run never got within 1 ms.
    pub slew_duration_s: Option<f64>,
    /// Largest |guest offset| after the warm-up.
    pub max_abs_offset_ns: i64,
    /// RMS of the guest offset after it stayed within 1 ms, to 0.1 ns.
    pub rms_after_recovery_ns: Option<f64>,
    /// Errno names PHC reads returned, with counts.
    pub read_errors: BTreeMap<String, u64>,
}

/// One expectation checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// What the scenario expects.
    pub expected: String,
    /// What the run showed.
    pub actual: String,
    /// Whether it holds.
    pub pass: bool,
}

/// Computes the recovery metrics of a run.
pub fn recovery(scenario: &Scenario, obs: &Observations) -> Recovery {
    let warmup = scenario.timeline.warmup_s;
    // The end as it happened (a real reboot takes its own time), else as scripted.
    let end = obs
        .markers
        .first()
        .map(|m| m.end_s)
        .or_else(|| scenario.first_disturbance_window_s().map(|(_, e)| e));
    let t0 = end.unwrap_or(warmup);
    let after: Vec<(f64, i64)> = obs
        .series
        .iter()
        .filter(|o| o.t_s >= t0 - 1e-6)
        .filter_map(|o| o.guest_offset_ns.map(|v| (round_s((o.t_s - t0).max(0.0)), v)))
        .collect();
    let steps: Vec<Step> = obs
        .events
        .iter()
        .filter_map(|e| match e.kind {
            // The world's own steps are disturbances (a `date` set back), not corrections.
            EventKind::Step { delta_ns } if e.t_ns as f64 / 1e9 >= t0 && e.source != "world" => {
                Some(Step { t_s: round_s(e.t_ns as f64 / 1e9 - t0), delta_ns, source: e.source.to_owned() })
            }
            _ => None,
        })
        .collect();
    let offset_after = end.and_then(|_| after.first().map(|(_, v)| *v));

    let first_drop = offset_after.and_then(|o0| {
        let a = o0.unsigned_abs() as f64;
        let limit = a - (a * 0.001).max(1e6);
        after.iter().find(|(_, v)| (v.unsigned_abs() as f64) < limit).map(|(t, _)| *t)
    });
    let first_step = steps.first().map(|s| s.t_s);
    let time_to_first_correction_s = match (first_step, first_drop) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let within = |limit: i64| -> Option<f64> {
        // The last observation above the limit; recovered from the one after it.
        let last_bad = after.iter().rposition(|(_, v)| v.unsigned_abs() >= limit as u64);
        match last_bad {
            None => after.first().map(|(t, _)| *t),
            Some(i) => after.get(i + 1).map(|(t, _)| *t),
        }
    };
    let time_to_within_s: BTreeMap<String, Option<f64>> =
        THRESHOLDS.iter().map(|(k, l)| ((*k).to_owned(), within(*l))).collect();
    let within_1ms = time_to_within_s["1ms"];

    let big_step = offset_after.is_some_and(|o0| {
        steps.iter().any(|s| s.delta_ns.unsigned_abs() as f64 > o0.unsigned_abs() as f64 * 0.5)
    });
    let correction = if within_1ms.is_none() {
        Correction::None
    } else if big_step {
        Correction::Step
    } else {
        Correction::Slew
    };
    // Slewing starts where the last step left the offset (else at the first correction, else
    // when the guest was back) and lasts until it stayed within 1 ms. Within 1 ms at the first
    // observation from then on: nothing was slewed, whatever the sampling interval.
    let slew_start = steps.last().map(|s| s.t_s).or(time_to_first_correction_s).unwrap_or(0.0);
    let slew_duration_s = within_1ms.map(|w| {
        let first_from_start = after.iter().map(|(t, _)| *t).find(|t| *t >= slew_start);
        if first_from_start.is_some_and(|f| w <= f) {
            0.0
        } else {
            round_s((w - slew_start).max(0.0))
        }
    });

    let max_abs_offset_ns = obs
        .series
        .iter()
        .filter(|o| o.t_s >= warmup)
        .filter_map(|o| o.guest_offset_ns)
        .map(|v| v.saturating_abs())
        .max()
        .unwrap_or(0);
    let rms_after_recovery_ns = within_1ms.and_then(|w| {
        let tail: Vec<f64> = after.iter().filter(|(t, _)| *t >= w).map(|(_, v)| *v as f64).collect();
        (!tail.is_empty())
            .then(|| round_ns((tail.iter().map(|v| v * v).sum::<f64>() / tail.len() as f64).sqrt()))
    });
    let mut read_errors = BTreeMap::new();
    for code in obs.series.iter().filter_map(|o| o.phc_error.as_deref()) {
        *read_errors.entry(code.to_owned()).or_insert(0) += 1;
    }
    for e in &obs.events {
        if let EventKind::ReadError { code } = &e.kind {
            *read_errors.entry((*code).to_owned()).or_insert(0) += 1;
        }
    }

    Recovery {
        disturbance_end_s: end.map(round_s),
        offset_after_disturbance_ns: offset_after,
        time_to_first_correction_s,
        time_to_within_s,
        steps,
        correction,
        slew_duration_s,
        max_abs_offset_ns,
        rms_after_recovery_ns,
        read_errors,
    }
}

fn range_text(r: &Range) -> String {
    match (r.min, r.max) {
        (Some(a), Some(b)) => format!("{a} ..= {b}"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "any".into(),
    }
}

fn opt_text(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{v:.3}"))
}

/// Checks a run's recovery against the scenario's expectations.
pub fn verdicts(scenario: &Scenario, r: &Recovery) -> Vec<Check> {
    let e = &scenario.expect;
    let mut out = Vec::new();
    let mut range = |name: &str, want: &Option<Range>, got: Option<f64>| {
        if let Some(want) = want {
            out.push(Check {
                name: name.to_owned(),
                expected: range_text(want),
                actual: opt_text(got),
                pass: got.is_some_and(|g| want.contains(g)),
            });
        }
    };
    range(
        "offset_after_disturbance_s",
        &e.offset_after_disturbance_s,
        r.offset_after_disturbance_ns.map(|v| v.unsigned_abs() as f64 / 1e9),
    );
    range("time_to_first_correction_s", &e.time_to_first_correction_s, r.time_to_first_correction_s);
    range("within_1ms_s", &e.within_1ms_s, r.time_to_within_s["1ms"]);
    range("within_100us_s", &e.within_100us_s, r.time_to_within_s["100us"]);
    range("steps", &e.steps, Some(r.steps.len() as f64));
    range("max_abs_offset_s", &e.max_abs_offset_s, Some(r.max_abs_offset_ns as f64 / 1e9));
    if let Some(c) = e.correction {
        out.push(Check {
            name: "correction".into(),
            expected: format!("{c:?}").to_lowercase(),
            actual: format!("{:?}", r.correction).to_lowercase(),
            pass: c == r.correction,
        });
    }
    for code in &e.read_errors {
        let n = r.read_errors.get(code).copied().unwrap_or(0);
        out.push(Check {
            name: format!("read_errors.{code}"),
            expected: "seen".into(),
            actual: format!("{n} times"),
            pass: n > 0,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observation::{Marker, Observation};

    /// A 10 s pause from 0 s, then 90 s observed every 0.5 s; `offset(t)` is the guest's
    /// offset in ns at scenario time `t`, `steps` the (scenario seconds, ns) steps chrony made.
    fn run(offset: impl Fn(f64) -> i64, steps: &[(f64, i64)]) -> Recovery {
        let s = Scenario::parse(
            "description = \"x\"\n[world.phc]\npersonality = \"kvm\"\n[timeline]\nwarmup_s = 0\nobserve_s = 100\n\
             [[timeline.events]]\nat_s = 0\nkind = \"pause\"\nduration_s = 10\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let series = (0..=200)
            .map(|i| {
                let t = f64::from(i) * 0.5;
                Observation { t_s: t, guest_offset_ns: Some(offset(t)), phc_offset_ns: None, phc_error: None }
            })
            .collect();
        let markers = vec![Marker {
            start_s: 0.0,
            end_s: 10.0,
            disturbance: mock_phc::Disturbance::Pause { duration_s: 10.0, sync_on_resume: true },
        }];
        let events = steps
            .iter()
            .map(|&(t, delta_ns)| mock_phc::Event {
                t_ns: (t * 1e9).round() as i64,
                source: "chrony",
                kind: EventKind::Step { delta_ns },
            })
            .collect();
        recovery(&s, &Observations { series, markers, events })
    }

    #[test]
    fn a_step_that_removes_the_error_leaves_nothing_to_slew() {
        // Stepped at 10.2 s, between two observations: the next one is already within 1 ms.
        let r = run(|t| if t < 10.2 { -30_000_000_000 } else { 50 }, &[(10.2, 30_000_000_000)]);
        assert_eq!(r.correction, Correction::Step);
        assert_eq!(r.time_to_within_s["1ms"], Some(0.5));
        assert_eq!(r.slew_duration_s, Some(0.0), "{r:?}");
    }

    #[test]
    fn a_step_that_leaves_a_residual_slews_it_away_after_the_step() {
        // The step leaves 5 ms, slewed away at 0.5 ms/s: within 1 ms once it is under 1 ms.
        let off = |t: f64| {
            if t < 10.2 {
                -30_000_000_000
            } else {
                (5e6 - 0.5e6 * (t - 10.2)).max(100.0) as i64
            }
        };
        let r = run(off, &[(10.2, 30_005_000_000)]);
        assert_eq!(r.correction, Correction::Step);
        let w = r.time_to_within_s["1ms"].unwrap();
        assert!((8.0..=9.0).contains(&w), "{r:?}");
        assert_eq!(r.slew_duration_s, Some(round_s(w - 0.2)), "{r:?}");
    }

    #[test]
    fn a_slew_lasts_from_the_first_correction_and_never_is_only_never() {
        // Slewed from 30 ms at 0.5 ms/s from 10 s on: under 1 ms from 68 s.
        let r = run(|t| if t < 10.0 { 30_000_000 } else { (30e6 - 0.5e6 * (t - 10.0)).max(0.0) as i64 }, &[]);
        assert_eq!(r.correction, Correction::Slew);
        let (first, w) = (r.time_to_first_correction_s.unwrap(), r.time_to_within_s["1ms"].unwrap());
        assert_eq!(r.slew_duration_s, Some(round_s(w - first)), "{r:?}");
        assert!(r.slew_duration_s.unwrap() > 50.0);
        // Never back within 1 ms: no correction, and the slew never ended.
        let r = run(|_| -30_000_000_000, &[]);
        assert_eq!((r.correction, r.slew_duration_s), (Correction::None, None));
        // Never out of 1 ms: nothing to slew, not "never".
        let r = run(|_| 10, &[]);
        assert_eq!(r.slew_duration_s, Some(0.0), "{r:?}");
    }

    #[test]
    fn times_are_kept_to_the_nanosecond_and_rms_to_a_tenth() {
        // 0.1 s steps from a disturbance ending at 325.4 s: differences carry float noise.
        assert_eq!(325.5 - 325.4, 0.10000000000002274);
        assert_eq!(round_s(325.5 - 325.4), 0.1);
        assert_eq!(round_s(17.19170200000002), 17.191702);
        assert_eq!(round_ns(52550.263593560856), 52550.3);
        assert_eq!(round_ppb(-12000.000000001), -12000.0);
        assert_eq!(round_s(f64::MAX), f64::MAX);
        assert!(round_s(f64::NAN).is_nan());
    }
}
