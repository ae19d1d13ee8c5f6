//! The suite's `summary.json`: one entry per scenario and backend (verdict, checks, recovery
//! metrics, the facts a comparison needs), written deterministically so that a sim suite gives
//! byte-identical summaries for the same seeds, whether run whole or in shards and merged.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::judge::analysis::{Check, Recovery};
use crate::judge::report::Report;
use crate::model::tolerance::ToleranceOverride;

/// Version of the summary format; bumped only on incompatible changes.
pub const FORMAT: u32 = 1;

/// Largest `summary.json` read. A sim suite of the built-in scenarios writes about 40 KiB (a
/// few KiB per entry: checks, recovery, environment); 64 MiB is room for suites of thousands of
/// scenarios on several backends, and bounds what a forged file can make the reader hold.
pub const MAX_SUMMARY_BYTES: u64 = 64 << 20;

/// Most shards a suite may be split into (`--shard I/N`, and what a summary may claim): far
/// more than there are scenarios, and small enough that nothing sized by it can grow unbounded.
pub const MAX_SHARDS: usize = 4096;

/// The outcome of one scenario on one backend, as a suite counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// A check failed.
    Fail,
    /// The scenario has no checks: nothing judged, never a pass.
    NoChecks,
    /// The run did not finish.
    Aborted,
    /// The backend cannot run this scenario (the reason says why).
    Skipped,
}

impl Outcome {
    /// The word reports print.
    pub fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NoChecks => "NO CHECKS",
            Self::Aborted => "ABORTED",
            Self::Skipped => "SKIPPED",
        }
    }

    /// Whether this outcome fails a suite.
    pub fn fails(self) -> bool {
        matches!(self, Self::Fail | Self::Aborted)
    }

    /// The JSON key (`pass`, `no_checks`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::NoChecks => "no_checks",
            Self::Aborted => "aborted",
            Self::Skipped => "skipped",
        }
    }
}

impl From<crate::judge::report::Verdict> for Outcome {
    fn from(v: crate::judge::report::Verdict) -> Self {
        use crate::judge::report::Verdict as V;
        match v {
            V::Pass => Self::Pass,
            V::Fail => Self::Fail,
            V::NoChecks => Self::NoChecks,
            V::Aborted => Self::Aborted,
        }
    }
}

/// One scenario on one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Scenario name.
    pub scenario: String,
    /// Backend (`sim`, `qemu`).
    pub backend: String,
    /// The world's seed.
    pub seed: u64,
    /// What came of it.
    pub outcome: Outcome,
    /// Why it was skipped or aborted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The report folder, relative to the suite folder (absent when skipped).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dir: Option<String>,
    /// Each check with its result.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Recovery metrics (absent when skipped).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recovery: Option<Recovery>,
    /// What the run ran on (QEMU: accel, clock, kernel, QEMU version, CPU model, command line).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub environment: BTreeMap<String, serde_json::Value>,
    /// The scenario's own tolerances for baseline comparisons (`[tolerance.*]`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tolerance: Vec<ToleranceOverride>,
    /// The observation interval, seconds (the report's): the resolution of its times.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_s: Option<f64>,
}

/// A sim-against-QEMU comparison of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityEntry {
    /// Scenario name.
    pub scenario: String,
    /// Whether every judged row agreed.
    pub agrees: bool,
    /// The folder with fidelity.md and fidelity.json, relative to the suite folder.
    pub dir: String,
    /// The seed, when it is one of a scenario's repeated runs (`suite --repeat`): shown, not
    /// judged (its scenario's distribution is).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<u64>,
}

/// The distribution of a scenario's repeated runs (`suite --repeat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionEntry {
    /// Scenario name.
    pub scenario: String,
    /// Whether the real runs agreed with the sim's on distributions (absent: one backend).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub agrees: Option<bool>,
    /// k/N: the real runs inside on every judged row, of all real runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub inside: Option<String>,
    /// The folder with distribution.md and distribution.json, relative to the suite folder.
    pub dir: String,
}

/// Which part of a suite a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based index.
    pub index: usize,
    /// How many shards in all.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("`{s}`: expected I/N, e.g. 1/3"))?;
        let index: usize = i.trim().parse().map_err(|_| format!("`{s}`: I is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| format!("`{s}`: N is not a number"))?;
        let shard = Self { index, count };
        shard.check().map_err(|why| format!("`{s}`: {why}"))?;
        Ok(shard)
    }
}

