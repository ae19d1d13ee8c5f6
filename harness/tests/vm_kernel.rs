//! The user's own kernel in a real QEMU guest: `--kernel-deb` with Debian's package (the one
//! ci/setup-vm.sh caches, passed explicitly), `--kernel`/`--modules` honoured (a file that is not
//! a kernel does not boot), and the set-up a report records (kernel release, QEMU version, CPU
//! model, accel, command line), read in the guest for latency. They need QEMU, the cached
//! kernel and the static agent (ci/vm-test.sh sets them up and runs them with --ignored); a
//! missing prerequisite fails loudly instead of skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cache() -> PathBuf {
    std::env::var_os("PHC_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/phc-harness"), PathBuf::from)
        .join("kernel")
}

fn release() -> String {
    std::fs::read_to_string(cache().join("VERSION"))
        .unwrap_or_else(|e| panic!("{}: {e} (run ci/setup-vm.sh)", cache().display()))
        .trim()
        .to_owned()
}

fn harness(args: &[&str]) -> Output {
    phc_harness::run::backend::qemu::find_agent_bin(None)
        .unwrap_or_else(|e| panic!("{e} (set PHC_AGENT_BIN; ci/vm-test.sh does)"));
    Command::new(env!("CARGO_BIN_EXE_phc-harness"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Debian's package of the cached kernel: PHC_KERNEL_DEB, apt's archive, or `apt-get download`
/// of the package ci/setup-vm.sh recorded (into `dir`).
fn kernel_deb(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("PHC_KERNEL_DEB") {
        return PathBuf::from(p);
    }
    let pkg = std::fs::read_to_string(cache().join("PACKAGE"))
        .expect("PACKAGE in the kernel cache (ci/setup-vm.sh)");
    let name = pkg.split_whitespace().next().unwrap().to_owned();
    let archived = std::fs::read_dir("/var/cache/apt/archives")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}_"))));
    if let Some(p) = archived {
        return p;
    }
    // apt-get download drops to user _apt, which must be able to write here.
    let _ = Command::new("chown").arg("_apt").arg(dir).status();
    let st = Command::new("apt-get").args(["download", "-qq", &name]).current_dir(dir).status().unwrap();
    assert!(st.success(), "apt-get download {name} failed");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap()
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn a_kernel_deb_boots_and_the_report_names_the_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let deb = kernel_deb(dir.path());
    let out = dir.path().join("suite");
    let o = harness(&[
        "suite",
        "scenarios",
        "--backend",
        "qemu",
        "--filter",
        "azure-pause-30s",
        // A kernel unpacked for the run has no VMBus shim built for it: the CUSE model of hv_utils.
        "--phc",
        "hyperv-mock",
        "--kernel-deb",
        deb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let env = &s["entries"][0]["environment"];
    assert_eq!(env["kernel_release"], release(), "{env}");
    assert!(env["qemu_version"].as_str().unwrap().starts_with("QEMU emulator version"), "{env}");
    assert!(env["accel"].is_string() && env["cpu_model"].is_string() && env["clock"] == "virtual", "{env}");
    assert!(env["guest_cmdline"].as_str().unwrap().contains("console=ttyS0"), "{env}");
    let left: Vec<_> = std::fs::read_dir(phc_qemu::tmp::base().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("phc-kernel-"))
        .map(|e| e.path())
        .collect();
    assert!(
        left.iter().all(|p| !p.join("kernel/VERSION").exists()),
        "unpacked kernels left behind: {left:?}"
    );
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn kernel_and_modules_are_honoured_and_latency_names_the_guest_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let mods = cache().join("lib/modules").join(release());
    // No bzImage at all: refused before anything boots.
    let zeros = dir.path().join("zeros");
    std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
    let o = harness(&[
        "run",
        "azure-pause-30s",
        "--backend",
        "qemu",
        "--kernel",
        zeros.to_str().unwrap(),
        "--modules",
        mods.to_str().unwrap(),
        "--out",
        dir.path().join("zeros-out").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an x86 bzImage"), "{}", text(&o));
    // A bzImage header and nothing behind it: the guest cannot boot, so the flag really chose
    // what booted.
    let bogus = dir.path().join("vmlinuz");
    let mut head = std::fs::read(cache().join("vmlinuz")).unwrap();
    head.truncate(0x400);
    head.resize(0x400 + 4096, 0);
    std::fs::write(&bogus, head).unwrap();
    let out = dir.path().join("bogus");
    let o = harness(&[
        "suite",
        "scenarios",
        "--backend",
        "qemu",
        "--filter",
        "azure-pause-30s",
        "--kernel",
        bogus.to_str().unwrap(),
        "--modules",
        mods.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--boot-timeout-s",
        "30",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["entries"][0]["outcome"], "aborted", "{s}");
    // The cached kernel passed explicitly: latency in the guest names what it measured on.
    let vmlinuz = cache().join("vmlinuz");
    let o = harness(&[
        "latency",
        "/dev/ptp0",
        "--backend",
        "qemu",
        "--samples",
        "2000",
        "--format",
        "json",
        "--kernel",
        vmlinuz.to_str().unwrap(),
        "--modules",
        mods.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = &v["backend"];
    assert_eq!(b["kernel_release"], release(), "{b}");
    assert!(b["guest_cmdline"].as_str().unwrap().contains("console=ttyS0"), "{b}");
    assert!(!b["cpu_model"].as_str().unwrap().is_empty(), "{b}");
    // Its baseline is ratios; another CPU model in the baseline is refused unless allowed.
    let runs = dir.path().join("lat");
    std::fs::create_dir_all(runs.join("igb")).unwrap();
    std::fs::write(runs.join("igb/latency.json"), &o.stdout).unwrap();
    let base = dir.path().join("base");
    let p = harness(&["baseline", runs.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(p.status.code(), Some(0), "{}", text(&p));
    let c = harness(&["compare", runs.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c));
    let f = base.join("qemu/igb.json");
    let mut bl: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    assert!(bl["metrics"]["ratio_p50.basic"]["value"].as_f64().unwrap() > 0.0, "{bl}");
    bl["environment"]["cpu_model"] = serde_json::json!("another CPU");
    std::fs::write(&f, bl.to_string()).unwrap();
    let c = harness(&["compare", runs.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(c.status.code(), Some(2), "{}", text(&c));
    assert!(String::from_utf8_lossy(&c.stderr).contains("--allow-different-host"), "{}", text(&c));
    let c = harness(&[
        "compare",
        runs.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--allow-different-host",
    ]);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c));
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn a_guest_whose_agent_dies_says_why() {
    // An agent that cannot run in the guest (a dynamic binary in a static initramfs): init says
    // so on the console and powers off before the agent ever answers.
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    std::fs::copy("/bin/false", &agent).unwrap();
    let out = dir.path().join("out");
    let o = harness(&[
        "run",
        "reboot",
        "--backend",
        "qemu",
        "--agent-bin",
        agent.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--boot-timeout-s",
        "60",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("aborted: QEMU exited") && err.contains("phc-init: agent exited with"),
        "{}",
        text(&o)
    );
    assert!(!err.contains("x real time"), "an aborted run has no speed: {}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reboot-qemu-seed1/report.json")).unwrap())
            .unwrap();
    let tail = r["backend_info"]["console_tail"].as_str().unwrap_or_default();
    assert!(tail.contains("phc-init: agent exited with"), "{r}");
    assert_eq!(r["backend_info"]["kernel_release"], release(), "{r}");
}

/// Debian bookworm's own default kernel (6.1, from the host's bookworm suite): its virtio
/// transport, virtio console and fuse are modules there (built in on 6.12 and 7.2), so the image
/// loads them from `modules.dep` before the rest; and its PTP_SYS_OFFSET_EXTENDED takes only
/// CLOCK_REALTIME, which virtual time carries over to CLOCK_MONOTONIC_RAW. `probe` of its igb
/// conforms, and the Azure pause runs on it in virtual time (with the CUSE model of hv_utils:
/// the VMBus shim is built for the cached lines only).
/// Debian 12's own 6.1 kernel of `flavour` (`amd64`, `cloud-amd64`; the newest ABI apt knows)
/// and its own headers package (linux-headers-6.1.0-N-FLAVOUR), downloaded once into
/// PHC_CACHE/kernel-debs (ci/kernel-matrix.sh uses the same folder): the VMBus shim is built
/// against the headers, so that this kernel's hv_utils.ko is what runs.
fn bookworm_debs(flavour: &str) -> (PathBuf, PathBuf) {
    let dir = cache().parent().unwrap().join("kernel-debs");
    let dir = dir.as_path();
    std::fs::create_dir_all(dir).unwrap();
    let _ = Command::new("chown").arg("_apt").arg(dir).status();
    let names = Command::new("apt-cache").args(["pkgnames", "linux-image-6.1.0-"]).output().unwrap();
    let suffix = format!("-{flavour}-unsigned");
    let mut pkgs: Vec<String> = String::from_utf8_lossy(&names.stdout)
        .lines()
        .filter(|n| {
            n.strip_prefix("linux-image-6.1.0-")
                .and_then(|r| r.strip_suffix(suffix.as_str()))
                .is_some_and(|abi| abi.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect();
    pkgs.sort_by_key(|n| {
        n.trim_start_matches("linux-image-6.1.0-").split('-').next().and_then(|a| a.parse::<u32>().ok())
    });
    let pkg = pkgs.pop().unwrap_or_else(|| {
        panic!("a linux-image-6.1.0-N{suffix} in the host's apt lists (a Debian 12 host)")
    });
    let headers_pkg = pkg.replace("linux-image-", "linux-headers-").replace("-unsigned", "");
    let found = |prefix: &str| {
        std::fs::read_dir(dir).unwrap().filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{prefix}_")))
        })
    };
    if found(&pkg).is_none() || found(&headers_pkg).is_none() {
        let st = Command::new("apt-get")
            .args(["download", "-qq", &pkg, &headers_pkg])
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success(), "apt-get download {pkg} {headers_pkg} failed");
    }
    let get = |p: &str| found(p).unwrap_or_else(|| panic!("no {p}_*.deb downloaded into {}", dir.display()));
    (get(&pkg), get(&headers_pkg))
}

#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn bookworms_own_6_1_kernel_boots_probes_and_runs_its_own_hv_utils() {
    let dir = tempfile::tempdir().unwrap();
    let (deb, headers) = bookworm_debs("amd64");
    let (deb, headers) = (deb.to_str().unwrap(), headers.to_str().unwrap());
    let o = harness(&["probe", "/dev/ptp0", "--backend", "qemu", "--kernel-deb", deb, "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deviations"], 0, "{v}");
    let rel = v["backend"]["kernel_release"].as_str().unwrap_or_default().to_owned();
    assert!(rel.starts_with("6.1.0-"), "{rel}");
    // Without its headers the kernel's own hv_utils is refused, naming what to give: never the
    // mock in its place.
    let out = dir.path().join("run");
    let o = harness(&[
        "run",
        "azure-pause-30s",
        "--backend",
        "qemu",
        "--phc",
        "hyperv",
        "--kernel-deb",
        deb,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!("--kernel-headers linux-headers-{rel}_")), "{}", text(&o));
    // With them: probe the hyperv clock of 6.1's own hv_utils, and run a pause against it.
    let o = harness(&[
        "probe",
        "/dev/ptp_hyperv",
        "--backend",
        "qemu",
        "--kernel-deb",
        deb,
        "--kernel-headers",
        headers,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deviations"], 0, "{v}");
    assert_eq!(v["backend"]["kernel_release"], rel.as_str(), "{v}");
    let o = harness(&[
        "run",
        "azure-pause-30s",
        "--backend",
        "qemu",
        "--phc",
        "hyperv",
        "--kernel-deb",
        deb,
        "--kernel-headers",
        headers,
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rep = &r[0]["reports"][0];
    assert_eq!(rep["verdict"], "pass", "{}", text(&o));
    let info = &rep["backend_info"];
    assert_eq!(info["kernel_release"], rel.as_str());
    let phc = info["guest_phc"].as_str().unwrap_or_default();
    assert!(phc.starts_with(&format!("hv_utils.ko of Linux {rel}")), "{info}");
    // The shim for this kernel as the probe above built it (or found it built) from the same
    // inputs: kept, not built again for a kernel unpacked afresh.
    let t = text(&o);
    assert!(
        t.contains(&format!("vmbus_shim.ko for {rel} (module) as built before from the same inputs")),
        "{t}"
    );
    // The same kernel as --kernel and --modules (unpacked by hand, no build configuration
    // beside it: the headers' .config serves), and nothing written into the user's folder.
    let x = dir.path().join("x");
    let st = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x).status().unwrap();
    assert!(st.success());
    let mods = x.join("lib/modules").join(&rel);
    let files = |d: &Path| walk(d);
    let before = files(&mods);
    let vmlinuz = x.join("boot").join(format!("vmlinuz-{rel}"));
    let o = harness(&[
        "probe",
        "/dev/ptp_hyperv",
        "--backend",
        "qemu",
        "--kernel",
        vmlinuz.to_str().unwrap(),
        "--modules",
        mods.to_str().unwrap(),
        "--kernel-headers",
        headers,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deviations"], 0, "{v}");
    assert_eq!(v["backend"]["kernel_release"], rel.as_str(), "{v}");
    assert_eq!(files(&mods), before, "the shim build wrote into the --modules folder");
}

/// Every path under `d`, sorted (links not followed).
fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_owned()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// Debian's cloud flavour (what its Azure images boot) has hv_utils but no igb: virtual time
/// keeps host time on the agent's clock, the kernel's own hv_utils recovers the Azure pause, the
/// hyperv clock probes clean, and what needs igb is refused with the reason before any boot.
#[test]
#[ignore = "boots QEMU guests; ci/vm-test.sh runs it"]
fn bookworms_cloud_kernel_runs_its_own_hv_utils_on_the_agents_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (deb, headers) = bookworm_debs("cloud-amd64");
    let (deb, headers) = (deb.to_str().unwrap(), headers.to_str().unwrap());
    let kernel = ["--backend", "qemu", "--kernel-deb", deb, "--kernel-headers", headers];
    let out = dir.path().join("run");
    let mut args =
        vec!["run", "azure-pause-30s", "--phc", "hyperv", "--out", out.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(&kernel);
    let o = harness(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rep = &r[0]["reports"][0];
    assert_eq!(rep["verdict"], "pass", "{}", text(&o));
    let info = &rep["backend_info"];
    let rel = info["kernel_release"].as_str().unwrap_or_default();
    assert!(rel.starts_with("6.1.0-") && rel.ends_with("-cloud-amd64"), "{info}");
    assert_eq!(info["host_clock"], "agent:clock", "{info}");
    assert!(
        info["guest_phc"].as_str().unwrap_or_default().starts_with(&format!("hv_utils.ko of Linux {rel}")),
        "{info}"
    );
    // The clock the daemon reads, probed: the driver's row, no deviation.
    let mut args = vec!["probe", "/dev/ptp_hyperv", "--format", "json"];
    args.extend_from_slice(&kernel);
    let o = harness(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deviations"], 0, "{v}");
    // igb's own scenario: refused, saying why.
    let mut args = vec!["run", "phc-jump-10s", "--out", out.to_str().unwrap()];
    args.extend_from_slice(&kernel);
    let o = harness(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("reads igb's PHC") && text(&o).contains("cloud flavour"), "{}", text(&o));
}
