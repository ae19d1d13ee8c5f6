//! Backends the engine runs scenarios on: the simulator and a QEMU guest, with the pieces the
//! QEMU backend needs (the host time-sync provider, chronyd log reading).

pub mod chronylog;
pub mod local;
pub mod phc2syslog;
pub mod provider;
pub mod qemu;
pub mod sim;
