//! Hostile and careless input to the real binary: every case ends in bounded time and memory
//! with exit 2 and one line on stderr, never a panic, and nothing written outside `--out`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_usage, harness_in, tree, BIN, GOOD};

#[test]
fn scenario_names_cannot_leave_out_and_must_be_unique() {
    let top = tempfile::tempdir().unwrap();
    let work = top.path().join("work");
    std::fs::create_dir(&work).unwrap();
    for name in ["../escaped", "/tmp/phc-harness-escaped", "..", "a/b", "x y"] {
        let f = work.join("s.toml");
        std::fs::write(&f, format!("name = {name:?}\n{GOOD}")).unwrap();
        let o = harness_in(&work, &["run", "s.toml", "--out", "out"], Duration::from_secs(20));
        assert_usage(&o, "name: ", name);
        assert!(o.stderr.starts_with("phc-harness: s.toml:1: name: "), "{}", o.stderr);
    }
    assert_eq!(tree(top.path()), ["work", "work/s.toml"], "nothing written anywhere");
    assert!(!Path::new("/tmp/phc-harness-escaped-sim-seed1").exists());

    // Two scenarios of one run with one name.
    std::fs::write(work.join("a.toml"), format!("name = \"same\"\n{GOOD}")).unwrap();
    std::fs::write(work.join("b.toml"), format!("name = \"same\"\n{GOOD}")).unwrap();
    let o = harness_in(&work, &["run", "a.toml", "b.toml", "--out", "out"], Duration::from_secs(20));
    assert_usage(&o, "names must be unique", "duplicate names");
    // A good run writes only under --out.
    let o = harness_in(&work, &["run", "a.toml", "--out", "out"], Duration::from_secs(20));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let files = tree(&work.join("out"));
    assert_eq!(
        files,
        [
            "same-sim-seed1",
            "same-sim-seed1/plot.svg",
            "same-sim-seed1/report.json",
            "same-sim-seed1/report.md",
            "same-sim-seed1/report.txt"
        ]
    );
}

#[test]
fn unbounded_work_and_bad_disturbances_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("observe_s = 60", "observe_s = 1e12", "timeline.observe_s"),
        ("observe_s = 60", "observe_s = 3e6", "timeline.observe_s"),
        ("observe_s = 60", "observe_s = 60\ninterval_s = 1e-9", "timeline.interval_s"),
        ("duration_s = 30", "duration_s = 1e12", "timeline.events[0].duration_s"),
        ("duration_s = 30", "duration_s = inf", "timeline.events[0].duration_s"),
        ("duration_s = 30", "duration_s = -30", "timeline.events[0].duration_s"),
        (
            "kind = \"pause\"\nduration_s = 30",
            "kind = \"reboot\"\ndowntime_s = -5",
            "timeline.events[0].downtime_s",
        ),
        (
            "kind = \"pause\"\nduration_s = 30",
            "kind = \"host_step\"\ndelta_s = nan",
            "timeline.events[0].delta_s",
        ),
        (
            "kind = \"pause\"\nduration_s = 30",
            "kind = \"frequency_jump\"\ndelta_ppm = -2e6",
            "timeline.events[0].delta_ppm",
        ),
        ("kind = \"hv_utils\"", "kind = \"ntpd\"\npoll_s = 1e-12", "world.disciplines[0].poll_s"),
    ];
    for (from, to, key) in cases {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD);
        let f = dir.path().join("s.toml");
        std::fs::write(&f, &text).unwrap();
        let o = harness_in(dir.path(), &["run", "s.toml", "--out", "out"], Duration::from_secs(20));
        assert_usage(&o, &format!(": {key}: "), to);
        // The line named is the key's own line.
        let line = o.stderr.split(':').nth(2).unwrap().trim().parse::<usize>().unwrap();
        let at = text.lines().nth(line - 1).unwrap_or_default();
        let leaf = key.rsplit('.').next().unwrap();
        assert!(at.starts_with(leaf), "{to}: line {line} is {at:?}");
    }
    let f = dir.path().join("s.toml");
    std::fs::write(&f, GOOD).unwrap();
    let o = harness_in(
        dir.path(),
        &["run", "s.toml", "--warmup-s", "1e12", "--out", "out"],
        Duration::from_secs(20),
    );
    assert_usage(&o, "--warmup-s", "--warmup-s 1e12");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn endless_and_blocking_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.toml")).unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, want) in [
        (vec!["run", "/dev/zero"], "not a regular file (a character device)"),
        (vec!["run", "/dev/urandom"], "not a regular file (a character device)"),
        (vec!["run", &format!("{d}/zero.toml")], "not a regular file (a character device)"),
        (vec!["run", &format!("{d}/fifo.toml")], "not a regular file (a FIFO)"),
        (vec!["run", &format!("{d}/big.toml")], "over the limit of 1048576"),
        (vec!["run", d], "big.toml: 2097152 bytes"),
        (vec!["scenarios", "--dir", d], "big.toml: 2097152 bytes"),
    ] {
        let o =
            harness_in(dir.path(), &[&args[..], &["--out", "out"][..]].concat()[..], Duration::from_secs(20));
        let o =
            if args[0] == "scenarios" { harness_in(dir.path(), &args, Duration::from_secs(20)) } else { o };
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.stderr);
        assert!(!o.stderr.contains("panicked") && o.stderr.contains(want), "{args:?}: {}", o.stderr);
    }
}

