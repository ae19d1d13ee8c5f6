//! JUnit XML, the report format CI systems (GitHub Actions, GitLab, Jenkins) read: one
//! `<testsuite>` per backend with one `<testcase>` per scenario verdict, failed checks in the
//! `<failure>`, aborted runs as `<error>`, skips and scenarios without checks as `<skipped>`
//! with their reason; sim-against-QEMU comparisons in a `fidelity` suite. No timings, so a sim
//! suite's file is byte-identical for the same seeds. A `probe` report is one `<testsuite>` with
//! one `<testcase>` per check ([`probe`]).
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

/// A `probe` report as JUnit XML: one `<testsuite>` named after the driver, one `<testcase>` per
/// check (classname `phc-harness.probe.GROUP`). A deviation is a `<failure>` with the expected and
/// actual answers; a check not issued and an informational row (reported, not judged: the same
/// choice as the KTAP output, see `crate::ktap::probe`) are `<skipped>` with the reason.
pub fn probe(r: &crate::device::probe::Report) -> String {
    use crate::device::probe::Verdict;
    let count = |v: &[Verdict]| r.checks.iter().filter(|c| v.contains(&c.verdict)).count();
    let (fail, skip) = (count(&[Verdict::Deviation]), count(&[Verdict::Skipped, Verdict::Info]));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let n = r.checks.len();
    let _ = writeln!(
        x,
        "<testsuites name=\"phc-harness\" tests=\"{n}\" failures=\"{fail}\" errors=\"0\" skipped=\"{skip}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"phc-harness.probe.{}\" tests=\"{n}\" failures=\"{fail}\" errors=\"0\" skipped=\"{skip}\">",
        esc(r.driver)
    );
    let _ = writeln!(x, "    <properties>");
    let _ = writeln!(x, "      <property name=\"device\" value=\"{}\"/>", esc(&r.device));
    let _ = writeln!(x, "      <property name=\"driver\" value=\"{}\"/>", esc(r.driver));
    if let Some(n) = &r.clock_name {
        let _ = writeln!(x, "      <property name=\"clock_name\" value=\"{}\"/>", esc(n));
    }
    let _ = writeln!(x, "    </properties>");
    for c in &r.checks {
        let _ = write!(
            x,
            "    <testcase classname=\"phc-harness.probe.{}\" name=\"{}\"",
            esc(c.group),
            esc(&c.name)
        );
        let note = c.note.as_deref();
        match c.verdict {
            Verdict::Pass => x.push_str("/>\n"),
            Verdict::Deviation => {
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"deviation\" message=\"{}\">{}</failure>\n    </testcase>",
                    esc(&format!("expected {}, got {}", c.expected, c.result)),
                    esc(note.unwrap_or(""))
                );
            }
            Verdict::Skipped => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(note.unwrap_or("not issued"))
                );
            }
            Verdict::Info => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(&format!("info: got {}, {}", c.result, note.unwrap_or("not judged")))
                );
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_probe_has_one_testcase_per_check() {
        let r = crate::ktap::tests::probe_report();
        let x = super::probe(&r);
        let n = r.checks.len();
        assert!(x.contains(&format!("tests=\"{n}\" failures=\"1\" errors=\"0\" skipped=\"4\"")), "{x}");
        assert_eq!(x.matches("<testcase ").count(), n);
        assert!(x.contains(
            "<testcase classname=\"phc-harness.probe.read\" name=\"SYS_OFFSET\">\n      <failure type=\"deviation\" message=\"expected ok, got EINVAL #2\">"
        ));
        assert!(x.contains("<skipped message=\"info: got ok, kernel lacks the *2 ioctls\"/>"));
        assert_eq!(x.matches("<skipped message=\"needs --allow-clock-writes\"/>").count(), 3);
    }
}
