//! `probe`: the conformance matrix of one PHC. It issues every read method, the guarded write
//! methods, the reserved-field and sample-count checks and a write on a read-only descriptor, and
//! judges each answer against the driver's expected row (`phc::Driver::expected`).
//!
//! What the kernel answers, from drivers/ptp/ptp_chardev.c and ptp_clock.c (mainline, checked for
//! this module): the legacy and `*2` numbers of SYS_OFFSET, EXTENDED and PRECISE share one
//! `case`, so the form makes no difference there. SYS_OFFSET and PRECISE never look at their
//! reserved words; EXTENDED rejects nonzero `rsv[0]`/`rsv[1]` with EINVAL in both forms, after
//! answering EOPNOTSUPP for a driver without gettimex64. Only EXTTS/PEROUT/PIN_*2 are stricter
//! than their legacy forms. `ptp_clock_adjtime` answers ERANGE for ADJ_FREQUENCY beyond
//! `max_adj` before the driver is asked, so a driver with `max_adj` 0 (hyperv, kvm) may answer
//! ERANGE instead of its own EOPNOTSUPP for any nonzero frequency.

use phc::uapi::{PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};
use phc::{Access, Caps, Driver, Expected, Form, PtpClock, SysClock};
use serde::Serialize;

/// Readings per call for the conformance reads (any legal count would do).
const READ_SAMPLES: u32 = 5;

/// What the probe knows about the device before issuing anything.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The path, as the user gave it.
    pub device: String,
    /// The driver whose row the device is judged against.
    pub driver: Driver,
    /// sysfs `clock_name`, when the device is a registered PHC.
    pub clock_name: Option<String>,
    /// Whether writes may be issued (`--allow-clock-writes` and a read-write descriptor).
    pub allow_writes: bool,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The answer is one the row allows.
    Pass,
    /// The answer is not one the row allows.
    Deviation,
    /// Not issued.
    Skipped,
    /// Reported, not judged (a kernel-age or device-kind limitation).
    Info,
}

/// One row of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `read`, `write`, `strictness`, `access` or `caps`.
    pub group: &'static str,
    /// What was issued.
    pub name: String,
    /// `ok`, an errno name, a value, or `skipped`.
    pub result: String,
    /// The acceptable answers, joined by " or ".
    pub expected: String,
    /// The judgement.
    pub verdict: Verdict,
    /// Why, where a reader would ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The PHC's offset to CLOCK_REALTIME.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offset {
    /// `precise`, `extended` or `basic`.
    pub method: &'static str,
    /// CLOCK_REALTIME minus PHC.
    pub offset_ns: i64,
    /// Half the window of the reading used (0 for a cross timestamp).
    pub uncertainty_ns: i64,
    /// The window of the reading used.
    pub delay_ns: i64,
}

/// The probe's result; serialised as the JSON report (keys documented in JSON.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The path probed.
    pub device: String,
    /// The driver judged against.
    pub driver: &'static str,
    /// sysfs `clock_name`, or null for a device without a sysfs entry.
    pub clock_name: Option<String>,
    /// GETCAPS answer.
    pub caps: Option<Caps>,
    /// The driver's row.
    pub expected: Expected,
    /// Every check, in issue order.
    pub checks: Vec<Check>,
    /// Offset to CLOCK_REALTIME by the best method that worked.
    pub offset: Option<Offset>,
    /// Number of checks with a deviation.
    pub deviations: usize,
}

fn code<T>(r: &phc::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

fn allowed(s: phc::Support) -> &'static [&'static str] {
    match s {
        phc::Support::Yes => &["ok"],
        phc::Support::No => &["EOPNOTSUPP"],
        phc::Support::Either => &["ok", "EOPNOTSUPP"],
    }
}

fn form_name(base: &str, form: Form) -> String {
    match form {
        Form::Legacy => base.to_owned(),
        Form::V2 => format!("{base}2"),
    }
}

/// Collects checks; stops the probe when the device disappears.
struct Matrix {
    checks: Vec<Check>,
}

impl Matrix {
    /// Records `result` against `want`; ENODEV aborts the probe, since every later answer would
    /// be ENODEV too and say nothing about the driver.
    fn judge<T>(
        &mut self,
        group: &'static str,
        name: String,
        result: &phc::Result<T>,
        want: &[&str],
    ) -> Result<Verdict, phc::Error> {
        if let Err(phc::Error::NoDevice) = result {
            return Err(phc::Error::NoDevice);
        }
        let got = code(result);
        let verdict = if want.contains(&got.as_str()) { Verdict::Pass } else { Verdict::Deviation };
        self.checks.push(Check {
            group,
            name,
            result: got,
            expected: want.join(" or "),
            verdict,
            note: None,
        });
        Ok(verdict)
    }

