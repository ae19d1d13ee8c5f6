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
    /// Seconds spent slewing: from the last step (or first correction) to within 1 ms.
    pub slew_duration_s: Option<f64>,
    /// Largest |guest offset| after the warm-up.
    pub max_abs_offset_ns: i64,
    /// RMS of the guest offset after it stayed within 1 ms.
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
        .filter_map(|o| o.guest_offset_ns.map(|v| ((o.t_s - t0).max(0.0), v)))
        .collect();
    let steps: Vec<Step> = obs
        .events
        .iter()
        .filter_map(|e| match e.kind {
            // The world's own steps are disturbances (a `date` set back), not corrections.
            EventKind::Step { delta_ns } if e.t_ns as f64 / 1e9 >= t0 && e.source != "world" => {
                Some(Step { t_s: e.t_ns as f64 / 1e9 - t0, delta_ns, source: e.source.to_owned() })
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
    let slew_start = steps.last().map(|s| s.t_s).or(time_to_first_correction_s);
    let slew_duration_s = match (correction, within_1ms, slew_start) {
        (Correction::Slew, Some(w), Some(s)) => Some((w - s).max(0.0)),
        _ => None,
    };

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
        (!tail.is_empty()).then(|| (tail.iter().map(|v| v * v).sum::<f64>() / tail.len() as f64).sqrt())
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
        disturbance_end_s: end,
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
