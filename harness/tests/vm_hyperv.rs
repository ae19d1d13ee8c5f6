//! Azure's hyperv clock in a real guest: mock-phc's CUSE device `/dev/ptp_hyperv` (hv_utils'
//! semantics, fed host samples by the harness) read by the real chronyd, and probed in the guest.
//! Needs QEMU, Debian's kernel (with `cuse`) and the static agent and mock-phc: `ci/vm-test.sh`
//! sets them up and runs these with `--ignored --test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use phc_harness::judge::fidelity;
use phc_harness::judge::report::{Report, Verdict};
use phc_harness::model::scenario::Scenario;
use phc_harness::run::backend::qemu::{find_agent_bin, ClockMode, GuestPhc, QemuOptions};
use phc_harness::run::runner::{run_qemu, run_sim, BUILTIN};

fn agent() -> PathBuf {
    find_agent_bin(None).unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN; ci/vm-test.sh does)"))
}

fn builtin(name: &str) -> Scenario {
    let text = BUILTIN.iter().find(|(n, _)| *n == name).expect("built in").1;
    Scenario::parse(text, Path::new(&format!("{name}.toml"))).unwrap()
}

/// The scenario in the sim and on QEMU (virtual time) with `phc` (None: the scenario's default),
/// the reports written under target/vm-reports, and their comparison.
fn both(s: &Scenario, phc: Option<GuestPhc>) -> (Report, Report, fidelity::Fidelity) {
    let opts = QemuOptions { phc, ..QemuOptions::new(agent()) };
    let sim = run_sim(s).unwrap();
    let t0 = Instant::now();
    let real = run_qemu(s, &opts, true).unwrap_or_else(|e| panic!("{} on qemu: {e}", s.name));
    println!("{}: {:.0} s of scenario in {:.1} s wall", s.name, s.duration_s(), t0.elapsed().as_secs_f64());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-reports");
    phc_harness::run::runner::write_all(&real, &out.join(format!("{}-hyperv", s.name))).unwrap();
    print!("{}", real.to_text());
    assert_ne!(real.verdict, Verdict::Aborted, "{}", real.to_text());
    let f = phc_harness::run::ensemble::fidelity(s, &sim, &real);
    print!("{}", f.to_markdown());
    (sim, real, f)
}

fn info<'a>(r: &'a Report, key: &str) -> &'a str {
    r.backend_info.get(key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("no {key} in the report"))
}

