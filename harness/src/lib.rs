//! phc-harness: measures PTP hardware clocks as virtual machines use them. Device commands
//! (`list`, `probe`, `latency`) work on any `/dev/ptpN`; scenarios run on the simulated backend
//! (mock-phc in virtual time) or in a QEMU guest, and end in reports compared against baselines.

#[macro_use]
pub mod output;
pub mod agent;
pub mod agent_mock;
pub mod analysis;
pub mod backend;
pub mod baseline;
pub mod cli;
pub mod compare;
pub mod compare_pair;
pub mod decimate;
pub mod device;
pub mod engine;
pub mod ensemble;
pub mod escape;
pub mod exit;
pub mod fidelity;
pub mod junit;
pub mod kernel;
pub mod ktap;
pub mod local;
pub mod plot;
pub mod plot_latency;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod suite;

/// A comparison as the JSON written to `fidelity.json` and printed by `run --format json`.
pub fn fidelity_json(f: &fidelity::Fidelity) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string_pretty(f).unwrap_or_default()
}
