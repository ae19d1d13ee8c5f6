//! What runs inside the QEMU guest: the agent that answers the host over virtio-serial, and its
//! handle on mock-phc's CUSE server.

pub mod agent;
pub mod host_clock;
pub mod hyperv;
pub mod mock;
pub mod ntp;
