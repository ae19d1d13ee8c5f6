//! ptp_kvm for real on any machine: the guest runs as L2 under KVM nested inside a TCG guest (L1,
//! the host, whose CLOCK_REALTIME ptp_kvm reads). ci/vm-test.sh runs the VM tests with
//! `--ignored --test-threads=1`; plain `cargo test` lists them as ignored and runs only the
//! sim check of `scenarios/nested/`. Run with --ignored, a missing
//! prerequisite fails loudly instead of skipping. They force TCG (`accel: Some(Tcg)`), so they
//! test the nesting even where KVM works.

use std::path::Path;
use std::time::{Duration, Instant};

use phc_harness::judge::report::Verdict;
use phc_harness::model::scenario::{self, Scenario};
use phc_harness::run::backend::qemu::{boot, find_agent_bin, find_phc_by_name, ClockMode, QemuOptions};
use phc_harness::run::runner::run_sim;
use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::session::Session;
use phc_qemu::{Accel, GuestClock};
use serde_json::Value;

fn opts() -> QemuOptions {
    QemuOptions {
        accel: Some(Accel::Tcg),
        // Two cores shared with other work: the nested boot took 12-24 s here, 240 s is slack.
        boot_timeout: Duration::from_secs(240),
        phc: Some(phc_harness::run::backend::qemu::GuestPhc::PtpKvm),
        clock: ClockMode::Real,
        ..QemuOptions::new(
            find_agent_bin(None).unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN; ci/vm-test.sh does)")),
        )
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
    let dev =
        find_phc_by_name(&mut s, "KVM virtual PTP").unwrap_or_else(|e| panic!("{e}\n{}", s.guest.console()));

    let r = exec(&mut s, &["phc-harness", "probe", &dev, "--allow-clock-writes", "--format", "json"], 120.0);
    eprintln!("{}", r.stderr);
    let probe: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    println!("{}", serde_json::to_string_pretty(&probe).unwrap());
    assert_eq!(probe["driver"], "kvm", "{probe}");
    assert_eq!(probe["deviations"], 0, "{probe}");
    assert_eq!(probe["caps"]["cross_timestamping"], true, "{}", probe["caps"]);
    assert_eq!(probe["caps"]["max_adj_ppb"], 0, "{}", probe["caps"]);
    assert_eq!(check(&probe, "SYS_OFFSET_EXTENDED realtime")["result"], "EOPNOTSUPP");
    assert_eq!(check(&probe, "SYS_OFFSET_PRECISE")["result"], "ok");
    assert_eq!(check(&probe, "clock_settime (to clock_gettime)")["result"], "EOPNOTSUPP");
    assert_eq!(check(&probe, "ADJ_FREQUENCY (write back current)")["result"], "EOPNOTSUPP");
    assert_eq!(probe["offset"]["method"], "precise", "{}", probe["offset"]);

    let r = exec(&mut s, &["phc-harness", "latency", &dev, "--samples", "500", "--format", "json"], 300.0);
    eprintln!("{}", r.stderr);
    let lat: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    println!("{}", serde_json::to_string_pretty(&lat).unwrap());
    assert_eq!(r.code, 0, "latency failed: {}", r.stderr);

    // A host step is a step of L1's CLOCK_REALTIME, and ptp_kvm in L2 reads it at once.
    let phc_minus_rt = |s: &mut Session| -> i64 {
        let v: Value = s
            .agent
            .call_value(Op::PhcOffset { device: dev.clone() }, Instant::now() + Duration::from_secs(30))
            .unwrap();
        v["phc_minus_realtime_ns"].as_i64().unwrap()
    };
    let before = phc_minus_rt(&mut s);
    let l1 = &mut s.nested.as_mut().expect("nested").l1_agent;
    l1.call(Op::StepRealtime { delta_ns: 10_000_000_000 }, Instant::now() + Duration::from_secs(30)).unwrap();
    let jump = phc_minus_rt(&mut s) - before;
    println!("ptp_kvm in L2 moved {jump} ns when L1's clock stepped +10 s");
    assert!((jump - 10_000_000_000).abs() < 5_000_000, "ptp_kvm moved {jump} ns");
}

