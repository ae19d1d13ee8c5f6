//! `phc-harness accel` against the real QEMU and Debian's kernel: the decision is made once by a
//! trial guest, then read from the cache; a KVM whose guest never runs costs seconds, not the
//! trial's 30 s deadline; nothing is left in the temp dir. Each test keeps its cache in a folder
//! of its own (PHC_CACHE, with the setup's kernel linked in), so the machine's cache is not
//! touched. ci/vm-test.sh runs these with --ignored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The setup's kernel cache (ci/setup-vm.sh), or a panic that says how to get it.
fn kernel_dir() -> PathBuf {
    let cache = std::env::var_os("PHC_CACHE").map_or_else(|| "/var/cache/phc-harness".into(), PathBuf::from);
    let k = cache.join("kernel");
    assert!(k.join("vmlinuz").is_file(), "no guest kernel in {}: run ci/setup-vm.sh (as root)", k.display());
    k
}

/// A PHC_CACHE folder of this test's own, holding a link to the setup's kernel.
fn private_cache() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(kernel_dir(), d.path().join("kernel")).unwrap();
    d
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    wall: Duration,
}

fn accel(cache: &Path, path_first: Option<&Path>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phc-harness"));
    cmd.arg("accel").args(args).env("PHC_CACHE", cache);
    if let Some(dir) = path_first {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_owned()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    let t0 = Instant::now();
    let child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        wall: t0.elapsed(),
    };
    println!(
        "accel {args:?}: {:.2} s, exit {}\n{}{}",
        out.wall.as_secs_f64(),
        out.code,
        out.stdout,
        out.stderr
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout == "kvm\n" || out.stdout.starts_with("tcg: "), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "CI reads one line: {}", out.stdout);
    assert_nothing_left(pid);
    out
}

/// No file or folder of the process `pid` in the private temp folder (phc_qemu::tmp names carry
/// the pid).
fn assert_nothing_left(pid: u32) {
    let left: Vec<String> = std::fs::read_dir(phc_qemu::tmp::base().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| phc_qemu::tmp::owner_pid(n) == Some(pid))
        .collect();
    assert!(left.is_empty(), "left in the temp dir by pid {pid}: {left:?}");
}

#[test]
#[ignore = "needs QEMU and the guest kernel: run ci/vm-test.sh"]
fn the_decision_is_made_once_then_read_from_the_cache() {
    let cache = private_cache();
    let first = accel(cache.path(), None, &[]);
    assert!(first.stderr.contains("accel: probed in "), "{}", first.stderr);
    assert!(first.stderr.contains("nothing cached"), "{}", first.stderr);
    assert!(cache.path().join("accel.json").is_file());

    let second = accel(cache.path(), None, &[]);
    assert_eq!(second.stdout, first.stdout, "the cached decision differs");
    assert!(second.stderr.contains("accel: cached in "), "{}", second.stderr);
    assert!(second.wall < Duration::from_secs(1), "a cached decision took {:?}", second.wall);

    let third = accel(cache.path(), None, &["--refresh"]);
    assert_eq!(third.stdout, first.stdout);
    assert!(
        third.stderr.contains("accel: probed in ") && third.stderr.contains("--refresh"),
        "{}",
        third.stderr
    );
    println!(
        "first decision {:.2} s, cached {:.3} s, refreshed {:.2} s",
        first.wall.as_secs_f64(),
        second.wall.as_secs_f64(),
        third.wall.as_secs_f64()
    );
}

#[test]
#[ignore = "needs QEMU and the guest kernel: run ci/vm-test.sh"]
fn a_kvm_whose_guest_never_runs_is_decided_tcg_in_seconds() {
    // QEMU under KVM with its vCPUs held stopped (-S): the guest neither boots nor fails, as on a
    // host whose KVM hangs. `-cpu host` goes, since some hosts' KVM rejects it at once.
    let bin = tempfile::tempdir().unwrap();
    let real = Command::new("sh").args(["-c", "command -v qemu-system-x86_64"]).output().unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
    assert!(!real.is_empty(), "qemu-system-x86_64 not in PATH: run ci/setup-vm.sh");
    let wrapper = bin.path().join("qemu-system-x86_64");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nargs=(); skip=0\nfor a in \"$@\"; do\n  if [[ $skip == 1 ]]; then skip=0; continue; fi\n  \
             if [[ $a == -cpu ]]; then skip=1; continue; fi\n  args+=(\"$a\")\ndone\nexec {real} \"${{args[@]}}\" -S\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cache = private_cache();
    let out = accel(cache.path(), Some(bin.path()), &[]);
    let kvm_usable = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm");
    match kvm_usable {
        Ok(_) => {
            assert_eq!(out.stdout.trim(), "tcg: a KVM guest printed nothing in 5 s: its vCPU does not run");
            assert!(out.wall < Duration::from_secs(15), "the decision took {:?}", out.wall);
        }
        // Without a usable /dev/kvm no guest is tried at all, and the answer says why.
        Err(e) => assert!(
            out.stdout.starts_with("tcg: /dev/kvm") && out.wall < Duration::from_secs(2),
            "{e}: {}",
            out.stdout
        ),
    }
}
