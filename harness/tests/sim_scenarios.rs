//! Every scenario in `scenarios/` on the sim backend: it has checks and they hold, the report is
//! byte-identical for the same seed, and the Markdown and JSON reports match their snapshots.
//! Also `run` on the sim as the real binary: a scenario without checks exits 0 but never says PASS.

use std::path::{Path, PathBuf};
use std::process::Command;

use phc_harness::judge::report::Verdict;
use phc_harness::model::scenario::{self, Scenario};
use phc_harness::run::runner::{run_sim, BUILTIN};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    scenario::list_dir(&dir).unwrap()
}

#[test]
fn every_scenario_file_is_built_in_and_parses() {
    let files = scenario_files();
    assert!(files.len() >= 10, "scenarios/ has {} files", files.len());
    for f in &files {
        let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            BUILTIN.iter().any(|(n, t)| *n == s.name && *t == text),
            "{} is not built into the binary (runner::BUILTIN) or differs",
            s.name
        );
    }
    assert_eq!(BUILTIN.len(), files.len());
}

/// The files among `files` whose sim run judged nothing: no `[expect]` entries.
fn without_checks(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter(|f| {
            let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
            run_sim(&s).unwrap().verdict == Verdict::NoChecks
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn every_shipped_scenario_has_checks() {
    let bare = without_checks(&scenario_files());
    assert!(
        bare.is_empty(),
        "scenarios without any [expect] check, whose runs judge nothing: {}",
        bare.join(", ")
    );
}

const BARE: &str =
    "description = \"x\"\n[world.phc]\npersonality = \"kvm\"\n[timeline]\nwarmup_s = 0\nobserve_s = 20\n";

#[test]
fn the_check_guard_names_the_file_without_checks() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, format!("{BARE}[expect]\n")).unwrap();
    let checked = dir.path().join("checked.toml");
    std::fs::write(&checked, format!("{BARE}[expect]\nsteps = {{ max = 0 }}\n")).unwrap();
    assert_eq!(without_checks(&[checked, bare.clone()]), [bare.display().to_string()]);
}

/// `phc-harness run FILE --out TMP ARGS...`: exit code and stdout.
fn run_cli(scenario_text: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bare.toml");
    std::fs::write(&file, scenario_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phc-harness"))
        .args(["run", file.to_str().unwrap(), "--out", dir.path().join("out").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn run_without_checks_exits_0_and_never_prints_pass() {
    let (code, out) = run_cli(BARE, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("bare [sim] NO CHECKS\n") && !out.contains("PASS"), "{out}");
    let (code, out) = run_cli(BARE, &["--format", "md"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("# bare: NO CHECKS\n") && !out.contains("PASS"), "{out}");
    let (code, out) = run_cli(BARE, &["--format", "json"]);
    assert_eq!(code, Some(0), "{out}");
    // One JSON array, one element per scenario.
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc[0]["reports"][0]["verdict"], "no_checks", "{out}");
    // The same scenario with a check that cannot hold: a failure, exit 1.
    let (code, out) = run_cli(&format!("{BARE}[expect]\nsteps = {{ min = 1 }}\n"), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("bare [sim] FAIL\n"), "{out}");
}

#[test]
fn every_scenario_passes_its_verdicts_on_the_sim() {
    let mut failures = Vec::new();
    for f in scenario_files() {
        let s = Scenario::load(&f).unwrap();
        let r = run_sim(&s).unwrap();
        if r.verdict != Verdict::Pass {
            failures.push(r.to_text());
        }
    }
    assert!(failures.is_empty(), "failed scenarios:\n{}", failures.join("\n"));
}

#[test]
fn same_seed_gives_byte_identical_reports_and_another_seed_differs() {
    let s = Scenario::load(&scenario_files()[0]).unwrap();
    let a = run_sim(&s).unwrap();
    let b = run_sim(&s).unwrap();
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.to_markdown(), b.to_markdown());
    let mut other = s.clone();
    other.world.seed += 1;
    assert_ne!(run_sim(&other).unwrap().to_json(), a.to_json());
}

#[test]
fn snapshots_of_every_report() {
    for f in scenario_files() {
        let s = Scenario::load(&f).unwrap();
        let r = run_sim(&s).unwrap();
        insta::assert_snapshot!(format!("{}.md", s.name), r.to_markdown());
        // The series is long; its determinism is checked byte for byte above.
        let mut v = serde_json::to_value(&r).unwrap();
        let n = v["series"].as_array().map_or(0, Vec::len);
        v["series"] = serde_json::json!(format!("[{n} observations]"));
        insta::assert_json_snapshot!(format!("{}.json", s.name), v);
    }
}

/// Every number in `v` (outside `series`) with its JSON path, as `serde_json` prints it.
fn numbers(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Number(n) => out.push((path.to_owned(), n.to_string())),
        serde_json::Value::Array(a) => {
            a.iter().enumerate().for_each(|(i, x)| numbers(x, &format!("{path}[{i}]"), out))
        }
        serde_json::Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k != "series")
            .for_each(|(k, x)| numbers(x, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// The report's measured numbers carry no float noise (what the JSON snapshots pin): seconds
/// to 1 ns (9 decimals), an RMS in ns to 0.1 ns, a frequency to 0.001 ppb, steps as integers.
#[test]
fn report_numbers_are_rounded_to_their_resolution() {
    for f in scenario_files() {
        let s = Scenario::load(&f).unwrap();
        let v = serde_json::to_value(run_sim(&s).unwrap()).unwrap();
        let mut all = Vec::new();
        numbers(&v, "", &mut all);
        for (path, text) in all {
            let key = path.rsplit(['.', '[']).find(|k| !k.ends_with(']')).unwrap_or("");
            let parent_is_seconds = path.contains(".time_to_within_s.");
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            let most = if key.ends_with("_s") || parent_is_seconds {
                9
            } else if key.ends_with("_ppb") {
                3
            } else if key.ends_with("_ns") {
                if key == "step_ns" || key == "delta_ns" || key.contains("offset") {
                    0
                } else {
                    1
                }
            } else {
                // Scenario input (a disturbance's `delta_ppm`), a count, the seed.
                continue;
            };
            assert!(!text.contains('e'), "{}: {path} = {text}", s.name);
            assert!(
                decimals <= most && !(most == 0 && text.contains('.')),
                "{}: {path} = {text}: more than {most} decimals",
                s.name
            );
        }
    }
}

#[test]
fn without_its_disturbances_a_scenario_shows_no_recovery() {
    for f in scenario_files() {
        let mut s = Scenario::load(&f).unwrap();
        s.timeline.events.clear();
        s.expect = Default::default();
        let r = run_sim(&s).unwrap();
        assert!(
            r.recovery.steps.is_empty(),
            "{}: steps without a disturbance: {:?}",
            s.name,
            r.recovery.steps
        );
        assert_eq!(r.recovery.offset_after_disturbance_ns, None, "{}", s.name);
        assert!(r.recovery.max_abs_offset_ns < 1_000_000, "{}: {} ns", s.name, r.recovery.max_abs_offset_ns);
    }
}
