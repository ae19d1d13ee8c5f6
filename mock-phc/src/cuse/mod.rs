//! A CUSE server that puts a [`phc::PtpClock`] behind a real character device (`/dev/NAME`), so
//! unmodified clients (chronyd's `refclock PHC`, `phc-harness probe`) open and query it as a PHC.
//! It speaks the FUSE/CUSE kernel protocol on `/dev/cuse` directly; `include/uapi/linux/fuse.h`,
//! fs/fuse/cuse.c and fs/fuse/ioctl.c (`fuse_do_ioctl`) are the contract.
//!
//! The device is no POSIX dynamic clock: `clock_gettime(FD_TO_CLOCKID(fd))` on it fails (EINVAL
//! from the kernel's clock lookup), so linuxptp's `phc_open` refuses it; only the ioctls work.

mod kernel;
pub mod proto;
pub mod ptp;
pub mod server;
pub mod timing;

pub use server::{check_name, BadName, Channel, ServeError, Server, Stats};
