//! The crate's one error type: every errno a PTP ioctl or a dynamic-clock call can return maps to
//! a named variant or to `Other`, never to a panic.

use nix::errno::Errno;

use crate::node::NodeKind;

/// What went wrong talking to a PHC.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist (ENOENT).
    #[error("no such device")]
    NotFound,
    /// The path is a directory.
    #[error("is a directory, not a PTP device")]
    IsDirectory,
    /// The device answers no PTP ioctl (ENOTTY).
    #[error("not a PTP device")]
    NotPtpDevice,
    /// The path names no PTP clock, found before anything was sent to it: not a character device,
    /// or one whose sysfs class is not `ptp`.
    #[error("not a PTP device ({0})")]
    NotPtpNode(NodeKind),
    /// The path names no vmclock device, found before it was opened or mapped: not a character
    /// device, or not the misc device `vmclockN` that sysfs lists.
    #[error("not a vmclock device ({0})")]
    NotVmclockNode(NodeKind),
    /// A vmclock page file (a test's fixture) that cannot be read: why, in a short phrase.
    #[error("vmclock page file: {0}")]
    VmclockFile(String),
    /// The driver does not implement this operation (EOPNOTSUPP).
    #[error("operation not supported by the driver")]
    NotSupported,
    /// The clock's source is too old to trust (ESTALE, hyperv after 600 s without a host sample).
    #[error("clock is stale")]
    Stale,
    /// A write operation on a descriptor opened read-only (EACCES on an ioctl or clock call).
    #[error("descriptor is read-only")]
    ReadOnly,
    /// The caller lacks the permission (EPERM, or EACCES when opening).
    #[error("permission denied")]
    PermissionDenied,
    /// The kernel rejected an argument (EINVAL).
    #[error("invalid argument")]
    InvalidArgument,
    /// The device is busy (EBUSY).
    #[error("device busy")]
    Busy,
    /// The driver timed out talking to the hardware (ETIMEDOUT).
    #[error("timed out")]
    TimedOut,
    /// The device went away (ENODEV, ENXIO): unplugged or its driver unbound.
    #[error("device is gone")]
    NoDevice,
    /// `PTP_SYS_OFFSET_EXTENDED` with a clock other than REALTIME on a kernel before 6.12.
    #[error("kernel rejects system clock {0} for PTP_SYS_OFFSET_EXTENDED (needs Linux 6.12+)")]
    ClockIdRejected(&'static str),
    /// A sysfs attribute could not be read or parsed.
    #[error("sysfs {attr}: {reason}")]
    Sysfs {
        /// Path of the attribute.
        attr: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A vmclock page (or file) shorter than `struct vmclock_abi`.
    #[error("vmclock page too short ({len} bytes)")]
    VmclockShort {
        /// Bytes available.
        len: usize,
    },
    /// The vmclock seqcount never held still (odd or changing) over this many reads.
    #[error("vmclock page never settled in {attempts} reads")]
    VmclockUnsettled {
        /// Reads tried.
        attempts: u32,
    },
    /// Any other errno.
    #[error("{0}")]
    Other(#[source] Errno),
}

/// Where an errno came from; EACCES means different things on `open` and on an ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Opening the device node.
    Open,
    /// An ioctl or dynamic-clock call on an open descriptor.
    Call,
}

impl Error {
    /// Maps an errno to its variant.
    pub fn from_errno(errno: Errno, context: Context) -> Self {
        match errno {
            Errno::ENOENT => Self::NotFound,
            Errno::EISDIR => Self::IsDirectory,
            Errno::ENOTTY => Self::NotPtpDevice,
            Errno::EOPNOTSUPP => Self::NotSupported,
            Errno::ESTALE => Self::Stale,
            Errno::EACCES if context == Context::Call => Self::ReadOnly,
            Errno::EACCES | Errno::EPERM => Self::PermissionDenied,
            Errno::EINVAL => Self::InvalidArgument,
            Errno::EBUSY => Self::Busy,
            Errno::ETIMEDOUT => Self::TimedOut,
            Errno::ENODEV | Errno::ENXIO => Self::NoDevice,
            other => Self::Other(other),
        }
    }

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        Some(match self {
            Self::NotFound => Errno::ENOENT,
            Self::IsDirectory => Errno::EISDIR,
            Self::NotPtpDevice => Errno::ENOTTY,
            // What the first PTP ioctl would have answered, had it been sent.
            Self::NotPtpNode(_) | Self::NotVmclockNode(_) => Errno::ENOTTY,
            Self::NotSupported => Errno::EOPNOTSUPP,
            Self::Stale => Errno::ESTALE,
            Self::ReadOnly => Errno::EACCES,
            Self::PermissionDenied => Errno::EPERM,
            Self::InvalidArgument => Errno::EINVAL,
            Self::Busy => Errno::EBUSY,
            Self::TimedOut => Errno::ETIMEDOUT,
            Self::NoDevice => Errno::ENODEV,
            Self::ClockIdRejected(_) => Errno::EINVAL,
            Self::Other(e) => *e,
            Self::Sysfs { .. }
            | Self::VmclockFile(_)
            | Self::VmclockShort { .. }
            | Self::VmclockUnsettled { .. } => return None,
        })
    }

    /// A short symbolic name for reports: the errno's name, or `sysfs`.
    pub fn code(&self) -> &'static str {
        match self.errno() {
            Some(e) => errno_name(e),
            None => "sysfs",
        }
    }
}

