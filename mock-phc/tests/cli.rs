//! `mock-phc serve` refuses what it cannot serve before touching any device, with the exit codes
//! the README gives: 2 for usage, 1 for a missing CUSE channel.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mock-phc")).args(args).output().expect("run mock-phc");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn usage_errors_exit_2() {
    let (code, err) = run(&["serve", "--personality", "foo", "--name", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("hyperv"), "{err}");
    let (code, err) = run(&["serve", "--personality", "kvm", "--name", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only the hyperv personality is served live"), "{err}");
    for bad in ["../etc", "", ".hidden", "a/b", "x y"] {
        let (code, err) = run(&["serve", "--personality", "hyperv", "--name", bad]);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    let (code, _) = run(&["serve", "--personality", "hyperv", "--name", "x", "--threads", "0"]);
    assert_eq!(code, 2);
}

#[test]
fn a_missing_cuse_channel_says_how_to_get_one() {
    let (code, err) =
        run(&["serve", "--personality", "hyperv", "--name", "ptp_cli_test", "--cuse", "/nonexistent/cuse"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("modprobe cuse"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}