    /// Turns the last check into `Info` with a note.
    fn soften(&mut self, note: impl Into<String>) {
        if let Some(c) = self.checks.last_mut() {
            c.verdict = Verdict::Info;
            c.note = Some(note.into());
        }
    }

    fn note(&mut self, note: impl Into<String>) {
        if let Some(c) = self.checks.last_mut() {
            c.note = Some(note.into());
        }
    }

    fn skip(&mut self, group: &'static str, name: &str, why: &str) {
        self.checks.push(Check {
            group,
            name: name.into(),
            result: "skipped".into(),
            expected: "-".into(),
            verdict: Verdict::Skipped,
            note: Some(why.into()),
        });
    }
}

fn basic_req(n: u32) -> PtpSysOffset {
    PtpSysOffset { n_samples: n, ..Default::default() }
}

fn ext_req(n: u32, clock: SysClock) -> PtpSysOffsetExtended {
    PtpSysOffsetExtended { n_samples: n, clockid: clock.clockid(), ..Default::default() }
}

/// Runs the probe. `dev` carries the reads (and the writes when allowed); `read_only` is a
/// descriptor opened `O_RDONLY` on the same device, for the EACCES check (it may be `dev`).
/// Fails only when the device disappears (ENODEV).
pub fn run(dev: &dyn PtpClock, read_only: &dyn PtpClock, setup: &Setup) -> Result<Report, phc::Error> {
    let row = setup.driver.expected();
    let registered = setup.clock_name.is_some();
    let mut m = Matrix { checks: Vec::new() };

    let caps = dev.caps();
    if let Err(phc::Error::NoDevice) = caps {
        return Err(phc::Error::NoDevice);
    }
    let caps = caps.ok();
    if let Some(c) = caps {
        let want: &[&str] = match row.precise {
            phc::Support::Yes => &["1"],
            phc::Support::No => &["0"],
            phc::Support::Either => &["0", "1"],
        };
        let got = u8::from(c.cross_timestamping).to_string();
        let verdict = if want.contains(&got.as_str()) { Verdict::Pass } else { Verdict::Deviation };
        m.checks.push(Check {
            group: "caps",
            name: "cross_timestamping".into(),
            result: got,
            expected: want.join(" or "),
            verdict,
            note: None,
        });
    }

    // Reads.
    let mut basic_ok = false;
    for form in [Form::Legacy, Form::V2] {
        let r = dev.sys_offset_raw(form, &mut basic_req(READ_SAMPLES));
        basic_ok |= r.is_ok();
        m.judge("read", form_name("SYS_OFFSET", form), &r, &["ok"])?;
        if form == Form::V2 && matches!(r, Err(phc::Error::NotPtpDevice)) {
            m.soften("kernel lacks the *2 ioctls (added in Linux 5.8)");
        }
    }
    let r = dev.sys_offset_extended_raw(Form::Legacy, &mut ext_req(READ_SAMPLES, SysClock::Realtime));
    let ext_code = code(&r);
    m.judge("read", "SYS_OFFSET_EXTENDED realtime".into(), &r, allowed(row.extended))?;
    for clock in SysClock::ALL {
        let r = dev.sys_offset_extended_raw(Form::V2, &mut ext_req(READ_SAMPLES, clock));
        let v =
            m.judge("read", format!("SYS_OFFSET_EXTENDED2 {}", clock.name()), &r, allowed(row.extended))?;
        let old_kernel = clock != SysClock::Realtime && ext_code == "ok";
        if v == Verdict::Deviation && old_kernel && matches!(r, Err(phc::Error::InvalidArgument)) {
            m.soften("this kernel takes only CLOCK_REALTIME for EXTENDED (other clock ids: Linux 6.12+)");
        }
    }
    let mut precise_code = String::new();
    for form in [Form::Legacy, Form::V2] {
        let r = dev.sys_offset_precise_raw(form, &mut PtpSysOffsetPrecise::default());
        if form == Form::Legacy {
            precise_code = code(&r);
        }
        m.judge("read", form_name("SYS_OFFSET_PRECISE", form), &r, allowed(row.precise))?;
    }
    let now = dev.gettime();
    m.judge("read", "clock_gettime".into(), &now, allowed(row.gettime))?;
    if !registered && matches!(now, Err(phc::Error::InvalidArgument)) {
        m.soften("not a POSIX dynamic clock (no sysfs entry: a CUSE device?); linuxptp cannot use it");
    }

    write_checks(dev, setup, &row, caps, &mut m)?;
    strictness_checks(dev, &ext_code, &precise_code, &mut m)?;

    // A write on a read-only descriptor, with the value just read so that a kernel that wrongly
    // accepts it moves the clock by no more than one read's latency.
    const RO_WRITE: &str = "clock_settime on a read-only fd";
    match read_only.gettime() {
        Ok(t) => {
            m.judge("access", RO_WRITE.into(), &read_only.settime(t), &["EACCES"])?;
        }
        Err(phc::Error::InvalidArgument) if !registered => {
            m.skip("access", RO_WRITE, "not a POSIX dynamic clock: clock_settime cannot reach it")
        }
        Err(e) => m.skip("access", RO_WRITE, &format!("needs a clock_gettime reading ({})", e.code())),
    }

    let offset = if basic_ok || ext_code == "ok" || precise_code == "ok" {
        offset(dev, &ext_code, &precise_code)?
    } else {
        None
    };
    let deviations = m.checks.iter().filter(|c| c.verdict == Verdict::Deviation).count();
    Ok(Report {
        device: setup.device.clone(),
        driver: setup.driver.name(),
        clock_name: setup.clock_name.clone(),
        caps,
        expected: row,
        checks: m.checks,
        offset,
        deviations,
    })
}

