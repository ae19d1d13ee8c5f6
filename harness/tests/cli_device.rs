//! The device commands run as the real binary: exit codes and the one-line errors for paths that
//! are no PHC, and `list` on a machine without PHCs. Nothing here needs a PHC; the tests that do
//! run in the QEMU guest. Every run is bounded: a command that hangs (on a FIFO, say) fails its
//! test instead of hanging CI.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one run of the binary may take; each of these finishes in milliseconds.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `cmd` with stdin closed, killing it and failing the test if it outlives [`LIMIT`].
fn bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn phc-harness");
    // Drained on threads so that a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {LIMIT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn harness(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phc-harness"));
    c.args(args);
    bounded(c)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit 2, nothing on stdout, and exactly one stderr line naming the device and `cause`.
fn assert_access_error(o: &Output, device: &str, cause: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert_eq!(err.trim_end(), format!("phc-harness: {device}: {cause}"));
}

fn has_phcs() -> bool {
    std::fs::read_dir("/sys/class/ptp").is_ok_and(|mut d| d.next().is_some())
}

/// The class part of the message needs /sys/dev/char; without it the checks below cannot say
/// what they expect, so they fail with this reason rather than pass untested.
fn assert_sysfs() {
    assert!(Path::new("/sys/dev/char").is_dir(), "these tests need sysfs (/sys/dev/char)");
}

/// `not a PTP device (character device MAJ:MIN, SUFFIX)` for the node `path` resolves to.
fn char_device(path: &str, suffix: &str) -> String {
    let rdev = std::fs::metadata(path).unwrap().rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    format!("not a PTP device (character device {major}:{minor}, {suffix})")
}

/// Every way a device command can be asked to open `device`: as a kernel PHC, and as a CUSE mock
/// (`--driver`), which must refuse the same nodes.
fn device_commands(device: &str) -> Vec<Vec<String>> {
    [
        &["probe", device][..],
        &["probe", device, "--driver", "hyperv"],
        &["latency", device],
        &["latency", device, "--driver", "kvm", "--samples", "1000000"],
    ]
    .iter()
    .map(|a| a.iter().map(|s| s.to_string()).collect())
    .collect()
}

fn assert_every_command_refuses(device: &str, cause: &str) {
    for args in device_commands(device) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let o = harness(&args);
        assert_access_error(&o, device, cause);
        assert!(start.elapsed() < Duration::from_secs(3), "{args:?} took {:?}", start.elapsed());
    }
}

#[test]
fn help_lists_the_device_commands() {
    let o = harness(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in ["list", "probe", "latency"] {
        assert!(out.contains(cmd), "{out}");
    }
    let o = harness(&["latency", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--n-per-call"));
}

#[test]
fn kernel_devices_that_are_no_phc_are_refused_before_any_ioctl() {
    assert_sysfs();
    for dev in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty"] {
        let class = if dev == "/dev/tty" { "class tty" } else { "class mem" };
        assert_every_command_refuses(dev, &char_device(dev, class));
    }
    // /dev/kvm was seen taking PTP ioctls; it is a misc device.
    if Path::new("/dev/kvm").exists() {
        assert_every_command_refuses("/dev/kvm", &char_device("/dev/kvm", "class misc"));
    } else {
        eprintln!("skipping the /dev/kvm case: /dev/kvm is absent on this machine");
    }
}

#[test]
fn a_pty_is_refused_and_never_opened() {
    assert_sysfs();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = nix::unistd::ttyname(&pty.slave).expect("ttyname of the pty");
    let slave = slave.to_str().unwrap();
    // devpts nodes have no /sys/dev/char entry, so not even a CUSE mock may be one.
    assert_every_command_refuses(slave, &char_device(slave, "no sysfs entry"));
}

#[test]
fn files_folders_fifos_links_and_missing_paths_give_exit_2_and_one_line() {
    assert_sysfs();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (file, fifo, link, missing) = (path("ptp0"), path("ptp1"), path("ptp2"), path("ptp99"));
    std::fs::write(&file, b"").unwrap();
    // Nobody writes to the FIFO: a blocking open would hang, and the bound would fail the test.
    nix::unistd::mkfifo(Path::new(&fifo), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    assert_every_command_refuses(&fifo, "not a PTP device (a FIFO)");
    assert_every_command_refuses(&file, "not a PTP device (a regular file)");
    assert_every_command_refuses(dir.path().to_str().unwrap(), "not a PTP device (a directory)");
    assert_every_command_refuses(&link, &char_device("/dev/zero", "class mem"));
    assert_every_command_refuses(&missing, "no such device");
}

#[test]
fn an_unreadable_regular_file_is_no_ptp_device_even_for_root() {
    // Root bypasses the mode, so this cannot show EACCES; it shows the file-type check instead.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ptp0");
    std::fs::write(&f, b"").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
    let f = f.to_str().unwrap();
    assert_access_error(&harness(&["latency", f]), f, "not a PTP device (a regular file)");
}

#[test]
fn a_device_without_permission_is_checked_first_and_an_unreachable_one_says_permission_denied() {
    // Needs an unprivileged caller: uid 65534 through util-linux setpriv. The project's machines
    // and CI run as root; elsewhere this fails with the reason rather than passing untested.
    // /proc/self belongs to the effective uid; this avoids unsafe libc::geteuid in a test.
    assert_sysfs();
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    assert_eq!(uid, 0, "this test needs root to create a device node and drop to another uid");
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv (util-linux) is not installed"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A mode-000 copy of /dev/null's numbers: what it is shows from stat alone, before the open
    // that would fail.
    let node = dir.path().join("ptp_locked");
    let made = nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(1, 3),
    );
    made.expect("mknod of a character device (needs CAP_MKNOD)");
    // A path inside a root-only folder: uid 65534 cannot even stat it.
    let hidden = dir.path().join("private");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden_node = hidden.join("ptp0");
    let as_nobody = |path: &Path| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_phc-harness"),
            "latency",
        ])
        .arg(path);
        let o = bounded(c);
        assert!(!o.stderr.starts_with(b"setpriv"), "uid 65534 cannot run the test binary: {}", stderr(&o));
        o
    };
    let node_s = node.to_str().unwrap();
    assert_access_error(&as_nobody(&node), node_s, &char_device(node_s, "class mem"));
    assert_access_error(&as_nobody(&hidden_node), hidden_node.to_str().unwrap(), "permission denied");
}

