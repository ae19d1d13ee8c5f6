//! Tests of the acceleration cache and of the trial's quick failures (no QEMU needed).

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn key() -> Key {
    let file = |p: &str| FileId { path: p.into(), size: 1, mtime_ns: 2 };
    Key {
        host_kernel: "6.12.0 #1 SMP".into(),
        qemu: file("/usr/bin/qemu-system-x86_64"),
        qemu_version: "QEMU emulator version 10.0.2".into(),
        kvm_rdev: Some(0xae00),
        kvm_open_error: None,
        guest_kernel: file("/var/cache/phc-harness/kernel/vmlinuz"),
    }
}

/// A probe that counts its calls and answers `accel`.
fn probe<'a>(calls: &'a Cell<u32>, accel: Accel) -> impl FnOnce() -> Result<(Accel, String), Error> + 'a {
    move || {
        calls.set(calls.get() + 1);
        Ok((accel, format!("trial {}", calls.get())))
    }
}

#[test]
fn a_decision_is_probed_once_then_read_from_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::at(vec![t.path().join("accel.json")]);
    let calls = Cell::new(0);
    let d = decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    assert_eq!((d.accel, d.why.as_str(), calls.get()), (Accel::Tcg, "trial 1", 1));
    assert!(
        matches!(&d.how, How::Probed { because, saved: Ok(f), .. } if because == "nothing cached" && *f == t.path().join("accel.json")),
        "{d:?}"
    );
    assert!(d.reason().starts_with("probed in "), "{}", d.reason());

    let d = decide(&cache, &key(), false, probe(&calls, Accel::Kvm)).unwrap();
    assert_eq!(calls.get(), 1, "the second decision probed again");
    assert_eq!((d.accel, d.why.as_str()), (Accel::Tcg, "trial 1"));
    assert!(
        matches!(&d.how, How::Cached { file, age } if *file == t.path().join("accel.json") && age.as_secs() < 60)
    );
    let r = d.reason();
    assert!(r.starts_with(&format!("cached in {}", t.path().join("accel.json").display())), "{r}");
    assert!(r.ends_with(": trial 1"), "{r}");
}

#[test]
fn any_change_of_the_key_invalidates_the_cached_decision() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::at(vec![t.path().join("accel.json")]);
    let calls = Cell::new(0);
    decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    type Change = fn(&mut Key);
    let changes: [(&str, Change); 6] = [
        ("host kernel", |k| k.host_kernel = "6.12.1 #2 SMP".into()),
        ("QEMU", |k| k.qemu_version = "QEMU emulator version 10.1.0".into()),
        ("QEMU", |k| k.qemu.mtime_ns += 1),
        ("/dev/kvm", |k| k.kvm_rdev = None),
        ("/dev/kvm", |k| k.kvm_open_error = Some("Permission denied (os error 13)".into())),
        ("guest kernel", |k| k.guest_kernel.size += 1),
    ];
    for (i, (part, change)) in changes.into_iter().enumerate() {
        let mut k = key();
        change(&mut k);
        assert_eq!(k.differences(&key()), vec![part]);
        // Back and forth: each change of key probes again, and the cache follows the machine.
        let d = decide(&cache, &k, false, probe(&calls, Accel::Tcg)).unwrap();
        assert_eq!(calls.get(), 2 + 2 * u32::try_from(i).unwrap(), "{part} did not invalidate");
        assert!(
            matches!(&d.how, How::Probed { because, .. } if because.contains(&format!("decided for another {part}"))),
            "{d:?}"
        );
        decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    }
}

#[test]
fn a_corrupt_cache_file_is_ignored_and_replaced() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("accel.json");
    std::fs::write(&f, "{\"key\": {\"host_kernel\": tru").unwrap();
    let cache = Cache::at(vec![f.clone()]);
    let calls = Cell::new(0);
    let d = decide(&cache, &key(), false, probe(&calls, Accel::Kvm)).unwrap();
    assert_eq!((d.accel, calls.get()), (Accel::Kvm, 1));
    assert!(matches!(&d.how, How::Probed { because, .. } if because.contains("is corrupt")), "{d:?}");
    let d = decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    assert_eq!((d.accel, calls.get()), (Accel::Kvm, 1), "the re-probed decision was not saved");
    assert!(matches!(d.how, How::Cached { .. }));
}

#[test]
fn refresh_probes_again_and_replaces_the_cached_decision() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::at(vec![t.path().join("accel.json")]);
    let calls = Cell::new(0);
    decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    let d = decide(&cache, &key(), true, probe(&calls, Accel::Kvm)).unwrap();
    assert_eq!((d.accel, calls.get()), (Accel::Kvm, 2));
    assert!(matches!(&d.how, How::Probed { because, .. } if because == "--refresh"), "{d:?}");
    let d = decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    assert_eq!((d.accel, calls.get()), (Accel::Kvm, 2));
}

