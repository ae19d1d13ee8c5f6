//! The kernel's PTP character-device UAPI (`include/uapi/linux/ptp_clock.h`): the `repr(C)`
//! structures and every ioctl request code, built with nix's request-code macros so the number
//! the golden tests pin is exactly the number the wrappers pass to the kernel.

use std::mem::size_of;

/// Most samples one `PTP_SYS_OFFSET*` call may ask for.
pub const PTP_MAX_SAMPLES: usize = 25;

/// ioctl magic of the PTP character device.
pub const PTP_CLK_MAGIC: u8 = b'=';

/// `struct ptp_clock_time`: seconds and nanoseconds, 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtpClockTime {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, 0..1e9.
    pub nsec: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

impl PtpClockTime {
    /// The time as signed nanoseconds since the clock's epoch.
    pub fn as_ns(&self) -> i64 {
        self.sec.saturating_mul(1_000_000_000).saturating_add(i64::from(self.nsec))
    }
}

/// `struct ptp_clock_caps`: 20 ints, 80 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtpClockCaps {
    /// Maximum frequency adjustment in parts per billion.
    pub max_adj: i32,
    /// Number of programmable alarms.
    pub n_alarm: i32,
    /// Number of external time stamp channels.
    pub n_ext_ts: i32,
    /// Number of programmable periodic signals.
    pub n_per_out: i32,
    /// Whether the clock supports a PPS callback.
    pub pps: i32,
    /// Number of input/output pins.
    pub n_pins: i32,
    /// Whether the clock supports precise system-device cross timestamps.
    pub cross_timestamping: i32,
    /// Whether the clock supports adjust phase.
    pub adjust_phase: i32,
    /// Maximum phase adjustment in nanoseconds.
    pub max_phase_adj: i32,
    /// Reserved.
    pub rsv: [i32; 11],
}

/// `struct ptp_sys_offset`: `n_samples` basic readings, 2n+1 timestamps (sys, phc, sys, ...).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PtpSysOffset {
    /// Number of samples wanted, 1..=25.
    pub n_samples: u32,
    /// Reserved; the kernel ignores it in both forms (ptp_chardev.c `ptp_sys_offset`).
    pub rsv: [u32; 3],
    /// Timestamps: system, PHC, system, PHC, ..., system.
    pub ts: [PtpClockTime; 2 * PTP_MAX_SAMPLES + 1],
}

impl Default for PtpSysOffset {
    fn default() -> Self {
        Self { n_samples: 0, rsv: [0; 3], ts: [PtpClockTime::default(); 2 * PTP_MAX_SAMPLES + 1] }
    }
}

/// `struct ptp_sys_offset_extended`: each sample is (system before, PHC, system after).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PtpSysOffsetExtended {
    /// Number of samples wanted, 1..=25.
    pub n_samples: u32,
    /// System clock of the samples (since 6.12; reserved and zero before).
    pub clockid: i32,
    /// Reserved; nonzero is EINVAL in both forms (they share one `case` in ptp_chardev.c).
    pub rsv: [u32; 2],
    /// Samples: [system before, PHC, system after].
    pub ts: [[PtpClockTime; 3]; PTP_MAX_SAMPLES],
}

impl Default for PtpSysOffsetExtended {
    fn default() -> Self {
        Self { n_samples: 0, clockid: 0, rsv: [0; 2], ts: [[PtpClockTime::default(); 3]; PTP_MAX_SAMPLES] }
    }
}

/// `struct ptp_sys_offset_precise`: one cross timestamp, 64 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtpSysOffsetPrecise {
    /// PHC time.
    pub device: PtpClockTime,
    /// CLOCK_REALTIME at the same instant.
    pub sys_realtime: PtpClockTime,
    /// CLOCK_MONOTONIC_RAW at the same instant.
    pub sys_monoraw: PtpClockTime,
    /// Reserved; the kernel ignores it in both forms (ptp_chardev.c `ptp_sys_offset_precise`).
    pub rsv: [u32; 4],
}

/// `struct ptp_pin_desc`, 96 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PtpPinDesc {
    /// NUL-terminated pin name.
    pub name: [u8; 64],
    /// Pin index, 0..n_pins.
    pub index: u32,
    /// Function: 0 none, 1 external timestamp, 2 periodic output, 3 physical sync.
    pub func: u32,
    /// Channel of the function.
    pub chan: u32,
    /// Reserved; the `*2` ioctl rejects nonzero values.
    pub rsv: [u32; 5],
}

impl Default for PtpPinDesc {
    fn default() -> Self {
        Self { name: [0; 64], index: 0, func: 0, chan: 0, rsv: [0; 5] }
    }
}

/// `struct ptp_extts_request`, 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PtpExttsRequest {
    /// Channel index.
    pub index: u32,
    /// `PTP_ENABLE_FEATURE` and edge flags.
    pub flags: u32,
    /// Reserved.
    pub rsv: [u32; 2],
}

