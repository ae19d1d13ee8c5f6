//! chrony's model against what the real chronyd 4.3 does.

mod common;
use common::*;
use mock_phc::*;
use proptest::prelude::*;

/// Real chronyd 4.3 in a QEMU guest, `refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0 stratum 2`,
/// `makestep 1.0 -1`, PHC jumping +10 s: no correction for ~50 s, a step of +13.48 s (overshoot
/// from the regression's slope), a step of -3.06 s, settled ~85 s after the jump.
#[test]
fn host_step_of_ten_seconds_has_the_real_shape() {
    let mut w = world(kvm(), vec![chrony(Some(1.0), -1)]);
    w.run_until(300 * S);
    w.drain_events();
    w.apply(&Disturbance::HostStep { delta_s: 10.0 });
    let t0 = w.now_ns();
    let settled = settle_time_s(&mut w, t0, 200, 0.05).expect("settles");
    let st = steps(&w.drain_events());
    assert_eq!(st.len(), 2, "{st:?}");
    let first_s = (st[0].0 - t0) as f64 * 1e-9;
    let overshoot_s = st[0].1 as f64 * 1e-9;
    let back_s = st[1].1 as f64 * 1e-9;
    // Tolerances: the phase of the jump within the 8 s poll moves every number a little.
    assert!((20.0..=60.0).contains(&first_s), "first correction after {first_s} s");
    assert!((12.0..=15.0).contains(&overshoot_s), "first step {overshoot_s}");
    assert!((-4.5..=-2.0).contains(&back_s), "second step {back_s}");
    assert!((50.0..=120.0).contains(&settled), "settled after {settled} s");
}

#[test]
fn slew_only_recovery_takes_offset_over_maxslewrate() {
    let mut w = world(kvm(), vec![chrony(None, -1)]);
    w.run_until(300 * S);
    w.apply(&Disturbance::GuestStep { delta_s: -30.0 });
    let t0 = w.now_ns();
    let settled = settle_time_s(&mut w, t0, 900, 0.01).expect("settles");
    let ev = w.drain_events();
    assert!(!ev.iter().any(|e| e.source == "chrony" && matches!(e.kind, EventKind::Step { .. })), "{ev:?}");
    // 30 s / 0.0833 = 360 s of slewing, plus the time to the first correction (tens of
    // seconds), within 25%.
    let expected = 30.0 / 0.083_333 + 30.0;
    assert!((settled - expected).abs() < expected * 0.25, "settled after {settled} s, expected ~{expected}");
}

#[test]
fn azure_pause_is_corrected_at_once_by_hv_utils() {
    let cfg = WorldConfig {
        disciplines: vec![DisciplineConfig::HvUtils(HvUtilsConfig::default()), chrony(Some(1.0), -1)],
        ..Default::default()
    };
    let mut w = World::new(&cfg).unwrap();
    w.run_until(300 * S);
    w.drain_events();
    w.apply(&Disturbance::Pause { duration_s: 30.0, sync_on_resume: true });
    w.run_until(330 * S);
    // The guest comes back with the pause's error; the SYNC sample reaches it moments later.
    assert!(
        (w.guest_offset_ns() + 30 * S).abs() < 1_000_000,
        "offset {} right at resume",
        w.guest_offset_ns()
    );
    let sync_at = 330 * S + mock_phc::SYNC_DELIVERY_NS;
    w.run_until(sync_at);
    assert!(w.guest_offset_ns().abs() < 1_000_000, "offset {} after the SYNC sample", w.guest_offset_ns());
    let st = steps(&w.drain_events());
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].0, sync_at);
    assert!((st[0].1 - 30 * S).abs() < 1_000_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// makestep: no step under the threshold; a step well above it while the limit allows it.
    /// Just above it (1.5 s against 1 s) the first update may see only part of the jump through
    /// the median filter and regression and slew it, after which the raw offset (what
    /// reference.c compares) is under the threshold: the model does not promise a step there.
    #[test]
    fn makestep_steps_iff_above_threshold_and_allowed(
        offset_ms in prop::sample::select(vec![-5000i64, -3000, -400, 300, 800, 2500, 20000]),
        limit in prop::sample::select(vec![-1i32, 0, 100]),
    ) {
        let mut w = world(kvm(), vec![chrony(Some(1.0), limit)]);
        w.run_until(120 * S);
        w.drain_events();
        w.apply(&Disturbance::GuestStep { delta_s: offset_ms as f64 * 1e-3 });
        w.run_until(220 * S);
        let chrony_steps: Vec<_> = w.drain_events().into_iter()
            .filter(|e| e.source == "chrony" && matches!(e.kind, EventKind::Step { .. })).collect();
        let expect = offset_ms.abs() > 1000 && limit != 0;
        prop_assert_eq!(!chrony_steps.is_empty(), expect, "{:?}", chrony_steps);
    }
}
