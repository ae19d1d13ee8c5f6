//! Hostile inputs to the real binary beyond scenario files (cli_hostile.rs): vmclock paths that
//! are no vmclock device, user kernels that are no kernel, numeric flags that are no duration.
//! Every case ends in bounded time and memory with exit 2 and one line on stderr, never a panic,
//! a signal or a write outside the folders given.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{assert_usage, harness_with, tree, Out};

/// Longest any hostile case may run.
const LIMIT: Duration = Duration::from_secs(15);

/// Runs the binary (1 GiB, [`LIMIT`]) in `cwd` with `TMPDIR` set to `tmp`.
fn harness(cwd: &Path, tmp: &Path, args: &[&str]) -> Out {
    harness_with(cwd, args, LIMIT, Stdio::null(), &[("TMPDIR", tmp)])
}

/// A vmclock ABI v1 page as QEMU writes it.
fn page() -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..4].copy_from_slice(b"VCLK");
    b[4..8].copy_from_slice(&4096u32.to_le_bytes());
    b[8..10].copy_from_slice(&1u16.to_le_bytes());
    b[10] = 0xff;
    b
}

#[test]
fn vmclock_paths_that_are_no_vmclock_device_are_refused_before_they_are_opened() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(d.join("vmclock0"), page()).unwrap();
    nix::unistd::mkfifo(&d.join("vmclock1"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("vmclock2")).unwrap();
    std::fs::create_dir(d.join("vmclock3")).unwrap();
    // Oversize and sparse: a mapping of it would read past any page a reader expects.
    std::fs::File::create(d.join("vmclock4")).unwrap().set_len(3 << 30).unwrap();
    std::os::unix::fs::symlink(d.join("vmclock0"), d.join("vmclock5")).unwrap();
    let before = tree(d);
    for (name, want) in [
        ("vmclock0", "not a vmclock device (a regular file)"),
        ("vmclock1", "not a vmclock device (a FIFO)"),
        // A symlink to /dev/zero: named by its target, so refused as a PTP device would be.
        ("vmclock2", "(character device 1:5, class mem)"),
        ("vmclock3", "not a vmclock device (a directory)"),
        ("vmclock4", "not a vmclock device (a regular file)"),
        ("vmclock5", "not a vmclock device (a regular file)"),
    ] {
        for cmd in ["probe", "latency"] {
            let o = harness(d, &tmp, &[cmd, name, "--format", "json"]);
            let want = if cmd == "probe" || name == "vmclock2" { want } else { "not a PTP device" };
            assert_usage(&o, want, &format!("{cmd} {name}"));
        }
    }
    assert_eq!(tree(d), before, "a refusal wrote or removed something");
}

/// A regular file that shrinks while probe runs: the reader once mapped it and died of SIGBUS.
#[test]
fn a_vmclock_file_shrinking_under_probe_never_kills_it() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().to_owned();
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let p = d.join("vmclock0");
    std::fs::write(&p, page()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.set_len(0).unwrap();
                f.set_len(4096).unwrap();
            }
        })
    };
    for _ in 0..20 {
        let o = harness(&d, &tmp, &["probe", "vmclock0"]);
        assert_usage(&o, "not a vmclock device (a regular file)", "shrinking vmclock0");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
}

#[test]
fn duration_flags_refuse_nan_infinities_negatives_and_absurd_values() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let bad = ["nan", "NaN", "inf", "-inf", "infinity", "1e300", "-1", "-0.5", "0x10", "", "3601"];
    let cases: &[(&[&str], &str, &[&str])] = &[
        (&["run", "azure-pause-30s"], "--boot-timeout-s", &bad),
        (&["suite"], "--boot-timeout-s", &bad),
        (&["run", "azure-pause-30s"], "--warmup-s", &["nan", "inf", "-1", "1e300", "604801"]),
        (&["run", "azure-pause-30s"], "--observe-s", &["nan", "-inf", "0", "-1", "1e300", "604801"]),
    ];
    for (cmd, flag, values) in cases {
        for v in *values {
            let arg = format!("{flag}={v}");
            let mut args = cmd.to_vec();
            args.push(&arg);
            let o = harness(d, &tmp, &args);
            assert_usage(&o, "error:", &format!("{args:?}"));
            assert!(o.stderr.contains(flag) || o.stderr.contains("unexpected"), "{args:?}: {}", o.stderr);
        }
    }
    // In range: parsed (the run then fails or not for other reasons, never on the flag).
    let o = harness(
        d,
        &tmp,
        &["run", "--boot-timeout-s=0.5", "--warmup-s=0", "--observe-s=1", "no-such-scenario"],
    );
    assert!(!o.stderr.contains("--boot-timeout-s") && !o.stderr.contains("panicked"), "{}", o.stderr);
    assert_eq!(tree(&tmp), Vec::<String>::new(), "wrote into the temp dir");
}

/// The smallest file the bzImage check accepts.
fn bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 0x400];
    b[..2].copy_from_slice(b"MZ");
    b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b
}

#[test]
fn user_kernels_that_are_no_kernel_are_refused_in_bounded_time_and_memory() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mods = d.join("lib/modules/6.99.0-test");
    std::fs::create_dir_all(mods.join("kernel")).unwrap();
    std::fs::write(mods.join("modules.dep"), "").unwrap();
    std::fs::write(d.join("mz"), b"MZ\x1f\x8b\x08").unwrap();
    nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("zero")).unwrap();
    std::fs::File::create(d.join("huge")).unwrap().set_len(5 << 29).unwrap();
    let opt = d.join("lib/modules/-x");
    std::fs::create_dir_all(opt.join("kernel")).unwrap();
    std::fs::write(d.join("bzImage"), bzimage()).unwrap();
    let before = tree(d);
    let m = mods.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--kernel", "mz", "--modules", m], "not an x86 bzImage"),
        (&["--kernel", "fifo", "--modules", m], "a FIFO"),
        (&["--kernel", "zero", "--modules", m], "character device"),
        (&["--kernel", "huge", "--modules", m], "over the limit"),
        (&["--kernel", "bzImage", "--modules", opt.to_str().unwrap()], "starts with"),
        (&["--kernel-deb", "fifo"], "a FIFO"),
        (&["--kernel-deb", "zero"], "character device"),
        (&["--kernel-deb", "huge"], "over the limit"),
        (&["--kernel-deb", "mz"], "dpkg-deb"),
        (&["--kernel-headers", "mz"], "needs the kernel it belongs to"),
        (&["--kernel", "bzImage", "--modules", m, "--kernel-headers", "fifo"], "a FIFO"),
        (&["--kernel", "bzImage", "--modules", m, "--kernel-headers", "mz"], "not a Debian package"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["run", "azure-pause-30s", "--backend", "qemu"];
        args.extend_from_slice(flags);
        let o = harness(d, &tmp, &args);
        assert_usage(&o, want, &format!("{flags:?}"));
    }
    let outside = |t: Vec<String>| t.into_iter().filter(|p| !p.starts_with("tmp/")).collect::<Vec<_>>();
    assert_eq!(outside(tree(d)), outside(before), "a refusal wrote or removed something outside TMPDIR");
    // Nothing left in the temp dir but (at most) the empty private folder.
    for p in tree(&tmp) {
        assert!(p.starts_with("phc-harness-") && !p.contains('/'), "left in TMPDIR: {p}");
    }
}
