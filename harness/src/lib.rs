//! phc-harness: measures PTP hardware clocks as virtual machines use them. Device commands
//! (`list`, `probe`, `latency`) work on any `/dev/ptpN`; scenarios run on the simulated backend
//! (mock-phc in virtual time) or in a QEMU guest, and end in reports compared against baselines.
//!
//! The library is in wings whose imports only run down (`ci/check-layers.sh` holds them to it):
//!
//! | wing | what it owns | may import |
//! |---|---|---|
//! | [`cli`] | every clap type, one file per command | everything below |
//! | [`regress`] | suites, summaries, baselines, compare, merge | run, judge, model, format |
//! | [`run`] | the engine, every backend, the runner, the ensemble, user kernels | guest, judge, model, format |
//! | [`device`] | list, probe, latency, vmclock on a device (plain option structs) | model, format |
//! | [`guest`] | the agent inside a QEMU guest | device, format |
//! | [`judge`] | analysis, reports, fidelity, plots: pure functions of the model | model, format |
//! | [`model`] | scenarios, observations, statistics: plain data and validation | nothing |
//! | [`format`](mod@format) | escaping, KTAP and JUnit writers, stdout/stderr, exit codes, atomic files | nothing |

#[macro_use]
pub mod format;
pub mod cli;
pub mod device;
pub mod guest;
pub mod judge;
pub mod model;
pub mod regress;
pub mod run;
