//! mock-phc: a deterministic, virtual-time simulation of a VM guest that takes time from its host
//! through a PTP hardware clock, with the daemons that discipline the guest clock. The simulation
//! is pure logic: time is passed in, nothing reads a real clock. [`answer`] is the exception: the
//! driver personalities answering PHC requests in real time, for `probe`/`latency` without a
//! device and for the CUSE device.
#![forbid(unsafe_code)]

pub mod answer;
mod clock;
pub mod config;
pub mod discipline;
pub mod disturbance;
mod error;
pub mod event;
mod noise;
mod personality;
pub mod time;
mod world;

pub use config::{LatencyConfig, OscillatorConfig, PhcConfig, WorldConfig};
pub use discipline::{ChronyConfig, DisciplineConfig, HvUtilsConfig, NtpdConfig, Phc2sysConfig};
pub use disturbance::Disturbance;
pub use error::Error;
pub use event::{Event, EventKind};
pub use world::{ReadMethod, World, SYNC_DELIVERY_NS};
