//! What a `latency` run gives: per method its round trips and kernel windows as distributions,
//! against the `clock_gettime` baseline measured in the same run. Plain data, written as JSON
//! (JSON.md) and as text (`latency_text`).
#![forbid(unsafe_code)]

use serde::Serialize;

use crate::model::stats::Summary;

/// The result for one method (JSON keys in JSON.md).
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// `basic`, `extended`, `precise`, `gettime`, or `clock_gettime` for the baseline.
    pub method: &'static str,
    /// The system clock of an EXTENDED method (or the baseline's `monotonic`); null otherwise.
    pub clock: Option<&'static str>,
    /// `ok`, `unsupported` or `error`.
    pub status: &'static str,
    /// The errno name when not ok.
    pub error: Option<&'static str>,
    /// Why, where the errno alone would mislead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Round trip of the call, CLOCK_MONOTONIC_RAW before to after.
    pub round_trip_ns: Option<Summary>,
    /// The kernel-reported window (t2 - t1; the shortest of the call's readings); null for
    /// methods without one (precise, gettime, the baseline).
    pub window_ns: Option<Summary>,
    /// Round-trip p50 over the baseline's round-trip p50.
    pub ratio_p50_to_baseline: Option<f64>,
}

/// The `latency` report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The path measured.
    pub device: String,
    /// The driver sysfs names; null for a device without a sysfs entry.
    pub driver: Option<&'static str>,
    /// Samples per method.
    pub samples: usize,
    /// Readings per SYS_OFFSET / EXTENDED call.
    pub n_per_call: u32,
    /// `clock_gettime(CLOCK_MONOTONIC)`, timed the same way.
    pub baseline: MethodResult,
    /// Every selected method.
    pub methods: Vec<MethodResult>,
}
