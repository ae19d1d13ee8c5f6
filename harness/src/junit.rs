//! JUnit XML, the report format CI systems (GitHub Actions, GitLab, Jenkins) read: one
//! `<testsuite>` per backend with one `<testcase>` per scenario verdict, failed checks in the
//! `<failure>`, aborted runs as `<error>`, skips and scenarios without checks as `<skipped>`
//! with their reason; sim-against-QEMU comparisons in a `fidelity` suite. No timings, so a sim
//! suite's file is byte-identical for the same seeds.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::suite::render::esc;
use crate::suite::summary::{Entry, Outcome, Summary};

fn case(x: &mut String, suite: &str, e: &Entry) {
    let _ = write!(x, "    <testcase classname=\"{}\" name=\"{}\"", esc(suite), esc(&e.scenario));
    let failed: Vec<String> = e
        .checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| format!("{}: expected {}, got {}", c.name, c.expected, c.actual))
        .collect();
    let all: Vec<String> = e
        .checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: expected {}, got {}",
                if c.pass { "ok  " } else { "FAIL" },
                c.name,
                c.expected,
                c.actual
            )
        })
        .collect();
    x.push_str(">\n");
    match e.outcome {
        Outcome::Pass => {}
        Outcome::Fail => {
            let _ = writeln!(
                x,
                "      <failure type=\"verdict\" message=\"{}\">{}</failure>",
                esc(&format!("{} of {} checks failed", failed.len(), e.checks.len())),
                esc(&failed.join("\n"))
            );
        }
        Outcome::Aborted => {
            let _ = writeln!(
                x,
                "      <error type=\"aborted\" message=\"{}\"/>",
                esc(e.reason.as_deref().unwrap_or("aborted"))
            );
        }
        Outcome::NoChecks => {
            x.push_str("      <skipped message=\"no checks: the scenario has no [expect] entries\"/>\n");
        }
        Outcome::Skipped => {
            let _ =
                writeln!(x, "      <skipped message=\"{}\"/>", esc(e.reason.as_deref().unwrap_or("skipped")));
        }
    }
    if !all.is_empty() {
        let _ = writeln!(x, "      <system-out>{}</system-out>", esc(&all.join("\n")));
    }
    x.push_str("    </testcase>\n");
}

/// The suite as JUnit XML.
pub fn render(s: &Summary) -> String {
    let count = |es: &[&Entry], o: &[Outcome]| es.iter().filter(|e| o.contains(&e.outcome)).count();
    let all: Vec<&Entry> = s.entries.iter().collect();
    let fid_fail = s.fidelity.iter().filter(|f| !f.agrees).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"phc-harness\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        all.len() + s.fidelity.len(),
        count(&all, &[Outcome::Fail]) + fid_fail,
        count(&all, &[Outcome::Aborted]),
        count(&all, &[Outcome::Skipped, Outcome::NoChecks])
    );
    for b in &s.backends {
        let es: Vec<&Entry> = s.entries.iter().filter(|e| &e.backend == b).collect();
        let name = format!("phc-harness.{b}");
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            esc(&name),
            es.len(),
            count(&es, &[Outcome::Fail]),
            count(&es, &[Outcome::Aborted]),
            count(&es, &[Outcome::Skipped, Outcome::NoChecks])
        );
        for e in es {
            case(&mut x, &name, e);
        }
        x.push_str("  </testsuite>\n");
    }
    if !s.fidelity.is_empty() {
        let _ = writeln!(
            x,
            "  <testsuite name=\"phc-harness.fidelity\" tests=\"{}\" failures=\"{fid_fail}\" errors=\"0\" skipped=\"0\">",
            s.fidelity.len()
        );
        for f in &s.fidelity {
            let _ =
                write!(x, "    <testcase classname=\"phc-harness.fidelity\" name=\"{}\"", esc(&f.scenario));
            if f.agrees {
                x.push_str("/>\n");
            } else {
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"fidelity\" message=\"sim and QEMU disagree (see {}/fidelity.md)\"/>\n    </testcase>",
                    esc(&f.dir)
                );
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}