/// chronyd reads the mock and selects it (`#*`): the Azure default, end to end.
fn assert_chronyd_selected_the_mock(r: &Report) {
    assert!(info(r, "phc").starts_with("hyperv mock (/dev/ptp_hyperv"), "{}", info(r, "phc"));
    assert!(info(r, "chrony_conf").contains("refclock PHC /dev/ptp_hyperv"), "{}", info(r, "chrony_conf"));
    let sources = info(r, "chronyc_sources");
    assert!(sources.lines().any(|l| l.starts_with("#*")), "chronyd did not select the mock:\n{sources}");
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn stale_host_samples_give_estale_and_chronyd_recovers_when_they_return() {
    let mut s = builtin("hyperv-stale-samples");
    s.timeline.warmup_s = 120.0;
    let (_sim, real, f) = both(&s, None);
    assert_chronyd_selected_the_mock(&real);
    // 600 s after the last sample the mock answers ESTALE, until samples come back at 900 s.
    let estale = real.recovery.read_errors.get("ESTALE").copied().unwrap_or(0);
    assert!(estale > 0, "the mock never went stale: {:?}", real.recovery.read_errors);
    let first_stale = real
        .series
        .iter()
        .find(|o| o.phc_error.as_deref() == Some("ESTALE"))
        .map(|o| o.t_s - s.timeline.warmup_s)
        .expect("a stale observation");
    assert!((595.0..=610.0).contains(&first_stale), "first ESTALE at {first_stale} s after the stop");
    assert!(real.recovery.time_to_within_s["1ms"].is_some(), "no recovery: {}", real.to_text());
    assert!(f.agrees, "sim and the real chronyd on the mock disagree:\n{}", f.to_markdown());
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn a_resume_without_sync_is_left_to_the_real_chronyd_on_the_mock() {
    // resume-without-sync as written (300 s of warm-up): the real chronyd's regression grows
    // with the warm-up, and before the wander and the mock's measured rate it first corrected
    // 186-282 s after the resume against the sim's 57 s; at 120 s they agreed anyway.
    for (name, warmup_s) in [("resume-without-sync", None), ("resume-without-sync-implicit", Some(120.0))] {
        let mut s = builtin(name);
        if let Some(w) = warmup_s {
            s.timeline.warmup_s = w;
        }
        let (_sim, real, f) = both(&s, None);
        // Which poll the real chronyd first corrects at turns on its runs test, so on the scatter
        // of its samples: 57.5 s after the resume in four runs on an idle host, 65.5 s on a
        // loaded one, 81.5 s in a CI run. The sim is judged as an ensemble at the scatter
        // measured in this guest (harness/src/ensemble.rs).
        let e = f.ensemble.as_ref().expect("judged against the ensemble");
        assert!(
            e.regression_sd_ns_guest.is_some_and(|v| v > 0.0)
                && e.sample_noise_ns_guest.is_some_and(|v| v > 0.0),
            "{name}: chronyd's noise not measured in the guest: {e:?}"
        );
        // The host clock carries the sim's wander, and the mock extrapolates at igb's true rate
        // against the guest's CLOCK_MONOTONIC_RAW (igb's 2^-23 steps and the guest's TSC
        // calibration: -11921 and -12879 ppb measured in two boots for -12000 asked), right
        // after the pause too: outside the stretch it shows the pause (-30 s until the next
        // sample), the mock reads igb to its read noise. At the nominal rate it drifted 4.3 us
        // in the 5 s after the resume.
        let steps = real.backend_info["host_wander_steps"].as_u64().expect("wander applied");
        assert!(steps > 100, "{name}: {steps} wander steps");
        let worst = real
            .series
            .iter()
            .filter(|o| o.t_s > 10.0)
            .filter_map(|o| o.phc_offset_ns)
            .filter(|d| d.abs() < 1_000_000_000)
            .map(i64::abs)
            .max()
            .expect("the mock observed");
        assert!(worst < 1_000, "{name}: the mock strayed {worst} ns from igb between samples");
        assert_chronyd_selected_the_mock(&real);
        let after = real.recovery.offset_after_disturbance_ns.expect("observed at resume") as f64 / 1e9;
        assert!((after + 30.0).abs() < 0.01, "{name}: guest came back {after} s off, expected -30 s");
        assert!(!real.recovery.steps.is_empty(), "{name}: nothing stepped the 30 s: {}", real.to_text());
        assert!(real.recovery.time_to_within_s["1ms"].is_some(), "{name}: no recovery: {}", real.to_text());
        assert!(f.agrees, "{name}: sim and the real chronyd on the mock disagree:\n{}", f.to_markdown());
    }
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phc-harness"))
        .args(args)
        .env("PHC_AGENT_BIN", agent())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn probe_of_the_cuse_hyperv_clock_in_the_guest_shows_the_hyperv_row() {
    let (code, out, err) =
        cli(&["probe", "/dev/ptp_hyperv", "--driver", "hyperv", "--backend", "qemu", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deviations"], 0, "{out}");
    let check = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(check("SYS_OFFSET2")["result"], "ok");
    assert_eq!(check("SYS_OFFSET_EXTENDED realtime")["result"], "EOPNOTSUPP");
    assert_eq!(check("SYS_OFFSET_PRECISE2")["result"], "EOPNOTSUPP");
    // A CUSE node is no POSIX clock: clock_gettime fails there, reported, not judged.
    let gettime = check("clock_gettime");
    assert_eq!(
        (gettime["result"].as_str(), gettime["verdict"].as_str()),
        (Some("EINVAL"), Some("info")),
        "{gettime}"
    );
    // The mock read host time from one sample plus the elapsed CLOCK_MONOTONIC_RAW.
    // (The guest's clock comes from the RTC at boot, whole seconds plus hctosys: within 2 s.)
    let off = v["offset"]["offset_ns"].as_i64().expect("an offset by SYS_OFFSET");
    assert!(off.abs() < 2_000_000_000, "mock vs guest CLOCK_REALTIME: {off} ns");
    // linuxptp's phc_ctl needs a POSIX clock: it fails on the CUSE node, and says so.
    let cmp = v["backend"]["phc_ctl_cmp"]["realtime_minus_phc_ns"].clone();
    assert!(cmp.is_null(), "phc_ctl read a CUSE device: {cmp}");
}

/// `latency` of the mock and of the igb PHC in one real-time guest, side by side: the ratio of
/// their SYS_OFFSET round-trip p50s is the figure (target: the mock within 2x of the
/// kernel's igb driver). Reported, not judged: timings belong in reports, not in test verdicts.
#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn latency_of_the_mock_and_of_the_igb_phc_in_one_guest() {
    use phc_qemu::agent::Op;
    let opts = QemuOptions { clock: ClockMode::Real, ..QemuOptions::new(agent()) };
    let (mut s, _bi) =
        phc_harness::run::backend::qemu::boot(&opts, "device", phc_qemu::GuestClock::Real).unwrap();
    let deadline = || Instant::now() + Duration::from_secs(120);
    s.agent
        .call(Op::StartMock { personality: "hyperv".into(), name: "ptp_hyperv".into() }, deadline())
        .unwrap();
    let host_ns = phc_qemu::client::host_realtime_ns();
    s.agent
        .call(
            Op::HostSample { host_ns: Some(host_ns), reference: None, rate_ppb: 0, rate_since: None },
            deadline(),
        )
        .unwrap();
    let mut p50 = Vec::new();
    for dev in ["/dev/ptp_hyperv", "/dev/ptp0", "/dev/ptp_hyperv", "/dev/ptp0"] {
        let argv = [
            "/bin/phc-harness",
            "latency",
            dev,
            "--driver",
            if dev == "/dev/ptp0" { "nic" } else { "hyperv" },
            "--method",
            "basic",
            "--samples",
            "20000",
            "--format",
            "json",
        ];
        let op = Op::Exec { argv: argv.map(String::from).to_vec(), timeout_s: 90.0 };
        let r: phc_qemu::agent::ExecResult = s.agent.call_value(op, deadline()).unwrap();
        assert_eq!(r.code, 0, "{dev}: {}{}", r.stdout, r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let basic = v["methods"].as_array().unwrap().iter().find(|m| m["method"] == "basic").unwrap().clone();
        assert_eq!(basic["status"], "ok", "{dev}: {basic}");
        let p = basic["round_trip_ns"]["p50"].as_f64().expect("a p50");
        assert!(p > 0.0);
        println!(
            "{dev}: SYS_OFFSET round trip p50 {p} ns, {}x the clock_gettime baseline",
            basic["ratio_p50_to_baseline"]
        );
        p50.push(p);
    }
    let ratio = (p50[0] + p50[2]) / (p50[1] + p50[3]);
    println!("mock / igb SYS_OFFSET p50 ratio: {ratio:.2} (two alternating runs each; target <= 2)");
}
