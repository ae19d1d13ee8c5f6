//! QEMU guests for phc-harness: a newc initramfs writer and guest image builder, a launcher that
//! owns QEMU's process group, a QMP client, and the guest-agent protocol over virtio-serial.

pub mod agent;
pub mod client;
pub mod cpio;
pub mod image;
pub mod launcher;
pub mod pvh;
pub mod qmp;
pub mod session;

pub use launcher::{Accel, Guest, GuestBuilder};

/// What can go wrong with a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be used.
    #[error("{0}: {1}")]
    Io(std::path::PathBuf, #[source] std::io::Error),
    /// QEMU could not be started.
    #[error("cannot start {0}: {1}")]
    Spawn(String, #[source] std::io::Error),
    /// QEMU exited.
    #[error("{0}")]
    QemuExited(String),
    /// A wait ran past its deadline.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// QMP failed or answered an error.
    #[error("QMP: {0}")]
    Qmp(String),
    /// The agent channel failed or carried garbage.
    #[error("agent: {0}")]
    Agent(String),
    /// The agent ran the request and reports an error.
    #[error("guest: {0}")]
    Guest(String),
    /// The guest image could not be built.
    #[error("image: {0}")]
    Image(String),
}
