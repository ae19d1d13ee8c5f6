//! VM tests per kernel line (6.12 and 7.2, both cached by ci/setup-vm.sh) and the vmclock
//! snapshot restore on 7.2: real guests under QEMU (TCG). Like tests/vm.rs they need the kernel
//! cache and `PHC_AGENT_BIN` (ci/vm-test.sh provides both) and fail when either is missing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::client::host_realtime_ns;
use phc_qemu::image::ImageSpec;
use phc_qemu::session::Session;
use phc_qemu::{snapshot, Accel, KernelLine};
use serde_json::Value;

const PHC: &str = "/dev/ptp0";
const VMCLOCK: &str = "/dev/vmclock0";
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

fn spec(line: KernelLine) -> ImageSpec {
    let agent = std::env::var_os("PHC_AGENT_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!("PHC_AGENT_BIN is not set: build the static guest agent with ci/build-agent.sh (ci/vm-test.sh does)")
    });
    assert!(agent.is_file(), "PHC_AGENT_BIN={}: no such file (run ci/build-agent.sh)", agent.display());
    let spec = ImageSpec::for_line(agent, line);
    assert!(
        spec.vmlinuz().is_file() && spec.kernel_dir.join("VERSION").is_file(),
        "no {line} guest kernel in {}: run ci/setup-vm.sh (as root)",
        spec.kernel_dir.display()
    );
    spec
}

fn boot(spec: &ImageSpec) -> Session {
    let s = Session::boot(spec, Accel::Tcg, Instant::now() + BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("guest did not boot: {e}"));
    println!("boot_to_ready_s={:.3}", s.boot_to_ready.as_secs_f64());
    s
}

fn exec(s: &mut Session, argv: &[&str]) -> ExecResult {
    let op = Op::Exec { argv: argv.iter().map(|a| (*a).to_owned()).collect(), timeout_s: 20.0 };
    s.agent.call_value(op, secs(40)).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// The guest's own `phc-harness probe DEVICE --format json`, parsed.
fn probe_json(s: &mut Session, device: &str) -> (i32, Value) {
    let r = exec(s, &["/bin/phc-harness", "probe", device, "--format", "json"]);
    let v = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("probe {device}: not JSON ({e}): {} {}", r.stdout, r.stderr));
    (r.code, v)
}

/// What every line must give: its own kernel, igb's PHC, cuse, and the modules the line loads
/// (ptp_kvm is left out under TCG), none reported missing on the console. Returns the guest's
/// probe of the igb PHC.
fn check_line(line: KernelLine) -> (Session, Value) {
    let spec = spec(line);
    let release = spec.kernel_release().expect("VERSION");
    let mut s = boot(&spec);
    let uname = exec(&mut s, &["cat", "/proc/sys/kernel/osrelease"]);
    assert_eq!(uname.stdout.trim(), release, "the guest runs another kernel than the {line} cache holds");
    let mods = exec(&mut s, &["cat", "/proc/modules"]).stdout;
    let loaded: Vec<&str> = mods.lines().filter_map(|l| l.split_whitespace().next()).collect();
    println!("kernel {release}: modules loaded {loaded:?}");
    for m in spec.modules.iter().filter(|m| *m != "ptp_kvm") {
        let m = m.replace('-', "_");
        assert!(loaded.contains(&m.as_str()), "{line}: module {m} not loaded (have {loaded:?})");
    }
    let console = s.guest.console();
    let missing: Vec<&str> =
        console.lines().filter(|l| l.contains("not loaded") && !l.contains("ptp_kvm")).collect();
    assert!(missing.is_empty(), "{line}: {missing:?}");
    let dev = exec(&mut s, &["ls", "/dev"]).stdout;
    for node in ["ptp0", "cuse"] {
        assert!(dev.split_whitespace().any(|n| n == node), "{line}: no /dev/{node}: {dev}");
    }
    let (code, probe) = probe_json(&mut s, PHC);
    assert!(code == 0 || code == 1, "{line}: probe {PHC} exit {code}: {probe}");
    println!("{line}: probe {PHC}: exit {code}, deviations {}", probe["deviations"]);
    (s, probe)
}

