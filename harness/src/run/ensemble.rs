//! Fidelity against an ensemble of sim runs at the guest's noise.
//!
//! One real run is one draw. Where chronyd's recovery turns on its runs test (how long samples from
//! before a jump survive in its regression, regress.c:283), the poll it first corrects at moves
//! with the scatter of its regression: resume-without-sync on the real chronyd first corrected
//! 57.5 s after the resume on an idle host (four runs), 65.5 s on a loaded one and 81.5 s in a CI
//! run, while the sim at the scenario's own noise gives 57.2 s for every seed. So the sim is run
//! as the guest was: its read noise is set so that its chronyd regression scatters as the real
//! chronyd's did (both estimated alike, `mock_phc::discipline::sample_noise`), over `RUNS` seeds,
//! and the real run is judged as one draw from those runs (`judge::distribution`): inside their
//! central 80% or in their tail agrees, outside their range (each widened by the row's tolerance)
//! or with a class none of them gives disagrees. The report shows what every run gave; with no
//! figure from the guest (phc2sys, ntpd, timesyncd) the ensemble runs at the
//! scenario's own noise.
#![forbid(unsafe_code)]

use mock_phc::discipline::sample_noise::Noise;
use mock_phc::DisciplineConfig;

use crate::judge::distribution::NO_READ_NOISE_NS;
use crate::judge::ensemble::{Ensemble, Member, ReadPath};
use crate::judge::fidelity::{self, Fidelity};
use crate::judge::report::Report;
use crate::model::scenario::Scenario;
use crate::run::runner;

/// Sim runs in an ensemble: the scenario's seed and the next `RUNS - 1`. Sixty, so that the sim's
/// range holds its own tail: of five real runs drawn from the sims' own distribution, one lands
/// outside twelve sims' range (before the tolerance widens it) about half the time, outside
/// sixty's under one time in six.
pub const RUNS: u64 = 60;
/// Bounds on the factor the scenario's read noise is scaled by.
const SCALE: (f64, f64) = (0.1, 100.0);
/// The read noise the fit starts from where the scenario has none, ns.
const REFERENCE_NS: f64 = 50.0;

/// One sim run: its seed, report and chronyd's noise.
struct Run {
    seed: u64,
    report: Report,
    noise: Option<Noise>,
}

/// Below this share of PHC polls dropped by the guest's chronyd (virtual time drops none: a
/// read's window is counted in instructions) the sim reads the PHC as the scenario says.
const DROPPED_SHARE_MIN: f64 = 0.02;
/// Sim runs that measure the share of polls the sim's chronyd drops at a share of slow read
/// batches, and the halvings that find the share at which it drops as many as the guest's did.
const DROPPED_PROBE_RUNS: u64 = 5;
const DROPPED_PROBE_HALVINGS: u32 = 7;

/// The scenario with `seed`, read noise `noise_ns`, and its chronyd reading the PHC as `path`
/// says.
fn variant(s: &Scenario, seed: u64, noise_ns: f64, path: &ReadPath) -> Scenario {
    let mut m = s.clone();
    m.world.seed = seed;
    m.world.guest.phase_noise_ns = noise_ns;
    if path.slow_batch_share > 0.0 {
        m.world.phc.read_latency_mut().slow_batch_share = path.slow_batch_share;
    }
    for d in &mut m.world.disciplines {
        if let DisciplineConfig::Chrony(c) = d {
            c.nocrossts |= path.nocrossts;
            if path.start_phase_drawn {
                c.start_delay_s += unit_draw(seed) * 2f64.powi(c.poll.into());
            }
        }
    }
    m
}

