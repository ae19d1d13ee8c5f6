//! KTAP v1, as kselftest prints it (`KTAP version 1`, `1..N`, `ok N name`, `not ok N name`,
//! `ok N name # SKIP reason`, `# ` diagnostic lines before a result): a writer of test lists
//! (a suite's, `regress::results`; a probe's, `device::probe_out`) and a parser, so that tests
//! (and a lab that wants to) can read results back.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::format::escape::ktap as clean;

/// The result of one test line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Result {
    /// `ok`.
    Ok,
    /// `not ok`.
    NotOk,
    /// `ok ... # SKIP reason`.
    Skip(String),
}

/// One test of a KTAP document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    /// Its number (1-based).
    pub number: usize,
    /// Its name.
    pub name: String,
    /// What came of it.
    pub result: Result,
    /// Diagnostic lines printed before it, without the `# `.
    pub diagnostics: Vec<String>,
}

/// A KTAP document that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KTAP line {line}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// How one test ended, as a writer gives it to [`write()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `ok`: counted as a pass.
    Pass,
    /// `not ok`: counted as a failure.
    Fail,
    /// `not ok`: counted as an error (the test could not run to a verdict).
    Error,
    /// `ok ... # SKIP reason`.
    Skip(String),
}

/// One test to write: its name, how it ended, and the diagnostic lines printed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The test's name (made one line without `#` here).
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Diagnostics before the result line, without the `# `.
    pub diagnostics: Vec<String>,
}

/// A flat KTAP v1 document as kselftest prints it: the version and plan, `header` as
/// diagnostics, one result line per case (its diagnostics before it), `trailer` as diagnostics,
/// and kselftest's `# Totals:` line counted from the outcomes. Every name, reason and diagnostic
/// goes through [`escape::ktap`](crate::format::escape::ktap): one line each, no directive a
/// name could forge.
pub fn write(header: &[String], cases: &[Case], trailer: &[String]) -> String {
    let mut k = String::new();
    let _ = writeln!(k, "KTAP version 1\n1..{}", cases.len());
    for h in header {
        let _ = writeln!(k, "# {}", clean(h));
    }
    for (i, c) in cases.iter().enumerate() {
        let i = i + 1;
        for d in &c.diagnostics {
            let _ = writeln!(k, "# {}", clean(d));
        }
        let name = clean(&c.name);
        let _ = match &c.outcome {
            Outcome::Pass => writeln!(k, "ok {i} {name}"),
            Outcome::Fail | Outcome::Error => writeln!(k, "not ok {i} {name}"),
            Outcome::Skip(why) => writeln!(k, "ok {i} {name} # SKIP {}", clean(why)),
        };
    }
    for t in trailer {
        let _ = writeln!(k, "# {}", clean(t));
    }
    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let _ = writeln!(
        k,
        "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
        count(|o| *o == Outcome::Pass),
        count(|o| *o == Outcome::Fail),
        count(|o| matches!(o, Outcome::Skip(_))),
        count(|o| *o == Outcome::Error)
    );
    k
}

