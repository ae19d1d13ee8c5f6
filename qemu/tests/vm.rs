//! VM tests: real Linux guests under QEMU (TCG), driven through QMP and the guest agent. They
//! need the kernel cache (ci/setup-vm.sh) and the static agent (ci/build-agent.sh, passed in
//! `PHC_AGENT_BIN`); ci/vm-test.sh provides both and runs them with `--ignored`. Missing
//! prerequisites fail these tests: a VM test that cannot run must not look like a pass.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::client::host_realtime_ns;
use phc_qemu::image::{self, ImageSpec};
use phc_qemu::session::Session;
use phc_qemu::{tmp, Accel, Error, GuestBuilder, Waited};
use serde_json::Value;

const PHC: &str = "/dev/ptp0";
/// Generous: under TCG on a loaded 2-core CI machine a boot takes 5-15 s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

/// The image spec, or a panic that says which prerequisite is missing and how to get it.
fn spec() -> ImageSpec {
    let agent = std::env::var_os("PHC_AGENT_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!("PHC_AGENT_BIN is not set: build the static guest agent with ci/build-agent.sh (ci/vm-test.sh does)")
    });
    assert!(agent.is_file(), "PHC_AGENT_BIN={}: no such file (run ci/build-agent.sh)", agent.display());
    let spec = ImageSpec::with_agent(agent);
    assert!(
        spec.vmlinuz().is_file() && spec.kernel_dir.join("VERSION").is_file(),
        "no guest kernel in {}: run ci/setup-vm.sh (as root)",
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

/// QEMU processes started by this test process: their command line names a guest folder
/// `phc-qemu-<our pid>-<role>-<random>` (tmp.rs).
fn our_qemus() -> Vec<(u32, String)> {
    let tag = format!("phc-qemu-{}-", std::process::id());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(&tag) && cmd.contains("qemu-system") {
            found.push((pid, cmd));
        }
    }
    found
}

/// Every guest of this process is gone once its `Guest` dropped (no wait, no retries), and so
/// are its folder and its session's initramfs.
fn assert_no_stray_qemu() {
    let left = our_qemus();
    assert!(left.is_empty(), "QEMU processes left behind: {left:?}");
    let pid = std::process::id();
    let files: Vec<String> = std::fs::read_dir(phc_qemu::tmp::base().expect("private temp folder"))
        .expect("temp dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!("phc-qemu-{pid}-")) || n.starts_with(&format!("phc-initrd-{pid}-"))
        })
        .collect();
    assert!(files.is_empty(), "guest files left in the private temp folder: {files:?}");
}