/// Whether a nested guest allows a restore (issue 20 asks before a boot snapshot cache is built
/// for it): L1, TCG with L2 running under its KVM, is migrated to a file and loaded by a fresh
/// QEMU. L2 runs on where it stood (its uptime goes on, no reboot), answers through the relay
/// L1's new QEMU makes, and ptp_kvm still gives precise cross timestamps with the same offset to
/// L2's clock (both clocks stood still together). Measured here: the save 3.9 s for 520 MB, L1's
/// agent 0.4 s after starting the new QEMU, L2's 0.25 s after that, against a nested boot of
/// 12-18 s.
#[test]
#[ignore = "boots a nested guest: ci/vm-test.sh runs it with --ignored"]
fn a_nested_guest_survives_l1_saved_and_restored_with_ptp_kvm_working() {
    let (mut s, _bi) = boot(&opts(), "nested-restore", GuestClock::Real)
        .unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    let deadline = || Instant::now() + Duration::from_secs(60);
    let uptime = |a: &mut phc_qemu::client::AgentClient| -> f64 {
        let argv = ["cat", "/proc/uptime"].map(String::from).to_vec();
        let r: ExecResult = a
            .call_value(Op::Exec { argv, timeout_s: 10.0 }, deadline())
            .unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
        r.stdout.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{r:?}"))
    };
    let ptp_kvm = |a: &mut phc_qemu::client::AgentClient| -> Value {
        a.call_value(Op::PhcOffset { device: "/dev/ptp0".into() }, deadline())
            .unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)))
    };
    let up_before = uptime(&mut s.agent);
    let before = ptp_kvm(&mut s.agent);
    let relay = s.nested.as_ref().expect("nested").dir().to_owned();
    let saved =
        phc_qemu::snapshot::save(&mut s, deadline()).unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    println!("L1 saved: {} bytes in {:.2} s", saved.bytes, saved.save_s);
    s.guest.shutdown();
    let t = Instant::now();
    // The restored session's agent is L1's; L2's is reached through the relay's socket, which the
    // new QEMU makes again at the path on its command line.
    let mut l1 =
        phc_qemu::snapshot::restore(saved, deadline()).unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    let l1_s = t.elapsed().as_secs_f64();
    let mut l2 = phc_qemu::client::AgentClient::connect(
        &phc_qemu::nested::Nested::l2_agent_socket(&relay),
        deadline(),
    )
    .unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    let up_after = uptime(&mut l2);
    println!("L1's agent {l1_s:.2} s after the new QEMU started; L2's {:.2} s", t.elapsed().as_secs_f64());
    let after = ptp_kvm(&mut l2);
    println!("ptp_kvm in L2 before the save: {before}; after the restore: {after}");
    assert!(up_after > up_before, "L2 rebooted: uptime {up_before} s before, {up_after} s after");
    assert!(uptime(&mut l1.agent) > 0.0);
    assert_eq!(after["method"], "precise", "{after}");
    let moved =
        after["phc_minus_realtime_ns"].as_i64().unwrap() - before["phc_minus_realtime_ns"].as_i64().unwrap();
    assert!(moved.abs() < 1_000_000, "ptp_kvm against L2's clock moved {moved} ns across the restore");
    drop(s);
}

/// The scenarios written for nested runs load, and their checks hold on the sim's kvm
/// personality (the QEMU side is vm_kvm's and the CLI's).
#[test]
fn nested_scenarios_load_and_hold_on_the_sim() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nested");
    let files = scenario::list_dir(&dir).unwrap();
    assert!(files.len() >= 2, "{} has {} scenarios", dir.display(), files.len());
    for f in files {
        let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = run_sim(&s).unwrap();
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.to_text());
    }
}