/// Each check of a probe document as `name=result`.
fn outcomes(probe: &Value) -> Vec<String> {
    probe["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}={}", c["name"].as_str().unwrap_or("?"), c["result"].as_str().unwrap_or("?")))
        .collect()
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn kernel_line_6_12_boots_with_igb_cuse_and_its_modules() {
    let (mut s, probe) = check_line(KernelLine::V6_12);
    let dev = exec(&mut s, &["ls", "/dev"]).stdout;
    assert!(!dev.contains("vmclock"), "6.12 has no vmclock driver, yet: {dev}");
    println!("6.12 probe outcomes: {:?}", outcomes(&probe));
}

/// Probe results on igb's PHC that differ between 6.12 and 7.2 and have been reviewed: a
/// difference listed here is reported, one not listed fails. None so far: both lines answered
/// all 22 checks alike (2026-11-27, 6.12.117+deb12 against 7.2.12+deb13, TCG).
const REVIEWED_DIFFERENCES: &[&str] = &[];

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn kernel_line_7_2_boots_with_igb_cuse_ptp_vmclock_and_the_vmclock_page() {
    // 6.12 first, for the side-by-side of igb's probe.
    let (old, old_probe) = check_line(KernelLine::V6_12);
    drop(old);
    let (mut s, probe) = check_line(KernelLine::V7_2);
    let (a, b) = (outcomes(&old_probe), outcomes(&probe));
    let differ: Vec<String> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("6.12 {x} / 7.2 {y}"))
        .chain((a.len() != b.len()).then(|| format!("6.12 has {} checks, 7.2 {}", a.len(), b.len())))
        .collect();
    println!("igb probe, 6.12 against 7.2: {} checks, differences {differ:?}", b.len());
    let unreviewed: Vec<&String> =
        differ.iter().filter(|d| !REVIEWED_DIFFERENCES.iter().any(|r| d.contains(r))).collect();
    assert!(unreviewed.is_empty(), "unreviewed probe differences between the lines: {unreviewed:?}");
    let list = exec(&mut s, &["/bin/phc-harness", "list", "--format", "json"]);
    let rows: Value = serde_json::from_str(&list.stdout).unwrap_or_else(|e| panic!("list: {e}: {list:?}"));
    let vm_rows: Vec<&Value> =
        rows.as_array().into_iter().flatten().filter(|r| r["kind"] == "vmclock").collect();
    assert_eq!(vm_rows.len(), 1, "list shows no vmclock row: {rows}");
    assert_eq!(vm_rows[0]["path"], VMCLOCK);
    let (code, page) = probe_json(&mut s, VMCLOCK);
    println!("7.2 {VMCLOCK}: {page}");
    assert_eq!(code, 0, "probe {VMCLOCK}: {page}");
    assert_eq!(page["kind"], "vmclock");
    assert_eq!(page["magic_text"], "VCLK");
    assert_eq!(page["page"]["version"], 1);
    // QEMU 10's device carries no time (hw/acpi/vmclock.c: counter INVALID), so the kernel
    // registers no PHC for it: /dev/vmclock0 is all the guest gets.
    assert_eq!(page["page"]["counter_id"], 255);
    assert_eq!(page["ptp_device"], Value::Null);
    let names = exec(&mut s, &["sh", "-c", "cat /sys/class/ptp/*/clock_name"]).stdout;
    assert!(!names.contains("vmclock"), "a vmclock PHC appeared: {names}");
    // Once at realize: marker 1, seq 2.
    assert_eq!(page["page"]["disruption_marker"], 1);
    // QEMU 10 sets no flags: no notifications, so 7.2's driver answers poll() with POLLHUP at
    // once, and no generation counter.
    assert_eq!(page["page"]["flags"], 0);
    assert_eq!(page["poll"], "hangup", "{page}");
}

/// Guest CLOCK_REALTIME minus host CLOCK_REALTIME, best of 5.
fn guest_offset_ns(s: &mut Session) -> i64 {
    s.agent.offset(5, secs(20)).expect("offset").offset_ns
}

fn phc_minus_realtime_ns(s: &mut Session) -> i64 {
    let v: Value = s.agent.call_value(Op::PhcOffset { device: PHC.into() }, secs(10)).expect("PhcOffset");
    v["phc_minus_realtime_ns"].as_i64().unwrap_or_else(|| panic!("PhcOffset answered {v}"))
}

fn marker(s: &mut Session) -> (u64, u64) {
    let (code, v) = probe_json(s, VMCLOCK);
    assert_eq!(code, 0, "{v}");
    (
        v["page"]["disruption_marker"].as_u64().expect("marker"),
        v["page"]["vm_generation_counter"].as_u64().expect("generation"),
    )
}