fn exec(s: &mut Session, argv: &[&str]) -> ExecResult {
    let op = Op::Exec { argv: argv.iter().map(|a| (*a).to_owned()).collect(), timeout_s: 10.0 };
    s.agent.call_value(op, secs(20)).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn phc_minus_realtime_ns(s: &mut Session) -> i64 {
    let v: Value = s.agent.call_value(Op::PhcOffset { device: PHC.into() }, secs(10)).expect("PhcOffset");
    v["phc_minus_realtime_ns"].as_i64().unwrap_or_else(|| panic!("PhcOffset answered {v}"))
}

/// The Reach register (octal) of `name` in `chronyc -n sources` output, if listed.
fn reach(sources: &str, name: &str) -> Option<u32> {
    let line = sources.lines().find(|l| l.split_whitespace().nth(1) == Some(name))?;
    u32::from_str_radix(line.split_whitespace().nth(4)?, 8).ok()
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn boots_to_agent_with_igb_phc_and_chronyd() {
    let spec = spec();
    let mut s = boot(&spec);
    let hello: Value = s.agent.call_value(Op::Hello, secs(10)).expect("Hello");
    assert!(hello["version"].is_string(), "{hello}");

    let dev = exec(&mut s, &["ls", "/dev"]);
    assert!(dev.stdout.split_whitespace().any(|n| n == "ptp0"), "no ptp0 in /dev: {dev:?}");
    let name: String =
        s.agent.call_value(Op::ReadFile { path: "/sys/class/ptp/ptp0/clock_name".into() }, secs(10)).unwrap();
    // igb names its clock after the MAC address, not "igb".
    assert!(!name.trim().is_empty(), "empty clock_name");
    println!("ptp0 clock_name={}", name.trim());
    println!("ptp0 minus realtime at boot: {} ns", phc_minus_realtime_ns(&mut s));

    // Set both clocks to host time, as a time-sync provider would; they then agree closely.
    s.agent
        .call(Op::SetRealtime { host_ns: host_realtime_ns(), at_raw_ns: None }, secs(10))
        .expect("SetRealtime");
    s.agent
        .call(Op::SetPhc { device: PHC.into(), host_ns: host_realtime_ns(), at_raw_ns: None }, secs(10))
        .expect("SetPhc");
    let off = phc_minus_realtime_ns(&mut s);
    println!("ptp0 minus realtime after SetRealtime+SetPhc: {off} ns");
    assert!(off.abs() < 50_000_000, "PHC {off} ns from guest realtime after setting both to host time");
    let est = s.agent.offset(5, secs(10)).expect("offset");
    println!("guest minus host realtime: {} ns (+/- {} ns)", est.offset_ns, est.uncertainty_ns);

    let conf = "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0 stratum 2\nmakestep 1.0 -1\n";
    s.agent.call(Op::WriteFile { path: "/etc/chrony.conf".into(), contents: conf.into() }, secs(10)).unwrap();
    let argv = ["chronyd", "-u", "root", "-d", "-f", "/etc/chrony.conf"].map(String::from).to_vec();
    let op = Op::Spawn { name: "chronyd".into(), argv, log: "/tmp/chronyd.log".into() };
    s.agent.call(op, secs(10)).expect("Spawn chronyd");
    let t0 = Instant::now();
    let (mut listed, mut sampled) = (None, None);
    let mut out = String::new();
    while t0.elapsed() < Duration::from_secs(40) && sampled.is_none() {
        let r = exec(&mut s, &["chronyc", "-n", "sources"]);
        out = format!("{}{}", r.stdout, r.stderr);
        if let Some(reach) = reach(&out, "PHC0") {
            listed.get_or_insert(t0.elapsed());
            if reach != 0 {
                sampled = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let log: String = s.agent.call_value(Op::ReadFile { path: "/tmp/chronyd.log".into() }, secs(10)).unwrap();
    println!("chronyc -n sources:\n{out}\nchronyd log:\n{log}");
    let listed = listed.unwrap_or_else(|| panic!("chronyc never listed PHC0"));
    assert!(listed < Duration::from_secs(20), "PHC0 listed only after {listed:?}");
    let sampled =
        sampled.unwrap_or_else(|| panic!("chronyd never read a sample from the PHC (reach stayed 0)"));
    println!("chronyd: PHC0 listed after {listed:.1?}, first sample after {sampled:.1?}");
    s.agent.call(Op::Kill { name: "chronyd".into() }, secs(10)).expect("Kill chronyd");
    drop(s);
    assert_no_stray_qemu();
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn boot_to_ready_time() {
    let spec = spec();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let s = boot(&spec);
        runs.push(s.boot_to_ready.as_secs_f64());
        drop(s);
        assert_no_stray_qemu();
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[1];
    let shown: Vec<String> = runs.iter().map(|r| format!("{r:.2}")).collect();
    println!("boot_to_ready_s median={median:.2} runs=[{}]", shown.join(","));
    // Not a performance gate (the machine is shared and noisy), only a sanity bound.
    assert!(median < 60.0, "median boot to agent-ready {median:.1} s");
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn qmp_stop_cont_leaves_guest_realtime_behind() {
    let spec = spec();
    let mut s = boot(&spec);
    let before = s.agent.offset(5, secs(10)).expect("offset before");
    s.guest.qmp().stop(secs(10)).expect("stop");
    assert_eq!(s.guest.qmp().status(secs(10)).unwrap(), "paused");
    std::thread::sleep(Duration::from_secs(3));
    s.guest.qmp().cont(secs(10)).expect("cont");
    let after = s.agent.offset(5, secs(10)).expect("offset after");
    let fell_behind_s = (before.offset_ns - after.offset_ns) as f64 / 1e9;
    println!(
        "guest minus host: before {} ns, after {} ns: fell behind {fell_behind_s:.3} s over a 3 s stop",
        before.offset_ns, after.offset_ns
    );
    assert!((2.5..4.0).contains(&fell_behind_s), "guest realtime fell behind {fell_behind_s:.3} s");
    drop(s);
    assert_no_stray_qemu();
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn system_reset_reboots_and_the_agent_answers_again() {
    let spec = spec();
    let mut s = boot(&spec);
    s.guest.qmp().system_reset(secs(10)).expect("system_reset");
    let took =
        s.wait_agent_again(Instant::now() + BOOT_TIMEOUT).unwrap_or_else(|e| panic!("after reset: {e}"));
    println!("reboot_to_ready_s={:.3}", took.as_secs_f64());
    let dev = exec(&mut s, &["ls", "/dev"]);
    assert!(dev.stdout.contains("ptp0"), "{dev:?}");
    drop(s);
    assert_no_stray_qemu();
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn killed_qemu_fails_the_next_call_quickly() {
    let spec = spec();
    let mut s = boot(&spec);
    let pid = s.guest.pid().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let t0 = Instant::now();
    let err = s.agent.call(Op::Hello, secs(30)).expect_err("an agent call after QEMU died");
    let took = t0.elapsed();
    println!("after SIGKILL: {err} (after {took:?})");
    assert!(took < Duration::from_secs(5), "the failure took {took:?}");
    assert!(err.is_channel_lost(), "{err:?}");
    let t1 = Instant::now();
    let reason = loop {
        if let Some(r) = s.guest.exit_reason() {
            break r;
        }
        assert!(t1.elapsed() < Duration::from_secs(2), "exit_reason is None 2 s after SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("exit_reason: {reason}");
    assert!(reason.contains("QEMU exited") && reason.contains("SIGKILL"), "{reason}");
    assert!(!s.guest.alive());
    drop(s);
    assert_no_stray_qemu();
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn boot_past_its_deadline_times_out_and_leaves_nothing() {
    let spec = spec();
    let initrd = tmp::file("initrd", "slow", ".cpio").expect("temp file");
    let kernel = image::build(&spec, &initrd).expect("image");
    // build() falls back to the bzImage quietly; that would cost every boot 1.5 s or more.
    let name = kernel.file_name().unwrap_or_default().to_string_lossy();
    assert!(name.contains("vmlinux-pvh"), "no PVH kernel extracted, booting {}", kernel.display());
    // The deadline starts after the image is built: only the boot is too slow.
    let err = match Session::boot_with(GuestBuilder::new(kernel, &initrd), initrd, secs(2)) {
        Ok(s) => panic!("booted to ready in {:?}, under 2 s: use a shorter deadline here", s.boot_to_ready),
        Err(e) => e,
    };
    println!("{err}");
    assert!(
        matches!(&err, Error::Timeout { what: Waited::Agent, console_tail } if !console_tail.is_empty()),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out waiting for the guest agent"), "{err}");
    assert!(err.to_string().contains("console tail"), "{err}");
    assert_no_stray_qemu();
}

#[test]
#[ignore = "needs a VM: run ci/vm-test.sh"]
fn an_agent_that_answers_garbage_fails_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("garbage-agent");
    // Called as `phc-harness agent --port /dev/vportNpM` by init. It keeps the port open, as the
    // real agent does, so its lines reach the host.
    std::fs::write(&fake, "#!/bin/sh\nexec 3<>\"$3\"\nwhile :; do echo 'not json' >&3; sleep 0.2; done\n")
        .unwrap();
    let mut spec = spec();
    spec.agent = fake;
    // Nothing else is needed to reach init; fewer modules boot faster.
    spec.modules.clear();
    spec.programs.clear();
    let err = match Session::boot(&spec, Accel::Tcg, Instant::now() + BOOT_TIMEOUT) {
        Ok(_) => panic!("a guest whose agent prints garbage booted to ready"),
        Err(e) => e,
    };
    println!("{err}");
    assert!(err.to_string().contains("garbage from the guest agent"), "{err:?}");
    assert_no_stray_qemu();
}

#[test]
fn reach_parses_chronyc_sources() {
    let out = "MS Name/IP address         Stratum Poll Reach LastRx Last sample\n\
               ===============================================================================\n\
               #* PHC0                          0   3   377     8    -23ns[  -40ns] +/-  130ns\n";
    assert_eq!(reach(out, "PHC0"), Some(0o377));
    assert_eq!(reach(out, "PHC1"), None);
}
