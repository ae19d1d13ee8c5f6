//! `latency`: the distribution of every read method's syscall round trip and of the window the
//! kernel reports inside it, next to a plain `clock_gettime(CLOCK_MONOTONIC)` measured in the same
//! run as the baseline, so that results compare across machines as ratios.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use phc::uapi::{PtpSysOffset, PtpSysOffsetExtended, PtpSysOffsetPrecise};
use phc::{Access, Form, PtpClock, SysClock};

pub use super::latency_report::{MethodResult, Report};
use super::sampler::{sample_measured, Failure, FnCall, Measured, Series};
use super::{emit, to_json, DeviceError, Exit, Format, LatencyOptions};
use crate::model::stats::summarize;

/// The most samples `--samples` takes per method: 24 MB of samples held at a time (see
/// [`measure`]), and at most 7 million calls in a run of every method.
pub const MAX_SAMPLES: u32 = 1_000_000;

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodArg {
    /// PTP_SYS_OFFSET.
    Basic,
    /// PTP_SYS_OFFSET_EXTENDED, once per `--clock`.
    Extended,
    /// PTP_SYS_OFFSET_PRECISE.
    Precise,
    /// clock_gettime on the dynamic POSIX clock.
    Gettime,
    /// Every method.
    All,
}

/// `--clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockArg {
    /// CLOCK_REALTIME.
    Realtime,
    /// CLOCK_MONOTONIC.
    Monotonic,
    /// CLOCK_MONOTONIC_RAW.
    MonotonicRaw,
    /// All three.
    All,
}

/// One timed method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// PTP_SYS_OFFSET(2).
    Basic,
    /// PTP_SYS_OFFSET_EXTENDED(2) against a system clock.
    Extended(SysClock),
    /// PTP_SYS_OFFSET_PRECISE(2).
    Precise,
    /// clock_gettime on the dynamic clock.
    Gettime,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Extended(_) => "extended",
            Self::Precise => "precise",
            Self::Gettime => "gettime",
        }
    }

    fn clock(self) -> Option<&'static str> {
        match self {
            Self::Extended(c) => Some(c.name()),
            _ => None,
        }
    }
}

/// The methods `--method` and `--clock` select, in report order.
pub fn methods(method: MethodArg, clock: ClockArg) -> Vec<Method> {
    let clocks: Vec<SysClock> = match clock {
        ClockArg::Realtime => vec![SysClock::Realtime],
        ClockArg::Monotonic => vec![SysClock::Monotonic],
        ClockArg::MonotonicRaw => vec![SysClock::MonotonicRaw],
        ClockArg::All => SysClock::ALL.to_vec(),
    };
    let mut out = Vec::new();
    if matches!(method, MethodArg::Basic | MethodArg::All) {
        out.push(Method::Basic);
    }
    if matches!(method, MethodArg::Extended | MethodArg::All) {
        out.extend(clocks.into_iter().map(Method::Extended));
    }
    if matches!(method, MethodArg::Precise | MethodArg::All) {
        out.push(Method::Precise);
    }
    if matches!(method, MethodArg::Gettime | MethodArg::All) {
        out.push(Method::Gettime);
    }
    out
}

struct Basic<'a, C: ?Sized> {
    phc: &'a C,
    form: Form,
    req: PtpSysOffset,
    k: usize,
}

impl<C: PtpClock + ?Sized> Measured for Basic<'_, C> {
    type Error = phc::Error;
    const HAS_WINDOW: bool = true;
    #[inline(always)]
    fn call(&mut self) -> phc::Result<()> {
        self.phc.sys_offset_raw(self.form, &mut self.req)
    }
    fn window_ns(&self) -> i64 {
        // Readings share their system stamps: reading i lies between ts[2i] and ts[2i+2].
        (0..self.k).map(|i| self.req.ts[2 * i + 2].as_ns() - self.req.ts[2 * i].as_ns()).min().unwrap_or(0)
    }
}

struct Extended<'a, C: ?Sized> {
    phc: &'a C,
    form: Form,
    req: PtpSysOffsetExtended,
    k: usize,
}

impl<C: PtpClock + ?Sized> Measured for Extended<'_, C> {
    type Error = phc::Error;
    const HAS_WINDOW: bool = true;
    #[inline(always)]
    fn call(&mut self) -> phc::Result<()> {
        self.phc.sys_offset_extended_raw(self.form, &mut self.req)
    }
    fn window_ns(&self) -> i64 {
        self.req.ts[..self.k].iter().map(|t| t[2].as_ns() - t[0].as_ns()).min().unwrap_or(0)
    }
}

/// Where a failure stops the whole run: the device is gone, or failed after it had worked.
#[derive(Debug)]
pub struct Fatal(pub DeviceError);

/// Turns a failure inside a sampling run into the command's one-line error.
pub fn failure_to_fatal(device: &std::path::Path, label: &str, f: Failure<phc::Error>) -> Fatal {
    Fatal(DeviceError {
        device: device.to_owned(),
        context: Some(format!("{label} failed at sample {}", f.index + 1)),
        error: f.error,
    })
}

