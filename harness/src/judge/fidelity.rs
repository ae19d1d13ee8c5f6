//! Sim against reality: the same scenario's recovery metrics from the simulator and from a QEMU
//! guest with the real daemon, side by side, each row judged by the rule it carries. A recovery the
//! guest run did not finish inside its window is extrapolated from the slew rate it showed at the
//! end, and marked so.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::judge::report::Report;

/// Share of the larger of the two values a time, an offset or a step may differ by. The larger,
/// not the sim's: a tolerance that grows with one side only would let "sim 0.5 s, qemu 60 s" pass
/// in one direction and fail in the other.
const RELATIVE: f64 = 0.1;
/// Smallest step-size difference judged: the guest's offset is read to tens of microseconds under
/// TCG, and 1 ms is the finest threshold recoveries are judged by anyway.
const STEP_FLOOR_S: f64 = 1e-3;
/// Below this |offset after the disturbance| whether a step went against it or away is noise.
const DIRECTION_FLOOR_S: f64 = 1e-3;

/// One metric compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Metric name (JSON key of the recovery section, or a quantity derived from it).
    pub metric: String,
    /// Simulator value; null: never (times) or none (steps).
    pub sim: Option<f64>,
    /// QEMU value; null as for `sim`.
    pub qemu: Option<f64>,
    /// qemu - sim.
    pub difference: Option<f64>,
    /// Largest accepted |difference|; null on rows shown, not judged.
    pub tolerance: Option<f64>,
    /// Whether the QEMU value was extrapolated past the end of its run.
    pub extrapolated: bool,
    /// Whether it agrees (rows not judged always agree).
    pub agrees: bool,
    /// The rule it was judged by, or why it is not judged.
    #[serde(default)]
    pub rule: String,
}

impl Row {
    fn new(metric: &str, sim: Option<f64>, qemu: Option<f64>) -> Self {
        Self {
            metric: metric.into(),
            sim,
            qemu,
            difference: sim.zip(qemu).map(|(s, q)| q - s),
            tolerance: None,
            extrapolated: false,
            agrees: true,
            rule: String::new(),
        }
    }

    fn info(mut self, why: &str) -> Self {
        self.rule = format!("shown, not judged: {why}");
        self
    }

    /// Both absent agree; absent on one side only disagrees, whatever the other says.
    fn judged(mut self, tolerance: f64, rule: impl Into<String>) -> Self {
        self.tolerance = Some(tolerance);
        self.agrees = match (self.sim, self.qemu) {
            (None, None) => true,
            (Some(_), Some(_)) => self.difference.is_some_and(|d| d.abs() <= tolerance),
            _ => false,
        };
        self.rule = rule.into();
        self
    }
}

/// The comparison of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Scenario.
    pub scenario: String,
    /// Poll interval the time tolerances rest on, seconds.
    pub poll_interval_s: f64,
    /// Rows.
    pub rows: Vec<Row>,
    /// Every judged row agrees.
    pub agrees: bool,
    /// The sim runs at the guest's read noise the real run was also judged against
    /// (`ensemble::fidelity`); null where only the scenario's own sim run was compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<crate::judge::ensemble::Ensemble>,
}

/// How far past its end a run's recovery is extrapolated, in lengths of the run after the
/// disturbance: beyond, the run was not seen recovering (a 2-year error slewed at 83,333 ppm, or
/// one that freewheels toward zero at a few ppm, would take years), and it stays never.
const MAX_EXTRAPOLATION_RUNS: f64 = 10.0;

/// Seconds until |offset| would reach `limit_ns`, extrapolated from the last `window_s` seconds
/// of the run, when it was still above the limit at the end and falling, and would get there
/// within `MAX_EXTRAPOLATION_RUNS` times the run's length after the disturbance.
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
    let at = t_last + (v_last - limit_ns) / rate - end;
    (at <= MAX_EXTRAPOLATION_RUNS * (t_last - end)).then_some(at)
}

/// The larger magnitude of what is present (0 when neither is).
fn larger(a: Option<f64>, b: Option<f64>) -> f64 {
    a.into_iter().chain(b).map(f64::abs).fold(0.0, f64::max)
}