#[test]
fn a_closed_pipe_ends_quietly_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "reboot", "azure-pause-30s", "--format", "json", "--out"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "a closed pipe is not an error worth a line: {stderr}");
    for d in ["reboot-sim-seed1", "azure-pause-30s-sim-seed1"] {
        assert!(dir.path().join(d).join("report.json").is_file(), "{d}: the batch was abandoned");
    }
}

#[test]
fn a_full_disk_on_stdout_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(BIN)
        .args(["run", "reboot", "--out"])
        .arg(dir.path())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("phc-harness: stdout: No space left on device"), "{stderr}");
}

#[test]
fn json_of_several_scenarios_is_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let o = harness_in(
        dir.path(),
        &["run", "reboot", "date-back-2-years", "--format", "json", "--out", "out"],
        Duration::from_secs(60),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).expect("one JSON document");
    let names: Vec<_> =
        doc.as_array().unwrap().iter().map(|e| e["scenario"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["reboot", "date-back-2-years"]);
    assert_eq!(doc[1]["reports"][0]["backend"], "sim");
}

#[test]
fn the_agent_refuses_to_run_outside_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("requests");
    std::fs::write(&f, "{\"id\":1,\"op\":\"exec\",\"argv\":[\"touch\",\"/tmp/pwned\"],\"timeout_s\":1}\n")
        .unwrap();
    for port in ["/dev/zero", "/dev/null", f.to_str().unwrap(), "/nonexistent"] {
        let o = harness_in(dir.path(), &["agent", "--port", port], Duration::from_secs(10));
        assert_usage(&o, "agent", port);
        assert!(o.stderr.contains("only inside the harness's QEMU guest"), "{}", o.stderr);
    }
}

#[test]
fn requests_that_cannot_be_done_are_errors_not_quiet_successes() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = harness_in(dir.path(), &["run", "empty", "--out", "out"], Duration::from_secs(20));
    assert_usage(&o, "empty: a folder with no scenario files", "a folder without scenarios");
    for cmd in ["run", "suite"] {
        let first = if cmd == "run" { "reboot" } else { "empty" };
        let o = harness_in(
            dir.path(),
            &[cmd, first, "--backend", "sim,sim", "--out", "out"],
            Duration::from_secs(20),
        );
        assert_usage(&o, "--backend: sim is given twice", cmd);
    }
    // A run the chosen backend cannot do (a restore needs real time) is refused before any QEMU
    // starts: exit 2, never 0 with nothing run.
    let o = harness_in(
        dir.path(),
        &[
            "run",
            "snapshot-restore",
            "--backend",
            "qemu",
            "--clock",
            "virtual",
            "--agent-bin",
            BIN,
            "--out",
            "out",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("snapshot-restore: not run on qemu: "), "{}", o.stderr);
    assert!(o.stderr.contains("1 requested run(s) could not be done"), "{}", o.stderr);
    assert!(!dir.path().join("out").exists(), "nothing was run, so nothing is written");
}

#[test]
fn expectations_and_runs_of_hours_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let week = GOOD
        .replace("kind = \"hv_utils\"", "kind = \"chrony\"\npoll = -6\ndpoll = -6")
        .replace("observe_s = 60", "observe_s = 600000\ninterval_s = 100");
    for (text, key) in [
        (GOOD.replace("steps = { min = 1 }", "steps = { min = 2, max = 1 }"), ": expect.steps: "),
        (GOOD.replace("steps = { min = 1 }", "read_errors = [\"ESTAEL\"]"), ": expect.read_errors[0]: "),
        (week, ": world.disciplines: "),
    ] {
        std::fs::write(dir.path().join("s.toml"), &text).unwrap();
        let t = Instant::now();
        let o = harness_in(dir.path(), &["run", "s.toml", "--out", "out"], Duration::from_secs(15));
        assert_usage(&o, key, key);
        assert!(t.elapsed() < Duration::from_secs(15));
    }
    assert!(!dir.path().join("out").exists());
}
