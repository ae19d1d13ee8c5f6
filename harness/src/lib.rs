//! phc-harness: measures PTP hardware clocks as virtual machines use them. Device commands
//! (`list`, `probe`, `latency`) work on any `/dev/ptpN`; scenarios run on the simulated backend
//! (mock-phc in virtual time) or in a QEMU guest, and end in reports compared against baselines.

pub mod agent;
pub mod analysis;
pub mod backend;
pub mod device;
pub mod engine;
pub mod fidelity;
pub mod guestcmd;
pub mod plot;
pub mod report;
pub mod runcmd;
pub mod scenario;
pub mod stats;
