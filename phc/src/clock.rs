//! One interface for anything that answers PHC requests: the kernel behind a real `/dev/ptpN`
//! ([`crate::Phc`]), mock-phc's simulated personalities, and the CUSE server that puts a
//! personality behind a character device. Each method is one request as the UAPI has it, answered
//! with the errno the driver would give, so the same probe, the same latency sampler and the same
//! CUSE encoder work on every one of them.

use crate::device::{Caps, Form};
use crate::uapi::{PtpPinDesc, PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};
use crate::Result;

/// Something that answers PHC requests as a kernel PTP driver would.
///
/// The `*_raw` methods take the caller's request and leave the answer in it, checking no more than
/// the kernel does, so conformance probes can send what the kernel must reject.
pub trait PtpClock {
    /// `PTP_CLOCK_GETCAPS` or `PTP_CLOCK_GETCAPS2`.
    fn caps_raw(&self, form: Form) -> Result<Caps>;
    /// Capabilities through `GETCAPS2`, falling back to the legacy form where the kernel predates
    /// it (ENOTTY).
    fn caps(&self) -> Result<Caps> {
        match self.caps_raw(Form::V2) {
            Err(crate::Error::NotPtpDevice) => self.caps_raw(Form::Legacy),
            other => other,
        }
    }
    /// `PTP_SYS_OFFSET(2)`.
    fn sys_offset_raw(&self, form: Form, req: &mut PtpSysOffset) -> Result<()>;
    /// `PTP_SYS_OFFSET_EXTENDED(2)`, with the system clock id in `req.rsv[0]` on 6.12+.
    fn sys_offset_extended_raw(&self, form: Form, req: &mut PtpSysOffsetExtended) -> Result<()>;
    /// `PTP_SYS_OFFSET_PRECISE(2)`.
    fn sys_offset_precise_raw(&self, form: Form, req: &mut PtpSysOffsetPrecise) -> Result<()>;
    /// `PTP_PIN_GETFUNC(2)`: `desc.index` in, the pin's description out.
    fn pin_getfunc_raw(&self, form: Form, desc: &mut PtpPinDesc) -> Result<()>;
    /// `clock_gettime` on the dynamic POSIX clock, ns. A CUSE device has none (EINVAL from
    /// the kernel's clock lookup).
    fn gettime(&self) -> Result<i64>;
    /// `clock_settime` on the dynamic clock.
    fn settime(&self, ns: i64) -> Result<()>;
    /// The dialled frequency (`clock_adjtime` without modes), ppb.
    fn frequency(&self) -> Result<f64>;
    /// `clock_adjtime` ADJ_FREQUENCY, ppb.
    fn adjfine(&self, freq_ppb: f64) -> Result<()>;
    /// `clock_adjtime` ADJ_SETOFFSET, ns.
    fn step(&self, delta_ns: i64) -> Result<()>;
}
