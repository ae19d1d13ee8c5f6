//! The device commands run as the real binary: exit codes and the one-line errors for paths that
//! are no PHC, and `list` on a machine without PHCs. Nothing here needs a PHC; the tests that do
//! run in the QEMU guest.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phc-harness")).args(args).output().expect("run phc-harness")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit 2, nothing on stdout, and exactly one stderr line naming the device and `cause`.
fn assert_access_error(o: &Output, device: &str, cause: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(o.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert_eq!(err.trim_end(), format!("phc-harness: {device}: {cause}"));
}

fn has_phcs() -> bool {
    std::fs::read_dir("/sys/class/ptp").is_ok_and(|mut d| d.next().is_some())
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
fn paths_that_are_no_phc_give_exit_2_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ptp99");
    let missing = missing.to_str().unwrap();
    let d = dir.path().to_str().unwrap();
    for cmd in ["probe", "latency"] {
        let extra: &[&str] = if cmd == "probe" { &["--driver", "hyperv"] } else { &[] };
        let run = |dev: &str| harness(&[&[cmd, dev], extra].concat());
        assert_access_error(&run(missing), missing, "no such device");
        assert_access_error(&run(d), d, "is a directory, not a PTP device");
        // /dev/null is a character device that answers every PTP ioctl with ENOTTY.
        assert_access_error(&run("/dev/null"), "/dev/null", "not a PTP device");
    }
}

#[test]
fn an_unreadable_regular_file_is_no_ptp_device_even_for_root() {
    // Root bypasses the mode, so this cannot show EACCES; it shows the file-type check instead.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ptp0");
    std::fs::write(&f, b"").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
    let f = f.to_str().unwrap();
    assert_access_error(&harness(&["latency", f]), f, "not a PTP device");
}

#[test]
fn a_device_without_permission_says_permission_denied() {
    // EACCES needs an unprivileged opener: a mode-000 character device (a copy of /dev/null's
    // numbers) opened by uid 65534 through util-linux setpriv. The project's machines and CI run
    // as root; elsewhere this fails with the reason rather than passing without testing.
    // /proc/self belongs to the effective uid; this avoids unsafe libc::geteuid in a test.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    assert_eq!(uid, 0, "this test needs root to create a device node and drop to another uid");
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv (util-linux) is not installed"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = dir.path().join("ptp_locked");
    let made = nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(1, 3),
    );
    made.expect("mknod of a character device (needs CAP_MKNOD)");
    let bin = env!("CARGO_BIN_EXE_phc-harness");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin, "latency"])
        .arg(&node)
        .output()
        .unwrap();
    assert!(!o.stderr.starts_with(b"setpriv"), "uid 65534 cannot run the test binary: {}", stderr(&o));
    assert_access_error(&o, node.to_str().unwrap(), "permission denied");
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
        &["latency", "/dev/null", "--n-per-call", "26"],
        &["latency", "/dev/null", "--method", "fastest"],
        &["probe", "/dev/null", "--driver", "vmware"],
        &["probe"],
    ] {
        let o = harness(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}
