//! Judging what a run observed: recovery analysis and verdicts, the report, sim against QEMU
//! (fidelity, the ensemble's data), plots. Pure functions of the model: no I/O but reading a
//! report or fidelity document back.

pub mod analysis;
pub mod decimate;
pub mod distribution;
pub mod ensemble;
pub mod fidelity;
pub mod plot;
pub mod plot_latency;
pub mod report;
