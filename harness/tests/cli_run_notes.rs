//! What `run` tells a new user on stderr: where the reports went, and the clock it chose for
//! `--phc ptp-kvm` when none was given (no guest boots here: the kernel given does not exist).

mod common;

use std::time::Duration;

use common::harness_in;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn run_says_where_the_reports_went() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("runs");
    let o = harness_in(t.path(), &["run", "azure-pause-30s", "--out", out.to_str().unwrap()], LIMIT);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let line = o.stderr.lines().last().unwrap_or_default();
    assert!(line.contains("reports (") && line.ends_with(out.to_str().unwrap()), "{}", o.stderr);
    assert!(out.join("azure-pause-30s-sim-seed1/report.json").is_file());
}

#[test]
fn ptp_kvm_without_clock_chooses_real_time_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "azure-pause-30s",
        "--backend",
        "qemu",
        "--phc",
        "ptp-kvm",
        "--kernel",
        "/nonexistent/vmlinuz",
        "--modules",
        "/nonexistent",
    ];
    let o = harness_in(t.path(), &args, LIMIT);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("--phc ptp-kvm runs in real time: using --clock real"), "{}", o.stderr);
    // Forced: no note (and the guest would refuse virtual time with the reason).
    let mut forced = args.to_vec();
    forced.extend(["--clock", "virtual"]);
    let o = harness_in(t.path(), &forced, LIMIT);
    assert!(!o.stderr.contains("using --clock real"), "{}", o.stderr);
}
