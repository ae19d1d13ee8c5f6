//! The regression workflow through the binary: `suite` writes a folder whose summary, KTAP,
//! JUnit, Markdown and HTML parse back and show every scenario; a fresh sim suite matches the
//! committed baselines; a regressed metric fails `compare` naming it; missing or malformed
//! baselines are clear errors; shards merged equal the unsharded suite byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use phc_harness::format::ktap;

mod xml;
use xml::{parse_xml, El};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phc-harness")).current_dir(root()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn suite(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["suite", "scenarios", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    harness(&args)
}

fn scenario_names() -> Vec<String> {
    let mut v: Vec<String> = phc_harness::model::scenario::list_dir(&root().join("scenarios"))
        .unwrap()
        .iter()
        .map(|f| phc_harness::model::scenario::Scenario::load(f).unwrap().name)
        .collect();
    v.sort();
    v
}

#[test]
fn a_fresh_sim_suite_matches_the_committed_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    let o = suite(&out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let c = harness(&["compare", out.to_str().unwrap()]);
    assert_eq!(
        c.status.code(),
        Some(0),
        "the sim suite moved from results/baselines/sim; if the change is meant, regenerate them with \
         `ci/update-baselines.sh` and review the diff\n{}",
        text(&c)
    );
    let md = String::from_utf8_lossy(&c.stdout);
    let n = scenario_names().len();
    assert!(md.contains(&format!("{n} runs, ")) && md.contains(" 0 regressions"), "{md}");
}

#[test]
fn suite_files_parse_back_and_show_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    let o = suite(&out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let names = scenario_names();
    // stdout is the KTAP document, and results.ktap is the same.
    let ktap_text = std::fs::read_to_string(out.join("results.ktap")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), ktap_text);
    let tests = ktap::parse(&ktap_text).unwrap();
    let got: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let want: Vec<String> = names.iter().map(|n| format!("{n}.sim")).collect();
    assert_eq!(got, want);
    assert!(tests.iter().all(|t| t.result == ktap::Result::Ok));
    // Written atomically, yet as readable as plain writes: files 0644, report folders 0755.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for f in ["summary.json", "index.html", "junit.xml", "results.ktap", "index.md"] {
        assert_eq!(mode(&out.join(f)), 0o644, "{f}");
    }
    assert_eq!(mode(&out.join(format!("{}-sim-seed1", names[0]))), 0o755);
    // Progress with an ETA on stderr, one line per run.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("[1/{}] {} [sim] PASS", names.len(), names[0])) && err.contains("ETA"),
        "{err}"
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["totals"]["pass"], names.len());
    assert_eq!(summary["verdict"], "pass");

    let junit = parse_xml(&std::fs::read_to_string(out.join("junit.xml")).unwrap());
    check_junit(&junit);
    let cases: Vec<&str> = junit.find("testcase").iter().map(|c| c.attr("name").unwrap()).collect();
    assert_eq!(cases, names.iter().map(String::as_str).collect::<Vec<_>>());

    let html_text = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html_text.starts_with("<!DOCTYPE html>"));
    let html = parse_xml(&html_text);
    assert_eq!(html.name, "html");
    let rows: Vec<&El> = html.find("tr").into_iter().filter(|r| r.attr("class") == Some("entry")).collect();
    assert_eq!(rows.len(), names.len());
    for (row, name) in rows.iter().zip(&names) {
        assert_eq!(row.children[0].children[0].text, *name, "verdict table row");
        assert_eq!(row.children[2].text, "PASS");
    }
    // Self-contained: every plot inline (one per run, and the runs side by side), no file,
    // script or style from elsewhere.
    assert_eq!(html.find("svg").len(), names.len() + 1, "one inline plot per run and recovery.svg");
    assert!(html.find("section").iter().any(|s| s.attr("id") == Some("recovery")));
    assert!(html.find("script").is_empty() && html.find("img").is_empty() && html.find("link").is_empty());
    for a in html.find("a") {
        assert!(a.attr("href").unwrap().starts_with('#'), "links stay inside the page: {:?}", a.attr("href"));
    }
    for s in html.find("section").into_iter().filter(|s| s.attr("id") != Some("recovery")) {
        assert!(!s.find("table").is_empty(), "every run shows its metrics");
    }
    let md = std::fs::read_to_string(out.join("index.md")).unwrap();
    for n in &names {
        assert!(md.contains(&format!("| {n} | sim | PASS |")), "{md}");
    }
}