fn secs(ns: Option<i64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e9)
}

/// -1, 0 or +1 (`f64::signum` calls 0 positive).
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The first step, judged net of the offset each run came back with. How far off the guest came
/// back (after a reboot, anywhere in ±0.5 s: the RTC's whole seconds plus rtc_hctosys's half
/// second) is the offset row's business; these rows judge what the daemon did about it. Where both
/// runs came back equally far off, as after a scripted pause or jump, the residual row is the step
/// size itself within max(1 ms, 10%).
fn first_step_rows(sim: &Report, qemu: &Report) -> [Row; 3] {
    let step = |r: &Report| r.recovery.steps.first().map(|s| s.delta_ns as f64 / 1e9);
    let (step_s, step_q) = (step(sim), step(qemu));
    let (off_s, off_q) =
        (secs(sim.recovery.offset_after_disturbance_ns), secs(qemu.recovery.offset_after_disturbance_ns));
    let raw = Row::new("first_step_s", step_s, step_q).info(
        "judged as first_step_residual_s and first_step_direction, net of the offset each run came back with",
    );
    let left = |step: Option<f64>, off: Option<f64>| step.map(|s| s + off.unwrap_or(0.0));
    let residual = Row::new("first_step_residual_s", left(step_s, off_s), left(step_q, off_q)).judged(
        STEP_FLOOR_S.max(RELATIVE * larger(step_s, step_q)),
        "offset after the disturbance + first step, what the step left (0: exact; +3.5 s after -10 s: a 35% \
         overshoot); a step on one side only disagrees; else |qemu - sim| <= max(1 ms, 10% of the larger |first step|)",
    );
    let against = [off_s, off_q].iter().all(|o| o.is_some_and(|o| o.abs() >= DIRECTION_FLOOR_S));
    let direction = |step: Option<f64>, off: Option<f64>| {
        step.map(|s| if against { sign(-s * off.unwrap_or(0.0)) } else { sign(s) })
    };
    let dir = Row::new("first_step_direction", direction(step_s, off_s), direction(step_q, off_q)).judged(
        0.0,
        if against {
            "+1: against the offset after the disturbance (toward zero), -1: away from zero; must be equal"
        } else {
            "an offset after the disturbance is absent or under 1 ms: the step's own sign; must be equal"
        },
    );
    [raw, residual, dir]
}

/// Compares a sim and a QEMU report of the same scenario.
pub fn compare(sim: &Report, qemu: &Report, poll_interval_s: f64) -> Fidelity {
    let (rs, rq) = (&sim.recovery, &qemu.recovery);
    let time = |metric: &str, s: Option<f64>, q: Option<f64>| {
        Row::new(metric, s, q).judged(
            poll_interval_s + RELATIVE * larger(s, q),
            format!(
                "never on one side and a time on the other disagree; else |qemu - sim| <= poll interval \
                 ({poll_interval_s} s) + 10% of the larger"
            ),
        )
    };
    let mut rows = Vec::new();
    let (off_s, off_q) = (secs(rs.offset_after_disturbance_ns), secs(rq.offset_after_disturbance_ns));
    rows.push(Row::new("offset_after_disturbance_s", off_s, off_q).judged(
        1.0 + RELATIVE * larger(off_s, off_q),
        "absent on one side disagrees; else |qemu - sim| <= 1 s (a rebooted guest reads the RTC's whole seconds) \
         + 10% of the larger |value|",
    ));
    rows.push(time(
        "time_to_first_correction_s",
        rs.time_to_first_correction_s,
        rq.time_to_first_correction_s,
    ));
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
        let metric = format!("time_to_within_{key}_s");
        let mut row = if key == "1ms" {
            time(&metric, s, q)
        } else {
            Row::new(&metric, s, q)
                .info("it rests on the guest's noise floor (TCG timing jitter), which the sim does not model")
        };
        row.extrapolated = ex;
        rows.push(row);
    }
    let count = |r: &Report| Some(r.recovery.steps.len() as f64);
    rows.push(Row::new("steps", count(sim), count(qemu)).judged(0.0, "counts must be equal"));
    rows.extend(first_step_rows(sim, qemu));
    rows.push(
        Row::new(
            "max_abs_offset_s",
            Some(rs.max_abs_offset_ns as f64 / 1e9),
            Some(rq.max_abs_offset_ns as f64 / 1e9),
        )
        .info("the disturbance's size, judged as offset_after_disturbance_s"),
    );
    let agrees = rows.iter().all(|r| r.agrees);
    Fidelity { scenario: sim.scenario.clone(), poll_interval_s, rows, agrees, ensemble: None }
}

