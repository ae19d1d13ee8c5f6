//! JUnit XML, the report format CI systems (GitHub Actions, GitLab, Jenkins) read: one
//! `<testsuite>` per backend with one `<testcase>` per scenario verdict, failed checks in the
//! `<failure>`, aborted runs as `<error>`, skips and scenarios without checks as `<skipped>`
//! with their reason; sim-against-QEMU comparisons in a `fidelity` suite. No timings, so a sim
//! suite's file is byte-identical for the same seeds. A `probe` report is one `<testsuite>` with
//! one `<testcase>` per check ([`probe`]).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::escape::{xml_attr, xml_text};
use crate::suite::summary::{Entry, Outcome, Summary};

fn case(x: &mut String, suite: &str, e: &Entry) {
    let _ = write!(x, "    <testcase classname=\"{}\" name=\"{}\"", xml_attr(suite), xml_attr(&e.scenario));
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
                xml_attr(&format!("{} of {} checks failed", failed.len(), e.checks.len())),
                xml_text(&failed.join("\n"))
            );
        }
        Outcome::Aborted => {
            let _ = writeln!(
                x,
                "      <error type=\"aborted\" message=\"{}\"/>",
                xml_attr(e.reason.as_deref().unwrap_or("aborted"))
            );
        }
        Outcome::NoChecks => {
            x.push_str("      <skipped message=\"no checks: the scenario has no [expect] entries\"/>\n");
        }
        Outcome::Skipped => {
            let _ = writeln!(
                x,
                "      <skipped message=\"{}\"/>",
                xml_attr(e.reason.as_deref().unwrap_or("skipped"))
            );
        }
    }
    if !all.is_empty() {
        let _ = writeln!(x, "      <system-out>{}</system-out>", xml_text(&all.join("\n")));
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
            xml_attr(&name),
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
            let _ = write!(
                x,
                "    <testcase classname=\"phc-harness.fidelity\" name=\"{}\"",
                xml_attr(&f.scenario)
            );
            if f.agrees {
                x.push_str("/>\n");
            } else {
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"fidelity\" message=\"sim and QEMU disagree (see {}/fidelity.md)\"/>\n    </testcase>",
                    xml_attr(&f.dir)
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
        xml_attr(r.driver)
    );
    let _ = writeln!(x, "    <properties>");
    let _ = writeln!(x, "      <property name=\"device\" value=\"{}\"/>", xml_attr(&r.device));
    let _ = writeln!(x, "      <property name=\"driver\" value=\"{}\"/>", xml_attr(r.driver));
    if let Some(n) = &r.clock_name {
        let _ = writeln!(x, "      <property name=\"clock_name\" value=\"{}\"/>", xml_attr(n));
    }
    let _ = writeln!(x, "    </properties>");
    for c in &r.checks {
        let _ = write!(
            x,
            "    <testcase classname=\"phc-harness.probe.{}\" name=\"{}\"",
            xml_attr(c.group),
            xml_attr(&c.name)
        );
        let note = c.note.as_deref();
        match c.verdict {
            Verdict::Pass => x.push_str("/>\n"),
            Verdict::Deviation => {
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"deviation\" message=\"{}\">{}</failure>\n    </testcase>",
                    xml_attr(&format!("expected {}, got {}", c.expected, c.result)),
                    xml_text(note.unwrap_or(""))
                );
            }
            Verdict::Skipped => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml_attr(note.unwrap_or("not issued"))
                );
            }
            Verdict::Info => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml_attr(&format!("info: got {}, {}", c.result, note.unwrap_or("not judged")))
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Any text in a scenario's name, reasons or checks gives a well-formed document with one
        /// `<testcase>` per entry, named as the scenario (what XML cannot carry shown visibly).
        #[test]
        fn junit_from_any_text_parses_back(w in proptest::collection::vec(crate::escape::fixtures::nasty(), 1..6)) {
            use crate::escape::fixtures::xml_expected;
            let s = crate::escape::fixtures::summary(&w);
            let x = super::render(&s);
            let els = crate::escape::read::elements(&x).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{x}")))?;
            let cases: Vec<&str> =
                els.iter().filter(|e| e.name == "testcase").filter_map(|e| e.attr("name")).collect();
            let by_backend = s.backends.iter().flat_map(|b| s.entries.iter().filter(move |e| &e.backend == b));
            let want: Vec<String> = by_backend
                .map(|e| &e.scenario)
                .chain(s.fidelity.iter().map(|f| &f.scenario))
                .map(|n| xml_expected(n))
                .collect();
            proptest::prop_assert_eq!(cases, want);
            let failure = els.iter().find(|e| e.name == "failure").map(|e| e.text.clone());
            let c = &s.entries[1].checks[1];
            proptest::prop_assert_eq!(failure, Some(xml_expected(&format!("{}: expected {}, got {}", c.name, c.expected, c.actual))));

            let mut r = crate::ktap::tests::probe_report();
            r.device = w[0].clone();
            r.clock_name = Some(w[w.len() - 1].clone());
            for (i, c) in r.checks.iter_mut().enumerate() {
                c.name = w[i % w.len()].clone();
                c.note = Some(w[(i + 1) % w.len()].clone());
            }
            let x = super::probe(&r);
            let els = crate::escape::read::elements(&x).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{x}")))?;
            proptest::prop_assert_eq!(els.iter().filter(|e| e.name == "testcase").count(), r.checks.len());
            let dev = els.iter().find(|e| e.attr("name") == Some("device")).and_then(|e| e.attr("value"));
            let want = xml_expected(&r.device);
            proptest::prop_assert_eq!(dev, Some(want.as_str()));
        }
    }
}
