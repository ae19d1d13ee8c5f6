//! Properties of the world: errnos, staleness, monotonic clocks, determinism, config round trips.

mod common;
use common::*;
use mock_phc::*;
use phc::SysClock;
use proptest::prelude::*;

fn hyperv() -> PhcConfig {
    PhcConfig::default()
}

#[test]
fn errnos_per_personality() {
    use phc::Error as E;
    let mut h = world(hyperv(), vec![]);
    assert!(matches!(h.read(ReadMethod::Extended(SysClock::Realtime), 5), Err(E::NotSupported)));
    assert!(matches!(h.read(ReadMethod::Precise, 1), Err(E::NotSupported)));
    assert_eq!(h.read(ReadMethod::Basic, 25).unwrap().len(), 25);
    assert!(matches!(h.read(ReadMethod::Basic, 26), Err(E::InvalidArgument)));
    assert!(matches!(h.read(ReadMethod::Basic, 0), Err(E::InvalidArgument)));
    let mut k = world(kvm(), vec![]);
    assert!(matches!(k.read(ReadMethod::Extended(SysClock::Realtime), 5), Err(E::NotSupported)));
    assert_eq!(k.read(ReadMethod::Precise, 1).unwrap()[0].delay_ns(), 0);
    let mut v = world(PhcConfig::Vmclock { read_latency: LatencyConfig::vmclock() }, vec![]);
    assert!(v.read(ReadMethod::Extended(SysClock::MonotonicRaw), 3).is_ok());
    assert!(v.read(ReadMethod::Precise, 1).is_ok());
    let nic = PhcConfig::Nic {
        max_adj_ppb: 62_499_999,
        oscillator: OscillatorConfig::default(),
        fed_by_host: false,
        read_latency: LatencyConfig::nic(),
    };
    let mut n = world(nic, vec![]);
    assert!(n.read(ReadMethod::Extended(SysClock::Realtime), 3).is_ok());
    assert!(matches!(n.read(ReadMethod::Precise, 1), Err(E::NotSupported)));
}

#[test]
fn basic_reads_share_timestamps_and_bracket_the_phc() {
    let mut w = world(kvm(), vec![]);
    w.run_until(10 * S);
    let s = w.read(ReadMethod::Basic, 10).unwrap();
    for pair in s.windows(2) {
        assert_eq!(pair[0].sys_after_ns, pair[1].sys_before_ns);
    }
    let est = phc::estimate::linuxptp(&s).unwrap();
    assert!(est.offset_ns.abs() < 1_000, "{est:?}");
}

#[test]
fn invalid_config_names_the_key() {
    let cfg = WorldConfig {
        phc: PhcConfig::Kvm { read_latency: LatencyConfig { min_ns: 10, median_ns: 5, tail_ns: 20 } },
        ..Default::default()
    };
    let e = World::new(&cfg).err().unwrap().to_string();
    assert!(e.contains("phc.read_latency"), "{e}");
    let cfg = WorldConfig { disciplines: vec![chrony(Some(-1.0), 3)], ..Default::default() };
    let e = World::new(&cfg).err().unwrap().to_string();
    assert!(e.contains("disciplines[0].makestep_threshold_s"), "{e}");
}

