//! The CUSE mock PHC in a real guest: `mock-phc serve --personality hyperv` creates
//! /dev/ptp_hyperv through the guest kernel's `cuse` module; `phc-harness probe` judges it against
//! the hyperv row, two readers share it, the real chronyd takes it as a refclock, a stale sample
//! gives ESTALE, `stop` and a kill remove the node; and `latency` compares its SYS_OFFSET round
//! trip with the igb PHC's in the same guest. Needs what ci/vm-test.sh provides (kernel cache,
//! PHC_AGENT_BIN with mock-phc-guest beside it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::image::ImageSpec;
use phc_qemu::session::Session;
use phc_qemu::Accel;
use serde_json::Value;

const NODE: &str = "/dev/ptp_hyperv";
const CTL: &str = "/tmp/mock.ctl";
const LOG: &str = "/tmp/mock.log";
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

fn spec() -> ImageSpec {
    let agent = std::env::var_os("PHC_AGENT_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!("PHC_AGENT_BIN is not set: build the static guest agent with ci/build-agent.sh (ci/vm-test.sh does)")
    });
    let spec = ImageSpec::with_agent(agent);
    let mock = spec.mock.clone().unwrap_or_else(|| {
        panic!("no mock-phc-guest next to PHC_AGENT_BIN and no PHC_MOCK_BIN: run ci/build-agent.sh")
    });
    assert!(mock.is_file(), "{}: no such file", mock.display());
    assert!(spec.vmlinuz().is_file(), "no guest kernel: run ci/setup-vm.sh (as root)");
    spec
}

fn exec_t(s: &mut Session, argv: &[&str], timeout_s: f64) -> ExecResult {
    let op = Op::Exec { argv: argv.iter().map(|a| (*a).to_owned()).collect(), timeout_s };
    s.agent.call_value(op, secs(timeout_s as u64 + 20)).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn sh(s: &mut Session, script: &str) -> ExecResult {
    exec_t(s, &["sh", "-c", script], 20.0)
}

fn read(s: &mut Session, path: &str) -> String {
    s.agent.call_value(Op::ReadFile { path: path.into() }, secs(10)).unwrap_or_default()
}

fn node_exists(s: &mut Session) -> bool {
    sh(s, &format!("test -c {NODE}")).code == 0
}

/// Starts the server with its stdin on a FIFO held open read-write (so `echo ... > FIFO` never
/// ends its input) and waits for its `ready` line.
fn start_server(s: &mut Session, extra: &str) -> i64 {
    let script = format!(
        "busybox rm -f {CTL}; busybox mkfifo {CTL} && exec 3<>{CTL} && exec mock-phc serve --personality hyperv --name ptp_hyperv {extra} <&3"
    );
    let argv = ["sh", "-c", &script].map(String::from).to_vec();
    let spawned: Value = s
        .agent
        .call_value(Op::Spawn { name: "mock".into(), argv, log: LOG.into() }, secs(10))
        .expect("Spawn mock-phc");
    let t0 = Instant::now();
    while !read(s, LOG).contains(&format!("ready {NODE}")) {
        assert!(t0.elapsed() < Duration::from_secs(15), "no ready line; log:\n{}", read(s, LOG));
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("mock-phc ready after {:.2?}; log:\n{}", t0.elapsed(), read(s, LOG).trim());
    assert!(node_exists(s), "ready printed but {NODE} is no character device");
    spawned["pid"].as_i64().expect("pid")
}

/// Feeds a host sample `ahead_ns` from guest realtime, applying at a guest MONOTONIC_RAW
/// `age_ns` in the past.
fn feed(s: &mut Session, ahead_ns: i64, age_ns: i64) {
    let c = s.agent.call(Op::Clocks, secs(10)).expect("Clocks").response.clocks;
    let line = format!("sample {} {}", c.realtime_ns + ahead_ns, c.monotonic_raw_ns - age_ns);
    let r = sh(s, &format!("echo {line} > {CTL}"));
    assert_eq!(r.code, 0, "{r:?}");
}

/// Sends `stop`, waits for the node to go, returns the server's log.
fn stop(s: &mut Session) -> String {
    sh(s, &format!("echo stop > {CTL}"));
    let t0 = Instant::now();
    while node_exists(s) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{NODE} still there after stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = read(s, LOG);
    println!("after stop ({:.2?}):\n{log}", t0.elapsed());
    log
}

fn probe(s: &mut Session) -> Value {
    let r = exec_t(s, &["phc-harness", "probe", NODE, "--driver", "hyperv", "--format", "json"], 30.0);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("probe output is no JSON ({e}): {r:?}"))
}

fn check<'a>(p: &'a Value, group: &str, name: &str) -> &'a Value {
    p["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["group"] == group && c["name"] == name))
        .unwrap_or_else(|| panic!("no {group}/{name} check in {p:#}"))
}