fn write_checks(
    dev: &dyn PtpClock,
    setup: &Setup,
    row: &Expected,
    caps: Option<Caps>,
    m: &mut Matrix,
) -> Result<(), phc::Error> {
    const SET: &str = "clock_settime (to clock_gettime)";
    const FREQ: &str = "ADJ_FREQUENCY (write back current)";
    const STEP: &str = "ADJ_SETOFFSET 0 ns";
    if !setup.allow_writes {
        for name in [SET, FREQ, STEP] {
            m.skip("write", name, "needs --allow-clock-writes");
        }
        return Ok(());
    }
    match dev.gettime() {
        Ok(t) => {
            m.judge("write", SET.into(), &dev.settime(t), allowed(row.settime))?;
        }
        Err(e) => m.skip("write", SET, &format!("needs a clock_gettime reading ({})", e.code())),
    }
    // ptp_clock_adjtime checks the range before asking the driver: with max_adj 0 any nonzero
    // frequency is ERANGE, which is how such a driver says "no adjustment" too.
    let max_adj_zero = caps.is_some_and(|c| c.max_adj_ppb == 0);
    let mut want_adj = allowed(row.adjust).to_vec();
    if max_adj_zero && row.adjust != phc::Support::Yes {
        want_adj.push("ERANGE");
    }
    let r = dev.frequency().and_then(|f| dev.adjfine(f));
    m.judge("write", FREQ.into(), &r, &want_adj)?;
    if max_adj_zero && matches!(r, Err(phc::Error::Other(nix::errno::Errno::ERANGE))) {
        m.note("max_adj is 0: the kernel's range check answers before the driver");
    }
    m.judge("write", STEP.into(), &dev.step(0), allowed(row.settime))?;
    Ok(())
}

fn strictness_checks(
    dev: &dyn PtpClock,
    ext_code: &str,
    precise_code: &str,
    m: &mut Matrix,
) -> Result<(), phc::Error> {
    // Expectations rest on what the method itself answered: support is judged by the read rows,
    // these rows judge only argument checking.
    let ext_bad: &str = if ext_code == "ok" { "EINVAL" } else { ext_code };
    let precise_any: &str = if precise_code == "ok" { "ok" } else { precise_code };
    for form in [Form::Legacy, Form::V2] {
        let mut req = basic_req(READ_SAMPLES);
        req.rsv[0] = 1;
        let name = format!("{} reserved!=0", form_name("SYS_OFFSET", form));
        m.judge("strictness", name, &dev.sys_offset_raw(form, &mut req), &["ok"])?;
        m.note("the kernel never reads SYS_OFFSET's reserved words, in either form");
    }
    for form in [Form::Legacy, Form::V2] {
        let mut req = ext_req(READ_SAMPLES, SysClock::Realtime);
        req.rsv[0] = 1;
        let name = format!("{} reserved!=0", form_name("SYS_OFFSET_EXTENDED", form));
        m.judge("strictness", name, &dev.sys_offset_extended_raw(form, &mut req), &[ext_bad])?;
    }
    for form in [Form::Legacy, Form::V2] {
        let mut req = PtpSysOffsetPrecise::default();
        req.rsv[0] = 1;
        let name = format!("{} reserved!=0", form_name("SYS_OFFSET_PRECISE", form));
        m.judge("strictness", name, &dev.sys_offset_precise_raw(form, &mut req), &[precise_any])?;
    }
    let r = dev.sys_offset_raw(Form::V2, &mut basic_req(26));
    m.judge("strictness", "SYS_OFFSET2 n_samples=26".into(), &r, &["EINVAL"])?;
    let r = dev.sys_offset_extended_raw(Form::V2, &mut ext_req(26, SysClock::Realtime));
    m.judge("strictness", "SYS_OFFSET_EXTENDED2 n_samples=26".into(), &r, &[ext_bad])?;
    Ok(())
}

