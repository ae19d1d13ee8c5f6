//! ptp_kvm under real KVM: the guest's KVM PHC answers as its driver should, and a pause is
//! recovered by chronyd reading host time through it, with no provider. These run only where
//! KVM really runs a guest: ci/vm-test.sh asks `phc-harness accel` and runs them with --ignored
//! there, and prints "skipped: <reason>" elsewhere, where cargo lists them as ignored.

use std::path::Path;
use std::time::Duration;

use phc_harness::backend::qemu::{find_agent_bin, ClockMode, QemuOptions};
use phc_harness::report::Verdict;
use phc_harness::runner::{run_qemu, BUILTIN};
use phc_harness::scenario::Scenario;
use phc_qemu::Accel;

fn kvm_opts() -> QemuOptions {
    QemuOptions {
        agent_bin: find_agent_bin(None).unwrap_or_else(|e| panic!("{e}")),
        accel: Some(Accel::Kvm),
        boot_timeout: Duration::from_secs(60),
        phc: Some(phc_harness::backend::qemu::GuestPhc::PtpKvm),
        clock: ClockMode::Real,
        kernel_line: Default::default(),
        kernel_dir: None,
    }
}

#[test]
#[ignore = "needs working KVM: ci/vm-test.sh runs it where `phc-harness accel` says kvm"]
fn a_pause_is_recovered_through_ptp_kvm_without_the_provider() {
    let text = BUILTIN.iter().find(|(n, _)| *n == "azure-pause-30s").unwrap().1;
    let mut s = Scenario::parse(text, Path::new("azure-pause-30s.toml")).unwrap();
    s.timeline.warmup_s = 40.0;
    s.timeline.observe_s = 120.0;
    // hv_utils has nothing to act on without Hyper-V; chronyd's makestep must do it.
    s.expect = Default::default();
    let r = run_qemu(&s, &kvm_opts(), true).unwrap();
    print!("{}", r.to_text());
    assert_eq!(r.backend_info["accel"], "kvm");
    assert!(r.backend_info["phc"].as_str().unwrap().starts_with("ptp_kvm"), "{:?}", r.backend_info["phc"]);
    assert_ne!(r.verdict, Verdict::Aborted, "{:?}", r.abort_reason);
    let after = r.recovery.offset_after_disturbance_ns.expect("seen at resume") as f64 / 1e9;
    assert!((-31.0..=-29.0).contains(&after), "guest came back {after} s off");
    assert!(r.recovery.steps.iter().any(|s| s.source == "chrony"), "{:?}", r.recovery.steps);
    assert!(r.recovery.time_to_within_s["1ms"].is_some(), "{}", r.to_text());
}