#[test]
fn an_unwritable_first_location_falls_back_to_the_next() {
    let t = tempfile::tempdir().unwrap();
    // A folder that cannot be made (its parent is a file): unwritable even for root.
    std::fs::write(t.path().join("file"), b"").unwrap();
    let blocked = t.path().join("file/sub/accel.json");
    let user = t.path().join("user/phc-harness/accel.json");
    let cache = Cache::at(vec![blocked.clone(), user.clone()]);
    let calls = Cell::new(0);
    let d = decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    assert!(matches!(&d.how, How::Probed { saved: Ok(f), .. } if *f == user), "{d:?}");
    let d = decide(&cache, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    assert!(matches!(&d.how, How::Cached { file, .. } if *file == user), "{d:?}");
    assert_eq!(calls.get(), 1);

    let nowhere = Cache::at(vec![blocked]);
    let d = decide(&nowhere, &key(), false, probe(&calls, Accel::Tcg)).unwrap();
    assert!(matches!(&d.how, How::Probed { saved: Err(_), .. }), "{d:?}");
    assert!(d.reason().contains("not saved: "), "{}", d.reason());
}

#[test]
fn a_failed_probe_decides_nothing_and_caches_nothing() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("accel.json");
    let cache = Cache::at(vec![f.clone()]);
    let e = decide(&cache, &key(), false, || {
        Err(Error::Interrupted { signal: nix::sys::signal::Signal::SIGINT })
    })
    .unwrap_err();
    assert!(matches!(e, Error::Interrupted { .. }), "{e:?}");
    assert!(!f.exists(), "an interrupted probe was cached");
}

#[test]
fn asked_for_says_so() {
    let d = Decision::asked(Accel::Kvm);
    assert_eq!(d.reason(), "asked for with --accel");
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn the_key_names_this_machine_and_fails_clearly_without_qemu_or_kernel() {
    let t = tempfile::tempdir().unwrap();
    let qemu = script(t.path(), "qemu", "echo 'QEMU emulator version 99.1'; echo 'Copyright'");
    let kernel = t.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let k = Key::current(&qemu, &kernel).unwrap();
    assert_eq!(k.qemu_version, "QEMU emulator version 99.1");
    assert_eq!(k.guest_kernel.size, 6);
    assert!(k.host_kernel.len() > 2, "{k:?}");
    assert_eq!(k, Key::current(&qemu, &kernel).unwrap(), "the key is not stable");

    let e = Key::current(&t.path().join("no-qemu"), &kernel).unwrap_err();
    assert!(matches!(e, Error::QemuMissing { .. }), "{e:?}");
    let e = Key::current(&qemu, &t.path().join("no-kernel")).unwrap_err();
    assert!(matches!(e, Error::KernelMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("run ci/setup-vm.sh"), "{e}");
}

#[test]
fn a_trial_whose_qemu_fails_at_once_decides_tcg_at_once_and_leaves_no_files() {
    let t = tempfile::tempdir().unwrap();
    let qemu = script(t.path(), "qemu", "echo 'qemu: failed to set MSR 0x10a' >&2; exit 1");
    let kernel = t.path().join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let trial = Trial {
        qemu,
        kernel,
        busybox: "/bin/true".into(),
        deadline: Duration::from_secs(30),
        quiet_limit: Duration::from_secs(5),
    };
    let t0 = Instant::now();
    let (accel, why) = trial.run(&key()).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert_eq!(accel, Accel::Tcg);
    assert!(why.starts_with("a KVM guest did not start: QEMU exited (exit status: 1)"), "{why}");
    assert!(why.contains("failed to set MSR 0x10a"), "{why}");
    let left: Vec<String> = std::fs::read_dir(crate::tmp::base().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("-{}-accel-trial-", std::process::id())))
        .collect();
    assert!(left.is_empty(), "the trial left {left:?}");
}

#[test]
fn without_a_usable_dev_kvm_the_trial_boots_nothing() {
    let trial = Trial {
        qemu: "/nonexistent/qemu".into(),
        kernel: "/nonexistent/vmlinuz".into(),
        busybox: "/nonexistent/busybox".into(),
        deadline: Duration::from_secs(30),
        quiet_limit: Duration::from_secs(5),
    };
    let mut k = key();
    k.kvm_rdev = None;
    assert_eq!(trial.run(&k).unwrap(), (Accel::Tcg, "/dev/kvm does not exist".into()));
    let mut k = key();
    k.kvm_open_error = Some("Permission denied (os error 13)".into());
    assert_eq!(trial.run(&k).unwrap(), (Accel::Tcg, "/dev/kvm: Permission denied (os error 13)".into()));
}
