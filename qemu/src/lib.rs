//! QEMU guests for phc-harness: a newc initramfs writer and guest image builder, a launcher that
//! owns QEMU's process group, a QMP client, the guest-agent protocol over virtio-serial, and the
//! per-machine choice of acceleration.

pub mod accel;
pub mod agent;
pub mod bootsnap;
pub mod client;
pub mod cpio;
pub mod error;
pub mod image;
pub mod kernel;
pub mod launcher;
pub mod nested;
pub mod pvh;
pub mod qmp;
pub mod session;
pub mod signals;
pub mod snapshot;
pub mod tmp;

pub use error::{chain, Error, Waited};
pub use kernel::KernelLine;
pub use launcher::{Accel, Guest, GuestBuilder, GuestClock};