#[test]
fn list_on_a_machine_without_phcs_is_clear_and_succeeds() {
    if has_phcs() {
        // Where the machine has PHCs, `list` must show them instead.
        let o = harness(&["list", "--format", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(!v.as_array().unwrap().is_empty(), "PHCs exist but list shows none");
        return;
    }
    let o = harness(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("no PTP hardware clocks found (/sys/class/ptp "), "{out}");
    let o = harness(&["list", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["latency", "/dev/null", "--samples", "0"][..],
        &["latency", "/dev/null", "--samples", "2000000000"],
        &["latency", "/dev/null", "--samples", "1000001"],
        &["latency", "/dev/null", "--n-per-call", "26"],
        &["latency", "/dev/null", "--n-per-call", "0"],
        &["latency", "/dev/null", "--method", "fastest"],
        &["latency", "/dev/null", "--driver", "vmware"],
        &["probe", "/dev/null", "--driver", "vmware"],
        &["probe"],
        &["latency"],
        &["probe", "--backend", "sim"],
        &["latency", "--backend", "sim"],
        &["probe", "/dev/ptp0", "--backend", "sim", "--driver", "kvm"],
    ] {
        let o = harness(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(o.stdout.is_empty());
        assert!(!err.contains("panicked"), "{err}");
        if args.contains(&"--samples") {
            assert!(err.contains("1..=1000000"), "{args:?}: {err}");
        }
    }
}

#[test]
fn latency_help_states_the_sample_cap_and_its_memory() {
    let o = harness(&["latency", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("at most 1000000"), "{help}");
    assert!(help.contains("at most 24 MB"), "{help}");
}

/// `--backend sim --driver D`: the probe and the latency run against mock-phc's personality of D,
/// without a device, judged by the same driver table as real devices.
#[test]
fn probe_and_latency_run_against_a_simulated_personality() {
    for d in ["hyperv", "kvm", "vmclock", "mock", "nic"] {
        let o = harness(&[
            "probe",
            "--backend",
            "sim",
            "--driver",
            d,
            "--allow-clock-writes",
            "--format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{d}: {}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["deviations"], 0, "{d}");
        assert_eq!(r["device"], format!("sim:{d}"));
        let extended = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "SYS_OFFSET_EXTENDED realtime")
            .unwrap();
        let want = if matches!(d, "vmclock" | "nic") { "ok" } else { "EOPNOTSUPP" };
        assert_eq!(extended["result"], want, "{d}");
    }
    let o = harness(&[
        "latency",
        "--backend",
        "sim",
        "--driver",
        "hyperv",
        "--samples",
        "2000",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let methods = r["methods"].as_array().unwrap();
    let status = |m: &str| methods.iter().find(|x| x["method"] == m).unwrap()["status"].clone();
    assert_eq!(status("basic"), "ok");
    assert_eq!(status("precise"), "unsupported");
    assert_eq!(r["driver"], "hyperv");
}

mod xml;

/// `probe --format ktap|junit` on a simulated personality: one test per check, read back by the
/// KTAP parser and an XML parser, with the exit code of the other formats.
#[test]
fn probe_ci_formats_parse_back_with_one_test_per_check() {
    use phc_harness::format::ktap;
    let json = harness(&["probe", "--backend", "sim", "--driver", "hyperv", "--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let o = harness(&["probe", "--backend", "sim", "--driver", "hyperv", "--format", "ktap"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let tests = ktap::parse(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(tests.len(), checks.len());
    for (t, c) in tests.iter().zip(checks) {
        let want =
            format!("{}.{}", c["group"].as_str().unwrap(), c["name"].as_str().unwrap()).replace(' ', "_");
        assert_eq!(t.name, want);
        match c["verdict"].as_str().unwrap() {
            "pass" => assert_eq!(t.result, ktap::Result::Ok),
            "skipped" => assert_eq!(t.result, ktap::Result::Skip(c["note"].as_str().unwrap().into())),
            v => panic!("a simulated hyperv has no {v} row"),
        }
    }
    let o = harness(&["probe", "--backend", "sim", "--driver", "hyperv", "--format", "junit"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let root = xml::parse_xml(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(root.name, "testsuites");
    let cases = root.find("testcase");
    assert_eq!(cases.len(), checks.len());
    let skipped = root.find("skipped").len();
    assert_eq!(root.attr("skipped"), Some(skipped.to_string().as_str()));
    assert_eq!(skipped, checks.iter().filter(|c| c["verdict"] == "skipped").count());
    for (case, c) in cases.iter().zip(checks) {
        assert_eq!(case.attr("name"), c["name"].as_str());
        assert_eq!(
            case.attr("classname").unwrap(),
            format!("phc-harness.probe.{}", c["group"].as_str().unwrap())
        );
    }
}