#[test]
fn toml_round_trip() {
    let cfg = WorldConfig {
        seed: 7,
        guest: OscillatorConfig { freq_error_ppm: 12.5, wander_ppb_per_sqrt_s: 1.0, phase_noise_ns: 20.0 },
        disciplines: vec![
            DisciplineConfig::HvUtils(HvUtilsConfig { timesync_implicit: true }),
            chrony(Some(1.0), -1),
            DisciplineConfig::Ntpd(NtpdConfig::default()),
            DisciplineConfig::Phc2sys(Phc2sysConfig::default()),
            DisciplineConfig::None,
        ],
        ..Default::default()
    };
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(toml::from_str::<WorldConfig>(&text).unwrap(), cfg);
    // A scenario names only what it changes.
    let short: WorldConfig = toml::from_str(
        "seed = 3\n[phc]\npersonality = \"hyperv\"\n[[disciplines]]\nkind = \"chrony\"\nmakestep_threshold_s = 1.0\n",
    )
    .unwrap();
    assert_eq!(short.phc, PhcConfig::default());
    assert!(toml::from_str::<WorldConfig>("bogus = 1\n").is_err());
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Steps {
        d: Vec<Disturbance>,
    }
    let d = Steps {
        d: vec![
            Disturbance::Pause { duration_s: 30.0, sync_on_resume: false },
            Disturbance::Reboot { downtime_s: 5.0 },
            Disturbance::HostStep { delta_s: 10.0 },
            Disturbance::GuestStep { delta_s: -63_072_000.0 },
            Disturbance::SamplesStop,
            Disturbance::SamplesResume,
            Disturbance::FrequencyJump { delta_ppm: 3.0 },
        ],
    };
    assert_eq!(toml::from_str::<Steps>(&toml::to_string(&d).unwrap()).unwrap(), d);
    let p: Disturbance = toml::from_str("kind = \"pause\"\nduration_s = 30.0\n").unwrap();
    assert_eq!(p, Disturbance::Pause { duration_s: 30.0, sync_on_resume: true });
}

fn run_scenario(seed: u64) -> (Vec<Event>, Vec<i64>) {
    let cfg = WorldConfig {
        seed,
        guest: OscillatorConfig { freq_error_ppm: 20.0, wander_ppb_per_sqrt_s: 5.0, phase_noise_ns: 50.0 },
        disciplines: vec![DisciplineConfig::HvUtils(HvUtilsConfig::default()), chrony(Some(1.0), -1)],
        ..Default::default()
    };
    let mut w = World::new(&cfg).unwrap();
    let mut offsets = Vec::new();
    for k in 1..=60 {
        w.run_until(k * 10 * S);
        offsets.push(w.guest_offset_ns());
        if k == 30 {
            w.apply(&Disturbance::Pause { duration_s: 30.0, sync_on_resume: true });
        }
    }
    (w.drain_events(), offsets)
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    assert_eq!(run_scenario(5), run_scenario(5));
    assert_ne!(run_scenario(5).1, run_scenario(6).1);
}

#[test]
fn no_disturbance_no_steps_after_convergence() {
    let guest = OscillatorConfig { freq_error_ppm: 35.0, wander_ppb_per_sqrt_s: 2.0, phase_noise_ns: 30.0 };
    for d in [
        vec![DisciplineConfig::HvUtils(HvUtilsConfig::default()), chrony(Some(1.0), -1)],
        vec![DisciplineConfig::Ntpd(NtpdConfig::default())],
        vec![DisciplineConfig::Phc2sys(Phc2sysConfig::default())],
    ] {
        for phc in [hyperv(), kvm()] {
            let mut w = World::new(&WorldConfig {
                guest: guest.clone(),
                phc,
                disciplines: d.clone(),
                ..Default::default()
            })
            .unwrap();
            w.run_until(600 * S);
            w.drain_events();
            w.run_until(6 * 3600 * S);
            let st = steps(&w.drain_events());
            assert!(st.is_empty(), "{d:?}: {st:?}");
            assert!(w.guest_offset_ns().abs() < 100_000, "{d:?}: offset {}", w.guest_offset_ns());
        }
    }
}

