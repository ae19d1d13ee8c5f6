//! `mock-phc serve --cuse PATH` opens nothing but the CUSE channel: anything else (a file, a
//! FIFO that would block the open, a device such as /dev/zero, a symlink to one) is refused
//! before it is opened, in bounded time, with exit 2 and one line on stderr.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `mock-phc serve` with `--cuse cuse`; a run past 15 s is killed and fails the test.
fn serve_with(cuse: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-phc"))
        .args(["serve", "--personality", "hyperv", "--name", "ptp_hostile_test", "--cuse"])
        .arg(cuse)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut se = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mock-phc --cuse {} ran past 15 s", cuse.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), t.join().unwrap())
}

#[test]
fn a_cuse_path_that_is_no_cuse_channel_is_refused_before_it_is_opened() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let file = d.join("cuse");
    std::fs::write(&file, b"not a device").unwrap();
    let fifo = d.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero_link = d.join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let big = d.join("big");
    std::fs::File::create(&big).unwrap().set_len(10 << 30).unwrap();
    for (path, want) in [
        (file.as_path(), "not a character device (a regular file)"),
        (fifo.as_path(), "not a character device (a FIFO)"),
        (d, "not a character device (a directory)"),
        (big.as_path(), "not a character device (a regular file)"),
        (Path::new("/dev/zero"), "character device 1:5, not the CUSE channel"),
        (zero_link.as_path(), "character device 1:5, not the CUSE channel"),
        (Path::new("/dev/null"), "character device 1:3, not the CUSE channel"),
    ] {
        let (code, err) = serve_with(path);
        assert_eq!(code, Some(2), "{}: {err}", path.display());
        assert_eq!(err.trim_end().lines().count(), 1, "{}: not one line: {err}", path.display());
        assert!(err.contains(want), "{}: wanted {want:?} in {err}", path.display());
        assert!(!err.contains("panicked"), "{err}");
    }
    // The file refused is untouched.
    assert_eq!(std::fs::read(&file).unwrap(), b"not a device");
}