/// `struct ptp_perout_request`, 56 bytes (the unions are laid out by their first member).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PtpPeroutRequest {
    /// Start time (or phase with `PTP_PEROUT_PHASE`).
    pub start: PtpClockTime,
    /// Period.
    pub period: PtpClockTime,
    /// Channel index.
    pub index: u32,
    /// Flags.
    pub flags: u32,
    /// On time (with `PTP_PEROUT_DUTY_CYCLE`) or reserved.
    pub on: PtpClockTime,
}

macro_rules! code {
    (request_code_none, $nr:expr, $ty:ty) => {
        nix::request_code_none!(PTP_CLK_MAGIC, $nr)
    };
    ($mac:ident, $nr:expr, $ty:ty) => {
        nix::$mac!(PTP_CLK_MAGIC, $nr, size_of::<$ty>())
    };
}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $mac:ident($nr:expr, $ty:ty);)*) => {
        $( $(#[$doc])* pub const $name: nix::sys::ioctl::ioctl_num_type =
            code!($mac, $nr, $ty) as nix::sys::ioctl::ioctl_num_type; )*
        /// Every request code with its name, for listing and golden tests.
        pub const ALL_CODES: &[(&str, nix::sys::ioctl::ioctl_num_type)] = &[$((stringify!($name), $name)),*];
    };
}

codes! {
    /// `PTP_CLOCK_GETCAPS`.
    PTP_CLOCK_GETCAPS = request_code_read(1, PtpClockCaps);
    /// `PTP_EXTTS_REQUEST`.
    PTP_EXTTS_REQUEST = request_code_write(2, PtpExttsRequest);
    /// `PTP_PEROUT_REQUEST`.
    PTP_PEROUT_REQUEST = request_code_write(3, PtpPeroutRequest);
    /// `PTP_ENABLE_PPS`.
    PTP_ENABLE_PPS = request_code_write(4, libc::c_int);
    /// `PTP_SYS_OFFSET`: declared `_IOW` although the kernel writes the samples back.
    PTP_SYS_OFFSET = request_code_write(5, PtpSysOffset);
    /// `PTP_PIN_GETFUNC`.
    PTP_PIN_GETFUNC = request_code_readwrite(6, PtpPinDesc);
    /// `PTP_PIN_SETFUNC`.
    PTP_PIN_SETFUNC = request_code_write(7, PtpPinDesc);
    /// `PTP_SYS_OFFSET_PRECISE`.
    PTP_SYS_OFFSET_PRECISE = request_code_readwrite(8, PtpSysOffsetPrecise);
    /// `PTP_SYS_OFFSET_EXTENDED`.
    PTP_SYS_OFFSET_EXTENDED = request_code_readwrite(9, PtpSysOffsetExtended);
    /// `PTP_CLOCK_GETCAPS2`.
    PTP_CLOCK_GETCAPS2 = request_code_read(10, PtpClockCaps);
    /// `PTP_EXTTS_REQUEST2`.
    PTP_EXTTS_REQUEST2 = request_code_write(11, PtpExttsRequest);
    /// `PTP_PEROUT_REQUEST2`.
    PTP_PEROUT_REQUEST2 = request_code_write(12, PtpPeroutRequest);
    /// `PTP_ENABLE_PPS2`.
    PTP_ENABLE_PPS2 = request_code_write(13, libc::c_int);
    /// `PTP_SYS_OFFSET2`.
    PTP_SYS_OFFSET2 = request_code_write(14, PtpSysOffset);
    /// `PTP_PIN_GETFUNC2`.
    PTP_PIN_GETFUNC2 = request_code_readwrite(15, PtpPinDesc);
    /// `PTP_PIN_SETFUNC2`.
    PTP_PIN_SETFUNC2 = request_code_write(16, PtpPinDesc);
    /// `PTP_SYS_OFFSET_PRECISE2`.
    PTP_SYS_OFFSET_PRECISE2 = request_code_readwrite(17, PtpSysOffsetPrecise);
    /// `PTP_SYS_OFFSET_EXTENDED2`.
    PTP_SYS_OFFSET_EXTENDED2 = request_code_readwrite(18, PtpSysOffsetExtended);
    /// `PTP_MASK_CLEAR_ALL` (`_IO`, no argument).
    PTP_MASK_CLEAR_ALL = request_code_none(19, ());
    /// `PTP_MASK_EN_SINGLE`.
    PTP_MASK_EN_SINGLE = request_code_write(20, libc::c_uint);
    /// `PTP_SYS_OFFSET_PRECISE_CYCLES`.
    PTP_SYS_OFFSET_PRECISE_CYCLES = request_code_readwrite(21, PtpSysOffsetPrecise);
    /// `PTP_SYS_OFFSET_EXTENDED_CYCLES`.
    PTP_SYS_OFFSET_EXTENDED_CYCLES = request_code_readwrite(22, PtpSysOffsetExtended);
}

nix::ioctl_read_bad!(
    /// `PTP_CLOCK_GETCAPS`.
    getcaps, PTP_CLOCK_GETCAPS, PtpClockCaps);
