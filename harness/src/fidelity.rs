//! Sim against reality: the same scenario's recovery metrics from the simulator and from a QEMU
//! guest with the real daemon, side by side, each judged against a tolerance of one poll interval
//! plus 10%. A recovery the guest run did not finish inside its window is extrapolated from the
//! slew rate it showed at the end, and marked so.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// One metric compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Metric name (JSON key of the recovery section).
    pub metric: String,
    /// Simulator value.
    pub sim: Option<f64>,
    /// QEMU value.
    pub qemu: Option<f64>,
    /// qemu - sim.
    pub difference: Option<f64>,
    /// Largest accepted |difference|.
    pub tolerance: Option<f64>,
    /// Whether the QEMU value was extrapolated past the end of its run.
    pub extrapolated: bool,
    /// Whether it agrees (rows without a tolerance are informational and always agree).
    pub agrees: bool,
}

/// The comparison of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Scenario.
    pub scenario: String,
    /// Poll interval the tolerance rests on, seconds.
    pub poll_interval_s: f64,
    /// Rows.
    pub rows: Vec<Row>,
    /// Every judged row agrees.
    pub agrees: bool,
}

/// Seconds until |offset| would reach `limit_ns`, extrapolated from the last `window_s` seconds
/// of the run, when it was still above the limit at the end and falling.
pub fn extrapolate_within(report: &Report, limit_ns: f64, window_s: f64) -> Option<f64> {
    let end = report.recovery.disturbance_end_s?;
    let pts: Vec<(f64, f64)> = report
        .series
        .iter()
        .filter_map(|o| o.guest_offset_ns.map(|v| (o.t_s, v.unsigned_abs() as f64)))
        .collect();
    let (t_last, v_last) = *pts.last()?;
    if v_last <= limit_ns {
        return None;
    }
    let tail: Vec<&(f64, f64)> = pts.iter().filter(|(t, _)| *t >= t_last - window_s && *t >= end).collect();
    let (t_first, v_first) = **tail.first()?;
    if t_last - t_first < window_s / 2.0 || v_first <= v_last {
        return None;
    }
    let rate = (v_first - v_last) / (t_last - t_first);
    Some(t_last + (v_last - limit_ns) / rate - end)
}

/// Compares a sim and a QEMU report of the same scenario.
pub fn compare(sim: &Report, qemu: &Report, poll_interval_s: f64) -> Fidelity {
    let time_tol = |v: Option<f64>| v.map(|v| poll_interval_s + 0.1 * v.abs());
    let (rs, rq) = (&sim.recovery, &qemu.recovery);
    let mut rows = Vec::new();
    let mut push = |metric: &str, s: Option<f64>, q: Option<f64>, tol: Option<f64>, extrapolated: bool| {
        let difference = s.zip(q).map(|(s, q)| q - s);
        let agrees = match tol {
            None => true,
            Some(t) => match (s, q) {
                (Some(_), Some(_)) => difference.is_some_and(|d| d.abs() <= t),
                (None, None) => true,
                _ => false,
            },
        };
        rows.push(Row {
            metric: metric.into(),
            sim: s,
            qemu: q,
            difference,
            tolerance: tol,
            extrapolated,
            agrees,
        });
    };
    let secs = |v: Option<i64>| v.map(|v| v as f64 / 1e9);
    push(
        "offset_after_disturbance_s",
        secs(rs.offset_after_disturbance_ns),
        secs(rq.offset_after_disturbance_ns),
        // A guest back from a reboot reads the RTC's whole seconds: up to 1 s either way.
        secs(rs.offset_after_disturbance_ns).map(|v| 1.0 + 0.1 * v.abs()),
        false,
    );
    push(
        "time_to_first_correction_s",
        rs.time_to_first_correction_s,
        rq.time_to_first_correction_s,
        time_tol(rs.time_to_first_correction_s),
        false,
    );
    for key in ["1ms", "100us"] {
        let s = rs.time_to_within_s.get(key).copied().flatten();
        let mut q = rq.time_to_within_s.get(key).copied().flatten();
        let mut ex = false;
        if q.is_none() {
            // A short window: a daemon slewing at its maximum rate changes the offset linearly,
            // and a longer one would reach back to before the slew began.
            let limit = if key == "1ms" { 1e6 } else { 1e5 };
            q = extrapolate_within(qemu, limit, 10.0);
            ex = q.is_some();
        }
        // 100 us depends on the guest's noise floor (TCG timing jitter), which the sim does not
        // model: shown, not judged.
        let tol = if key == "1ms" { time_tol(s) } else { None };
        push(&format!("time_to_within_{key}_s"), s, q, tol, ex);
    }
    push("steps", Some(rs.steps.len() as f64), Some(rq.steps.len() as f64), None, false);
    let first_step = |r: &Report| r.recovery.steps.first().map(|s| s.delta_ns as f64 / 1e9);
    push("first_step_s", first_step(sim), first_step(qemu), None, false);
    push(
        "max_abs_offset_s",
        Some(rs.max_abs_offset_ns as f64 / 1e9),
        Some(rq.max_abs_offset_ns as f64 / 1e9),
        None,
        false,
    );
    let agrees = rows.iter().all(|r| r.agrees);
    Fidelity { scenario: sim.scenario.clone(), poll_interval_s, rows, agrees }
}

