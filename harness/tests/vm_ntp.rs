//! The guide's NTP configurations against the real daemons in the QEMU guest (virtual time), the
//! scenario's NTP server in a network namespace of the guest: chronyd with the NTP server and the
//! PHC (`prefer` both ways), Debian's ntpd (NTPsec) and systemd-timesyncd, each after a 30 s
//! pause, three runs each, judged against the sim's models on distributions; and a server that
//! goes wrong, falls silent or answers garbage, as scenarios the real daemon lives through.
//! Needs QEMU, the kernel, ntpd and timesyncd unpacked (ci/setup-vm.sh) and the static agent
//! (ci/vm-test.sh runs it with --ignored).

use std::path::{Path, PathBuf};

use phc_harness::judge::distribution::Distribution;
use phc_harness::judge::report::{Report, Verdict};
use phc_harness::model::scenario::Scenario;
use phc_harness::run::backend::qemu::{find_agent_bin, QemuOptions};
use phc_harness::run::ensemble::calibrated_sims;
use phc_harness::run::runner::{run_qemu, run_sim};

/// Real runs per configuration: enough for the median's interval to be the runs' range, few
/// enough for CI (each is 10-20 s of wall time).
const RUNS: u64 = 3;

fn agent() -> PathBuf {
    find_agent_bin(None).unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN; ci/vm-test.sh does)"))
}

fn load(folder: &str, name: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{folder}/{name}.toml"));
    Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn info<'a>(r: &'a Report, key: &str) -> &'a str {
    r.backend_info
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing:\n{}", r.to_text()))
}

/// `n` real runs of `s` (seeds s.., each must pass its checks), then the distribution judged
/// against the sim at the guest's noise; printed, and returned with the runs.
fn judged(s: &Scenario, n: u64) -> (Vec<Report>, Distribution) {
    let opts = QemuOptions::new(agent());
    let real: Vec<Report> = (0..n)
        .map(|k| {
            let mut v = s.clone();
            v.world.seed = s.world.seed + k;
            let r = run_qemu(&v, &opts, false).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(r.verdict, Verdict::Pass, "{} seed {}:\n{}", v.name, v.world.seed, r.to_text());
            // The clients asked the server in its namespace, over the veth pair.
            assert!(info(&r, "ntp_server_log").contains("10.200.0.2:"), "{}", info(&r, "ntp_server_log"));
            r
        })
        .collect();
    let refs: Vec<&Report> = real.iter().collect();
    let (sims, calibration) = calibrated_sims(s, &refs);
    let own: Vec<Report> = (0..n)
        .map(|k| {
            let mut v = s.clone();
            v.world.seed = s.world.seed + k;
            run_sim(&v).unwrap()
        })
        .collect();
    let all: Vec<Report> = own.into_iter().chain(real.iter().cloned()).collect();
    let d = Distribution::judged_against(&s.name, &all, s.poll_interval_s(), Some((&sims, calibration)));
    println!("{}", d.to_markdown());
    (real, d)
}

fn assert_agrees(d: &Distribution) {
    let f = d.fidelity.as_ref().expect("sim and qemu");
    assert!(f.agrees, "{}", d.to_markdown());
    assert_eq!(f.runs, RUNS as usize);
}

/// Where `first` comes before `then` in a log.
fn in_order(log: &str, first: &str, then: &str) -> bool {
    match (log.find(first), log.rfind(then)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn chronyd_with_the_ntp_server_and_the_phc_prefer_either_way_agrees_with_the_sim() {
    for name in ["pause-30s-prefer-ntp", "pause-30s-prefer-phc"] {
        let (real, d) = judged(&load("guide", name), RUNS);
        for r in &real {
            let log = info(r, "chronyd_log");
            // The NTP source came first (iburst), the PHC took over where the pause left them
            // apart; chronyd's configuration names both, one `prefer`.
            assert!(in_order(log, "Selected source 10.200.0.1", "Selected source PHC0"), "{log}");
            let conf = info(r, "chrony_conf");
            assert!(conf.contains("refclock PHC /dev/ptp0") && conf.contains("server 10.200.0.1"), "{conf}");
            assert_eq!(conf.matches(" prefer").count(), 1, "{conf}");
        }
        assert_agrees(&d);
    }
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn ntpd_with_a_server_agrees_with_the_sim() {
    let (real, d) = judged(&load("guide", "pause-30s-ntpd"), RUNS);
    for r in &real {
        let log = info(r, "ntpd_log");
        // The pause's first sample is ignored (SYNC -> SPIK), the step comes after the stepout.
        assert!(in_order(log, "spike_detect", "CLOCK: time stepped by"), "{log}");
        assert!(log.contains("no_sys_peer"), "{log}");
    }
    assert_agrees(&d);
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn timesyncd_agrees_with_the_sim() {
    let (real, d) = judged(&load("guide", "pause-30s-timesyncd"), RUNS);
    for r in &real {
        let log = info(r, "timesyncd_log");
        assert!(in_order(log, "Initial clock synchronization", "adjust (jump): "), "{log}");
        // The jump is the pause, to the 3 decimals timesyncd prints.
        let jump: f64 = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("adjust (jump): "))
            .and_then(|v| v.trim_end_matches("sec").trim().parse().ok())
            .unwrap_or_else(|| panic!("{log}"));
        assert!((jump - 30.0).abs() < 0.01, "{jump}");
        // Its own jump is no "System time changed" for it.
        assert!(!log.contains("System time changed"), "{log}");
    }
    assert_agrees(&d);
}

/// A server that goes 5 s wrong, falls silent or answers garbage: each run passes its checks (no
/// step toward the wrong server, the clock kept), and the real daemon logs what its source says
/// it does.
#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn a_misbehaving_server_is_a_scenario_the_daemon_lives_through() {
    let opts = QemuOptions::new(agent());
    for (name, log_key, says) in [
        ("falseticker-chrony", "chronyd_log", "Can't synchronise: no majority"),
        ("silent-server-chrony", "chronyd_log", "Selected source PHC0"),
        ("garbage-timesyncd", "timesyncd_log", "Waiting after exhausting servers"),
    ] {
        let s = load("ntp", name);
        let r = run_qemu(&s, &opts, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.verdict, Verdict::Pass, "{name}:\n{}", r.to_text());
        let log = info(&r, log_key);
        assert!(log.contains(says), "{name}: {log}");
        // The sim's model says the same.
        let sim = run_sim(&s).unwrap();
        assert!(
            sim.events.iter().any(|e| e.text.contains(says.trim_end_matches('.'))),
            "{name}: the sim's events lack {says:?}: {:?}",
            sim.events.iter().map(|e| &e.text).collect::<Vec<_>>()
        );
    }
}
