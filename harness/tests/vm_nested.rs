//! ptp_kvm for real on any machine: the guest runs as L2 under KVM nested inside a TCG guest (L1,
//! the host, whose CLOCK_REALTIME ptp_kvm reads). ci/vm-test.sh runs these with `--ignored
//! --test-threads=1`; plain `cargo test` lists them as ignored. Run with --ignored, a missing
//! prerequisite fails loudly instead of skipping. They force TCG (`accel: Some(Tcg)`), so they
//! test the nesting even where KVM works.

use std::path::Path;
use std::time::{Duration, Instant};

use phc_harness::backend::qemu::{boot, find_agent_bin, find_phc_by_name, ClockMode, QemuOptions};
use phc_harness::report::Verdict;
use phc_harness::runner::run_qemu;
use phc_harness::scenario::Scenario;
use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::session::Session;
use phc_qemu::{Accel, GuestClock};
use serde_json::Value;

fn opts() -> QemuOptions {
    QemuOptions {
        agent_bin: find_agent_bin(None)
            .unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN; ci/vm-test.sh does)")),
        accel: Some(Accel::Tcg),
        // Two cores shared with other work: the nested boot took 12-24 s here, 240 s is slack.
        boot_timeout: Duration::from_secs(240),
        ptp_kvm: true,
        clock: ClockMode::Real,
    }
}

fn exec(s: &mut Session, argv: &[&str], timeout_s: f64) -> ExecResult {
    let argv = argv.iter().map(|a| (*a).to_owned()).collect();
    s.agent
        .call_value(Op::Exec { argv, timeout_s }, Instant::now() + Duration::from_secs_f64(timeout_s + 30.0))
        .unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)))
}

fn check<'a>(probe: &'a Value, name: &str) -> &'a Value {
    probe["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {probe}"))
}

#[test]
#[ignore = "boots a nested guest: ci/vm-test.sh runs it with --ignored"]
fn ptp_kvm_in_l2_matches_the_kvm_row_and_its_latency_is_measured() {
    let t0 = Instant::now();
    let (mut s, bi) =
        boot(&opts(), "nested-test", GuestClock::Real).unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    println!(
        "nested boot: L1+L2 image {:.2} s, L1 start to L2's agent ready {:.2} s, total {:.2} s",
        bi.image_build_s,
        s.boot_to_ready.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(bi.nested, "not nested: {bi:?}");
    assert!(s.boot_to_ready < Duration::from_secs(120), "boot to ready {:?}", s.boot_to_ready);
    let dev = find_phc_by_name(&mut s, "KVM virtual PTP").unwrap_or_else(|e| panic!("{e}\n{}", s.guest.console()));

    let r = exec(&mut s, &["phc-harness", "probe", &dev, "--allow-clock-writes", "--format", "json"], 120.0);
    eprintln!("{}", r.stderr);
    let probe: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    println!("{}", serde_json::to_string_pretty(&probe).unwrap());
    assert_eq!(probe["driver"], "kvm", "{probe}");
    assert_eq!(probe["deviations"], 0, "{probe}");
    assert_eq!(probe["caps"]["cross_timestamping"], 1, "{}", probe["caps"]);
    assert_eq!(probe["caps"]["max_adj"], 0, "{}", probe["caps"]);
    assert_eq!(check(&probe, "SYS_OFFSET_EXTENDED")["result"], "EOPNOTSUPP");
    assert_eq!(check(&probe, "SYS_OFFSET_PRECISE")["result"], "ok");
    assert_eq!(probe["offset"]["method"], "precise", "{}", probe["offset"]);

    let r = exec(&mut s, &["phc-harness", "latency", &dev, "--samples", "500", "--format", "json"], 300.0);
    eprintln!("{}", r.stderr);
    let lat: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    println!("{}", serde_json::to_string_pretty(&lat).unwrap());
    assert_eq!(r.code, 0, "latency failed: {}", r.stderr);
}

/// The kvm pause scenario with the real chronyd in L2: L2 paused through L1's QMP relay, L1 runs
/// on, and chronyd reading ptp_kvm steps the guest back.
#[test]
#[ignore = "boots a nested guest: ci/vm-test.sh runs it with --ignored"]
fn a_pause_of_l2_is_recovered_by_chronyd_reading_ptp_kvm() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nested/kvm-pause-30s.toml");
    let s = Scenario::load(&path).unwrap();
    let t0 = Instant::now();
    let r = run_qemu(&s, &opts(), true).unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    println!("{}: {:.0} s of scenario in {:.1} s wall", s.name, s.duration_s(), t0.elapsed().as_secs_f64());
    print!("{}", r.to_text());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-reports/kvm-pause-30s-nested");
    phc_harness::runner::write_all(&r, &out).unwrap();
    assert_ne!(r.verdict, Verdict::Aborted, "{:?}", r.abort_reason);
    assert_eq!(r.backend_info["accel"], "tcg-nested");
    assert!(r.backend_info["phc"].as_str().unwrap().starts_with("ptp_kvm"), "{:?}", r.backend_info["phc"]);
    let after = r.recovery.offset_after_disturbance_ns.expect("seen at resume") as f64 / 1e9;
    assert!((-31.0..=-29.0).contains(&after), "L2 came back {after} s off");
    assert!(r.recovery.steps.iter().any(|s| s.source == "chrony"), "{:?}", r.recovery.steps);
    assert!(r.recovery.time_to_within_s["1ms"].is_some(), "{}", r.to_text());
}
