//! ptp_kvm for real on any machine: the guest runs as L2 under KVM nested inside a TCG guest (L1,
//! the host, whose CLOCK_REALTIME ptp_kvm reads). ci/vm-test.sh runs these with `--ignored
//! --test-threads=1`; plain `cargo test` lists them as ignored. Run with --ignored, a missing
//! prerequisite fails loudly instead of skipping.

use std::time::{Duration, Instant};

use phc_harness::backend::qemu::{boot, find_agent_bin, find_phc_by_name, ClockMode, QemuOptions};
use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::{Accel, GuestClock};

fn opts() -> QemuOptions {
    QemuOptions {
        agent_bin: find_agent_bin(None)
            .unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN; ci/vm-test.sh does)")),
        accel: Some(Accel::Tcg),
        boot_timeout: Duration::from_secs(240),
        ptp_kvm: true,
        clock: ClockMode::Real,
    }
}

#[test]
#[ignore = "boots a nested guest: ci/vm-test.sh runs it with --ignored"]
fn ptp_kvm_appears_in_l2_and_reads_l1s_clock() {
    let t0 = Instant::now();
    let (mut s, bi) =
        boot(&opts(), "nested-test", GuestClock::Real).unwrap_or_else(|e| panic!("{}", phc_qemu::chain(&e)));
    println!(
        "nested boot: image {:.2} s, boot to L2 ready {:.2} s, total {:.2} s",
        bi.image_build_s,
        s.boot_to_ready.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(bi.nested);
    let dev =
        find_phc_by_name(&mut s, "KVM virtual PTP").unwrap_or_else(|e| panic!("{e}\n{}", s.guest.console()));
    let r: ExecResult = s
        .agent
        .call_value(
            Op::Exec {
                argv: vec!["phc_ctl".into(), dev.clone(), "caps".into(), "cmp".into()],
                timeout_s: 10.0,
            },
            Instant::now() + Duration::from_secs(20),
        )
        .unwrap();
    println!("{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("has cross timestamping support"), "{}", r.stdout);
}