impl Shard {
    /// Checks `1 <= index <= count <= MAX_SHARDS`.
    pub fn check(self) -> Result<(), String> {
        if self.count == 0 || self.index == 0 || self.index > self.count {
            return Err("needs 1 <= I <= N".into());
        }
        if self.count > MAX_SHARDS {
            return Err(format!("at most {MAX_SHARDS} shards"));
        }
        Ok(())
    }

    /// Whether the `k`-th scenario (0-based, in name order) belongs to this shard.
    pub fn holds(self, k: usize) -> bool {
        k % self.count == self.index - 1
    }
}

/// The whole suite run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Backends, in the order they ran.
    pub backends: Vec<String>,
    /// `--filter`, when one was given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<String>,
    /// The shard this run covers; absent for a whole (or merged) suite.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shard: Option<Shard>,
    /// Scenarios the filter selected, before sharding.
    pub selected: usize,
    /// Outcome key to count.
    pub totals: BTreeMap<String, usize>,
    /// `pass` when nothing failed or aborted (and sim and QEMU agreed), else `fail`.
    pub verdict: String,
    /// One per scenario and backend, in scenario-name order, backends in run order.
    pub entries: Vec<Entry>,
    /// One per scenario that ran on both sim and QEMU (with repeats, one per seed).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fidelity: Vec<FidelityEntry>,
    /// With repeats (`suite --repeat`): one per scenario.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub distributions: Vec<DistributionEntry>,
}

impl Summary {
    /// Builds a summary from its entries, counting totals and the verdict.
    pub fn new(
        backends: Vec<String>,
        filter: Option<String>,
        shard: Option<Shard>,
        selected: usize,
        entries: Vec<Entry>,
        fidelity: Vec<FidelityEntry>,
    ) -> Self {
        let mut totals: BTreeMap<String, usize> =
            [Outcome::Pass, Outcome::Fail, Outcome::NoChecks, Outcome::Aborted, Outcome::Skipped]
                .iter()
                .map(|o| (o.key().to_owned(), 0))
                .collect();
        for e in &entries {
            *totals.entry(e.outcome.key().to_owned()).or_insert(0) += 1;
        }
        let mut s = Self {
            format: FORMAT,
            backends,
            filter,
            shard,
            selected,
            totals,
            verdict: String::new(),
            entries,
            fidelity,
            distributions: Vec::new(),
        };
        s.verdict = s.judged().into();
        s
    }

    /// The summary with the distributions of repeated runs, which then judge in place of each
    /// seed's comparison.
    pub fn with_distributions(mut self, distributions: Vec<DistributionEntry>) -> Self {
        self.distributions = distributions;
        self.verdict = self.judged().into();
        self
    }