/// The offset by the best method that worked: a cross timestamp, else linuxptp's rule over 25
/// extended readings, else over 25 basic ones.
fn offset(dev: &dyn PtpClock, ext_code: &str, precise_code: &str) -> Result<Option<Offset>, phc::Error> {
    let lift = |e: phc::Error| match e {
        phc::Error::NoDevice => Err(e),
        _ => Ok(None),
    };
    let n = phc::uapi::PTP_MAX_SAMPLES as u32;
    if precise_code == "ok" {
        let mut req = PtpSysOffsetPrecise::default();
        return match dev.sys_offset_precise_raw(Form::Legacy, &mut req) {
            Ok(()) => Ok(Some(Offset {
                method: "precise",
                offset_ns: req.sys_realtime.as_ns() - req.device.as_ns(),
                uncertainty_ns: 0,
                delay_ns: 0,
            })),
            Err(e) => lift(e),
        };
    }
    let (method, samples) = if ext_code == "ok" {
        let mut req = ext_req(n, SysClock::Realtime);
        match dev.sys_offset_extended_raw(Form::Legacy, &mut req) {
            Ok(()) => ("extended", phc::device::samples_from_extended(&req)),
            Err(e) => return lift(e),
        }
    } else {
        let mut req = basic_req(n);
        match dev.sys_offset_raw(Form::Legacy, &mut req) {
            Ok(()) => ("basic", phc::device::samples_from_basic(&req)),
            Err(e) => return lift(e),
        }
    };
    Ok(phc::estimate::linuxptp(&samples).map(|e| Offset {
        method,
        offset_ns: e.offset_ns,
        uncertainty_ns: e.uncertainty_ns,
        delay_ns: e.delay_ns,
    }))
}

/// Whether the descriptor the writes need is there.
pub fn access_for(allow_writes: bool) -> Access {
    if allow_writes {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    }
}

/// The text rendering of a report.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let name = r.clock_name.as_deref().map_or("no sysfs entry".to_owned(), |n| format!("clock_name {n:?}"));
    let _ = writeln!(s, "device  {} ({name})", r.device);
    let _ = writeln!(s, "driver  {}", r.driver);
    if let Some(c) = r.caps {
        let _ = writeln!(s, "caps    {c}",);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<11} {:<38} {:<11} {:<22} verdict", "group", "check", "result", "expected");
    for c in &r.checks {
        let verdict = match c.verdict {
            Verdict::Pass => "pass",
            Verdict::Deviation => "DEVIATION",
            Verdict::Skipped => "skipped",
            Verdict::Info => "info",
        };
        let _ = write!(s, "{:<11} {:<38} {:<11} {:<22} {verdict}", c.group, c.name, c.result, c.expected);
        match &c.note {
            Some(n) => {
                let _ = writeln!(s, "  ({n})");
            }
            None => s.push('\n'),
        }
    }
    let _ = writeln!(s);
    match &r.offset {
        Some(o) => {
            let _ = writeln!(
                s,
                "offset to CLOCK_REALTIME (realtime - phc): {:+} ns +/- {} ns ({}, window {} ns)",
                o.offset_ns, o.uncertainty_ns, o.method, o.delay_ns
            );
        }
        None => s.push_str("offset to CLOCK_REALTIME: unavailable (no read method worked)\n"),
    }
    if r.deviations == 0 {
        let _ = writeln!(s, "result: conforms to the {} row", r.driver);
    } else {
        let _ = writeln!(s, "result: {} deviation(s) from the {} row", r.deviations, r.driver);
    }
    crate::format::escape::terminal(&s)
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