/// Parses a flat KTAP v1 document: the version line, the plan, one result line per planned
/// test numbered from 1, `# ` diagnostics anywhere.
pub fn parse(text: &str) -> std::result::Result<Vec<Test>, ParseError> {
    let err = |line: usize, message: String| ParseError { line, message };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, "KTAP version 1")) => {}
        Some((n, l)) => return Err(err(n, format!("expected `KTAP version 1`, got `{l}`"))),
        None => return Err(err(1, "empty document".into())),
    }
    let plan: usize = match lines.next() {
        Some((n, l)) => l
            .strip_prefix("1..")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| err(n, format!("expected the plan `1..N`, got `{l}`")))?,
        None => return Err(err(2, "no plan".into())),
    };
    let mut tests = Vec::new();
    let mut diags = Vec::new();
    for (n, l) in lines {
        if let Some(d) = l.strip_prefix('#') {
            diags.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
            continue;
        }
        if l.trim().is_empty() {
            continue;
        }
        let (ok, rest) = if let Some(r) = l.strip_prefix("not ok ") {
            (false, r)
        } else if let Some(r) = l.strip_prefix("ok ") {
            (true, r)
        } else {
            return Err(err(n, format!("not a result, diagnostic or blank line: `{l}`")));
        };
        let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let number: usize = num.parse().map_err(|_| err(n, format!("`{num}` is not a test number")))?;
        if number != tests.len() + 1 {
            return Err(err(n, format!("test {number} out of order (expected {})", tests.len() + 1)));
        }
        let (name, directive) = match rest.split_once('#') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (rest.trim(), None),
        };
        let result = match (ok, directive) {
            (true, Some(d)) if d.starts_with("SKIP") => Result::Skip(d["SKIP".len()..].trim().to_owned()),
            (_, Some(d)) if !d.starts_with("TODO") => return Err(err(n, format!("unknown directive `{d}`"))),
            (true, _) => Result::Ok,
            (false, _) => Result::NotOk,
        };
        tests.push(Test { number, name: name.to_owned(), result, diagnostics: std::mem::take(&mut diags) });
    }
    if tests.len() != plan {
        return Err(err(0, format!("the plan says {plan} tests, the document has {}", tests.len())));
    }
    Ok(tests)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::regress::summary::Outcome;

    #[test]
    fn parses_what_kselftest_prints_and_refuses_what_it_does_not() {
        let doc = "KTAP version 1\n1..3\n# a diag\nok 1 a\n# why\nnot ok 2 b\nok 3 c # SKIP no kvm here\n# Totals: pass:1\n";
        let t = parse(doc).unwrap();
        assert_eq!(
            t[0],
            Test { number: 1, name: "a".into(), result: Result::Ok, diagnostics: vec!["a diag".into()] }
        );
        assert_eq!(t[1].result, Result::NotOk);
        assert_eq!(t[1].diagnostics, ["why"]);
        assert_eq!(t[2].result, Result::Skip("no kvm here".into()));
        for (bad, why) in [
            ("TAP version 13\n1..0\n", "expected `KTAP version 1`"),
            ("KTAP version 1\nok 1 a\n", "plan"),
            ("KTAP version 1\n1..2\nok 1 a\n", "plan says 2"),
            ("KTAP version 1\n1..2\nok 2 a\nok 1 b\n", "out of order"),
            ("KTAP version 1\n1..1\nfine 1 a\n", "not a result"),
            ("KTAP version 1\n1..1\nok 1 a # XFAIL\n", "unknown directive"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// A simulated hyperv probe with one row of each verdict: a deviation (with a `#` in its
    /// answer) and an informational row besides the passes and the skipped writes.
    pub(crate) fn probe_report() -> crate::device::probe::Report {
        use crate::device::probe::{run, Setup, Verdict};
        let d = phc::Driver::Hyperv;
        let dev = mock_phc::answer::simulated(d, false);
        let setup = Setup {
            device: "sim:hyperv".into(),
            driver: d,
            clock_name: Some("hyperv".into()),
            allow_writes: false,
        };
        let mut r = run(&dev, &dev, &setup).unwrap();
        r.checks[1].verdict = Verdict::Deviation;
        r.checks[1].result = "EINVAL #2".into();
        r.checks[2].verdict = Verdict::Info;
        r.checks[2].note = Some("kernel lacks the *2 ioctls".into());
        r.deviations = 1;
        r
    }

    #[test]
    fn a_probe_reads_back_one_test_per_check() {
        let r = probe_report();
        let t = parse(&crate::device::probe_out::ktap(&r)).unwrap();
        assert_eq!(t.len(), r.checks.len());
        assert_eq!(
            t[0],
            Test {
                number: 1,
                name: "caps.cross_timestamping".into(),
                result: Result::Ok,
                diagnostics: vec!["phc-harness probe: sim:hyperv (clock_name hyperv), driver hyperv".into()]
            }
        );
        assert_eq!(t[1].name, "read.SYS_OFFSET");
        assert_eq!(t[1].result, Result::NotOk);
        assert_eq!(t[1].diagnostics, ["read.SYS_OFFSET: expected ok, got EINVAL _2"]);
        assert_eq!(t[2].result, Result::Skip("info: got ok, kernel lacks the *2 ioctls".into()));
        let writes: Vec<_> = t.iter().filter(|t| t.name.starts_with("write.")).collect();
        assert_eq!(writes.len(), 3);
        assert!(writes.iter().all(|t| t.result == Result::Skip("needs --allow-clock-writes".into())));
        for (t, c) in t.iter().zip(&r.checks) {
            assert_eq!(t.name, crate::device::probe_out::ktap_name(c));
            assert!(!t.name.contains(' '), "{}", t.name);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn the_parser_never_panics(text in "(KTAP version 1\n1[.][.][0-9]\n)?((not )?ok [0-9] [a-z# ]{0,12}\n|# [a-z]{0,8}\n|\\PC{0,20}\n){0,6}") {
            let _ = parse(&text);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever the scenarios' names, reasons and checks say, the document has the lines it
        /// should (no line of data reads as a test or ends one early) and reads back test by test.
        #[test]
        fn ktap_from_any_text_has_one_line_per_result(w in proptest::collection::vec(crate::format::escape::fixtures::nasty(), 1..6)) {
            let s = crate::format::escape::fixtures::summary(&w);
            let k = crate::regress::results::ktap(&s);
            let diags: usize = s
                .entries
                .iter()
                .map(|e| e.checks.iter().filter(|c| !c.pass).count() + usize::from(e.outcome == Outcome::Aborted))
                .sum();
            let n = s.entries.len() + s.fidelity.len();
            // Version, plan, header, diagnostics, results, totals: in every reader's sense of a line.
            let lines = 4 + diags + n;
            proptest::prop_assert_eq!(k.lines().count(), lines);
            proptest::prop_assert_eq!(k.split(['\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}']).count(), lines + 1);
            let t = parse(&k).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{k}")))?;
            proptest::prop_assert_eq!(t.len(), n);
            for (t, e) in t.iter().zip(&s.entries) {
                let name = clean(&format!("{}.{}", e.scenario, e.backend));
                proptest::prop_assert_eq!(t.name.as_str(), name.trim());
                let want = match e.outcome {
                    Outcome::Pass => Result::Ok,
                    Outcome::Fail | Outcome::Aborted => Result::NotOk,
                    Outcome::NoChecks => Result::Skip("no checks: the scenario has no [expect] entries".into()),
                    Outcome::Skipped => Result::Skip(clean(e.reason.as_deref().unwrap_or("")).trim().to_owned()),
                };
                proptest::prop_assert_eq!(&t.result, &want);
            }

            let mut r = probe_report();
            r.device = w[0].clone();
            r.clock_name = Some(w[w.len() - 1].clone());
            for (i, c) in r.checks.iter_mut().enumerate() {
                c.name = w[i % w.len()].clone();
                c.note = Some(w[(i + 1) % w.len()].clone());
                c.result = w[(i + 2) % w.len()].clone();
            }
            let k = crate::device::probe_out::ktap(&r);
            let t = parse(&k).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{k}")))?;
            proptest::prop_assert_eq!(t.len(), r.checks.len());
            for (t, c) in t.iter().zip(&r.checks) {
                let name = crate::device::probe_out::ktap_name(c);
                proptest::prop_assert_eq!(t.name.as_str(), name.trim());
            }
        }
    }
}
