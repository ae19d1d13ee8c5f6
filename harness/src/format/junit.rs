//! JUnit XML, the report format CI systems (GitHub Actions, GitLab, Jenkins) read: a writer of
//! `<testsuites>` with their `<testcase>`s, a failure, an error or a skip each with its message,
//! and the counts on every suite computed from them. Suites (`regress::results`) and probes
//! (`device::probe_out`) bring their own cases. No timings, so the same results give a
//! byte-identical file.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::format::escape::{xml_attr, xml_text};

/// How a test case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseResult {
    /// It passed.
    Pass,
    /// A `<failure type="kind" message="...">text</failure>`, or without text a lone
    /// `<failure .../>`.
    Failure {
        /// The failure's type attribute (`verdict`, `deviation`, `fidelity`).
        kind: &'static str,
        /// One line.
        message: String,
        /// The details.
        text: Option<String>,
    },
    /// An `<error type="kind" message="..."/>`: it could not run to a verdict.
    Error {
        /// The error's type attribute (`aborted`).
        kind: &'static str,
        /// Why.
        message: String,
    },
    /// A `<skipped message="..."/>`.
    Skipped {
        /// Why.
        message: String,
    },
}

/// One `<testcase>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Its classname (the suite it belongs to, dotted).
    pub classname: String,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub result: CaseResult,
    /// Text for `<system-out>`, when there is any.
    pub system_out: Option<String>,
}

/// One `<testsuite>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// Its name.
    pub name: String,
    /// `<properties>`, name and value, when there are any.
    pub properties: Vec<(String, String)>,
    /// Its cases.
    pub cases: Vec<Case>,
}

/// (tests, failures, errors, skipped) of some cases.
fn counts<'a>(cases: impl Iterator<Item = &'a Case>) -> (usize, usize, usize, usize) {
    cases.fold((0, 0, 0, 0), |(t, f, e, s), c| match c.result {
        CaseResult::Pass => (t + 1, f, e, s),
        CaseResult::Failure { .. } => (t + 1, f + 1, e, s),
        CaseResult::Error { .. } => (t + 1, f, e + 1, s),
        CaseResult::Skipped { .. } => (t + 1, f, e, s + 1),
    })
}

fn case(x: &mut String, c: &Case) {
    let _ =
        write!(x, "    <testcase classname=\"{}\" name=\"{}\"", xml_attr(&c.classname), xml_attr(&c.name));
    if c.result == CaseResult::Pass && c.system_out.is_none() {
        x.push_str("/>\n");
        return;
    }
    x.push_str(">\n");
    match &c.result {
        CaseResult::Pass => {}
        CaseResult::Failure { kind, message, text: None } => {
            let _ =
                writeln!(x, "      <failure type=\"{}\" message=\"{}\"/>", xml_attr(kind), xml_attr(message));
        }
        CaseResult::Failure { kind, message, text: Some(text) } => {
            let _ = writeln!(
                x,
                "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                xml_attr(kind),
                xml_attr(message),
                xml_text(text)
            );
        }
        CaseResult::Error { kind, message } => {
            let _ =
                writeln!(x, "      <error type=\"{}\" message=\"{}\"/>", xml_attr(kind), xml_attr(message));
        }
        CaseResult::Skipped { message } => {
            let _ = writeln!(x, "      <skipped message=\"{}\"/>", xml_attr(message));
        }
    }
    if let Some(out) = &c.system_out {
        let _ = writeln!(x, "      <system-out>{}</system-out>", xml_text(out));
    }
    x.push_str("    </testcase>\n");
}

/// The document: `<testsuites name="phc-harness">` holding `suites`, with the counts of every
/// level computed from the cases.
pub fn write(suites: &[Suite]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let (t, f, e, s) = counts(suites.iter().flat_map(|s| &s.cases));
    let _ = writeln!(
        x,
        "<testsuites name=\"phc-harness\" tests=\"{t}\" failures=\"{f}\" errors=\"{e}\" skipped=\"{s}\">"
    );
    for suite in suites {
        let (t, f, e, s) = counts(suite.cases.iter());
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{t}\" failures=\"{f}\" errors=\"{e}\" skipped=\"{s}\">",
            xml_attr(&suite.name)
        );
        if !suite.properties.is_empty() {
            x.push_str("    <properties>\n");
            for (k, v) in &suite.properties {
                let _ = writeln!(x, "      <property name=\"{}\" value=\"{}\"/>", xml_attr(k), xml_attr(v));
            }
            x.push_str("    </properties>\n");
        }
        for c in &suite.cases {
            case(&mut x, c);
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_probe_has_one_testcase_per_check() {
        let r = crate::format::ktap::tests::probe_report();
        let x = crate::device::probe_out::junit(&r);
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
        fn junit_from_any_text_parses_back(w in proptest::collection::vec(crate::format::escape::fixtures::nasty(), 1..6)) {
            use crate::format::escape::fixtures::xml_expected;
            let s = crate::format::escape::fixtures::summary(&w);
            let x = crate::regress::results::junit(&s);
            let els = crate::format::escape::read::elements(&x).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{x}")))?;
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

            let mut r = crate::format::ktap::tests::probe_report();
            r.device = w[0].clone();
            r.clock_name = Some(w[w.len() - 1].clone());
            for (i, c) in r.checks.iter_mut().enumerate() {
                c.name = w[i % w.len()].clone();
                c.note = Some(w[(i + 1) % w.len()].clone());
            }
            let x = crate::device::probe_out::junit(&r);
            let els = crate::format::escape::read::elements(&x).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{x}")))?;
            proptest::prop_assert_eq!(els.iter().filter(|e| e.name == "testcase").count(), r.checks.len());
            let dev = els.iter().find(|e| e.attr("name") == Some("device")).and_then(|e| e.attr("value"));
            let want = xml_expected(&r.device);
            proptest::prop_assert_eq!(dev, Some(want.as_str()));
        }
    }
}
