//! Running scenarios: the engine's one loop, every backend it runs on (sim, local, QEMU), the
//! runner that writes their reports, the sim ensemble for fidelity, and the user's kernels.

pub mod backend;
pub mod batch;
pub mod engine;
pub mod ensemble;
pub mod kernel;
pub mod runner;