/// Progress on stderr for runs longer than a second: an updating line on a terminal, an
/// occasional plain line otherwise. stdout carries only the report.
struct Progress {
    total: usize,
    done_before: usize,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done_before: 0,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, label: &str, done: usize) {
        let now = Instant::now();
        if now.duration_since(self.start) < Duration::from_secs(1) {
            return;
        }
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(10) };
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            return;
        }
        self.last = Some(now);
        let pct = (self.done_before + done) * 100 / self.total.max(1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[Klatency: {label} {done} samples ({pct}% of the run)");
        } else {
            let _ = writeln!(err, "latency: {label} {done} samples ({pct}% of the run)");
        }
    }

    fn finish_method(&mut self, n: usize) {
        self.done_before += n;
    }

    fn finish(&mut self) {
        if self.tty && self.last.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

fn ok_result(
    method: &'static str,
    clock: Option<&'static str>,
    s: &Series,
    base_p50: Option<i64>,
) -> MethodResult {
    let round_trip_ns = summarize(&s.round_trip_ns);
    let ratio = match (&round_trip_ns, base_p50) {
        (Some(r), Some(b)) if b > 0 => Some(r.p50_ns as f64 / b as f64),
        _ => None,
    };
    MethodResult {
        method,
        clock,
        status: "ok",
        error: None,
        note: None,
        round_trip_ns,
        window_ns: summarize(&s.window_ns),
        ratio_p50_to_baseline: ratio,
    }
}

fn not_ok(m: Method, status: &'static str, e: &phc::Error, note: Option<String>) -> MethodResult {
    MethodResult {
        method: m.name(),
        clock: m.clock(),
        status,
        error: Some(e.code()),
        note,
        round_trip_ns: None,
        window_ns: None,
        ratio_p50_to_baseline: None,
    }
}

/// Times one method: a trial call first decides whether the driver supports it, then `n` timed
/// calls. Unsupported methods are results, not failures; ENODEV anywhere, or any failure after
/// the trial worked, stops the run.
fn time_method<M: Measured<Error = phc::Error>>(
    device: &std::path::Path,
    method: Method,
    mut m: M,
    n: usize,
    progress: &mut Progress,
    base_p50: Option<i64>,
) -> Result<MethodResult, Fatal> {
    let label = match method.clock() {
        Some(c) => format!("{} {c}", method.name()),
        None => method.name().to_owned(),
    };
    match m.call() {
        Ok(()) => {}
        Err(phc::Error::NoDevice) => {
            return Err(failure_to_fatal(device, &label, Failure { index: 0, error: phc::Error::NoDevice }))
        }
        Err(e @ phc::Error::NotSupported) => return Ok(not_ok(method, "unsupported", &e, None)),
        Err(e @ phc::Error::InvalidArgument) if matches!(method, Method::Extended(c) if c != SysClock::Realtime) =>
        {
            let note = "this kernel takes only CLOCK_REALTIME for EXTENDED (other clock ids: Linux 6.12+)";
            return Ok(not_ok(method, "unsupported", &e, Some(note.into())));
        }
        Err(e @ phc::Error::InvalidArgument) if method == Method::Gettime => {
            let note = "not a POSIX dynamic clock (a CUSE device?)";
            return Ok(not_ok(method, "unsupported", &e, Some(note.into())));
        }
        Err(e) => return Ok(not_ok(method, "error", &e, None)),
    }
    let series = sample_measured(n, &mut m, |done| progress.update(&label, done))
        .map_err(|f| failure_to_fatal(device, &label, f))?;
    progress.finish_method(n);
    Ok(ok_result(method.name(), method.clock(), &series, base_p50))
}

/// The form to issue: `*2`, or the legacy number on a kernel without the `*2` ioctls.
fn pick_form(probe: impl Fn(Form) -> phc::Result<()>) -> Form {
    match probe(Form::V2) {
        Err(phc::Error::NotPtpDevice) => Form::Legacy,
        _ => Form::V2,
    }
}

/// Runs the measurement on an open PHC. Memory: one method's samples at a time, 16 bytes each
/// (round trip and window) plus the 8-byte sorted copy a summary makes; the baseline's are
/// dropped once summarised.
pub fn measure<C: PtpClock + ?Sized>(
    phc: &C,
    args: &LatencyOptions,
    driver: Option<&'static str>,
) -> Result<Report, Fatal> {
    let n = args.samples as usize;
    let k = args.n_per_call as usize;
    let selected = methods(args.method, args.clock);
    let mut progress = Progress::new(n * (selected.len() + 1));

    let base = sample_measured(
        n,
        &mut FnCall(|| nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(drop)),
        |done| progress.update("baseline", done),
    );
    progress.finish_method(n);
    // clock_gettime(CLOCK_MONOTONIC) does not fail on Linux; an error here is the host's, not the PHC's.
    let base = base.unwrap_or_default();
    let baseline = ok_result("clock_gettime", Some("monotonic"), &base, None);
    let base_p50 = baseline.round_trip_ns.as_ref().map(|s| s.p50_ns);
    drop(base);

    let mut results = Vec::new();
    for method in selected {
        let dev = args.device();
        let r = match method {
            Method::Basic => {
                let req = PtpSysOffset { n_samples: k as u32, ..Default::default() };
                let form = pick_form(|f| phc.sys_offset_raw(f, &mut req.clone()));
                time_method(dev, method, Basic { phc, form, req, k }, n, &mut progress, base_p50)?
            }
            Method::Extended(clock) => {
                let req = PtpSysOffsetExtended {
                    n_samples: k as u32,
                    clockid: clock.clockid(),
                    ..Default::default()
                };
                // Only the *2 form reads clockid on old kernels' terms; legacy is a fallback for
                // REALTIME alone.
                let form = match clock {
                    SysClock::Realtime => pick_form(|f| phc.sys_offset_extended_raw(f, &mut req.clone())),
                    _ => Form::V2,
                };
                time_method(dev, method, Extended { phc, form, req, k }, n, &mut progress, base_p50)?
            }
            Method::Precise => {
                let form = pick_form(|f| phc.sys_offset_precise_raw(f, &mut PtpSysOffsetPrecise::default()));
                let mut req = PtpSysOffsetPrecise::default();
                let call = FnCall(move || phc.sys_offset_precise_raw(form, &mut req));
                time_method(dev, method, call, n, &mut progress, base_p50)?
            }
            Method::Gettime => {
                time_method(dev, method, FnCall(|| phc.gettime().map(drop)), n, &mut progress, base_p50)?
            }
        };
        results.push(r);
    }
    progress.finish();
    Ok(Report {
        device: args.device().display().to_string(),
        driver,
        samples: n,
        n_per_call: args.n_per_call,
        baseline,
        methods: results,
    })
}

/// `latency --backend sim --driver D`: times mock-phc's personality of D answering in this
/// process (the cost of the personality's logic and the system clock reads it makes, no syscall
/// into a driver).
pub fn run_sim(args: &LatencyOptions) -> Exit {
    let driver = match super::sim_driver(args.driver, args.device.as_deref()) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let clock = mock_phc::answer::simulated(driver, false);
    finish(measure(&clock, args, Some(driver.name())), args)
}

/// The `latency` command.
pub fn run_cmd(args: &LatencyOptions) -> Exit {
    if let Err(e) = super::require_device(args.device.as_deref()) {
        return e;
    }
    let phc = match super::open(args.device(), Access::ReadOnly, &super::expect(args.driver)) {
        Ok(p) => p,
        Err(e) => return e.report(),
    };
    let driver = args.driver.map(|d| d.name()).or_else(|| {
        phc::sysfs::info_for_path(&phc::Roots::default(), args.device()).map(|i| i.driver.name())
    });
    finish(measure(&phc, args, driver), args)
}

fn finish(report: Result<Report, Fatal>, args: &LatencyOptions) -> Exit {
    let report = match report {
        Ok(r) => r,
        Err(Fatal(e)) => return e.report(),
    };
    match args.format {
        Format::Text => emit(&super::latency_text::render(&report)),
        Format::Json => emit(&to_json(&report)),
    }
    if report.methods.iter().any(|m| m.status == "error") {
        Exit::CheckFailed
    } else {
        Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sampler::sample;

    #[test]
    fn selection_follows_method_and_clock() {
        assert_eq!(methods(MethodArg::All, ClockArg::All).len(), 6);
        assert_eq!(
            methods(MethodArg::Extended, ClockArg::MonotonicRaw),
            [Method::Extended(SysClock::MonotonicRaw)]
        );
        assert_eq!(methods(MethodArg::Gettime, ClockArg::All), [Method::Gettime]);
    }

    #[test]
    fn a_device_gone_on_call_k_ends_the_run_with_exit_2_and_one_line() {
        let mut calls = 0;
        let f = sample(100, || {
            calls += 1;
            if calls == 42 {
                Err(phc::Error::NoDevice)
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(f.index, 41);
        let Fatal(e) = failure_to_fatal(std::path::Path::new("/dev/ptp0"), "extended realtime", f);
        let line = e.to_string();
        assert_eq!(line, "phc-harness: /dev/ptp0: extended realtime failed at sample 42: device is gone");
        assert!(!line.contains('\n'));
        assert_eq!(e.report().code(), 2);
    }

    #[test]
    fn ratios_are_against_the_baseline_p50() {
        let s = Series { round_trip_ns: vec![100, 200, 300], window_ns: vec![] };
        let r = ok_result("basic", None, &s, Some(50));
        assert_eq!(r.ratio_p50_to_baseline, Some(4.0));
        assert!(r.window_ns.is_none());
        assert_eq!(ok_result("basic", None, &s, Some(0)).ratio_p50_to_baseline, None);
    }
}
