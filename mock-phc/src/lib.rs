//! mock-phc: a deterministic, virtual-time simulation of a VM guest that takes time from its host
//! through a PTP hardware clock, with the daemons that discipline the guest clock. The simulation is
//! pure logic: time is passed in, nothing reads a real clock. Beside it, [`answer`] has the driver
//! personalities answering PHC requests in real time (for `probe`/`latency --backend sim`, and the
//! hyperv clock fed with host samples), and [`cuse`] the server that puts such a clock behind a
//! real character device (the `mock-phc` binary). No unsafe code anywhere.
#![forbid(unsafe_code)]

pub mod answer;
mod clock;
pub mod config;
pub mod cuse;
pub mod discipline;
pub mod disturbance;
mod error;
pub mod event;
pub mod live;
mod noise;
pub mod ntp_server;
mod personality;
pub mod time;
mod world;

pub use config::{LatencyConfig, OscillatorConfig, PhcConfig, WorldConfig};
pub use discipline::{
    ChronyConfig, ChronyPrefer, ChronyServerConfig, DisciplineConfig, HvUtilsConfig, NtpdConfig,
    Phc2sysConfig, TimesyncdConfig,
};
pub use disturbance::Disturbance;
pub use error::Error;
pub use event::{Event, EventKind};
pub use noise::WanderPath;
pub use ntp_server::{NtpAnswer, NtpServerConfig};
pub use world::{ReadMethod, World, SYNC_DELIVERY_NS};
