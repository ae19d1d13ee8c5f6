//! Helpers shared by the hostile-input CLI tests: the real binary under a memory cap and a time
//! limit, the one-line usage-error check, and a listing of a folder tree.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_phc-harness");
/// Address-space cap for every run (1 GiB): far above what a bounded run needs, far below a
/// blowup.
pub const MEM_LIMIT_KIB: u64 = 1024 * 1024;

/// A good scenario: a 30 s pause of a hyperv guest, one check.
pub const GOOD: &str = r#"
description = "a pause"
[world.phc]
personality = "hyperv"
[[world.disciplines]]
kind = "hv_utils"
[timeline]
warmup_s = 10
observe_s = 60
[[timeline.events]]
at_s = 5
kind = "pause"
duration_s = 30
[expect]
steps = { min = 1 }
"#;

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary under a memory cap in `cwd`; a run past `limit` is killed and fails the test.
pub fn harness_in(cwd: &Path, args: &[&str], limit: Duration) -> Out {
    harness_stdin(cwd, args, limit, Stdio::null())
}

/// [`harness_in`] with the given standard input.
pub fn harness_stdin(cwd: &Path, args: &[&str], limit: Duration, stdin: Stdio) -> Out {
    harness_with(cwd, args, limit, stdin, &[])
}

/// [`harness_stdin`] with environment variables set (`TMPDIR`, say).
pub fn harness_with(cwd: &Path, args: &[&str], limit: Duration, stdin: Stdio, env: &[(&str, &Path)]) -> Out {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEM_LIMIT_KIB}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("phc-harness {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out { code: status.code(), stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// Asserts a clean usage error: exit 2, one stderr line holding `want`, no panic.
pub fn assert_usage(o: &Out, want: &str, what: &str) {
    assert_eq!(o.code, Some(2), "{what}: exit {:?}, stderr: {}", o.code, o.stderr);
    assert!(!o.stderr.contains("panicked"), "{what}: {}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{what}: not one line: {}", o.stderr);
    assert!(o.stderr.contains(want), "{what}: wanted {want:?} in {}", o.stderr);
}

/// Every file under `dir`, relative.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