/// The JUnit structure CI systems read: `testsuites` > `testsuite` > `testcase`, counts that
/// add up, at most one of failure / error / skipped per case, every skip with a reason.
fn check_junit(root: &El) {
    assert_eq!(root.name, "testsuites");
    let num = |e: &El, k: &str| -> usize {
        e.attr(k).unwrap_or_else(|| panic!("{} lacks {k}", e.name)).parse().unwrap()
    };
    let mut sums = [0usize; 4];
    for s in &root.children {
        assert_eq!(s.name, "testsuite");
        assert!(s.attr("name").is_some());
        let cases: Vec<&El> = s.children.iter().collect();
        assert!(cases
            .iter()
            .all(|c| c.name == "testcase" && c.attr("name").is_some() && c.attr("classname").is_some()));
        let with = |k: &str| cases.iter().filter(|c| c.children.iter().any(|x| x.name == k)).count();
        assert_eq!(num(s, "tests"), cases.len());
        assert_eq!(num(s, "failures"), with("failure"));
        assert_eq!(num(s, "errors"), with("error"));
        assert_eq!(num(s, "skipped"), with("skipped"));
        for c in &cases {
            let verdicts = c
                .children
                .iter()
                .filter(|x| ["failure", "error", "skipped"].contains(&x.name.as_str()))
                .count();
            assert!(verdicts <= 1, "{c:?}");
            for x in c.children.iter().filter(|x| x.name != "system-out") {
                assert!(!x.attr("message").unwrap_or("").is_empty(), "a {} says why", x.name);
            }
        }
        for (i, k) in ["tests", "failures", "errors", "skipped"].iter().enumerate() {
            sums[i] += num(s, k);
        }
    }
    for (i, k) in ["tests", "failures", "errors", "skipped"].iter().enumerate() {
        assert_eq!(num(root, k), sums[i], "testsuites {k}");
    }
}

const BARE: &str = "[world.phc]\npersonality = \"kvm\"\n[timeline]\nwarmup_s = 0\nobserve_s = 20\n";

