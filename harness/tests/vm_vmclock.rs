//! The `snapshot-restore` scenario for real: a 7.2 guest with QEMU's vmclock device is saved
//! (QMP migrate to a file) and restored in a fresh QEMU after the gap, in real time, chronyd
//! steering to the igb PHC the harness's provider feeds; then the sim's run of the same
//! scenario beside it. Needs QEMU, the 7.2 kernel cache and the static agent (ci/vm-test.sh);
//! run with --ignored, a missing prerequisite fails.

use std::path::Path;
use std::time::Instant;

use phc_harness::model::scenario::Scenario;
use phc_harness::run::backend::qemu::{find_agent_bin, ClockMode, QemuOptions};
use phc_harness::run::runner::{run_qemu, run_sim, BUILTIN};
use phc_qemu::KernelLine;

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn snapshot_restore_on_7_2_bumps_the_vmclock_marker_and_chronyd_steps_back() {
    let text = BUILTIN.iter().find(|(n, _)| *n == "snapshot-restore").expect("built in").1;
    let mut s = Scenario::parse(text, Path::new("snapshot-restore.toml")).unwrap();
    // Shorter than written, for CI: the restore at 15 s, 35 s after it to recover (the written
    // expectation is within 30 s).
    s.timeline.warmup_s = 5.0;
    s.timeline.observe_s = 45.0;
    let opts = QemuOptions {
        clock: ClockMode::Real,
        kernel_line: KernelLine::V7_2,
        ..QemuOptions::new(find_agent_bin(None).unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN)")))
    };
    let t0 = Instant::now();
    let r = run_qemu(&s, &opts, true).unwrap_or_else(|e| panic!("snapshot-restore on qemu: {e}"));
    println!("snapshot-restore [qemu, real time, 7.2]: {:.1} s wall", t0.elapsed().as_secs_f64());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-reports/snapshot-restore-7.2");
    phc_harness::run::runner::write_all(&r, &out).unwrap();
    print!("{}", r.to_text());
    let facts = &r.backend_info["snapshot_restore"];
    println!("backend_info.snapshot_restore: {facts}");
    assert_eq!(r.backend_info["kernel_line"], "7.2");
    assert!(r.backend_info["kernel_release"].as_str().is_some_and(|k| k.starts_with("7.2.")), "{r:?}");
    // The guest stood still from the end of the save's stream to its first instruction after
    // the load: the gap, plus at most the save's, the old QEMU's end's and the restore's wall
    // times (all measured: `stood_max_s`, their sum, seconds more on a busy host).
    let back = r.recovery.offset_after_disturbance_ns.map(|o| -(o as f64) / 1e9);
    let still_max = facts["stood_max_s"].as_f64().unwrap();
    let parts: f64 = ["gap_s", "save_s", "shutdown_s", "restore_to_agent_s"]
        .iter()
        .map(|k| facts[*k].as_f64().unwrap_or_else(|| panic!("no {k}: {facts}")))
        .sum();
    assert!(
        (still_max - parts).abs() < 0.05,
        "stood_max_s {still_max} is not its parts' sum {parts}: {facts}"
    );
    assert!(
        back.is_some_and(|b| (10.0..=still_max + 0.5).contains(&b)),
        "came back {back:?} s behind, not 10..{still_max} s"
    );
    let v = &facts["vmclock"];
    assert_eq!(v["marker_changed"], true, "the disruption marker did not change: {facts}");
    // chronyd: back within 1 ms in the scenario's bound, by steps that together undo the gap.
    // Usually one step 12-14 s after the restore; once in six runs here (fresh-clone CI) the
    // refclock's median filter straddled the jump and chronyd stepped in three parts (+4.792 s,
    // +6.727 s, -1.024 s, from 1.9 s on). Every other check of the scenario holds either way;
    // the step count is printed above, and judged as a distribution by the fidelity work.
    for c in r.checks.iter().filter(|c| c.name != "steps") {
        assert!(c.pass, "{}: expected {}, got {}\n{}", c.name, c.expected, c.actual, r.to_text());
    }
    let after: Vec<_> = r.recovery.steps.iter().filter(|st| st.t_s >= 0.0).collect();
    let stepped_s: f64 = after.iter().map(|st| st.delta_ns as f64 / 1e9).sum();
    let back = back.expect("checked above");
    assert!(
        !after.is_empty() && (stepped_s - back).abs() < 0.5,
        "chronyd's steps ({stepped_s:+.3} s in all) do not undo the {back:.3} s gap\n{}",
        r.to_text()
    );

    let sim = run_sim(&s).unwrap();
    let f = phc_harness::run::ensemble::fidelity(&s, &sim, &r);
    print!("{}", f.to_markdown());
}
