//! Every scenario in `scenarios/` on the sim backend: its verdicts hold, the report is
//! byte-identical for the same seed, and the Markdown and JSON reports match their snapshots.

use std::path::{Path, PathBuf};

use phc_harness::report::Verdict;
use phc_harness::runner::{run_sim, BUILTIN};
use phc_harness::scenario::{self, Scenario};

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
