//! ptp_kvm: the guest's KVM PHC answers as its driver should, and a pause is recovered by chronyd
//! reading host time through it, with no provider. Where KVM really runs a guest this runs under
//! KVM; elsewhere (this project's CI machines: /dev/kvm aborts guests) the guest runs as L2
//! under KVM nested inside a TCG guest (phc_qemu::nested), and host time is L1's. ci/vm-test.sh
//! runs it with --ignored; plain `cargo test` lists it as ignored.

use std::path::Path;
use std::time::{Duration, Instant};

use phc_harness::judge::report::Verdict;
use phc_harness::model::scenario::Scenario;
use phc_harness::run::backend::qemu::{find_agent_bin, ClockMode, QemuOptions};
use phc_harness::run::runner::run_qemu;

fn kvm_opts() -> QemuOptions {
    QemuOptions {
        // This machine's decision: KVM where it runs guests, else nested under TCG.
        accel: None,
        boot_timeout: Duration::from_secs(240),
        phc: Some(phc_harness::run::backend::qemu::GuestPhc::PtpKvm),
        clock: ClockMode::Real,
        ..QemuOptions::new(find_agent_bin(None).unwrap_or_else(|e| panic!("{e}")))
    }
}

#[test]
#[ignore = "boots a KVM guest (nested inside TCG where KVM does not run guests): ci/vm-test.sh runs it"]
fn a_pause_is_recovered_through_ptp_kvm_without_the_provider() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nested/kvm-pause-30s.toml");
    let s = Scenario::load(&path).unwrap();
    let t0 = Instant::now();
    let r = run_qemu(&s, &kvm_opts(), true).unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    println!("{}: {:.0} s of scenario in {:.1} s wall", s.name, s.duration_s(), t0.elapsed().as_secs_f64());
    print!("{}", r.to_text());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-reports/kvm-pause-30s-ptp-kvm");
    phc_harness::run::runner::write_all(&r, &out).unwrap();
    assert_ne!(r.verdict, Verdict::Aborted, "{:?}", r.abort_reason);
    let accel = r.backend_info["accel"].as_str().unwrap();
    assert!(accel == "kvm" || accel == "tcg-nested", "accel {accel}");
    assert!(r.backend_info["phc"].as_str().unwrap().starts_with("ptp_kvm"), "{:?}", r.backend_info["phc"]);
    let after = r.recovery.offset_after_disturbance_ns.expect("seen at resume") as f64 / 1e9;
    assert!((-31.0..=-29.0).contains(&after), "guest came back {after} s off");
    assert!(r.recovery.steps.iter().any(|s| s.source == "chrony"), "{:?}", r.recovery.steps);
    assert!(r.recovery.time_to_within_s["1ms"].is_some(), "{}", r.to_text());
}