    /// `fail` when a run failed or aborted, a single run's comparison disagreed, or a
    /// distribution disagreed; else `pass`.
    fn judged(&self) -> &'static str {
        let failed = self.entries.iter().any(|e| e.outcome.fails())
            || self.fidelity.iter().any(|f| f.seed.is_none() && !f.agrees)
            || self.distributions.iter().any(|d| d.agrees == Some(false));
        if failed {
            "fail"
        } else {
            "pass"
        }
    }

    /// Whether the suite failed (exit 1).
    pub fn failed(&self) -> bool {
        self.verdict != "pass"
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Reads `DIR/summary.json` (a regular file, not a symlink, at most [`MAX_SUMMARY_BYTES`])
    /// and checks what later becomes a path or a loop bound: every scenario, backend and report
    /// folder is a plain name ([`phc::input::check_name`]), no folder is listed twice, and the
    /// shard is `1 <= I <= N <= MAX_SHARDS`. A summary that fails is refused whole, before
    /// anything is read through it, written or removed.
    pub fn load(dir: &Path) -> Result<Self, super::SuiteError> {
        let path = dir.join("summary.json");
        let text = phc::input::read_text(&path, MAX_SUMMARY_BYTES, phc::input::Links::Refuse)
            .map_err(|source| super::SuiteError::Io { path: path.clone(), source })?;
        let s: Self = serde_json::from_str(&text)
            .map_err(|e| super::SuiteError::Malformed { path: path.clone(), message: e.to_string() })?;
        let bad = |message: String| Err(super::SuiteError::Malformed { path: path.clone(), message });
        if s.format != FORMAT {
            return bad(format!("format {} (this phc-harness reads format {FORMAT})", s.format));
        }
        if let Some(sh) = s.shard {
            if let Err(why) = sh.check() {
                return bad(format!("shard {}/{}: {why}", sh.index, sh.count));
            }
        }
        for b in &s.backends {
            if let Err(why) = phc::input::check_name(b) {
                return bad(format!("backend: {why}"));
            }
        }
        let mut dirs = std::collections::BTreeSet::new();
        for (k, e) in s.entries.iter().enumerate() {
            for (what, name) in [("scenario", &e.scenario), ("backend", &e.backend)] {
                if let Err(why) = phc::input::check_name(name) {
                    return bad(format!("entries[{k}].{what}: {why}"));
                }
            }
            if let Some(d) = &e.dir {
                if let Err(why) = phc::input::check_name(d) {
                    return bad(format!("entries[{k}].dir: {why}"));
                }
                if !dirs.insert(d.as_str()) {
                    return bad(format!("entries[{k}].dir: {d:?} is listed twice"));
                }
            }
        }
        // Comparison and distribution folders: plain names, each listed once with the reports'.
        let listed = s.fidelity.iter().enumerate().map(|(k, f)| ("fidelity", k, &f.scenario, &f.dir));
        let listed = listed.chain(
            s.distributions.iter().enumerate().map(|(k, d)| ("distributions", k, &d.scenario, &d.dir)),
        );
        for (what, k, scenario, dir) in listed {
            if let Err(why) = phc::input::check_name(scenario) {
                return bad(format!("{what}[{k}].scenario: {why}"));
            }
            if let Err(why) = phc::input::check_name(dir) {
                return bad(format!("{what}[{k}].dir: {why}"));
            }
            if !dirs.insert(dir.as_str()) {
                return bad(format!("{what}[{k}].dir: {dir:?} is listed twice"));
            }
        }
        Ok(s)
    }

    /// The report and fidelity folders the summary lists, relative to its suite folder (each a
    /// plain name once [`Summary::load`] accepted it).
    pub fn folders(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|e| e.dir.as_deref())
            .chain(self.fidelity.iter().map(|f| f.dir.as_str()))
            .chain(self.distributions.iter().map(|d| d.dir.as_str()))
            .collect()
    }
}

/// Environment keys that say what a run ran on, for the same-host rule.
pub const HOST_KEYS: &[&str] = &[
    "kind",
    "accel",
    "clock",
    "kernel_release",
    "qemu_version",
    "cpu_model",
    "guest_cmdline",
    "driver",
    "device",
    "guest_phc",
];

fn environment(r: &Report) -> std::collections::BTreeMap<String, serde_json::Value> {
    r.backend_info
        .iter()
        .filter(|(k, _)| HOST_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The summary entry of a report written to `dir` (inside the suite folder `root`).
pub fn entry_from_report(
    r: &Report,
    dir: &Path,
    root: &Path,
    tolerance: Vec<crate::model::tolerance::ToleranceOverride>,
) -> Entry {
    Entry {
        scenario: r.scenario.clone(),
        backend: r.backend.clone(),
        seed: r.seed,
        outcome: r.verdict.into(),
        reason: r.abort_reason.clone(),
        dir: Some(dir.strip_prefix(root).unwrap_or(dir).to_string_lossy().into_owned()),
        checks: r.checks.clone(),
        recovery: Some(r.recovery.clone()),
        environment: environment(r),
        tolerance,
        interval_s: r.interval_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_round_robin() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 3 });
        assert_eq!((0..7).filter(|&k| s.holds(k)).collect::<Vec<_>>(), [1, 4]);
        for bad in ["0/3", "4/3", "1/0", "x/2", "3", "1/y", "1/18446744073709551615", "1/4097"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every index lands in exactly one shard.
        for n in 1..6 {
            for k in 0..20 {
                let owners = (1..=n).filter(|&i| Shard { index: i, count: n }.holds(k)).count();
                assert_eq!(owners, 1);
            }
        }
    }
}