/// The errnos reports name, with their symbolic names; any other errno reads as `errno`.
const NAMED_ERRNOS: [(Errno, &str); 18] = [
    (Errno::ENOENT, "ENOENT"),
    (Errno::EISDIR, "EISDIR"),
    (Errno::ENOTTY, "ENOTTY"),
    (Errno::EOPNOTSUPP, "EOPNOTSUPP"),
    (Errno::ESTALE, "ESTALE"),
    (Errno::EACCES, "EACCES"),
    (Errno::EPERM, "EPERM"),
    (Errno::EINVAL, "EINVAL"),
    (Errno::EBUSY, "EBUSY"),
    (Errno::ETIMEDOUT, "ETIMEDOUT"),
    (Errno::ENODEV, "ENODEV"),
    (Errno::ENXIO, "ENXIO"),
    (Errno::EFAULT, "EFAULT"),
    (Errno::EIO, "EIO"),
    (Errno::EINTR, "EINTR"),
    (Errno::EAGAIN, "EAGAIN"),
    (Errno::ENOMEM, "ENOMEM"),
    (Errno::ERANGE, "ERANGE"),
];

/// The symbolic name of an errno (`EOPNOTSUPP`), as reports and expectations write it.
pub fn errno_name(errno: Errno) -> &'static str {
    NAMED_ERRNOS.iter().find(|(e, _)| *e == errno).map_or("errno", |(_, n)| n)
}

/// Every name [`errno_name`] can give for a real errno (what an expectation may name).
pub fn errno_names() -> impl Iterator<Item = &'static str> {
    NAMED_ERRNOS.iter().map(|(_, n)| *n)
}

/// Result with this crate's error.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_errnos_map_to_named_variants() {
        let cases = [
            (Errno::ENOTTY, Context::Call, "not a PTP device"),
            (Errno::EOPNOTSUPP, Context::Call, "operation not supported by the driver"),
            (Errno::ESTALE, Context::Call, "clock is stale"),
            (Errno::EACCES, Context::Call, "descriptor is read-only"),
            (Errno::EACCES, Context::Open, "permission denied"),
            (Errno::EPERM, Context::Call, "permission denied"),
            (Errno::EINVAL, Context::Call, "invalid argument"),
            (Errno::EBUSY, Context::Call, "device busy"),
            (Errno::ETIMEDOUT, Context::Call, "timed out"),
            (Errno::ENODEV, Context::Call, "device is gone"),
            (Errno::ENOENT, Context::Open, "no such device"),
        ];
        for (errno, ctx, msg) in cases {
            let e = Error::from_errno(errno, ctx);
            assert_eq!(e.to_string(), msg, "{errno:?}");
            assert!(!matches!(e, Error::Other(_)), "{errno:?} fell through to Other");
        }
    }

    #[test]
    fn every_errno_value_maps_without_panicking() {
        for raw in 0..4096 {
            let errno = Errno::from_raw(raw);
            for ctx in [Context::Open, Context::Call] {
                let e = Error::from_errno(errno, ctx);
                assert!(!e.to_string().is_empty());
                assert!(!e.code().is_empty());
            }
        }
        assert!(matches!(Error::from_errno(Errno::EMFILE, Context::Call), Error::Other(Errno::EMFILE)));
    }
}