impl Fidelity {
    /// A table for the terminal and Markdown.
    pub fn to_markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
        let mut s = format!(
            "## Fidelity: {} (tolerance: poll interval {} s + 10%)\n\n| metric | sim | qemu | qemu - sim | tolerance | agrees |\n|---|---|---|---|---|---|\n",
            self.scenario, self.poll_interval_s
        );
        for r in &self.rows {
            let q = if r.extrapolated { format!("{} (extrapolated)", f(r.qemu)) } else { f(r.qemu) };
            let judged = if r.tolerance.is_none() {
                "info"
            } else if r.agrees {
                "yes"
            } else {
                "**NO**"
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.metric,
                f(r.sim),
                q,
                f(r.difference),
                f(r.tolerance),
                judged
            ));
        }
        s.push_str(&format!("\nOverall: {}\n", if self.agrees { "agrees" } else { "DISAGREES" }));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Marker, Observation, Observations};
    use crate::scenario::Scenario;

    fn slewing_report() -> Report {
        let s = Scenario::parse(
            "description = \"x\"\n[world.phc]\npersonality = \"kvm\"\n[timeline]\nwarmup_s = 0\nobserve_s = 100\n\
             [[timeline.events]]\nat_s = 0\nkind = \"pause\"\nduration_s = 10\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        // Flat at -30 s until 40 s, then slewing back at 0.1 s per s.
        let series = (0..=200)
            .map(|i| {
                let t = f64::from(i) * 0.5;
                let v = if t < 40.0 { -30.0 } else { -30.0 + 0.1 * (t - 40.0) };
                Observation {
                    t_s: t,
                    guest_offset_ns: Some((v * 1e9) as i64),
                    phc_offset_ns: None,
                    phc_error: None,
                }
            })
            .collect();
        let markers = vec![Marker {
            start_s: 0.0,
            end_s: 10.0,
            disturbance: mock_phc::Disturbance::Pause { duration_s: 10.0, sync_on_resume: true },
        }];
        Report::new(&s, "qemu", Observations { series, markers, events: Vec::new() }, None)
    }

    #[test]
    fn extrapolation_follows_the_final_slew_rate() {
        let r = slewing_report();
        // At t = 100 s the offset is -24 s, falling 0.1 s per s: 1 ms is reached at 100 + 239.99 s,
        // that is 329.99 s after the disturbance ended at 10 s.
        let t = extrapolate_within(&r, 1e6, 10.0).unwrap();
        assert!((t - 329.99).abs() < 0.01, "{t}");
        // Reaching back before the slew began would underestimate the rate.
        assert!(extrapolate_within(&r, 1e6, 80.0).unwrap() > t + 10.0);
    }

    #[test]
    fn comparison_judges_times_within_a_poll_interval_plus_ten_percent() {
        let a = slewing_report();
        let f = compare(&a, &a, 8.0);
        assert!(f.agrees);
        let row = f.rows.iter().find(|r| r.metric == "time_to_within_1ms_s").unwrap();
        assert!(row.extrapolated && row.sim.is_none());
    }
}