/// Largest `fidelity.json` read: a table of a dozen rows and an ensemble's runs, a few KiB.
pub const MAX_FIDELITY_BYTES: u64 = 16 << 20;

impl Fidelity {
    /// The comparison as the JSON written to `fidelity.json` and printed by `run --format json`.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a `fidelity.json` through the bounded reader (a regular file, not a symlink).
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = phc::input::read_text(path, MAX_FIDELITY_BYTES, phc::input::Links::Refuse)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a fidelity document: {e}", path.display()))
    }

    /// A table for the terminal and Markdown, with the rule of every row under it.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "## Fidelity: {}\n\nPoll interval {} s. Times agree within one poll interval + 10% of the larger of the \
             two; never against a time disagrees; step counts must be equal; the first step is judged net of the \
             offset each run came back with, within max(1 ms, 10%), and in the same direction.\n\n\
             | metric | sim | qemu | qemu - sim | tolerance | agrees |\n|---|---|---|---|---|---|\n",
            crate::format::escape::markdown_cell(&self.scenario),
            self.poll_interval_s
        );
        for r in &self.rows {
            let absent = if r.metric.starts_with("time_to") { "never" } else { "-" };
            // Counts and directions are whole numbers.
            let places = if matches!(r.metric.as_str(), "steps" | "first_step_direction") { 0 } else { 3 };
            let f = |v: Option<f64>| v.map_or_else(|| absent.to_owned(), |v| format!("{v:.places$}"));
            let q = if r.extrapolated { format!("{} (extrapolated)", f(r.qemu)) } else { f(r.qemu) };
            let judged = if r.tolerance.is_none() {
                "info"
            } else if r.agrees {
                "yes"
            } else {
                "**NO**"
            };
            let diff = r.difference.map_or_else(|| "-".to_owned(), |v| format!("{v:.places$}"));
            let tol = r.tolerance.map_or_else(|| "-".to_owned(), |v| format!("{v:.places$}"));
            let metric = crate::format::escape::markdown_cell(&r.metric);
            s.push_str(&format!("| {metric} | {} | {q} | {diff} | {tol} | {judged} |\n", f(r.sim)));
        }
        s.push_str("\nRules:\n\n");
        for r in &self.rows {
            let (metric, rule) = (
                crate::format::escape::markdown_line(&r.metric),
                crate::format::escape::markdown_cell(&r.rule),
            );
            s.push_str(&format!("- {metric}: {rule}\n"));
        }
        if let Some(e) = &self.ensemble {
            s.push_str(&e.to_markdown());
        }
        s.push_str(&format!("\nOverall: {}\n", if self.agrees { "agrees" } else { "DISAGREES" }));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::analysis::{Recovery, Step};
    use crate::model::observation::{Marker, Observation, Observations};
    use crate::model::scenario::Scenario;

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

    /// A 30 s pause whose recovery the test sets by hand. The series stays at -30 s, so nothing
    /// can be extrapolated from it: a null stays null.
    fn flat_report(set: impl FnOnce(&mut Recovery)) -> Report {
        let mut r = slewing_report();
        for o in &mut r.series {
            o.guest_offset_ns = Some(-30_000_000_000);
        }
        let rec = &mut r.recovery;
        rec.offset_after_disturbance_ns = Some(-30_000_000_000);
        rec.time_to_first_correction_s = Some(1.0);
        rec.time_to_within_s.insert("1ms".into(), Some(2.0));
        rec.time_to_within_s.insert("100us".into(), None);
        rec.steps = vec![step(30.0)];
        set(rec);
        r
    }

    fn step(delta_s: f64) -> Step {
        Step { t_s: 0.5, delta_ns: (delta_s * 1e9).round() as i64, source: "test".into() }
    }

    fn row<'a>(f: &'a Fidelity, metric: &str) -> &'a Row {
        f.rows.iter().find(|r| r.metric == metric).unwrap_or_else(|| panic!("no row {metric}"))
    }

    /// Which judged rows disagree.
    fn disagreeing(f: &Fidelity) -> Vec<&str> {
        f.rows.iter().filter(|r| !r.agrees).map(|r| r.metric.as_str()).collect()
    }

    #[test]
    fn identical_runs_agree_on_every_row() {
        let a = flat_report(|_| {});
        let f = compare(&a, &a, 8.0);
        assert!(f.agrees, "{}", f.to_markdown());
        assert!(f.rows.iter().all(|r| !r.rule.is_empty()), "every row states its rule");
    }

    #[test]
    fn never_against_a_time_disagrees_either_way() {
        let never = flat_report(|r| {
            r.time_to_first_correction_s = None;
            r.time_to_within_s.insert("1ms".into(), None);
        });
        let soon = flat_report(|r| r.time_to_first_correction_s = Some(5.0));
        for (sim, qemu) in [(&never, &soon), (&soon, &never)] {
            let f = compare(sim, qemu, 8.0);
            assert_eq!(
                disagreeing(&f),
                ["time_to_first_correction_s", "time_to_within_1ms_s"],
                "{}",
                f.to_markdown()
            );
            assert!(!f.agrees);
            assert!(f.to_markdown().contains("| time_to_first_correction_s | "), "{}", f.to_markdown());
        }
        let gone = flat_report(|r| r.offset_after_disturbance_ns = None);
        let f = compare(&gone, &soon, 8.0);
        assert!(!row(&f, "offset_after_disturbance_s").agrees);
    }

    #[test]
    fn never_on_both_sides_agrees() {
        let never = flat_report(|r| {
            r.time_to_first_correction_s = None;
            r.time_to_within_s.insert("1ms".into(), None);
        });
        let f = compare(&never, &never, 8.0);
        assert!(f.agrees, "{}", f.to_markdown());
        let r = row(&f, "time_to_within_1ms_s");
        assert!(r.tolerance.is_some() && r.sim.is_none() && r.qemu.is_none() && !r.extrapolated);
        assert!(f.to_markdown().contains("| time_to_within_1ms_s | never | never | - | 8.000 | yes |"));
    }

    #[test]
    fn times_within_a_poll_interval_plus_ten_percent_of_the_larger_agree() {
        let at = |t: f64| flat_report(|r| r.time_to_first_correction_s = Some(t));
        // 8 s + 10% of 50 s = 13 s.
        let f = compare(&at(40.0), &at(50.0), 8.0);
        assert!(f.agrees, "{}", f.to_markdown());
        assert_eq!(row(&f, "time_to_first_correction_s").tolerance, Some(13.0));
        // 14 s apart, against 8 s + 5.4 s.
        assert_eq!(disagreeing(&compare(&at(40.0), &at(54.0), 8.0)), ["time_to_first_correction_s"]);
    }

    #[test]
    fn the_tolerance_rests_on_the_larger_value_not_the_sims() {
        let at = |t: f64| flat_report(|r| r.time_to_first_correction_s = Some(t));
        // Sim 0.5 s against QEMU 60 s, and the other way round: 59.5 s apart, tolerance 8 + 6 s.
        for (s, q) in [(0.5, 60.0), (60.0, 0.5)] {
            let f = compare(&at(s), &at(q), 8.0);
            let r = row(&f, "time_to_first_correction_s");
            assert_eq!((r.agrees, r.tolerance), (false, Some(14.0)), "sim {s} qemu {q}");
        }
        // 90 s against 100 s with a 0.5 s poll: 10.5 s of tolerance both ways (from the sim alone it
        // would be 9.5 s one way and 10.5 s the other).
        for (s, q) in [(90.0, 100.0), (100.0, 90.0)] {
            let f = compare(&at(s), &at(q), 0.5);
            let r = row(&f, "time_to_first_correction_s");
            assert_eq!((r.agrees, r.tolerance), (true, Some(10.5)), "sim {s} qemu {q}");
        }
    }

    #[test]
    fn a_different_step_count_disagrees() {
        let once = flat_report(|_| {});
        let twice = flat_report(|r| r.steps = vec![step(30.0), step(-2.0)]);
        let f = compare(&once, &twice, 8.0);
        assert_eq!(disagreeing(&f), ["steps"], "{}", f.to_markdown());
        // A step on one side only: the count and the first step disagree.
        let never = flat_report(|r| r.steps.clear());
        let f = compare(&never, &once, 8.0);
        assert_eq!(disagreeing(&f), ["steps", "first_step_residual_s", "first_step_direction"]);
        assert!(compare(&never, &never, 8.0).agrees);
    }

    #[test]
    fn a_first_step_overshooting_by_35_percent_disagrees() {
        let jump = |steps: Vec<Step>| {
            flat_report(|r| {
                r.offset_after_disturbance_ns = Some(-10_000_000_000);
                r.steps = steps;
            })
        };
        // Same count: only the size tells them apart. 3.5 s left against 0 s, tolerance 1.35 s.
        let f = compare(&jump(vec![step(10.0)]), &jump(vec![step(13.5)]), 8.0);
        assert_eq!(disagreeing(&f), ["first_step_residual_s"], "{}", f.to_markdown());
        let r = row(&f, "first_step_residual_s");
        assert_eq!((r.sim, r.qemu, r.tolerance), (Some(0.0), Some(3.5), Some(1.35)));
        // What real chronyd did against a model that steps once.
        let f = compare(&jump(vec![step(10.0)]), &jump(vec![step(13.5), step(-3.5)]), 8.0);
        assert_eq!(disagreeing(&f), ["steps", "first_step_residual_s"]);
        assert!(f
            .to_markdown()
            .contains("| first_step_residual_s | 0.000 | 3.500 | 3.500 | 1.350 | **NO** |"));
    }

    #[test]
    fn matching_steps_agree() {
        // phc-jump-10s: the sim's steps against those chronyd 4.3 was seen to make.
        let sim = flat_report(|r| {
            r.offset_after_disturbance_ns = Some(-10_000_000_000);
            r.steps = vec![step(13.544), step(-3.364)];
        });
        let real = flat_report(|r| {
            r.offset_after_disturbance_ns = Some(-10_000_300_000);
            r.steps = vec![step(13.48), step(-3.06)];
        });
        let f = compare(&sim, &real, 8.0);
        assert!(f.agrees, "{}", f.to_markdown());
        assert_eq!(row(&f, "first_step_direction").sim, Some(1.0));
    }

    #[test]
    fn a_first_step_is_judged_against_the_offset_it_corrected() {
        // A reboot: the RTC brings the guest back anywhere within ±0.5 s, hv_utils steps it away.
        let back = |off_s: f64| {
            flat_report(|r| {
                r.offset_after_disturbance_ns = Some((off_s * 1e9).round() as i64);
                r.steps = vec![step(-off_s)];
            })
        };
        let f = compare(&back(0.1), &back(-0.3), 8.0);
        assert!(f.agrees, "{}", f.to_markdown());
        // The same offset, stepped only half away.
        let half = flat_report(|r| {
            r.offset_after_disturbance_ns = Some(-300_000_000);
            r.steps = vec![step(0.15)];
        });
        assert_eq!(disagreeing(&compare(&back(0.1), &half, 8.0)), ["first_step_residual_s"]);
    }

    #[test]
    fn first_steps_in_opposite_directions_disagree() {
        // Too small for the size rule to see, but one goes toward zero and the other away.
        let small = |delta_s: f64| {
            flat_report(|r| {
                r.offset_after_disturbance_ns = Some(-10_000_000_000);
                r.steps = vec![step(delta_s)];
            })
        };
        let f = compare(&small(0.0004), &small(-0.0004), 8.0);
        assert_eq!(disagreeing(&f), ["first_step_direction"], "{}", f.to_markdown());
        let r = row(&f, "first_step_direction");
        assert_eq!((r.sim, r.qemu), (Some(1.0), Some(-1.0)));
        // Without an offset to go against, the steps' own signs.
        let bare = |delta_s: f64| {
            flat_report(|r| {
                r.offset_after_disturbance_ns = None;
                r.steps = vec![step(delta_s)];
            })
        };
        let f = compare(&bare(1.0), &bare(-1.0), 8.0);
        assert!(disagreeing(&f).contains(&"first_step_direction"), "{}", f.to_markdown());
        assert!(compare(&bare(1.0), &bare(1.05), 8.0).agrees);
    }

    #[test]
    fn the_markdown_and_json_state_the_rules() {
        let a = flat_report(|_| {});
        let f = compare(&a, &a, 8.0);
        let md = f.to_markdown();
        for needle in [
            "one poll interval + 10% of the larger",
            "Rules:",
            "- steps: counts must be equal",
            "max(1 ms, 10%",
        ] {
            assert!(md.contains(needle), "{needle:?} missing from\n{md}");
        }
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["rows"][0]["metric"], "offset_after_disturbance_s");
        assert!(v["rows"][0]["rule"].as_str().unwrap().contains("1 s"));
        let back: Fidelity = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
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

    /// `date` set back two years and a clock that drifts toward the truth at 1 ppm: falling, but
    /// 2,000 years from 1 ms, which is no recovery seen.
    #[test]
    fn a_recovery_years_away_is_not_extrapolated() {
        let mut r = slewing_report();
        for o in &mut r.series {
            o.guest_offset_ns = Some(-63_072_000_000_000_000 + (o.t_s * 1000.0) as i64);
        }
        assert_eq!(extrapolate_within(&r, 1e6, 10.0), None);
    }

    #[test]
    fn an_extrapolated_recovery_is_judged_against_the_sims() {
        let short = slewing_report();
        // The sim, run over the full window, saw the slew end.
        let mut full = slewing_report();
        full.recovery.time_to_within_s.insert("1ms".into(), Some(325.0));
        let f = compare(&full, &short, 8.0);
        assert!(f.agrees, "{}", f.to_markdown());
        let row = row(&f, "time_to_within_1ms_s");
        assert!(row.extrapolated && row.sim == Some(325.0), "{row:?}");
        assert!(f.to_markdown().contains("329.990 (extrapolated)"));
        // A sim that never got there does not agree with a guest projected to.
        let f = compare(&short, &short, 8.0);
        assert_eq!(disagreeing(&f), ["time_to_within_1ms_s"], "{}", f.to_markdown());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// fidelity.md keeps its table's columns and carries no HTML, whatever the scenario and
        /// the rows are called.
        #[test]
        fn fidelity_md_from_any_text_keeps_its_table(w in proptest::collection::vec(crate::format::escape::fixtures::nasty(), 1..4)) {
            use crate::format::escape::fixtures::{terminal_safe, unescaped};
            let r = slewing_report();
            let mut f = compare(&r, &r, 2.0);
            f.scenario = w[0].clone();
            for (i, row) in f.rows.iter_mut().enumerate() {
                row.metric = w[i % w.len()].clone();
                row.rule = w[(i + 1) % w.len()].clone();
            }
            let md = f.to_markdown();
            terminal_safe(&md).map_err(proptest::test_runner::TestCaseError::fail)?;
            let first_table: Vec<usize> = md
                .lines()
                .skip_while(|l| !l.starts_with('|'))
                .take_while(|l| l.starts_with('|'))
                .map(|l| unescaped(l).matches('|').count())
                .collect();
            proptest::prop_assert_eq!(first_table.len(), 2 + f.rows.len());
            proptest::prop_assert!(first_table.iter().all(|&n| n == 7), "{:?}\n{}", first_table, md);
            proptest::prop_assert!(!unescaped(&md).contains(['<', '>', '`']), "{}", md);
        }
    }
}