/// A number in [0, 1) that depends on the seed alone (splitmix64's finaliser).
fn unit_draw(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The scenario at read noise `noise_ns` and the ensemble's seeds (its own first).
fn runs_at(s: &Scenario, noise_ns: f64) -> Vec<Run> {
    runs_with(s, noise_ns, &ReadPath::default(), RUNS)
}

/// `n` runs of the scenario at read noise `noise_ns` reading as `path`, seeds from its own.
fn runs_with(s: &Scenario, noise_ns: f64, path: &ReadPath, n: u64) -> Vec<Run> {
    (0..n)
        .filter_map(|k| {
            let seed = s.world.seed.wrapping_add(k);
            let (report, noise) = runner::run_sim_noise(&variant(s, seed, noise_ns, path)).ok()?;
            Some(Run { seed, report, noise })
        })
        .collect()
}

/// The runs' dropped share of PHC polls, on average.
fn mean_dropped_share(runs: &[Run]) -> Option<f64> {
    crate::model::stats::mean(runs.iter().filter_map(|r| r.noise?.dropped_share))
}

/// How the sim's chronyd reads the PHC to stand for the guest's (`ReadPath`): where the guest's
/// dropped a share of its polls (`dropped_guest`), with `nocrossts` (a guest that drops polls
/// read no cross timestamps, whose delay is always 0) and the share of slow read batches at
/// which the sim's chronyd drops as many; where the guest ran in real time (`real_time`), from
/// a start phase drawn per seed. Only where chronyd reads a PHC.
fn read_path(s: &Scenario, noise_ns: f64, dropped_guest: Option<f64>, real_time: bool) -> ReadPath {
    let reads_phc =
        s.world.disciplines.iter().any(|d| matches!(d, DisciplineConfig::Chrony(c) if c.refclock));
    if !reads_phc {
        return ReadPath::default();
    }
    let mut path =
        ReadPath { dropped_share_guest: dropped_guest, start_phase_drawn: real_time, ..Default::default() };
    if let Some(g) = dropped_guest.filter(|g| *g >= DROPPED_SHARE_MIN) {
        path.nocrossts = true;
        // Not every slow batch is dropped: hwclock.c keeps the quickest reading where its model
        // is being rebuilt or mispredicts by more than the reading's error, which the sim's read
        // noise against its read windows decides. So the share is found by halving, on the sim's
        // own drops (more slow batches, more drops).
        let dropped_at = |share: f64| {
            let probe = ReadPath { nocrossts: true, slow_batch_share: share, ..Default::default() };
            mean_dropped_share(&runs_with(s, noise_ns, &probe, DROPPED_PROBE_RUNS)).unwrap_or(0.0)
        };
        path.slow_batch_share = if dropped_at(1.0) <= g {
            1.0
        } else {
            let (mut lo, mut hi) = (0.0, 1.0);
            for _ in 0..DROPPED_PROBE_HALVINGS {
                let mid = (lo + hi) / 2.0;
                if dropped_at(mid) < g {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            (lo + hi) / 2.0
        };
    }
    path
}

/// Whether a QEMU report's guest ran in real time.
fn real_time(r: &Report) -> bool {
    r.backend_info.get("clock").and_then(serde_json::Value::as_str) == Some("real")
}

/// The runs' regression standard deviation, ns, on average.
fn mean_regression_sd_ns(runs: &[Run]) -> Option<f64> {
    crate::model::stats::mean(runs.iter().filter_map(|r| r.noise?.regression_sd_ns))
}

/// The read noise at which the sim's chronyd regression scatters as the guest's (`guest_ns`).
/// The scatter is the read noise's share and a floor (the oscillator's wander) in quadrature,
/// sd^2 = a^2 + (k noise)^2, fitted at the scenario's noise (`at_base`, its runs there) and twice
/// it (at `REFERENCE_NS` and twice it where the scenario has none: the guest always has some).
/// The scenario's noise where the guest has no figure.
fn scaled_noise(s: &Scenario, at_base: &[Run], guest_ns: Option<f64>) -> f64 {
    let base = s.world.guest.phase_noise_ns;
    let Some(g) = guest_ns else { return base };
    let (p, first) = if base > 0.0 {
        (base, mean_regression_sd_ns(at_base))
    } else {
        (REFERENCE_NS, mean_regression_sd_ns(&runs_at(s, REFERENCE_NS)))
    };
    let (Some(s0), Some(s1)) = (first, mean_regression_sd_ns(&runs_at(s, 2.0 * p))) else {
        return base;
    };
    let k2 = (s1 * s1 - s0 * s0) / (3.0 * p * p);
    let noise = if k2 > 0.0 {
        let a2 = s0 * s0 - k2 * p * p;
        ((g * g - a2).max(0.0) / k2).sqrt()
    } else {
        p * g / s0
    };
    noise.clamp(SCALE.0 * base, SCALE.1 * p)
}

fn info_f64(r: &Report, key: &str) -> Option<f64> {
    r.backend_info.get(key).and_then(serde_json::Value::as_f64)
}

/// The guest's regression scatter to scale the sim's read noise to, or none where it is not
/// read noise. The scaling gives the sim white read noise that scatters chronyd's regression as
/// much as the guest's; that stands only where the guest's raw refclock samples have read noise
/// at all. Where they have none (`chrony_sample_noise_ns` under [`NO_READ_NOISE_NS`]: igb's
/// PHC is QEMU's virtual clock, read at instruction-exact times; measured 0.0 ns in 32 of 32
/// phc-jump-10s runs, whose regression scattered 5-98 ns all the same), the scatter comes from
/// elsewhere and is not white: the real chronyd's runs test pruned old samples as the sim's does
/// at no read noise (a step at 45.0 s in 32 runs against the zero-noise sim's 44.9 s), while
/// white noise of the same scatter held them until 53-109 s. The scenario's own noise is then
/// kept.
fn read_noise_scatter(regression_sd_ns: Option<f64>, sample_noise_ns: Option<f64>) -> Option<f64> {
    match sample_noise_ns {
        Some(n) if n < NO_READ_NOISE_NS => None,
        _ => regression_sd_ns,
    }
}

/// `fidelity::compare(sim, qemu)` for the rows, and the verdict of the real run judged as one
/// draw from the ensemble (see the module's comment): inside the sim runs' central 80% or their
/// tail on every row, widened by the row's tolerance, its classes among theirs; weak evidence. The result
/// carries the ensemble and that judgement.
pub fn fidelity(s: &Scenario, sim: &Report, qemu: &Report) -> Fidelity {
    let poll = s.poll_interval_s();
    let mut f = fidelity::compare(sim, qemu, poll);
    let base = s.world.guest.phase_noise_ns;
    // The scenario's own run is the first of these.
    let at_base = runs_at(s, base);
    let own = at_base.first().and_then(|r| r.noise);
    let regression_sd_ns_guest = info_f64(qemu, "chrony_regression_sd_ns");
    let sample_noise_ns_guest = info_f64(qemu, "chrony_sample_noise_ns");
    let noise = scaled_noise(s, &at_base, read_noise_scatter(regression_sd_ns_guest, sample_noise_ns_guest));
    let mut path = read_path(s, noise, info_f64(qemu, "chrony_refclock_dropped_share"), real_time(qemu));
    let runs = if noise == base && path.is_plain() { at_base } else { runs_with(s, noise, &path, RUNS) };
    if !path.is_plain() {
        path.dropped_share_sim = mean_dropped_share(&runs);
    }
    let members = runs
        .iter()
        .map(|r| Member {
            seed: r.seed,
            time_to_first_correction_s: r.report.recovery.time_to_first_correction_s,
            steps: r.report.recovery.steps.len(),
            regression_sd_ns: r.noise.and_then(|n| n.regression_sd_ns),
            agrees: fidelity::compare(&r.report, qemu, poll).agrees,
        })
        .collect();
    let reports: Vec<&Report> = runs.iter().map(|r| &r.report).collect();
    let draw = crate::judge::distribution::judge(&reports, &[qemu], poll);
    if let Some(d) = &draw {
        f.agrees = d.agrees;
    }
    f.ensemble = Some(Ensemble {
        regression_sd_ns_sim: own.and_then(|n| n.regression_sd_ns),
        regression_sd_ns_guest,
        sample_noise_ns_sim: own.and_then(|n| n.sample_ns),
        sample_noise_ns_guest,
        scenario_phase_noise_ns: base,
        phase_noise_ns: noise,
        read_path: path,
        members,
        draw,
    });
    f
}

/// The sim runs the real runs of `--repeat` are judged against (`judge::distribution`): the
/// scenario at the read noise where the sim's chronyd regression scatters as the guest's did
/// (the median of the real runs' `chrony_regression_sd_ns`), over as many seeds as there were
/// real runs and at least `RUNS` (the scenario's seed first), with the noise used and the
/// guest's figures. Without a figure from the guest, or where its raw samples have no read
/// noise (`read_noise_scatter`), the scenario's own noise.
pub fn calibrated_sims(
    s: &Scenario,
    qemu: &[&Report],
) -> (Vec<Report>, crate::judge::distribution::Calibration) {
    let base = s.world.guest.phase_noise_ns;
    let median = |key: &str| {
        let v: Vec<Option<f64>> = qemu.iter().map(|q| info_f64(q, key)).collect();
        crate::judge::distribution::Stat::of(&v).median
    };
    let guest_ns = median("chrony_regression_sd_ns");
    let sample_ns = median("chrony_sample_noise_ns");
    let at_base = runs_at(s, base);
    let noise = scaled_noise(s, &at_base, read_noise_scatter(guest_ns, sample_ns));
    let mut path =
        read_path(s, noise, median("chrony_refclock_dropped_share"), qemu.iter().any(|q| real_time(q)));
    let n = (qemu.len() as u64).max(RUNS);
    let runs = runs_with(s, noise, &path, n);
    if !path.is_plain() {
        path.dropped_share_sim = mean_dropped_share(&runs);
    }
    let reports = runs.into_iter().map(|r| r.report).collect();
    let calibration = crate::judge::distribution::Calibration {
        scenario_phase_noise_ns: base,
        phase_noise_ns: noise,
        regression_sd_ns_guest: guest_ns,
        sample_noise_ns_guest: sample_ns,
        read_path: path,
    };
    (reports, calibration)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(noise_ns: f64) -> Scenario {
        let (_, text) = runner::BUILTIN.iter().find(|(n, _)| *n == "resume-without-sync").unwrap();
        let mut s = Scenario::parse(text, Path::new("resume-without-sync.toml")).unwrap();
        s.world.guest.phase_noise_ns = noise_ns;
        s
    }

    /// A stand-in for a real run: the sim at `noise_ns` and `seed`, its noise recorded as the
    /// QEMU backend records the guest's.
    fn stand_in(noise_ns: f64, seed: u64) -> Report {
        let (mut r, n) =
            runner::run_sim_noise(&variant(&scenario(noise_ns), seed, noise_ns, &ReadPath::default()))
                .unwrap();
        let n = n.unwrap();
        r.backend = "qemu".into();
        r.backend_info
            .insert("chrony_regression_sd_ns".into(), serde_json::json!(n.regression_sd_ns.unwrap()));
        r.backend_info.insert("chrony_sample_noise_ns".into(), serde_json::json!(n.sample_ns.unwrap()));
        r
    }

    #[test]
    fn the_noise_found_gives_the_guests_scatter() {
        let s = scenario(50.0);
        let at_base = runs_at(&s, 50.0);
        for target in [150.0, 300.0] {
            let g = mean_regression_sd_ns(&runs_at(&s, target)).unwrap();
            let found = scaled_noise(&s, &at_base, Some(g));
            assert!(
                (found / target - 1.0).abs() < 0.25,
                "{target} ns read noise (sd {g:.1} ns) found as {found:.1}"
            );
        }
        assert_eq!(scaled_noise(&s, &at_base, None), 50.0);
        assert_eq!(scaled_noise(&s, &at_base, Some(1e9)), 5000.0, "bounded");
        // A scenario without read noise is fitted from REFERENCE_NS: the guest always has some.
        let quiet = scenario(0.0);
        let quiet_base = runs_at(&quiet, 0.0);
        let g = mean_regression_sd_ns(&runs_at(&quiet, 200.0)).unwrap();
        let found = scaled_noise(&quiet, &quiet_base, Some(g));
        assert!((found / 200.0 - 1.0).abs() < 0.25, "200 ns (sd {g:.1} ns) found as {found:.1} from none");
        assert_eq!(scaled_noise(&quiet, &quiet_base, None), 0.0);
    }

    #[test]
    fn a_later_poll_at_the_guests_noise_is_one_draw_inside_the_ensemble() {
        let s = scenario(50.0);
        let sim = runner::run_sim(&s).unwrap();
        let own = sim.recovery.time_to_first_correction_s.unwrap();
        // With more read noise some seeds first correct polls later than every seed at 50 ns.
        let late = (s.world.seed..s.world.seed + RUNS)
            .map(|k| stand_in(200.0, k))
            .find(|r| r.recovery.time_to_first_correction_s.is_some_and(|t| t > own + 20.0))
            .expect("a later first correction at 200 ns among the ensemble's seeds");
        assert!(!fidelity::compare(&sim, &late, 8.0).agrees, "the scenario's own run should disagree");
        let f = fidelity(&s, &sim, &late);
        assert!(f.agrees, "{}", f.to_markdown());
        let d = f.ensemble.as_ref().unwrap().draw.as_ref().unwrap();
        assert!(d.weak && d.agrees && d.runs == 1, "{d:?}");
        assert!(
            f.to_markdown().contains("One draw: inside on every row (weak evidence)"),
            "{}",
            f.to_markdown()
        );

        // The same late run with no noise measured in the guest: the ensemble stays at the
        // scenario's 50 ns (where most of sixty seeds correct at one poll; an outcome none of
        // them gives disagrees, `an_outcome_no_run_gives_disagrees`).
        let mut blind = late.clone();
        blind.backend_info.clear();
        let e = fidelity(&s, &sim, &blind).ensemble.unwrap();
        assert_eq!(e.phase_noise_ns, 50.0);
        assert_eq!(e.members.len() as u64, RUNS);
    }

    #[test]
    fn a_guest_without_read_noise_keeps_the_scenarios_noise() {
        // Readings exactly linear (igb): the regression's scatter is not matched with white
        // noise; with read noise it is.
        assert_eq!(read_noise_scatter(Some(27.0), Some(0.0)), None);
        assert_eq!(read_noise_scatter(Some(27.0), Some(4.8)), Some(27.0));
        assert_eq!(read_noise_scatter(Some(27.0), None), Some(27.0));
        let s = scenario(50.0);
        let sim = runner::run_sim(&s).unwrap();
        let mut real = stand_in(200.0, s.world.seed);
        real.backend_info.insert("chrony_sample_noise_ns".into(), serde_json::Value::from(0.0));
        let e = fidelity(&s, &sim, &real).ensemble.unwrap();
        assert_eq!(e.phase_noise_ns, 50.0, "{e:?}");
        let (_, c) = calibrated_sims(&s, &[&real, &real]);
        assert_eq!((c.phase_noise_ns, c.sample_noise_ns_guest), (50.0, Some(0.0)));
    }

    #[test]
    fn a_guest_that_dropped_polls_is_stood_for_by_a_sim_that_drops_as_many() {
        let s = scenario(50.0);
        // Virtual time, no polls dropped: the scenario's own read path.
        assert!(read_path(&s, 50.0, Some(0.0), false).is_plain());
        assert!(read_path(&s, 50.0, None, false).is_plain());
        // A third dropped (igb in real time under TCG measured 0.33-0.39).
        let path = read_path(&s, 50.0, Some(0.33), false);
        assert!(path.nocrossts && path.slow_batch_share > 0.2 && !path.start_phase_drawn, "{path:?}");
        let got = mean_dropped_share(&runs_with(&s, 50.0, &path, 5)).unwrap();
        assert!((got - 0.33).abs() < 0.05, "the sim dropped {got}");
        // The same scenario read as written drops far fewer.
        let plain = mean_dropped_share(&runs_with(&s, 50.0, &ReadPath::default(), 5)).unwrap();
        assert!(plain < 0.1, "{plain}");

        // A guest in real time: chronyd's start is drawn per seed, within one poll.
        let path = read_path(&s, 50.0, Some(0.0), true);
        assert!(path.start_phase_drawn && !path.nocrossts, "{path:?}");
        let start = |seed| match &variant(&s, seed, 50.0, &path).world.disciplines[..] {
            [.., DisciplineConfig::Chrony(c)] => c.start_delay_s,
            other => panic!("{other:?}"),
        };
        let poll_s = match s.world.disciplines.last() {
            Some(DisciplineConfig::Chrony(c)) => 2f64.powi(c.poll.into()),
            other => panic!("{other:?}"),
        };
        let starts: Vec<f64> = (1..=20).map(start).collect();
        let (lo, hi) = starts.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(hi - lo > poll_s / 2.0 && hi - lo < poll_s, "{starts:?}");
        assert_eq!(start(7), start(7));
        // And the report says so.
        let mut real = stand_in(50.0, s.world.seed);
        real.backend_info.insert("clock".into(), serde_json::json!("real"));
        real.backend_info.insert("chrony_refclock_dropped_share".into(), serde_json::json!(0.33));
        let sim = runner::run_sim(&s).unwrap();
        let md = fidelity(&s, &sim, &real).to_markdown();
        assert!(md.contains("`nocrossts`") && md.contains("drawn from its seed"), "{md}");
    }

    #[test]
    fn an_outcome_no_run_gives_disagrees() {
        let s = scenario(50.0);
        let sim = runner::run_sim(&s).unwrap();
        let mut odd = stand_in(200.0, s.world.seed);
        odd.recovery.time_to_first_correction_s = Some(400.0);
        let f = fidelity(&s, &sim, &odd);
        assert!(!f.agrees, "{}", f.to_markdown());
        let d = f.ensemble.unwrap().draw.unwrap();
        assert!(!d.agrees && d.runs_inside == 0, "{d:?}");
    }
}