/// Seconds the guest stays saved while the host runs on.
const GAP_S: u64 = 5;

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn a_restored_snapshot_bumps_the_vmclock_marker_and_chronyd_recovers() {
    let spec = spec(KernelLine::V7_2);
    let mut s = boot(&spec);
    s.agent
        .call(Op::SetRealtime { host_ns: host_realtime_ns(), at_raw_ns: None }, secs(10))
        .expect("SetRealtime");
    s.agent
        .call(Op::SetPhc { device: PHC.into(), host_ns: host_realtime_ns(), at_raw_ns: None }, secs(10))
        .expect("SetPhc");
    let conf = "refclock PHC /dev/ptp0 poll 0 dpoll -2 offset 0 stratum 2\nmakestep 1.0 -1\n";
    s.agent.call(Op::WriteFile { path: "/etc/chrony.conf".into(), contents: conf.into() }, secs(10)).unwrap();
    let argv = ["chronyd", "-u", "root", "-d", "-f", "/etc/chrony.conf"].map(String::from).to_vec();
    let op = Op::Spawn { name: "chronyd".into(), argv, log: "/tmp/chronyd.log".into() };
    s.agent.call(op, secs(10)).expect("Spawn chronyd");
    std::thread::sleep(Duration::from_secs(8));
    let (m0, g0) = marker(&mut s);
    let before = guest_offset_ns(&mut s);
    println!("before save: marker {m0}, generation {g0}, guest - host {before} ns");

    let saved = snapshot::save(&mut s, secs(120)).unwrap_or_else(|e| panic!("save: {e}"));
    println!("saved {} bytes in {:.3} s", saved.bytes, saved.save_s);
    drop(s);
    std::thread::sleep(Duration::from_secs(GAP_S));
    let t0 = Instant::now();
    let mut s =
        snapshot::restore(saved, Instant::now() + BOOT_TIMEOUT).unwrap_or_else(|e| panic!("restore: {e}"));
    let resumed_s = t0.elapsed().as_secs_f64();
    let (m1, g1) = marker(&mut s);
    let marker_seen_s = t0.elapsed().as_secs_f64();
    let after = guest_offset_ns(&mut s);
    let phc_after = phc_minus_realtime_ns(&mut s);
    println!(
        "restored: agent answered {resumed_s:.3} s after the new QEMU started; marker {m0} -> {m1}, \
         generation {g0} -> {g1}, seen {marker_seen_s:.3} s after; guest - host {after} ns; \
         PHC - guest realtime {phc_after} ns"
    );
    assert_ne!(m1, m0, "the disruption marker did not change on restore");
    let behind_s = (before - after) as f64 / 1e9;
    assert!(behind_s > (GAP_S as f64) - 0.5, "the guest resumed only {behind_s:.3} s behind");

    // igb's clock runs on QEMU's virtual clock, which the stream carries: it resumed as far
    // behind as the guest, so chronyd, steering to it, sees nothing wrong while nobody feeds it.
    assert!(phc_after.abs() < 1_000_000, "the igb PHC came back {phc_after} ns from the guest clock");
    std::thread::sleep(Duration::from_secs(4));
    let unfed = guest_offset_ns(&mut s);
    println!("4 s later, the PHC not fed: guest - host {unfed} ns");
    assert!(unfed < -((GAP_S - 1) as i64) * 1_000_000_000, "chronyd corrected without a fed PHC: {unfed} ns");

    // The host provider: the igb PHC gets host time each second, as the real-time backend's
    // provider does; chronyd, steering the system clock to the PHC, must step back.
    let mut within = None;
    let mut last = after;
    while t0.elapsed() < Duration::from_secs(60) {
        s.agent
            .call(Op::SetPhc { device: PHC.into(), host_ns: host_realtime_ns(), at_raw_ns: None }, secs(10))
            .expect("SetPhc");
        std::thread::sleep(Duration::from_secs(1));
        last = guest_offset_ns(&mut s);
        if last.abs() < 1_000_000 {
            within = Some(t0.elapsed().as_secs_f64());
            break;
        }
    }
    let log: String = s.agent.call_value(Op::ReadFile { path: "/tmp/chronyd.log".into() }, secs(10)).unwrap();
    println!("chronyd log:\n{log}");
    let within = within.unwrap_or_else(|| panic!("guest still {last} ns off 60 s after the restore"));
    println!("recovered: |guest - host| < 1 ms {within:.3} s after the restore began ({last} ns)");
}