#[test]
fn failures_and_checkless_scenarios_show_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc");
    std::fs::create_dir(&sc).unwrap();
    std::fs::write(
        sc.join("bad.toml"),
        format!("description = \"a check that cannot hold\"\n{BARE}[expect]\nsteps = {{ min = 1 }}\n"),
    )
    .unwrap();
    std::fs::write(sc.join("bare.toml"), format!("description = \"no checks\"\n{BARE}")).unwrap();
    std::fs::write(
        sc.join("good.toml"),
        format!("description = \"holds\"\n{BARE}[expect]\nsteps = {{ max = 0 }}\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = harness(&["suite", sc.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = ktap::parse(&std::fs::read_to_string(out.join("results.ktap")).unwrap()).unwrap();
    assert_eq!(t[0].name, "bad.sim");
    assert_eq!(t[0].result, ktap::Result::NotOk);
    assert_eq!(t[0].diagnostics, ["phc-harness suite: backends sim", "steps: expected >= 1, got 0.000"]);
    assert_eq!(t[1].result, ktap::Result::Skip("no checks: the scenario has no [expect] entries".into()));
    assert_eq!(t[2].result, ktap::Result::Ok);
    let j = parse_xml(&std::fs::read_to_string(out.join("junit.xml")).unwrap());
    check_junit(&j);
    assert_eq!(j.attr("failures"), Some("1"));
    assert_eq!(j.attr("skipped"), Some("1"));
    let f = j.find("failure");
    assert_eq!(f[0].text, "steps: expected >= 1, got 0.000");
    let html = parse_xml(&std::fs::read_to_string(out.join("index.html")).unwrap());
    let verdicts: Vec<String> = html
        .find("tr")
        .into_iter()
        .filter(|r| r.attr("class") == Some("entry"))
        .map(|r| r.children[2].text.clone())
        .collect();
    assert_eq!(verdicts, ["FAIL", "NO CHECKS", "PASS"]);
    // --filter picks by glob; nothing matching is a usage error.
    let o = harness(&["suite", sc.to_str().unwrap(), "--out", out.to_str().unwrap(), "--filter", "go*,bare"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ktap::parse(&String::from_utf8_lossy(&o.stdout)).unwrap().len(), 2);
    let o = harness(&["suite", sc.to_str().unwrap(), "--out", out.to_str().unwrap(), "--filter", "nothing*"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no scenario matches --filter nothing*"));
    for bad in [&["--shard", "4/3"][..], &["--shard", "x"], &["--backend", "vmware"]] {
        let mut a = vec!["suite", sc.to_str().unwrap(), "--out", out.to_str().unwrap()];
        a.extend_from_slice(bad);
        assert_eq!(harness(&a).status.code(), Some(2), "{bad:?}");
    }
    let o = harness(&["suite", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn compare_names_a_regression_and_refuses_bad_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    assert_eq!(suite(&out, &[]).status.code(), Some(0));
    let base = dir.path().join("baselines");
    let o = harness(&["baseline", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cmp = |extra: &[&str]| {
        let mut a = vec!["compare", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()];
        a.extend_from_slice(extra);
        harness(&a)
    };
    // Unchanged: exit 0, nothing moved.
    let o = cmp(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" 0 moved, 0 regressions"), "{}", text(&o));

    // The baseline says reboot recovered within 1 ms in 0.01 s with a tight tolerance: today's
    // run (0.1 s) is a regression, named in the table.
    let p = base.join("sim/reboot.json");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    b["metrics"]["time_to_within_1ms_s"]["value"] = serde_json::json!(0.01);
    b["metrics"]["time_to_within_1ms_s"]["abs"] = serde_json::json!(0.001);
    b["metrics"]["time_to_within_1ms_s"]["rel"] = serde_json::json!(0.0);
    std::fs::write(&p, serde_json::to_string_pretty(&b).unwrap()).unwrap();
    let o = cmp(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(
        md.contains(
            "| reboot | sim | time_to_within_1ms_s | 0.01 | 0.1 | ±0.001 | 0.100x | **REGRESSION** |"
        ),
        "{md}"
    );
    assert!(md.contains("1 regressions"), "{md}");
    // A scenario's own [[tolerance]] overrides the baseline's: tested in the library (compare.rs).

    // An improvement is shown but passes.
    b["metrics"]["time_to_within_1ms_s"]["value"] = serde_json::json!(5.0);
    std::fs::write(&p, serde_json::to_string_pretty(&b).unwrap()).unwrap();
    let o = cmp(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| improved |"), "{}", text(&o));

    // Malformed: exit 2 naming the file.
    std::fs::write(&p, "{\"format\": 1, \"kind\": ").unwrap();
    let o = cmp(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sim/reboot.json: malformed baseline"),
        "{}",
        text(&o)
    );
    // Missing: exit 2 saying how to make one.
    std::fs::remove_file(&p).unwrap();
    let o = cmp(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no baseline for reboot [sim]") && err.contains("phc-harness baseline RUN_DIR"),
        "{err}"
    );
    // No baseline folder at all, or no run: exit 2.
    let o =
        harness(&["compare", out.to_str().unwrap(), "--baseline", dir.path().join("none").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no baseline folder"), "{}", text(&o));
    let o = harness(&["compare", base.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn compare_reads_a_run_folder_and_honours_scenario_tolerances() {
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc");
    std::fs::create_dir(&sc).unwrap();
    let scen = |tol: &str| {
        format!("description = \"x\"\n{BARE}[world.guest]\nfreq_error_ppm = 1.0\n[expect]\nsteps = {{ max = 0 }}\n{tol}")
    };
    std::fs::write(sc.join("t.toml"), scen("")).unwrap();
    let runs = dir.path().join("runs");
    let o = harness(&["run", sc.join("t.toml").to_str().unwrap(), "--out", runs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let base = dir.path().join("base");
    assert_eq!(
        harness(&["baseline", runs.to_str().unwrap(), "--baseline", base.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let p = base.join("sim/t.json");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let rms = b["metrics"]["rms_after_recovery_ns"]["value"].as_f64().unwrap();
    assert!(rms > 1.0, "{rms}");
    b["metrics"]["rms_after_recovery_ns"]["value"] = serde_json::json!(rms / 100.0);
    b["metrics"]["rms_after_recovery_ns"]["abs"] = serde_json::json!(0.0);
    b["metrics"]["rms_after_recovery_ns"]["rel"] = serde_json::json!(0.0);
    std::fs::write(&p, serde_json::to_string(&b).unwrap()).unwrap();
    let o = harness(&["compare", runs.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("| t | sim | rms_after_recovery_ns |"),
        "{}",
        text(&o)
    );
    // The scenario widens the tolerance for that metric: no regression.
    std::fs::write(
        sc.join("t.toml"),
        scen("[[tolerance]]\nmetric = \"rms_after_recovery_ns\"\nabs = 1000000.0\n"),
    )
    .unwrap();
    let suite_out = dir.path().join("suite");
    let o = harness(&["suite", sc.to_str().unwrap(), "--out", suite_out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = harness(&["compare", suite_out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // An unknown metric in [[tolerance]] is refused at load, with file and line.
    std::fs::write(sc.join("t.toml"), scen("[[tolerance]]\nmetric = \"speed\"\nabs = 1.0\n")).unwrap();
    let o = harness(&["suite", sc.to_str().unwrap(), "--out", suite_out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("t.toml:") && err.contains("unknown metric `speed`"), "{err}");
}

#[test]
fn shards_merged_equal_the_unsharded_suite() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    assert_eq!(suite(&whole, &[]).status.code(), Some(0));
    let mut shards = Vec::new();
    let mut names = Vec::new();
    for i in 1..=3 {
        let d = dir.path().join(format!("shard{i}"));
        let o = suite(&d, &["--shard", &format!("{i}/3")]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        for t in ktap::parse(&String::from_utf8_lossy(&o.stdout)).unwrap() {
            names.push(t.name);
        }
        shards.push(d);
    }
    names.sort();
    let mut all: Vec<String> = scenario_names().iter().map(|n| format!("{n}.sim")).collect();
    all.sort();
    assert_eq!(names, all, "every scenario in exactly one shard");
    // A shard's uploader controls its files: every plot.svg is replaced by one that runs script.
    // The merged plots below must still equal the unsharded suite's, drawn from report.json.
    for d in &shards {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let svg = e.path().join("plot.svg");
            if svg.is_file() {
                std::fs::write(&svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"><script>alert(2)</script></svg>").unwrap();
            }
        }
    }
    let merged = dir.path().join("merged");
    let mut a = vec!["merge", "--out", merged.to_str().unwrap()];
    // In any order.
    for d in shards.iter().rev() {
        a.push(d.to_str().unwrap());
    }
    let o = harness(&a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for f in ["summary.json", "junit.xml", "results.ktap", "index.md", "index.html"] {
        let (a, b) = (
            std::fs::read_to_string(whole.join(f)).unwrap(),
            std::fs::read_to_string(merged.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs between the merged shards and the whole suite");
    }
    for n in scenario_names() {
        let d = format!("{n}-sim-seed1");
        for f in ["report.json", "plot.svg"] {
            let same = std::fs::read(whole.join(&d).join(f)).unwrap()
                == std::fs::read(merged.join(&d).join(f)).unwrap();
            assert!(same, "{d}/{f} differs");
        }
    }
    // Two shards of three do not make the suite; a shard twice neither.
    let o = harness(&[
        "merge",
        "--out",
        merged.to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("shards missing: 3/3"), "{}", text(&o));
    let o = harness(&[
        "merge",
        "--out",
        merged.to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[0].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = harness(&["merge", "--out", merged.to_str().unwrap(), whole.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "a whole suite is not a shard");
}

/// The points of an SVG path's `d` (M and L commands).
fn path_points(d: &str) -> Vec<(f64, f64)> {
    d.split_whitespace()
        .map(|p| {
            let (x, y) = p[1..].split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// The guest's offset line of a plot.svg (drawn in the guest colour).
fn guest_path(svg: &El) -> Vec<(f64, f64)> {
    let paths = svg.find("path");
    let guest = paths.iter().find(|p| p.attr("stroke") == Some("#1f5fbf")).expect("the guest's line");
    path_points(guest.attr("d").unwrap())
}

#[test]
fn a_simulated_day_stays_small_and_its_plots_hold_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc");
    std::fs::create_dir(&sc).unwrap();
    let base = std::fs::read_to_string(root().join("scenarios/azure-pause-30s.toml")).unwrap();
    let day = base.replace("observe_s = 300", "observe_s = 86100");
    assert_ne!(day, base);
    std::fs::write(sc.join("day.toml"), day).unwrap();
    std::fs::write(sc.join("short.toml"), &base).unwrap();
    let out = dir.path().join("out");
    let o = harness(&["suite", sc.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let d = out.join("day-sim-seed1");
    let json_len = std::fs::metadata(d.join("report.json")).unwrap().len();
    let svg_text = std::fs::read_to_string(d.join("plot.svg")).unwrap();
    assert!(json_len < 1_000_000, "report.json of a simulated day: {json_len} bytes");
    assert!(svg_text.len() < 100_000, "plot.svg of a simulated day: {} bytes", svg_text.len());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["series_decimated"]["from"], 172_801);
    assert_eq!(r["series_decimated"]["to"], r["series"].as_array().unwrap().len());
    // The whole series drawn as at most two points per pixel column, the 30 s spike included.
    let svg = parse_xml(&svg_text);
    assert_eq!(svg.name, "svg");
    let pts = guest_path(&svg);
    assert!((810..=2 * 810 + 4).contains(&pts.len()), "{} points", pts.len());
    let top = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    assert!(top < 60.0, "the 30 s offset reaches the top decade: y {top}");
    assert!(!svg
        .find("rect")
        .iter()
        .any(|r| r.attr("opacity").is_none() && r.attr("fill") == Some("#f4c430")));
    assert_eq!(
        svg.find("rect").iter().filter(|r| r.attr("fill") == Some("#f4c430")).count(),
        1,
        "the pause is shaded"
    );
    assert!(svg.find("line").iter().any(|l| l.attr("stroke-dasharray").is_some()), "the step is marked");
    // --full-series keeps every observation.
    let full = dir.path().join("full");
    let o = harness(&[
        "suite",
        sc.to_str().unwrap(),
        "--filter",
        "day",
        "--full-series",
        "--out",
        full.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("day-sim-seed1/report.json")).unwrap())
            .unwrap();
    assert_eq!(r["series"].as_array().unwrap().len(), 172_801);
    assert!(r.get("series_decimated").is_none());

    // A short run's plot holds every observation: one point each.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("short-sim-seed1/report.json")).unwrap())
            .unwrap();
    let n = r["series"].as_array().unwrap().iter().filter(|o| !o["guest_offset_ns"].is_null()).count();
    let svg = parse_xml(&std::fs::read_to_string(out.join("short-sim-seed1/plot.svg")).unwrap());
    assert_eq!(guest_path(&svg).len(), n);
}

#[test]
fn latency_plots_parse_back_with_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let doc = serde_json::json!({
        "device": "/dev/ptp0", "driver": "nic", "samples": 20, "n_per_call": 1,
        "baseline": {"method": "clock_gettime", "clock": "monotonic", "status": "ok",
            "round_trip_ns": {"count": 20, "p50": 30, "p99": 50, "histogram": [{"le_ns": 20, "count": 4}, {"le_ns": 50, "count": 16}]}},
        "methods": [
            {"method": "basic", "clock": null, "status": "ok",
             "round_trip_ns": {"count": 20, "p50": 4000, "p99": 9000, "histogram": [{"le_ns": 5000, "count": 15}, {"le_ns": 10000, "count": 5}]}},
            {"method": "precise", "clock": null, "status": "unsupported", "round_trip_ns": null}
        ]
    });
    let f = dir.path().join("latency.json");
    std::fs::write(&f, doc.to_string()).unwrap();
    let o = harness(&["plot", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cdf = parse_xml(&std::fs::read_to_string(dir.path().join("latency-cdf.svg")).unwrap());
    let labels: Vec<&str> = cdf.find("path").iter().filter_map(|p| p.attr("data-label")).collect();
    assert_eq!(labels, ["clock_gettime (baseline)", "basic"]);
    let hist = parse_xml(&std::fs::read_to_string(dir.path().join("latency-histogram.svg")).unwrap());
    assert_eq!(hist.find("g").len(), 2);
    let o = harness(&["plot", dir.path().join("nope.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_local_backend_without_a_phc_is_one_clear_line() {
    let out = tempfile::tempdir().unwrap();
    // /dev/null is a character device, but not a PTP clock: refused before anything runs.
    let o = harness(&[
        "suite",
        "--backend",
        "local",
        "--device",
        "/dev/null",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("phc-harness: --backend local: /dev/null: "), "{err}");
    let have_ptp = !phc::sysfs::discover(&phc::Roots::default()).unwrap_or_default().is_empty()
        || Path::new("/dev/ptp_hyperv").exists();
    if have_ptp {
        println!("skipped the no-PHC case: this machine has a PTP clock");
        return;
    }
    let o = harness(&["suite", "--backend", "local", "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "phc-harness: --backend local: no PTP clock on this machine (/sys/class/ptp has none); --backend local needs one, or --device PATH\n"
    );
}

/// `compare A --against B`: two suites (a modified scenario and another seed on B, and a kernel
/// recorded for B) side by side in one table; a move is shown, exit 0 unless --fail-on-change.
#[test]
fn compare_against_puts_two_runs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (sa, sb) = (dir.path().join("sa"), dir.path().join("sb"));
    std::fs::create_dir(&sa).unwrap();
    std::fs::create_dir(&sb).unwrap();
    let jump = std::fs::read_to_string(root().join("scenarios/phc-jump-10s.toml")).unwrap();
    std::fs::write(sa.join("phc-jump-10s.toml"), &jump).unwrap();
    std::fs::copy(root().join("scenarios/reboot.toml"), sa.join("reboot.toml")).unwrap();
    let smaller = jump.replace("delta_s = 10.0", "delta_s = 4.0");
    assert_ne!(smaller, jump);
    std::fs::write(sb.join("phc-jump-10s.toml"), smaller).unwrap();
    std::fs::copy(root().join("scenarios/reboot.toml"), sb.join("reboot.toml")).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (sc, out, seed) in [(&sa, &a, "1"), (&sb, &b, "7")] {
        let o = harness(&["suite", sc.to_str().unwrap(), "--out", out.to_str().unwrap(), "--seed", seed]);
        assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    }
    // B as a QEMU run on another kernel line records it (the sim records none).
    let p = b.join("summary.json");
    let mut s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for e in s["entries"].as_array_mut().unwrap() {
        e["environment"] = serde_json::json!({"kernel_release": "7.2.0-1-amd64", "kernel_line": "7.2"});
    }
    std::fs::write(&p, serde_json::to_string_pretty(&s).unwrap()).unwrap();

    let cmp = |extra: &[&str]| {
        let mut args = vec!["compare", a.to_str().unwrap(), "--against", b.to_str().unwrap()];
        args.extend_from_slice(extra);
        harness(&args)
    };
    let o = cmp(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(
        md.contains("| scenario | backend | metric | A | B: 7.2.0-1-amd64 (line 7.2) | tolerance | |"),
        "{md}"
    );
    assert!(md.contains("- B: ") && md.contains("(7.2.0-1-amd64 (line 7.2))"), "{md}");
    // Both values of the changed jump, judged with the baseline tolerance (±(0.001 + 1%)).
    assert!(
        md.contains("| phc-jump-10s | sim | offset_after_disturbance_s | -10 | -4 | ±(0.001 + 1%) | moved |"),
        "{md}"
    );
    // Every metric of both runs is a row, moved or not; the seeds are noted, not refused.
    let rows =
        md.lines().filter(|l| l.starts_with("| phc-jump-10s |") || l.starts_with("| reboot |")).count();
    assert_eq!(rows, 22, "{md}");
    assert!(md.contains("| reboot | sim | outcome | pass | pass | equal |  |"), "{md}");
    assert!(md.contains("seeds differ (1 vs 7)"), "{md}");
    assert!(!md.contains("REGRESSION"), "{md}");
    assert_eq!(cmp(&["--fail-on-change"]).status.code(), Some(1));
    // The same run against itself: nothing moved, even with --fail-on-change.
    let o = harness(&["compare", a.to_str().unwrap(), "--against", a.to_str().unwrap(), "--fail-on-change"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("22 metrics side by side: 0 moved."), "{}", text(&o));
    // A baseline that cannot be read is no reason to stop, but its defaults are said, not silent.
    let base = dir.path().join("base");
    std::fs::create_dir_all(base.join("sim")).unwrap();
    std::fs::write(base.join("sim/reboot.json"), "{ not a baseline").unwrap();
    let o = cmp(&["--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    let notes: Vec<&str> = md.lines().filter(|l| l.contains("default tolerances, since ")).collect();
    assert_eq!(notes.len(), 1, "{md}");
    assert!(notes[0].contains("reboot") && notes[0].contains("malformed baseline"), "{md}");
    // Nothing in common, or not a run: exit 2.
    let o = harness(&["compare", a.to_str().unwrap(), "--against", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// `compare A --against B --against C`: a kernel matrix's review, one folder per "kernel" each
/// holding a `run --out` folder, a latency run and a driver probe (here the sim's personalities
/// stand in for kernels: hyperv on A and B, kvm on C), in one table with a column per folder,
/// every side judged against B.
#[test]
fn compare_against_several_folders_puts_a_matrix_in_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for (name, driver) in [("a", "hyperv"), ("b", "hyperv"), ("c", "kvm")] {
        let d = dir.path().join(name);
        for sub in ["probe", "latency"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let o = harness(&["probe", "--backend", "sim", "--driver", driver, "--format", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        std::fs::write(d.join("probe/probe.json"), &o.stdout).unwrap();
        let o = harness(&[
            "latency",
            "--backend",
            "sim",
            "--driver",
            driver,
            "--samples",
            "300",
            "--format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        std::fs::write(d.join("latency/latency.json"), &o.stdout).unwrap();
        let o = harness(&["run", "reboot", "--out", d.to_str().unwrap()]);
        assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
        folders.push(d);
    }
    let [a, b, c] = [&folders[0], &folders[1], &folders[2]].map(|p| p.to_str().unwrap());
    let o = harness(&["compare", a, "--against", b, "--against", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("| scenario | backend | metric | A | B | C | tolerance | |"), "{md}");
    assert!(md.contains("- B, the reference: "), "{md}");
    // The probe rows: kvm cross-timestamps and answers PRECISE, hyperv does neither.
    assert!(
        md.contains("| probe | sim | probe.caps.cross_timestamping | 0 | 0 | 1 | equal | C moved |"),
        "{md}"
    );
    assert!(
        md.contains("| probe | sim | probe.read.SYS_OFFSET_PRECISE | EOPNOTSUPP | EOPNOTSUPP | ok | equal | C moved |"),
        "{md}"
    );
    assert!(md.contains("| probe | sim | deviations | 0 | 0 | 0 |"), "{md}");
    // Latency and the scenario are rows too, one value per folder.
    assert!(
        md.contains("| latency | sim | status.precise | unsupported | unsupported | ok | equal | C moved |"),
        "{md}"
    );
    assert!(md.lines().any(|l| l.starts_with("| reboot | sim | outcome | pass | pass | pass |")), "{md}");
    assert_eq!(
        harness(&["compare", a, "--against", b, "--against", c, "--fail-on-change"]).status.code(),
        Some(1)
    );
    // A and B alone: the same driver answers the same (latency ratios aside, within tolerance).
    let o = harness(&["compare", a, "--against", b]);
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(!md.lines().any(|l| l.starts_with("| probe |") && l.contains("moved")), "{md}");
    // A probe folder is a run like any other for the baselines too.
    let base = dir.path().join("base");
    let o = harness(&["baseline", b, "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(base.join("sim/probe.json").is_file(), "{}", text(&o));
    let o = harness(&["compare", c, "--baseline", base.to_str().unwrap(), "--allow-different-host"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("probe.caps.cross_timestamping"), "{}", text(&o));
}

/// `run --repeat N`: N seeds per scenario on each backend, each run's report in its own folder,
/// and the scenario's distribution (per backend: every metric's median and range, the outcome
/// shares) in SCENARIO-distribution/, also as one item of `--format json`'s array.
#[test]
fn run_repeat_writes_each_seed_and_the_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    let o = harness(&[
        "run",
        "azure-pause-30s",
        "--repeat",
        "3",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for seed in 7..=9 {
        assert!(out.join(format!("azure-pause-30s-sim-seed{seed}/report.json")).is_file(), "seed {seed}");
    }
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("azure-pause-30s-distribution/distribution.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(d["sides"][0]["seeds"], serde_json::json!([7, 8, 9]), "{d}");
    assert_eq!(d["sides"][0]["verdicts"], serde_json::json!([{"class": "pass", "count": 3}]), "{d}");
    let rms = d["sides"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "rms_after_recovery_ns")
        .unwrap();
    assert_eq!(rms["n"], 3, "{rms}");
    assert!(rms["min"].as_f64().unwrap() <= rms["median"].as_f64().unwrap(), "{rms}");
    let md = std::fs::read_to_string(out.join("azure-pause-30s-distribution/distribution.md")).unwrap();
    assert!(md.contains("### sim (3 runs, seeds 7-9)"), "{md}");
    // stdout: three reports, then the distribution.
    let items: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(items[3]["distribution"]["scenario"], "azure-pause-30s");
    // Out of range, or a seed past the largest: usage errors.
    for (args, want) in [
        (&["--repeat", "0"][..], "--repeat"),
        (&["--repeat", "2", "--seed", "18446744073709551615"][..], "past the largest seed"),
    ] {
        let mut a = vec!["run", "azure-pause-30s", "--out", out.to_str().unwrap()];
        a.extend_from_slice(args);
        let o = harness(&a);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{}", text(&o));
    }
}

#[test]
fn repeated_runs_become_one_baseline_of_their_spread_that_three_spreads_fail() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    let o = suite(&out, &["--repeat", "4", "--filter", "azure-pause-30s,reboot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["entries"].as_array().unwrap().len(), 8);
    let dists = summary["distributions"].as_array().unwrap();
    assert_eq!(dists.len(), 2, "{summary}");
    for d in dists {
        assert!(out.join(d["dir"].as_str().unwrap()).join("distribution.md").is_file());
    }
    let md = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(md.contains("## Repeated runs: distributions"), "{md}");
    // Sharded repeats could not be merged: refused.
    let o = suite(&dir.path().join("x"), &["--repeat", "2", "--shard", "1/2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let base = dir.path().join("baselines");
    let o = harness(&["baseline", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let p = base.join("sim/azure-pause-30s.json");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(b["seeds"].as_array().unwrap().len(), 4, "{b}");
    let rms = &b["metrics"]["rms_after_recovery_ns"];
    let spread = &rms["spread"];
    assert_eq!(spread["runs"], 4);
    let width = spread["max"].as_f64().unwrap() - spread["min"].as_f64().unwrap();
    assert!(width > 1.0, "four seeds of the sim scatter in RMS: {rms}");
    // Two spreads, shown to four digits rounded up.
    let abs = rms["abs"].as_f64().unwrap();
    assert!(abs >= 2.0 * width && abs <= 2.0 * width * 1.001, "{rms}");
    assert_eq!(rms["rel"], 0.0);

    let cmp = || harness(&["compare", out.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    // Every repeat lies inside its own spread.
    let o = cmp();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| azure-pause-30s (seed 1) | sim | rms_after_recovery_ns |"), "{table}");

    // Three spreads worse: the baseline's median moved down by three spreads is each run's
    // RMS three spreads up from it, a regression on every seed.
    let median = rms["value"].as_f64().unwrap();
    b["metrics"]["rms_after_recovery_ns"]["value"] = serde_json::json!(median - 3.0 * width);
    std::fs::write(&p, serde_json::to_string_pretty(&b).unwrap()).unwrap();
    let o = cmp();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    let regressed = table
        .lines()
        .filter(|l| l.contains("| rms_after_recovery_ns |") && l.contains("**REGRESSION**"))
        .count();
    assert!(regressed >= 1, "{table}");
}
