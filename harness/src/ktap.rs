//! KTAP v1, as kselftest prints it (`KTAP version 1`, `1..N`, `ok N name`, `not ok N name`,
//! `ok N name # SKIP reason`, `# ` diagnostic lines before a result): one test per scenario
//! and backend and per sim-against-QEMU comparison. And a parser for it, so that tests (and a
//! lab that wants to) can read results back.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::suite::summary::{Outcome, Summary};

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

/// A name as KTAP allows it: no `#` (it starts a directive), no line breaks.
fn clean(name: &str) -> String {
    name.replace(['#', '\n', '\r'], "_")
}

/// The suite as KTAP.
pub fn render(s: &Summary) -> String {
    let mut k = String::new();
    let n = s.entries.len() + s.fidelity.len();
    let _ = writeln!(k, "KTAP version 1\n1..{n}");
    let _ = writeln!(k, "# phc-harness suite: backends {}", s.backends.join(","));
    let mut i = 0;
    for e in &s.entries {
        i += 1;
        for c in e.checks.iter().filter(|c| !c.pass) {
            let _ = writeln!(
                k,
                "# {}: expected {}, got {}",
                clean(&c.name),
                clean(&c.expected),
                clean(&c.actual)
            );
        }
        let name = clean(&format!("{}.{}", e.scenario, e.backend));
        let line = match e.outcome {
            Outcome::Pass => format!("ok {i} {name}"),
            Outcome::Fail => format!("not ok {i} {name}"),
            Outcome::Aborted => {
                let _ = writeln!(k, "# aborted: {}", clean(e.reason.as_deref().unwrap_or("")));
                format!("not ok {i} {name}")
            }
            Outcome::NoChecks => {
                format!("ok {i} {name} # SKIP no checks: the scenario has no [expect] entries")
            }
            Outcome::Skipped => format!("ok {i} {name} # SKIP {}", clean(e.reason.as_deref().unwrap_or(""))),
        };
        let _ = writeln!(k, "{line}");
    }
    for f in &s.fidelity {
        i += 1;
        let name = clean(&format!("{}.fidelity", f.scenario));
        let _ = writeln!(k, "{} {i} {name}", if f.agrees { "ok" } else { "not ok" });
    }
    let count = |o: Outcome| s.entries.iter().filter(|e| e.outcome == o).count();
    let _ = writeln!(
        k,
        "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
        count(Outcome::Pass) + s.fidelity.iter().filter(|f| f.agrees).count(),
        count(Outcome::Fail) + s.fidelity.iter().filter(|f| !f.agrees).count(),
        count(Outcome::Skipped) + count(Outcome::NoChecks),
        count(Outcome::Aborted)
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
mod tests {
    use super::*;

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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn the_parser_never_panics(text in "(KTAP version 1\n1[.][.][0-9]\n)?((not )?ok [0-9] [a-z# ]{0,12}\n|# [a-z]{0,8}\n|\\PC{0,20}\n){0,6}") {
            let _ = parse(&text);
        }
    }
}
