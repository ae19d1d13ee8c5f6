//! The regression workflow (`suite`, `merge`, `baseline`, `compare`, `plot`) against files that
//! anyone with upload rights to CI artifacts controls: every hostile input ends within 15 s with
//! exit 2 and one line on stderr, writes nothing outside the folders it was given and deletes
//! nothing it did not create. Also: every `run --out` folder the tool writes reads back.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

mod common;
use common::{assert_usage, harness_in, harness_stdin, tree, Out};

const LIMIT: Duration = Duration::from_secs(15);

const SCENARIO: &str = common::GOOD;

fn run(cwd: &Path, args: &[&str]) -> Out {
    harness_in(cwd, args, Duration::from_secs(120))
}

fn ok(o: &Out, what: &str) {
    assert!(matches!(o.code, Some(0)), "{what}: exit {:?}\n{}\n{}", o.code, o.stdout, o.stderr);
}

/// A folder of scenarios `a` and `b` under `top/sc`.
fn scenarios(top: &Path) -> PathBuf {
    let sc = top.join("sc");
    std::fs::create_dir_all(&sc).unwrap();
    for n in ["a", "b"] {
        std::fs::write(sc.join(format!("{n}.toml")), format!("name = \"{n}\"\n{SCENARIO}")).unwrap();
    }
    sc
}

/// Shards 1/2 and 2/2 of the suite of `a` and `b`, under `top/shard1` and `top/shard2`.
fn shards(top: &Path) -> [PathBuf; 2] {
    let sc = scenarios(top);
    [1, 2].map(|i| {
        let d = top.join(format!("shard{i}"));
        let o = run(
            top,
            &["suite", sc.to_str().unwrap(), "--out", d.to_str().unwrap(), "--shard", &format!("{i}/2")],
        );
        ok(&o, "shard");
        d
    })
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// A folder outside every folder a command is given, with a file in it, to check untouched.
fn sentinel(top: &Path) -> PathBuf {
    let v = top.join("victim");
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("keep.json"), "precious").unwrap();
    std::fs::write(v.join("report.json"), "precious").unwrap();
    v
}

fn assert_sentinel(v: &Path, what: &str) {
    assert_eq!(tree(v), ["keep.json", "report.json"], "{what}: the sentinel folder changed");
    for f in ["keep.json", "report.json"] {
        assert_eq!(std::fs::read_to_string(v.join(f)).unwrap(), "precious", "{what}: {f} changed");
    }
}

/// A sparse regular file of `len` bytes (costs no disk).
fn sparse(p: &Path, len: u64) {
    std::fs::File::create(p).unwrap().set_len(len).unwrap();
}

fn fifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Replaces the file `p` with each endless or oversize thing in turn and calls `check` after
/// each (a FIFO, a symlink to /dev/zero, a sparse file one byte over `cap`).
fn each_endless(p: &Path, cap: u64, mut check: impl FnMut(&str)) {
    let _ = std::fs::remove_file(p);
    fifo(p);
    check("a FIFO");
    std::fs::remove_file(p).unwrap();
    symlink("/dev/zero", p).unwrap();
    check("a symlink to /dev/zero");
    std::fs::remove_file(p).unwrap();
    sparse(p, cap + 1);
    check("oversize");
    std::fs::remove_file(p).unwrap();
}