nix::ioctl_read_bad!(
    /// `PTP_CLOCK_GETCAPS2`.
    getcaps2, PTP_CLOCK_GETCAPS2, PtpClockCaps);
nix::ioctl_write_ptr_bad!(
    /// `PTP_SYS_OFFSET`; the kernel writes the samples through the pointer.
    sys_offset, PTP_SYS_OFFSET, PtpSysOffset);
nix::ioctl_write_ptr_bad!(
    /// `PTP_SYS_OFFSET2`; the kernel writes the samples through the pointer.
    sys_offset2, PTP_SYS_OFFSET2, PtpSysOffset);
nix::ioctl_readwrite_bad!(
    /// `PTP_SYS_OFFSET_EXTENDED`.
    sys_offset_extended, PTP_SYS_OFFSET_EXTENDED, PtpSysOffsetExtended);
nix::ioctl_readwrite_bad!(
    /// `PTP_SYS_OFFSET_EXTENDED2`.
    sys_offset_extended2, PTP_SYS_OFFSET_EXTENDED2, PtpSysOffsetExtended);
nix::ioctl_readwrite_bad!(
    /// `PTP_SYS_OFFSET_PRECISE`.
    sys_offset_precise, PTP_SYS_OFFSET_PRECISE, PtpSysOffsetPrecise);
nix::ioctl_readwrite_bad!(
    /// `PTP_SYS_OFFSET_PRECISE2`.
    sys_offset_precise2, PTP_SYS_OFFSET_PRECISE2, PtpSysOffsetPrecise);
nix::ioctl_readwrite_bad!(
    /// `PTP_PIN_GETFUNC`.
    pin_getfunc, PTP_PIN_GETFUNC, PtpPinDesc);
nix::ioctl_readwrite_bad!(
    /// `PTP_PIN_GETFUNC2`.
    pin_getfunc2, PTP_PIN_GETFUNC2, PtpPinDesc);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(size_of::<PtpClockTime>(), 16);
        assert_eq!(size_of::<PtpSysOffset>(), 832);
        assert_eq!(size_of::<PtpSysOffsetExtended>(), 1216);
        assert_eq!(size_of::<PtpSysOffsetPrecise>(), 64);
        assert_eq!(size_of::<PtpClockCaps>(), 80);
        assert_eq!(size_of::<PtpPinDesc>(), 96);
        assert_eq!(size_of::<PtpExttsRequest>(), 16);
        assert_eq!(size_of::<PtpPeroutRequest>(), 56);
    }

    /// Codes 1..=18 as printed by a C program including Debian's <linux/ptp_clock.h> (6.1 headers)
    /// on x86_64; 19..=22 postdate those headers and follow the same `_IO*` layout.
    #[test]
    fn request_codes_match_the_kernel() {
        let golden: &[(&str, u32)] = &[
            ("PTP_CLOCK_GETCAPS", 0x8050_3d01),
            ("PTP_EXTTS_REQUEST", 0x4010_3d02),
            ("PTP_PEROUT_REQUEST", 0x4038_3d03),
            ("PTP_ENABLE_PPS", 0x4004_3d04),
            ("PTP_SYS_OFFSET", 0x4340_3d05),
            ("PTP_PIN_GETFUNC", 0xc060_3d06),
            ("PTP_PIN_SETFUNC", 0x4060_3d07),
            ("PTP_SYS_OFFSET_PRECISE", 0xc040_3d08),
            ("PTP_SYS_OFFSET_EXTENDED", 0xc4c0_3d09),
            ("PTP_CLOCK_GETCAPS2", 0x8050_3d0a),
            ("PTP_EXTTS_REQUEST2", 0x4010_3d0b),
            ("PTP_PEROUT_REQUEST2", 0x4038_3d0c),
            ("PTP_ENABLE_PPS2", 0x4004_3d0d),
            ("PTP_SYS_OFFSET2", 0x4340_3d0e),
            ("PTP_PIN_GETFUNC2", 0xc060_3d0f),
            ("PTP_PIN_SETFUNC2", 0x4060_3d10),
            ("PTP_SYS_OFFSET_PRECISE2", 0xc040_3d11),
            ("PTP_SYS_OFFSET_EXTENDED2", 0xc4c0_3d12),
            ("PTP_MASK_CLEAR_ALL", 0x0000_3d13),
            ("PTP_MASK_EN_SINGLE", 0x4004_3d14),
            ("PTP_SYS_OFFSET_PRECISE_CYCLES", 0xc040_3d15),
            ("PTP_SYS_OFFSET_EXTENDED_CYCLES", 0xc4c0_3d16),
        ];
        assert_eq!(ALL_CODES.len(), golden.len());
        for ((name, code), (gname, gcode)) in ALL_CODES.iter().zip(golden) {
            assert_eq!(name, gname);
            assert_eq!(*code as u32, *gcode, "{name}: {:#x} != {gcode:#x}", *code as u32);
        }
    }
}
