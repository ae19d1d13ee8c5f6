//! A `probe` report as KTAP and JUnit XML, one test per check, through the format's own writers
//! (`format::ktap`, `format::junit`). A pass is a pass, a deviation a failure with the expected
//! and actual answers, a check not issued a skip with why. An informational row (a kernel-age or
//! device-kind limitation, reported but not judged) is a skip too, as kselftest reports a
//! feature the running kernel lacks (`KSFT_SKIP`): neither format has an informational result,
//! and a pass would claim what the probe did not judge.
#![forbid(unsafe_code)]

use super::probe::{Check, Report, Verdict};
use crate::format::{junit, ktap};

/// A check's name as a KTAP test name: `group.check`, spaces as `_` (kselftest's names have none).
pub fn ktap_name(c: &Check) -> String {
    crate::format::escape::ktap(&format!("{}.{}", c.group, c.name)).replace(' ', "_")
}

/// The report as KTAP.
pub fn ktap(r: &Report) -> String {
    let cases: Vec<ktap::Case> = r
        .checks
        .iter()
        .map(|c| {
            let name = ktap_name(c);
            let note = c.note.as_deref();
            let (outcome, diagnostics) = match c.verdict {
                Verdict::Pass => (ktap::Outcome::Pass, Vec::new()),
                Verdict::Deviation => {
                    let mut d = vec![format!("{name}: expected {}, got {}", c.expected, c.result)];
                    d.extend(note.map(|n| format!("{name}: {n}")));
                    (ktap::Outcome::Fail, d)
                }
                Verdict::Skipped => {
                    (ktap::Outcome::Skip(note.unwrap_or("not issued").to_owned()), Vec::new())
                }
                Verdict::Info => (
                    ktap::Outcome::Skip(format!("info: got {}, {}", c.result, note.unwrap_or("not judged"))),
                    Vec::new(),
                ),
            };
            ktap::Case { name, outcome, diagnostics }
        })
        .collect();
    let clock = r.clock_name.as_deref().map_or("no sysfs entry".to_owned(), |n| format!("clock_name {n}"));
    let header = [format!("phc-harness probe: {} ({clock}), driver {}", r.device, r.driver)];
    let trailer = [match &r.offset {
        Some(o) => format!(
            "offset to CLOCK_REALTIME (realtime - phc): {:+} ns +/- {} ns ({})",
            o.offset_ns, o.uncertainty_ns, o.method
        ),
        None => "offset to CLOCK_REALTIME: unavailable".to_owned(),
    }];
    ktap::write(&header, &cases, &trailer)
}

/// The report as JUnit XML: one `<testsuite>` named after the driver, one `<testcase>` per check
/// (classname `phc-harness.probe.GROUP`).
pub fn junit(r: &Report) -> String {
    let cases = r
        .checks
        .iter()
        .map(|c| {
            let note = c.note.as_deref();
            let result = match c.verdict {
                Verdict::Pass => junit::CaseResult::Pass,
                Verdict::Deviation => junit::CaseResult::Failure {
                    kind: "deviation",
                    message: format!("expected {}, got {}", c.expected, c.result),
                    text: Some(note.unwrap_or("").to_owned()),
                },
                Verdict::Skipped => {
                    junit::CaseResult::Skipped { message: note.unwrap_or("not issued").to_owned() }
                }
                Verdict::Info => junit::CaseResult::Skipped {
                    message: format!("info: got {}, {}", c.result, note.unwrap_or("not judged")),
                },
            };
            junit::Case {
                classname: format!("phc-harness.probe.{}", c.group),
                name: c.name.clone(),
                result,
                system_out: None,
            }
        })
        .collect();
    let mut properties =
        vec![("device".to_owned(), r.device.clone()), ("driver".to_owned(), r.driver.to_owned())];
    if let Some(n) = &r.clock_name {
        properties.push(("clock_name".to_owned(), n.clone()));
    }
    junit::write(&[junit::Suite { name: format!("phc-harness.probe.{}", r.driver), properties, cases }])
}