#[test]
fn every_builtin_scenario_written_by_run_out_reads_back() {
    let top = tempfile::tempdir().unwrap();
    let out = top.path().join("runs");
    let mut args = vec!["run"];
    args.extend(phc_harness::run::runner::BUILTIN.iter().map(|(n, _)| *n));
    args.extend(["--out", out.to_str().unwrap()]);
    let o = harness_in(top.path(), &args, Duration::from_secs(600));
    assert!(matches!(o.code, Some(0 | 1)), "run: {:?} {}", o.code, o.stderr);
    let mut names = Vec::new();
    for d in std::fs::read_dir(&out).unwrap() {
        let d = d.unwrap().path();
        // The same reader compare and baseline use.
        let r = phc_harness::judge::report::Report::load(&d.join("report.json"))
            .unwrap_or_else(|e| panic!("{}: does not read back: {e}", d.display()));
        names.push(r.scenario);
    }
    names.sort();
    let mut want: Vec<String> =
        phc_harness::run::runner::BUILTIN.iter().map(|(n, _)| (*n).to_owned()).collect();
    want.sort();
    assert_eq!(names, want, "one report folder per built-in scenario");
    let runs = phc_harness::regress::compare::load_runs(&out).unwrap();
    assert_eq!(runs.len(), want.len());
    // And through the binary: promoted, then compared with itself, nothing moves.
    let base = top.path().join("base");
    let o = run(top.path(), &["baseline", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    ok(&o, "baseline of a run --out folder");
    let o = run(top.path(), &["compare", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    ok(&o, "compare of a run --out folder");
    assert!(
        o.stdout.contains(&format!("{} runs", want.len())) && o.stdout.contains("0 regressions"),
        "{}",
        o.stdout
    );
    // The same folder as an older phc-harness wrote it: one `value` per event (ns for a step,
    // ppb for a frequency) instead of `step_ns` and `freq_ppb`. It reads back, events included,
    // and compares against the baseline promoted from the new one without a regression.
    let mut rewritten = 0;
    for d in std::fs::read_dir(&out).unwrap() {
        let file = d.unwrap().path().join("report.json");
        let before = phc_harness::judge::report::Report::load(&file).unwrap();
        let mut v = read_json(&file);
        for e in v["events"].as_array_mut().unwrap() {
            let e = e.as_object_mut().unwrap();
            if let Some(x) = e.remove("step_ns").or_else(|| e.remove("freq_ppb")) {
                e.insert("value".into(), Value::from(x.as_f64().unwrap()));
                rewritten += 1;
            }
        }
        write_json(&file, &v);
        let after = phc_harness::judge::report::Report::load(&file)
            .unwrap_or_else(|e| panic!("{}: an older report does not read back: {e}", file.display()));
        assert_eq!(after.events, before.events, "{}", file.display());
    }
    assert!(rewritten > 0, "no step or frequency event in any built-in scenario");
    let o = run(top.path(), &["compare", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    ok(&o, "compare of an older run --out folder");
    assert!(o.stdout.contains("0 regressions"), "{}", o.stdout);
}

#[test]
fn merge_never_follows_a_path_from_a_summary_out_of_its_folders() {
    let top = tempfile::tempdir().unwrap();
    let t = top.path();
    let [s1, s2] = shards(t);
    let victim = sentinel(t);
    let sum = s1.join("summary.json");
    let good = read_json(&sum);
    let real = good["entries"][0]["dir"].as_str().unwrap().to_owned();
    let out = t.join("out");
    let merge = |what: &str, want: &str| {
        let o = harness_in(
            t,
            &["merge", "--out", out.to_str().unwrap(), s1.to_str().unwrap(), s2.to_str().unwrap()],
            LIMIT,
        );
        assert_usage(&o, want, what);
        assert!(!out.exists(), "{what}: --out written");
        assert_sentinel(&victim, what);
    };
    let abs = victim.display().to_string();
    for bad in ["../victim", abs.as_str(), "", ".", "..", "a/../../victim", ".hidden", "x/y", "-rf", "a b"] {
        let mut v = good.clone();
        v["entries"][0]["dir"] = Value::from(bad);
        write_json(&sum, &v);
        merge(bad, "entries[0].dir");
    }
    // A fidelity folder is a path from data too.
    let mut v = good.clone();
    v["fidelity"] = serde_json::json!([{"scenario": "a", "agrees": true, "dir": "../victim"}]);
    write_json(&sum, &v);
    merge("fidelity dir", "fidelity[0].dir");
    // A folder listed twice.
    let mut v = good.clone();
    let e = v["entries"][0].clone();
    v["entries"].as_array_mut().unwrap().push(e);
    write_json(&sum, &v);
    merge("twice", "listed twice");
    write_json(&sum, &good);

    // A report folder that is a symlink (to a folder outside), a symlinked or special file in one.
    let rep = s1.join(&real);
    let saved = t.join("saved");
    std::fs::rename(&rep, &saved).unwrap();
    symlink(&victim, &rep).unwrap();
    merge("symlinked report folder", "symlink");
    std::fs::remove_file(&rep).unwrap();
    std::fs::rename(&saved, &rep).unwrap();
    let md = rep.join("report.md");
    let md_text = std::fs::read(&md).unwrap();
    std::fs::remove_file(&md).unwrap();
    symlink(victim.join("keep.json"), &md).unwrap();
    merge("symlinked file", "a symlink in a report folder");
    std::fs::remove_file(&md).unwrap();
    fifo(&md);
    merge("FIFO in a report folder", "a FIFO in a report folder");
    std::fs::remove_file(&md).unwrap();
    sparse(&md, phc_harness::regress::merge::MAX_COPY_BYTES + 1);
    merge("oversize file", "over the limit");
    std::fs::write(&md, &md_text).unwrap();

    // The summary itself: endless or oversize.
    each_endless(&sum, phc_harness::regress::summary::MAX_SUMMARY_BYTES, |what| merge(what, "summary.json"));
    write_json(&sum, &good);

    // Shard counts: huge, zero, an index out of range.
    for (index, count, want) in [
        (1u64, u64::MAX, "shard 1/18446744073709551615"),
        (1, 1 << 40, "at most"),
        (0, 2, "needs 1 <= I <= N"),
        (3, 2, "needs 1 <= I <= N"),
    ] {
        for s in [&s1, &s2] {
            let p = s.join("summary.json");
            let mut v = read_json(&p);
            v["shard"] = serde_json::json!({"index": index, "count": count});
            write_json(&p, &v);
        }
        merge(&format!("shard {index}/{count}"), want);
        for s in [&s1, &s2] {
            let p = s.join("summary.json");
            let mut v = read_json(&p);
            v["shard"]["index"] = Value::from(if s == &s1 { 1 } else { 2 });
            v["shard"]["count"] = Value::from(2);
            write_json(&p, &v);
        }
    }
    write_json(&sum, &good);

    // A symlink in --out where a report folder goes is not replaced (nor followed).
    std::fs::create_dir(&out).unwrap();
    symlink(&victim, out.join(&real)).unwrap();
    let o = harness_in(
        t,
        &["merge", "--out", out.to_str().unwrap(), s1.to_str().unwrap(), s2.to_str().unwrap()],
        LIMIT,
    );
    assert_usage(&o, "symlink", "symlink in --out");
    assert_sentinel(&victim, "symlink in --out");
    std::fs::remove_file(out.join(&real)).unwrap();

    // And the good shards still merge, into --out only.
    let before = tree(t);
    let o = harness_in(
        t,
        &["merge", "--out", out.to_str().unwrap(), s1.to_str().unwrap(), s2.to_str().unwrap()],
        LIMIT,
    );
    ok(&o, "merge");
    let after: Vec<String> = tree(t).into_iter().filter(|p| !before.contains(p)).collect();
    assert!(after.iter().all(|p| p.starts_with("out/")), "written outside --out: {after:?}");
    assert!(out.join(&real).join("report.json").is_file());
    assert_sentinel(&victim, "good merge");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever string a forged summary gives as a report folder, `merge` writes nothing outside
    /// `--out` and touches nothing outside it.
    #[test]
    fn merge_with_any_folder_string_stays_in_out(
        dir in prop_oneof![any::<String>(), "(\\.\\.|/|\\.|a|victim|shard1|-){0,8}"],
        fid in any::<bool>(),
    ) {
        let top = merge_fixture();
        let t = top.path();
        let victim = t.join("victim");
        let sum = t.join("shard1/summary.json");
        let mut v = read_json(&sum);
        if fid {
            v["fidelity"] = serde_json::json!([{"scenario": "a", "agrees": true, "dir": dir}]);
        } else {
            v["entries"][0]["dir"] = Value::from(dir.as_str());
        }
        write_json(&sum, &v);
        let before = tree(t);
        let out = t.join("out");
        let _ = phc_harness::regress::merge::merge(&[t.join("shard1"), t.join("shard2")], &out);
        let new: Vec<String> = tree(t).into_iter().filter(|p| !before.contains(p)).collect();
        prop_assert!(new.iter().all(|p| p == "out" || p.starts_with("out/")), "{:?}", new);
        let gone: Vec<&String> = before.iter().filter(|p| t.join(p).symlink_metadata().is_err()).collect();
        prop_assert!(gone.is_empty(), "removed: {:?}", gone);
        assert_sentinel(&victim, &dir);
    }

    /// Whatever scenario and backend names a forged summary holds, the baselines `compare` and
    /// `baseline` would read or write are inside the baselines folder, or the summary is refused.
    #[test]
    fn baseline_paths_from_any_summary_stay_inside(scenario in any::<String>(), backend in any::<String>()) {
        let top = merge_fixture();
        let t = top.path();
        let sum = t.join("shard1/summary.json");
        let mut v = read_json(&sum);
        v["entries"][0]["scenario"] = Value::from(scenario.as_str());
        v["entries"][0]["backend"] = Value::from(backend.as_str());
        write_json(&sum, &v);
        let base = t.join("base");
        if let Ok(runs) = phc_harness::regress::compare::load_runs(&t.join("shard1")) {
            for r in &runs {
                if let phc_harness::regress::compare::Run::Scenario(e) = r {
                    if let Ok(p) = phc_harness::regress::baseline::path_for(&base, &e.backend, &e.scenario) {
                        prop_assert!(p.starts_with(&base) && p.strip_prefix(&base).unwrap().components().count() == 2);
                    }
                }
            }
        }
    }
}

/// Two shards made once (by the binary) and copied into a fresh folder per case, with a
/// sentinel beside them.
fn merge_fixture() -> tempfile::TempDir {
    static MADE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let made = MADE.get_or_init(|| {
        let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        shards(d.path());
        d
    });
    let top = tempfile::tempdir().unwrap();
    for s in ["shard1", "shard2"] {
        let from = made.path().join(s);
        std::fs::create_dir(top.path().join(s)).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let to = top.path().join(s).join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir(&to).unwrap();
                for f in std::fs::read_dir(e.path()).unwrap() {
                    let f = f.unwrap();
                    std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
                }
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
    }
    sentinel(top.path());
    top
}

#[test]
fn baseline_and_compare_refuse_names_and_files_from_data() {
    let top = tempfile::tempdir().unwrap();
    let t = top.path();
    let victim = sentinel(t);
    let sc = scenarios(t);
    let suite = t.join("suite");
    ok(&run(t, &["suite", sc.to_str().unwrap(), "--out", suite.to_str().unwrap()]), "suite");
    // An empty baselines folder (compare wants one): nothing may land in it, or anywhere.
    let base = t.join("base");
    std::fs::create_dir(&base).unwrap();
    let (s, b) = (suite.to_str().unwrap(), base.to_str().unwrap());
    let sum = suite.join("summary.json");
    let good = read_json(&sum);
    for (key, bad) in [
        ("scenario", "../../victim/keep"),
        ("scenario", "/tmp/phc-escaped"),
        ("backend", "../victim"),
        ("backend", ""),
        ("scenario", ".."),
    ] {
        let mut v = good.clone();
        v["entries"][0][key] = Value::from(bad);
        write_json(&sum, &v);
        for cmd in ["baseline", "compare"] {
            let o = harness_in(t, &[cmd, s, "--baseline", b], LIMIT);
            assert_usage(&o, &format!("entries[0].{key}"), &format!("{cmd} {key}={bad}"));
            assert!(tree(&base).is_empty(), "{cmd}: baselines written");
            assert_sentinel(&victim, bad);
        }
    }
    each_endless(&sum, phc_harness::regress::summary::MAX_SUMMARY_BYTES, |what| {
        for cmd in ["baseline", "compare"] {
            let o = harness_in(t, &[cmd, s, "--baseline", b], LIMIT);
            assert_usage(&o, "summary.json", what);
            assert!(tree(&base).is_empty());
        }
    });
    write_json(&sum, &good);

    // A run --out folder: the report's own names, and endless report.json files.
    let runs = t.join("runs");
    ok(&run(t, &["run", sc.join("a.toml").to_str().unwrap(), "--out", runs.to_str().unwrap()]), "run");
    let rep = runs.join("a-sim-seed1/report.json");
    let good_rep = read_json(&rep);
    let r = runs.to_str().unwrap();
    for (key, bad) in [("scenario", "../victim"), ("backend", "/tmp")] {
        let mut v = good_rep.clone();
        v[key] = Value::from(bad);
        write_json(&rep, &v);
        let o = harness_in(t, &["baseline", r, "--baseline", b], LIMIT);
        assert_usage(&o, &format!("report.json: {key}: "), bad);
        assert!(tree(&base).is_empty());
    }
    each_endless(&rep, phc_harness::judge::report::MAX_REPORT_BYTES, |what| {
        let o = harness_in(t, &["compare", r, "--baseline", b], LIMIT);
        assert_usage(&o, "report.json", what);
    });
    write_json(&rep, &good_rep);
    // A report folder that is a symlink.
    symlink(runs.join("a-sim-seed1"), runs.join("z-sim-seed1")).unwrap();
    let o = harness_in(t, &["baseline", r, "--baseline", b], LIMIT);
    assert_usage(&o, "a symlink", "symlinked report folder");
    std::fs::remove_file(runs.join("z-sim-seed1")).unwrap();

    // Latency documents: a backend kind that is a path, endless files.
    let lat_dir = t.join("lat");
    let lat = lat_dir.join("box1/latency.json");
    std::fs::create_dir_all(lat.parent().unwrap()).unwrap();
    let doc = serde_json::json!({
        "device": "/dev/ptp0",
        "baseline": {"round_trip_ns": {"p50": 100, "p99": 200}},
        "methods": [{"method": "basic", "clock": null, "status": "ok", "round_trip_ns": {"p50": 400, "p99": 1000}}],
        "backend": {"kind": "../../victim"}
    });
    write_json(&lat, &doc);
    let l = lat_dir.to_str().unwrap();
    let o = harness_in(t, &["baseline", l, "--baseline", b], LIMIT);
    assert_usage(&o, "backend kind", "latency kind");
    each_endless(&lat, phc_harness::regress::compare::MAX_LATENCY_BYTES, |what| {
        let o = harness_in(t, &["compare", l, "--baseline", b], LIMIT);
        assert_usage(&o, "latency.json", what);
    });
    assert!(tree(&base).is_empty());
    assert_sentinel(&victim, "latency");

    // Probe documents: the same, and one that is no probe document.
    let probe_dir = t.join("probes");
    let probe = probe_dir.join("box1/probe.json");
    std::fs::create_dir_all(probe.parent().unwrap()).unwrap();
    let doc = serde_json::json!({
        "device": "/dev/ptp0",
        "deviations": 0,
        "checks": [{"group": "read", "name": "SYS_OFFSET", "result": "ok", "expected": "ok", "verdict": "pass"}],
        "backend": {"kind": "../../victim"}
    });
    write_json(&probe, &doc);
    let pd = probe_dir.to_str().unwrap();
    let o = harness_in(t, &["baseline", pd, "--baseline", b], LIMIT);
    assert_usage(&o, "backend kind", "probe kind");
    write_json(&probe, &serde_json::json!({"device": "/dev/ptp0", "checks": "none"}));
    let o = harness_in(t, &["compare", pd, "--against", pd], LIMIT);
    assert_usage(&o, "not a probe document", "probe without checks");
    each_endless(&probe, phc_harness::regress::compare::MAX_PROBE_BYTES, |what| {
        let o = harness_in(t, &["compare", pd, "--baseline", b], LIMIT);
        assert_usage(&o, "probe.json", what);
    });
    assert!(tree(&base).is_empty());
    assert_sentinel(&victim, "probe");

    // Baseline files themselves: endless ones are refused by compare; a malformed one is not
    // silently replaced by baseline.
    ok(&run(t, &["baseline", s, "--baseline", b]), "baseline");
    let bf = base.join("sim/a.json");
    let good_b = std::fs::read(&bf).unwrap();
    each_endless(&bf, phc_harness::regress::baseline::MAX_BASELINE_BYTES, |what| {
        let o = harness_in(t, &["compare", s, "--baseline", b], LIMIT);
        assert_eq!(o.code, Some(2), "{what}: {}", o.stderr);
        assert!(o.stderr.contains("sim/a.json"), "{what}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{what}: {}", o.stderr);
    });
    std::fs::write(&bf, "{ \"format\": 1, \"kind\": ").unwrap();
    let o = harness_in(t, &["baseline", s, "--baseline", b], LIMIT);
    assert_usage(&o, "sim/a.json: malformed baseline: EOF", "malformed baseline");
    assert_eq!(std::fs::read_to_string(&bf).unwrap(), "{ \"format\": 1, \"kind\": ", "replaced");
    // Hand-set tolerances survive a regeneration of a good one.
    let mut v: Value = serde_json::from_slice(&good_b).unwrap();
    v["metrics"]["steps"]["abs"] = Value::from(7.0);
    write_json(&bf, &v);
    ok(&run(t, &["baseline", s, "--baseline", b]), "regenerate");
    assert_eq!(read_json(&bf)["metrics"]["steps"]["abs"], 7.0);

    // A backend folder that is a symlink: nothing is written through it.
    std::fs::remove_dir_all(base.join("sim")).unwrap();
    symlink(&victim, base.join("sim")).unwrap();
    let o = harness_in(t, &["baseline", s, "--baseline", b, "--prune"], LIMIT);
    assert_usage(&o, "symlink", "symlinked backend folder");
    let o = harness_in(t, &["compare", s, "--baseline", b], LIMIT);
    assert_eq!(o.code, Some(2));
    assert_sentinel(&victim, "symlinked backend folder");
}

#[test]
fn prune_removes_only_stale_baseline_files() {
    let top = tempfile::tempdir().unwrap();
    let t = top.path();
    let victim = sentinel(t);
    let sc = scenarios(t);
    let suite = t.join("suite");
    ok(&run(t, &["suite", sc.to_str().unwrap(), "--out", suite.to_str().unwrap()]), "suite");
    let base = t.join("base");
    let sim = base.join("sim");
    std::fs::create_dir_all(sim.join("sub.json")).unwrap();
    std::fs::write(sim.join("stale.json"), "{}").unwrap();
    std::fs::write(sim.join("notes.txt"), "x").unwrap();
    std::fs::write(sim.join(".hidden.json"), "x").unwrap();
    std::fs::write(sim.join("a b.json"), "x").unwrap();
    symlink(victim.join("keep.json"), sim.join("link.json")).unwrap();
    std::fs::create_dir_all(base.join("qemu")).unwrap();
    std::fs::write(base.join("qemu/other.json"), "{}").unwrap();
    std::fs::write(base.join("top.json"), "{}").unwrap();
    let o = run(t, &["baseline", suite.to_str().unwrap(), "--baseline", base.to_str().unwrap(), "--prune"]);
    ok(&o, "prune");
    assert_eq!(
        tree(&base),
        [
            "qemu",
            "qemu/other.json",
            "sim",
            "sim/.hidden.json",
            "sim/a b.json",
            "sim/a.json",
            "sim/b.json",
            "sim/link.json",
            "sim/notes.txt",
            "sim/sub.json",
            "top.json"
        ]
    );
    assert_sentinel(&victim, "prune");
}

#[test]
fn a_suite_folder_is_locked_and_holds_only_its_own_reports() {
    let top = tempfile::tempdir().unwrap();
    let t = top.path();
    let victim = sentinel(t);
    let sc = scenarios(t);
    let out = t.join("out");
    let (s, o_) = (sc.to_str().unwrap(), out.to_str().unwrap());
    ok(&run(t, &["suite", s, "--out", o_]), "suite");
    assert!(out.join("b-sim-seed1").is_dir());
    std::fs::create_dir(out.join("mine")).unwrap();
    std::fs::write(out.join("mine/report.json"), "not a suite's").unwrap();

    // While another suite holds the folder, a second one is refused at once.
    let f = std::fs::File::open(out.join(phc_harness::regress::suite::LOCK_FILE)).unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let o = harness_in(t, &["suite", s, "--out", o_], LIMIT);
    assert_usage(&o, "another suite or merge is writing into this folder", "locked");
    drop(held);

    // A suite of `a` only into the folder of `a` and `b`: b's report folder goes (the older
    // summary listed it), a folder it never listed stays, and compare sees `a` only.
    ok(&run(t, &["suite", s, "--out", o_, "--filter", "a"]), "suite a");
    assert!(!out.join("b-sim-seed1").exists(), "the older suite's folder stayed");
    assert!(out.join("a-sim-seed1/report.json").is_file());
    assert_eq!(std::fs::read_to_string(out.join("mine/report.json")).unwrap(), "not a suite's");
    let runs = phc_harness::regress::compare::load_runs(&out).unwrap();
    assert_eq!(runs.len(), 1);

    // An older summary that lists a folder outside, or a symlink, removes nothing through it.
    let sum = out.join("summary.json");
    let mut v = read_json(&sum);
    v["entries"][0]["dir"] = Value::from("../victim");
    write_json(&sum, &v);
    let o = harness_in(t, &["suite", s, "--out", o_], LIMIT);
    assert_usage(&o, "entries[0].dir", "older summary with ../victim");
    v["entries"][0]["dir"] = Value::from("link");
    write_json(&sum, &v);
    symlink(&victim, out.join("link")).unwrap();
    ok(&run(t, &["suite", s, "--out", o_]), "older summary with a symlink");
    assert!(out.join("link").symlink_metadata().unwrap().file_type().is_symlink());
    assert_sentinel(&victim, "suite");
}

#[test]
fn plot_reads_only_a_regular_file_and_writes_only_into_a_real_folder() {
    let top = tempfile::tempdir().unwrap();
    let t = top.path();
    let victim = sentinel(t);
    let doc = serde_json::json!({
        "device": "/dev/ptp0",
        "baseline": {"round_trip_ns": {"p50": 30, "p99": 50, "histogram": [{"le_ns": 50, "count": 16}]}},
        "methods": [{"method": "basic", "clock": null, "status": "ok",
            "round_trip_ns": {"p50": 4000, "p99": 9000, "histogram": [{"le_ns": 5000, "count": 15}]}}]
    });
    let lat = t.join("latency.json");
    write_json(&lat, &doc);
    let l = lat.to_str().unwrap();
    each_endless(&t.join("endless.json"), phc_harness::regress::compare::MAX_LATENCY_BYTES, |what| {
        let o = harness_in(t, &["plot", t.join("endless.json").to_str().unwrap()], LIMIT);
        assert_usage(&o, "endless.json", what);
    });
    // /dev/stdin on a pipe, or /dev/null: not a regular file.
    for p in ["/dev/stdin", "/dev/null", "/dev/zero"] {
        let o = harness_in(t, &["plot", p], LIMIT);
        assert_usage(&o, "not a regular file", p);
    }
    // /dev/stdin from a regular file: readable, but its folder is /dev: no default output.
    let o = harness_stdin(t, &["plot", "/dev/stdin"], LIMIT, Stdio::from(std::fs::File::open(&lat).unwrap()));
    assert_usage(&o, "give --out", "/dev/stdin from a file");
    assert!(!Path::new("/dev/latency-cdf.svg").exists());
    // A symlink where a plot goes is not written through.
    symlink(victim.join("keep.json"), t.join("latency-cdf.svg")).unwrap();
    let o = harness_in(t, &["plot", l], LIMIT);
    assert_usage(&o, "a symlink, not replaced", "symlinked output");
    assert!(!t.join("latency-histogram.svg").exists(), "nothing written when refused");
    std::fs::remove_file(t.join("latency-cdf.svg")).unwrap();
    // --out that is a file.
    let o = harness_in(t, &["plot", l, "--out", victim.join("keep.json").to_str().unwrap()], LIMIT);
    assert_usage(&o, "not a folder", "--out a file");
    assert_sentinel(&victim, "plot");
    // The good cases: beside the file, and into --out.
    ok(&harness_in(t, &["plot", l], LIMIT), "plot");
    assert!(t.join("latency-cdf.svg").is_file() && t.join("latency-histogram.svg").is_file());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&t.join("latency-cdf.svg").metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "plots are readable by all");
    let o = harness_in(t, &["plot", l, "--out", t.join("plots").to_str().unwrap()], LIMIT);
    ok(&o, "plot --out");
    assert!(t.join("plots/latency-cdf.svg").is_file());
}