fn latency_p50(s: &mut Session, device: &str, extra: &[&str]) -> (f64, Value) {
    let mut argv =
        vec!["phc-harness", "latency", device, "--method", "basic", "--samples", "5000", "--format", "json"];
    argv.extend_from_slice(extra);
    let r = exec_t(s, &argv, 120.0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("latency JSON ({e}): {r:?}"));
    let m = &v["methods"][0];
    assert_eq!(m["status"], "ok", "{device}: {m:#}");
    (m["round_trip_ns"]["p50"].as_f64().expect("p50"), m["round_trip_ns"].clone())
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn cuse_hyperv_mock_serves_probe_chronyd_and_goes_away() {
    let spec = spec();
    let mut s = Session::boot(&spec, Accel::Tcg, Instant::now() + BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("guest did not boot: {e}"));
    println!("boot_to_ready_s={:.3}", s.boot_to_ready.as_secs_f64());
    assert!(sh(&mut s, "test -c /dev/cuse").code == 0, "no /dev/cuse in the guest (module cuse)");
    start_server(&mut s, "");

    // Before any sample, as hv_utils answers (seen with the kernel's own on the VMBus shim): from
    // host time zero (1601) and the counter since boot, a wrapped time of about 6.8e18 ns since
    // 1970 (the year 2185), some 5e9 s ahead of the guest's clock, without error (the guest has
    // been up for less than 600 s).
    let p = probe(&mut s);
    assert_eq!(check(&p, "read", "SYS_OFFSET2")["result"], "ok", "{p:#}");
    let off = p["offset"]["offset_ns"].as_f64().expect("an offset");
    let realtime =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as f64;
    let wrapped = (116_444_736_000_000_000u64.wrapping_neg().wrapping_mul(100) as i64) as f64;
    assert!((off - (realtime - wrapped)).abs() < 1e12, "realtime - phc {off} ns before any sample");

    // A sample 5 s ahead of guest realtime: the PHC reads host time plus the elapsed raw clock.
    feed(&mut s, 5_000_000_000, 0);
    let p = probe(&mut s);
    println!("probe:\n{p:#}");
    for form in ["SYS_OFFSET", "SYS_OFFSET2"] {
        let c = check(&p, "read", form);
        assert_eq!((c["result"].as_str(), c["verdict"].as_str()), (Some("ok"), Some("pass")), "{c}");
    }
    for form in ["SYS_OFFSET_EXTENDED realtime", "SYS_OFFSET_PRECISE", "SYS_OFFSET_PRECISE2"] {
        let c = check(&p, "read", form);
        assert_eq!((c["result"].as_str(), c["verdict"].as_str()), (Some("EOPNOTSUPP"), Some("pass")), "{c}");
    }
    assert_eq!(check(&p, "strictness", "SYS_OFFSET2 n_samples=26")["result"], "EINVAL");
    assert_eq!(p["caps"]["max_adj_ppb"], 0);
    assert_eq!(p["deviations"], 0, "the hyperv row does not pass: {p:#}");
    assert_eq!(p["offset"]["method"], "basic");
    let off = p["offset"]["offset_ns"].as_i64().expect("offset_ns");
    println!("realtime minus PHC: {off} ns (a sample 5 s ahead)");
    assert!(
        (off + 5_000_000_000).abs() < 2_000_000,
        "PHC is not sample + elapsed: realtime - PHC = {off} ns"
    );

    // Two readers at once.
    let both = exec_t(
        &mut s,
        &[
            "sh",
            "-c",
            "for i in 1 2; do phc-harness latency /dev/ptp_hyperv --driver hyperv --method basic \
             --samples 3000 --format json > /tmp/lat$i.json & done; wait",
        ],
        120.0,
    );
    assert_eq!(both.code, 0, "{both:?}");
    for i in 1..=2 {
        let v: Value =
            serde_json::from_str(&read(&mut s, &format!("/tmp/lat{i}.json"))).expect("reader JSON");
        assert_eq!(v["methods"][0]["status"], "ok", "reader {i}: {v:#}");
    }

    // Callers killed mid-request and a flood of opens leave the server serving.
    let hostile = sh(
        &mut s,
        "for i in 1 2 3; do phc-harness latency /dev/ptp_hyperv --driver hyperv --method basic --samples 100000 \
         >/dev/null 2>&1 & p=$!; sleep 0.$i; kill -9 $p; done; \
         i=0; while [ $i -lt 500 ]; do : < /dev/ptp_hyperv || exit 1; i=$((i+1)); done",
    );
    assert_eq!(hostile.code, 0, "{hostile:?}");
    let c = check(&probe(&mut s), "read", "SYS_OFFSET2").clone();
    assert_eq!(c["result"], "ok", "after killed callers and 500 opens: {c}");

    // Performance: SYS_OFFSET round trip against the kernel igb driver, same guest, same run.
    let (mock_p50, mock_rt) = latency_p50(&mut s, NODE, &["--driver", "hyperv"]);
    let (igb_p50, igb_rt) = latency_p50(&mut s, "/dev/ptp0", &[]);
    println!("latency basic round trip (5000 calls, n_per_call default): mock {mock_rt}\nigb {igb_rt}");
    println!("SYS_OFFSET p50: mock {mock_p50} ns, igb {igb_p50} ns, ratio {:.2}", mock_p50 / igb_p50);

    // The real chronyd on the mock, Azure's line.
    feed(&mut s, 0, 0);
    let conf = "refclock PHC /dev/ptp_hyperv poll 3 dpoll -2 offset 0 stratum 2\nmakestep 1.0 -1\n";
    s.agent.call(Op::WriteFile { path: "/etc/chrony.conf".into(), contents: conf.into() }, secs(10)).unwrap();
    let argv = ["chronyd", "-u", "root", "-d", "-f", "/etc/chrony.conf"].map(String::from).to_vec();
    s.agent
        .call(Op::Spawn { name: "chronyd".into(), argv, log: "/tmp/chronyd.log".into() }, secs(10))
        .unwrap();
    let t0 = Instant::now();
    let (mut sources, mut reached, mut selected) = (String::new(), false, false);
    while t0.elapsed() < Duration::from_secs(60) && !selected {
        let r = exec_t(&mut s, &["chronyc", "-n", "sources"], 10.0);
        sources = r.stdout;
        if let Some(l) = sources.lines().find(|l| l.split_whitespace().nth(1) == Some("PHC0")) {
            let reach = l.split_whitespace().nth(4).and_then(|r| u32::from_str_radix(r, 8).ok()).unwrap_or(0);
            reached |= reach != 0;
            selected = l.starts_with("#*");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "chronyc -n sources after {:.1?}:\n{sources}\nchronyd log:\n{}",
        t0.elapsed(),
        read(&mut s, "/tmp/chronyd.log")
    );
    assert!(reached, "chronyd never read a sample from {NODE}");
    assert!(selected, "chronyd did not select PHC0 within 60 s");
    s.agent.call(Op::Kill { name: "chronyd".into() }, secs(10)).unwrap();

    // A sample older than 600 s: ESTALE again.
    feed(&mut s, 0, 601_000_000_000);
    assert_eq!(check(&probe(&mut s), "read", "SYS_OFFSET2")["result"], "ESTALE");

    // `stop` ends it cleanly and the node goes; so does a kill of a second server.
    let log = stop(&mut s);
    assert!(log.contains("stopping (stop)"), "{log}");

    // Where the time of one SYS_OFFSET goes, from the server's side: one thread, one client.
    start_server(&mut s, "--threads 1 --timings");
    feed(&mut s, 0, 0);
    let (p50_1, _) = latency_p50(&mut s, NODE, &["--driver", "hyperv"]);
    let log = stop(&mut s);
    let steps =
        log.lines().find(|l| l.contains("step medians")).unwrap_or_else(|| panic!("no step line: {log}"));
    println!("one server thread: SYS_OFFSET p50 {p50_1} ns (ratio to igb {:.2}); {steps}", p50_1 / igb_p50);

    let pid = start_server(&mut s, "");
    sh(&mut s, &format!("kill -TERM {pid}"));
    let t0 = Instant::now();
    while node_exists(&mut s) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{NODE} still there after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = read(&mut s, LOG);
    assert!(log.contains("stopping (SIGTERM)"), "{log}");
    println!("node gone {:.2?} after SIGTERM", t0.elapsed());

    // End of input stops it too.
    let r = exec_t(
        &mut s,
        &["sh", "-c", "mock-phc serve --personality hyperv --name ptp_hyperv </dev/null"],
        20.0,
    );
    // The end of input may come before the node is ready (it is read at once): the server
    // stops either way, with exit 0, and leaves no node behind.
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("stopping (end of input)"), "{r:?}");
    assert!(!node_exists(&mut s), "{NODE} left behind after end of input");

    start_server(&mut s, "");
    s.agent.call(Op::Kill { name: "mock".into() }, secs(10)).expect("Kill mock");
    let t0 = Instant::now();
    while node_exists(&mut s) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{NODE} still there after SIGKILL");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("node gone {:.2?} after SIGKILL", t0.elapsed());
}
