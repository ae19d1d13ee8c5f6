//! Tolerances: the metrics a baseline holds, which way each is better, and the `[[tolerance]]`
//! overrides a scenario may set for them. Plain data and its validation; the baselines
//! (`regress::baseline`) and the scenario loader both read it.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Lower is better (times, offsets, ratios): moving up past the tolerance is a regression,
    /// moving down is an improvement; `null` (never) is the worst.
    Lower,
    /// No better side (a step count, the size of the disturbance): any move is a regression.
    Either,
    /// A word (`step`, `pass`) that must stay the same.
    Exact,
}

/// A metric a baseline holds.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Key in the baseline's `metrics`.
    pub name: &'static str,
    /// Which way is worse.
    pub better: Better,
}

/// The metrics of a scenario run, in the order tables show them.
pub const METRICS: &[MetricDef] = &[
    MetricDef { name: "outcome", better: Better::Exact },
    MetricDef { name: "correction", better: Better::Exact },
    MetricDef { name: "offset_after_disturbance_s", better: Better::Either },
    MetricDef { name: "time_to_first_correction_s", better: Better::Lower },
    MetricDef { name: "time_to_within_1ms_s", better: Better::Lower },
    MetricDef { name: "time_to_within_100us_s", better: Better::Lower },
    MetricDef { name: "time_to_within_1us_s", better: Better::Lower },
    MetricDef { name: "steps", better: Better::Either },
    MetricDef { name: "slew_duration_s", better: Better::Lower },
    MetricDef { name: "max_abs_offset_s", better: Better::Lower },
    MetricDef { name: "rms_after_recovery_ns", better: Better::Lower },
];

/// A tolerance a scenario sets for one baseline metric (`[[tolerance]]`): a value within
/// `abs + rel * |baseline|` of the baseline has not moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToleranceOverride {
    /// The metric (a key of a baseline's `metrics`, see `baseline::METRICS`).
    pub metric: String,
    /// Absolute tolerance, in the metric's unit.
    #[serde(default)]
    pub abs: f64,
    /// Relative tolerance, a fraction of the baseline value.
    #[serde(default)]
    pub rel: f64,
    /// Only for this backend (`sim`, `qemu`); every backend when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// Checks a scenario's `[[tolerance]]` entry.
pub fn check_override(t: &ToleranceOverride) -> Result<(), String> {
    if !METRICS.iter().any(|m| m.name == t.metric) {
        let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        return Err(format!("unknown metric `{}`; one of: {}", t.metric, names.join(", ")));
    }
    for (k, v) in [("abs", t.abs), ("rel", t.rel)] {
        if !(v.is_finite() && (0.0..=1e12).contains(&v)) {
            return Err(format!("{k} must be a finite number >= 0, got {v}"));
        }
    }
    if let Some(b) = &t.backend {
        if !["sim", "qemu", "local"].contains(&b.as_str()) {
            return Err(format!("backend must be sim, qemu or local, got `{b}`"));
        }
    }
    Ok(())
}
