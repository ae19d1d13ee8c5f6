//! The RTC's second boundary (`/dev/rtc0`, update interrupts): under QEMU with `-rtc clock=vm`
//! the RTC follows the guest's virtual clock, so the instant its seconds change is a point the
//! host and the guest both know exactly, across a reboot that resets every other clock.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;

use crate::error::{Context, Error, Result};

/// `struct rtc_time` of linux/rtc.h (the fields of `struct tm`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcTime {
    /// Seconds, 0..=59.
    pub tm_sec: libc::c_int,
    /// Minutes.
    pub tm_min: libc::c_int,
    /// Hours.
    pub tm_hour: libc::c_int,
    /// Day of the month, 1..=31.
    pub tm_mday: libc::c_int,
    /// Month, 0..=11.
    pub tm_mon: libc::c_int,
    /// Years since 1900.
    pub tm_year: libc::c_int,
    /// Unused.
    pub tm_wday: libc::c_int,
    /// Unused.
    pub tm_yday: libc::c_int,
    /// Unused.
    pub tm_isdst: libc::c_int,
}

mod ioctl {
    #![allow(missing_docs)]
    nix::ioctl_none!(rtc_uie_on, b'p', 0x03);
    nix::ioctl_none!(rtc_uie_off, b'p', 0x04);
    nix::ioctl_read!(rtc_rd_time, b'p', 0x09, super::RtcTime);
}
use ioctl::{rtc_rd_time, rtc_uie_off, rtc_uie_on};

impl RtcTime {
    /// Seconds since the epoch, the RTC taken as UTC (as the kernel's rtc_hctosys does).
    pub fn unix_s(&self) -> i64 {
        // Days from civil (Howard Hinnant's algorithm), for the proleptic Gregorian calendar.
        let (y, m, d) = (i64::from(self.tm_year) + 1900, i64::from(self.tm_mon) + 1, i64::from(self.tm_mday));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + i64::from(self.tm_hour) * 3600 + i64::from(self.tm_min) * 60 + i64::from(self.tm_sec)
    }
}

/// An open RTC.
pub struct Rtc {
    fd: OwnedFd,
}

impl Rtc {
    /// Opens an RTC device read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let f =
            OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY).open(path).map_err(
                |e| Error::from_errno(Errno::from_raw(e.raw_os_error().unwrap_or(0)), Context::Open),
            )?;
        Ok(Self { fd: f.into() })
    }

    /// Blocks until the RTC's seconds next change, and returns the new time, whole seconds since
    /// the epoch. `after` runs right at the boundary, before the RTC is read, for the caller to
    /// take its own clocks as close to it as it can.
    pub fn next_second<T>(&self, after: impl FnOnce() -> T) -> Result<(i64, T)> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: `fd` is an open RTC descriptor owned by `self`; RTC_UIE_ON takes no argument.
        unsafe { rtc_uie_on(fd) }.map_err(|e| Error::from_errno(e, Context::Call))?;
        let mut word = [0u8; std::mem::size_of::<libc::c_ulong>()];
        let read = nix::unistd::read(&self.fd, &mut word);
        let t = after();
        // SAFETY: as above; RTC_UIE_OFF takes no argument.
        let _ = unsafe { rtc_uie_off(fd) };
        read.map_err(|e| Error::from_errno(e, Context::Call))?;
        let mut tm = RtcTime::default();
        // SAFETY: `tm` is a valid, writable `struct rtc_time` for the duration of the call.
        unsafe { rtc_rd_time(fd, &mut tm) }.map_err(|e| Error::from_errno(e, Context::Call))?;
        Ok((tm.unix_s(), t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_to_unix_seconds() {
        let t = |y, mo, d, h, mi, s| RtcTime {
            tm_year: y - 1900,
            tm_mon: mo - 1,
            tm_mday: d,
            tm_hour: h,
            tm_min: mi,
            tm_sec: s,
            ..Default::default()
        };
        assert_eq!(t(1970, 1, 1, 0, 0, 0).unix_s(), 0);
        assert_eq!(t(2026, 1, 1, 0, 0, 0).unix_s(), 1_767_225_600);
        assert_eq!(t(2000, 2, 29, 12, 0, 1).unix_s(), 951_825_601);
        assert_eq!(t(2100, 1, 1, 0, 0, 0).unix_s(), 4_102_444_800);
    }

    #[test]
    fn ioctl_numbers_are_linux_rtc_h() {
        // _IO('p', 3), _IO('p', 4), _IOR('p', 9, struct rtc_time) with its 36 bytes.
        assert_eq!(nix::request_code_none!(b'p', 0x03), 0x7003);
        assert_eq!(nix::request_code_none!(b'p', 0x04), 0x7004);
        assert_eq!(std::mem::size_of::<RtcTime>(), 36);
        assert_eq!(nix::request_code_read!(b'p', 0x09, std::mem::size_of::<RtcTime>()), 0x8024_7009);
    }
}