#[test]
fn ntpd_steps_above_128ms_refuses_above_panic_and_slews_at_500ppm() {
    for (offset_s, expect_step) in [(0.1, false), (0.2, true), (-5.0, true), (2000.0, false)] {
        let mut w = world(kvm(), vec![DisciplineConfig::Ntpd(NtpdConfig::default())]);
        w.run_until(100 * S);
        w.drain_events();
        w.apply(&Disturbance::GuestStep { delta_s: offset_s });
        w.run_until(200 * S);
        let ev = w.drain_events();
        let ntpd_steps =
            ev.iter().filter(|e| e.source == "ntpd" && matches!(e.kind, EventKind::Step { .. })).count();
        assert_eq!(ntpd_steps > 0, expect_step, "{offset_s}: {ev:?}");
    }
    // Slew-only: 1 s at 500 ppm takes 2000 s.
    let cfg = NtpdConfig { step_threshold_s: 100.0, ..Default::default() };
    let mut w = world(kvm(), vec![DisciplineConfig::Ntpd(cfg)]);
    w.run_until(100 * S);
    w.apply(&Disturbance::GuestStep { delta_s: 1.0 });
    let settled = settle_time_s(&mut w, 100 * S, 3000, 0.001).expect("settles");
    assert!((settled - 2000.0).abs() < 2000.0 * 0.1, "settled after {settled} s");
}

#[test]
fn phc2sys_steps_once_at_start_then_tracks() {
    let cfg = WorldConfig {
        phc: kvm(),
        guest: OscillatorConfig { freq_error_ppm: 50.0, ..Default::default() },
        disciplines: vec![DisciplineConfig::Phc2sys(Phc2sysConfig::default())],
        ..Default::default()
    };
    let mut w = World::new(&cfg).unwrap();
    w.run_until(120 * S);
    assert!(w.guest_offset_ns().abs() < 1_000, "offset {}", w.guest_offset_ns());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// hyperv reads fail with ESTALE iff the last host sample is older than 600 s.
    #[test]
    fn hyperv_stale_iff_sample_older_than_600s(gap_s in 1i64..1200, pause_s in 0i64..100) {
        let mut w = world(hyperv(), vec![]);
        w.run_until(100 * S);
        w.apply(&Disturbance::SamplesStop);
        // The last sample was at t = 100 s; a pause stops the reference counter too.
        w.apply(&Disturbance::Pause { duration_s: pause_s as f64, sync_on_resume: false });
        w.run_until((100 + pause_s + gap_s) * S);
        let stale = matches!(w.read(ReadMethod::Basic, 3), Err(phc::Error::Stale));
        prop_assert_eq!(stale, gap_s > 600);
        prop_assert_eq!(matches!(w.phc_offset_ns(), Err(phc::Error::Stale)), gap_s > 600);
    }

    /// Monotonic clocks never run backwards, whatever happens.
    #[test]
    fn monotonic_never_runs_backwards(
        ops in prop::collection::vec((0u8..7, -100.0f64..100.0, 1i64..60), 1..12),
        with_chrony in any::<bool>(),
    ) {
        let d = if with_chrony { vec![DisciplineConfig::HvUtils(HvUtilsConfig::default()), chrony(Some(1.0), -1)] }
            else { vec![DisciplineConfig::Phc2sys(Phc2sysConfig::default())] };
        let mut w = world(hyperv(), d);
        let (mut last_raw, mut last_mono) = (w.guest_monotonic_raw_ns(), w.guest_monotonic_ns());
        for (op, x, dt) in ops {
            let dist = match op {
                0 => Disturbance::Pause { duration_s: x.abs(), sync_on_resume: x > 0.0 },
                1 => Disturbance::Reboot { downtime_s: x.abs() / 10.0 },
                2 => Disturbance::HostStep { delta_s: x },
                3 => Disturbance::GuestStep { delta_s: x * 1e6 },
                4 => Disturbance::SamplesStop,
                5 => Disturbance::SamplesResume,
                _ => Disturbance::FrequencyJump { delta_ppm: x },
            };
            w.apply(&dist);
            let t0 = w.now_ns();
            for k in 1..=dt {
                w.run_until(t0 + k * S);
                let (raw, mono) = (w.guest_monotonic_raw_ns(), w.guest_monotonic_ns());
                let rebooted = w.drain_events().iter().any(|e| e.kind == EventKind::Note("booted".into()));
                if !rebooted {
                    prop_assert!(raw >= last_raw && mono >= last_mono, "raw {last_raw}->{raw} mono {last_mono}->{mono}");
                }
                last_raw = raw;
                last_mono = mono;
            }
        }
    }
}
