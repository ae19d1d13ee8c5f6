//! The suite's results as KTAP (`results.ktap`, stdout) and JUnit XML (`junit.xml`): one test
//! per scenario and backend and one per sim-against-QEMU comparison, written by the format's
//! own writers (`format::ktap`, `format::junit`).
#![forbid(unsafe_code)]

use super::summary::{Entry, Outcome, Summary};
use crate::format::{junit, ktap};

/// A failed check as one line.
fn failed(c: &crate::judge::analysis::Check) -> String {
    format!("{}: expected {}, got {}", c.name, c.expected, c.actual)
}

/// The suite as KTAP: failed checks (and an abort's reason) as diagnostics before their test,
/// a scenario without checks and a skipped run as `# SKIP`.
pub fn ktap(s: &Summary) -> String {
    let mut cases: Vec<ktap::Case> = s
        .entries
        .iter()
        .map(|e| {
            let mut diagnostics: Vec<String> = e.checks.iter().filter(|c| !c.pass).map(failed).collect();
            let outcome = match e.outcome {
                Outcome::Pass => ktap::Outcome::Pass,
                Outcome::Fail => ktap::Outcome::Fail,
                Outcome::Aborted => {
                    diagnostics.push(format!("aborted: {}", e.reason.as_deref().unwrap_or("")));
                    ktap::Outcome::Error
                }
                Outcome::NoChecks => {
                    ktap::Outcome::Skip("no checks: the scenario has no [expect] entries".into())
                }
                Outcome::Skipped => ktap::Outcome::Skip(e.reason.clone().unwrap_or_default()),
            };
            ktap::Case { name: format!("{}.{}", e.scenario, e.backend), outcome, diagnostics }
        })
        .collect();
    // One of repeated runs' comparisons is not a case: its scenario's distribution is.
    cases.extend(s.fidelity.iter().filter(|f| f.seed.is_none()).map(|f| ktap::Case {
        name: format!("{}.fidelity", f.scenario),
        outcome: if f.agrees { ktap::Outcome::Pass } else { ktap::Outcome::Fail },
        diagnostics: Vec::new(),
    }));
    cases.extend(s.distributions.iter().filter_map(|d| {
        Some(ktap::Case {
            name: format!("{}.distribution", d.scenario),
            outcome: if d.agrees? { ktap::Outcome::Pass } else { ktap::Outcome::Fail },
            diagnostics: d.inside.iter().map(|k| format!("real runs inside: {k}")).collect(),
        })
    }));
    ktap::write(&[format!("phc-harness suite: backends {}", s.backends.join(","))], &cases, &[])
}

fn junit_case(suite: &str, e: &Entry) -> junit::Case {
    let all: Vec<String> =
        e.checks.iter().map(|c| format!("{} {}", if c.pass { "ok  " } else { "FAIL" }, failed(c))).collect();
    let result = match e.outcome {
        Outcome::Pass => junit::CaseResult::Pass,
        Outcome::Fail => {
            let f: Vec<String> = e.checks.iter().filter(|c| !c.pass).map(failed).collect();
            junit::CaseResult::Failure {
                kind: "verdict",
                message: format!("{} of {} checks failed", f.len(), e.checks.len()),
                text: Some(f.join("\n")),
            }
        }
        Outcome::Aborted => junit::CaseResult::Error {
            kind: "aborted",
            message: e.reason.clone().unwrap_or_else(|| "aborted".into()),
        },
        Outcome::NoChecks => {
            junit::CaseResult::Skipped { message: "no checks: the scenario has no [expect] entries".into() }
        }
        Outcome::Skipped => {
            junit::CaseResult::Skipped { message: e.reason.clone().unwrap_or_else(|| "skipped".into()) }
        }
    };
    junit::Case {
        classname: suite.to_owned(),
        name: e.scenario.clone(),
        result,
        system_out: (!all.is_empty()).then(|| all.join("\n")),
    }
}

/// The suite as JUnit XML: one `<testsuite>` per backend with one `<testcase>` per scenario,
/// failed checks in the `<failure>`, aborted runs as `<error>`, skips and scenarios without
/// checks as `<skipped>` with their reason; comparisons in a `fidelity` suite.
pub fn junit(s: &Summary) -> String {
    let mut suites: Vec<junit::Suite> = s
        .backends
        .iter()
        .map(|b| {
            let name = format!("phc-harness.{b}");
            let cases = s.entries.iter().filter(|e| &e.backend == b).map(|e| junit_case(&name, e)).collect();
            junit::Suite { name, properties: Vec::new(), cases }
        })
        .collect();
    // One of repeated runs' comparisons is not a case: its scenario's distribution is.
    let single: Vec<_> = s.fidelity.iter().filter(|f| f.seed.is_none()).collect();
    if !single.is_empty() {
        let name = "phc-harness.fidelity".to_owned();
        let cases = single
            .iter()
            .map(|f| junit::Case {
                classname: name.clone(),
                name: f.scenario.clone(),
                result: if f.agrees {
                    junit::CaseResult::Pass
                } else {
                    junit::CaseResult::Failure {
                        kind: "fidelity",
                        message: format!("sim and QEMU disagree (see {}/fidelity.md)", f.dir),
                        text: None,
                    }
                },
                system_out: None,
            })
            .collect();
        suites.push(junit::Suite { name, properties: Vec::new(), cases });
    }
    let judged: Vec<_> = s.distributions.iter().filter_map(|d| Some((d, d.agrees?))).collect();
    if !judged.is_empty() {
        let name = "phc-harness.distribution".to_owned();
        let cases = judged
            .iter()
            .map(|(d, agrees)| junit::Case {
                classname: name.clone(),
                name: d.scenario.clone(),
                result: if *agrees {
                    junit::CaseResult::Pass
                } else {
                    junit::CaseResult::Failure {
                        kind: "fidelity",
                        message: format!(
                            "sim and QEMU disagree on distributions, real runs inside {} (see {}/distribution.md)",
                            d.inside.as_deref().unwrap_or("-"),
                            d.dir
                        ),
                        text: None,
                    }
                },
                system_out: None,
            })
            .collect();
        suites.push(junit::Suite { name, properties: Vec::new(), cases });
    }
    junit::write(&suites)
}
