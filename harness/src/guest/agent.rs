//! The guest agent's library: the request handler and the bounded line reader the `agent`
//! command (`phc-harness agent`) serves over the guest's virtio-serial port, one JSON line per
//! request (phc_qemu::agent), one per answer.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, Read, Seek, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phc::device::{clock_now_ns, clock_step_ns};
use phc::{Access, Phc};

use crate::guest::host_clock::{AgentClock, HostPhc};
use phc_qemu::agent::{self, ExecResult, GuestClocks, Op, Request, Response};
use serde_json::{json, Value};

/// Most bytes of program output or file contents sent back.
const MAX_OUTPUT: usize = 256 * 1024;
/// Longest request line read: the largest real one (a chrony.conf to write) is a few kB.
pub const MAX_LINE: usize = 1 << 20;

fn clocks() -> GuestClocks {
    GuestClocks {
        realtime_ns: clock_now_ns(libc::CLOCK_REALTIME).unwrap_or(0),
        monotonic_raw_ns: clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap_or(0),
    }
}

/// One request line, decoded; the error is what goes back to the host.
pub fn decode(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "bad request: not UTF-8".to_owned())?;
    serde_json::from_str::<Request>(text.trim()).map_err(|e| format!("bad request: {e}"))
}

/// Reads one line of at most `MAX_LINE` bytes into `buf` (without the newline). `Ok(None)` at
/// EOF; a longer line is read to its end in bounded pieces, dropped, and reported as an error.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<Result<(), String>>> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(Ok(())));
    }
    if buf.len() <= MAX_LINE {
        // The last line of the input, without a newline.
        return Ok(Some(Ok(())));
    }
    // Too long: skip to the end of the line without keeping it.
    loop {
        buf.clear();
        let n = r.by_ref().take(64 * 1024).read_until(b'\n', buf)?;
        if n == 0 || buf.last() == Some(&b'\n') {
            break;
        }
    }
    buf.clear();
    Ok(Some(Err(format!("bad request: longer than {MAX_LINE} bytes"))))
}

/// Serves requests from `input`, one answer line per request line, until `input` ends and
/// `at_eof` says not to wait for more (it sleeps and returns true to keep waiting). After an
/// answer that asks for it, `spin` is called with a wall deadline to wait for input busily.
pub fn serve<R: Read>(
    mut input: std::io::BufReader<R>,
    mut out: impl Write,
    mut at_eof: impl FnMut() -> bool,
    mut spin: impl FnMut(Instant),
) -> std::io::Result<()> {
    let mut agent = Agent::default();
    let mut line = Vec::new();
    loop {
        let decoded = match read_line(&mut input, &mut line)? {
            None if at_eof() => continue,
            None => return Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok(())) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Ok(())) => decode(&line),
        };
        let reply = match decoded {
            Ok(req) => {
                let (ok, err) = match agent.handle(req.op) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                };
                Response { id: req.id, ok, err, clocks: clocks() }
            }
            Err(e) => Response { id: 0, ok: None, err: Some(e), clocks: clocks() },
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if let Some(deadline) = agent.take_spin() {
            if input.buffer().is_empty() {
                spin(deadline);
            }
        }
    }
}

/// Serves requests through the hold (`phc_qemu::agent::held`) until `pause` fails: stands
/// (`pause`, which returns once the host has written a request into `mem` and resumed the
/// guest; it gets `mem` as the host sees it while the guest stands), answers it into `mem`,
/// stands again. Nothing on the way takes an interrupt or depends on how long the host took, so
/// the guest's virtual time is the same run after run.
pub fn serve_held(
    mem: &mut [u8],
    mut pause: impl FnMut(&mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use phc_qemu::agent::held;
    let mut agent = Agent::default();
    loop {
        pause(mem)?;
        let (seq, reply) = match held::take(mem, held::REQUEST_AT) {
            Ok((seq, text)) => {
                let reply = match decode(&text) {
                    Ok(req) => {
                        let (ok, err) = match agent.handle(req.op) {
                            Ok(v) => (Some(v), None),
                            Err(e) => (None, Some(e)),
                        };
                        Response { id: req.id, ok, err, clocks: clocks() }
                    }
                    Err(e) => Response { id: seq, ok: None, err: Some(e), clocks: clocks() },
                };
                (seq, reply)
            }
            Err(e) => (0, Response { id: 0, ok: None, err: Some(e), clocks: clocks() }),
        };
        let text = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(e) = held::put(mem, held::ANSWER_AT, seq, &text) {
            let short = Response { id: reply.id, ok: None, err: Some(e), clocks: reply.clocks };
            let text = serde_json::to_vec(&short).unwrap_or_default();
            held::put(mem, held::ANSWER_AT, seq, &text).map_err(std::io::Error::other)?;
        }
    }
}

/// Opens `path` for writing without following a symlink at its end, truncating it.
fn create_nofollow(path: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
}

#[derive(Default)]
struct Agent {
    spawned: HashMap<String, Child>,
    phcs: HashMap<String, Box<dyn HostPhc>>,
    /// After the current answer, poll the port busily until this wall instant (see `Op::Observe`).
    spin_until: Option<Instant>,
    /// Where each observed PHC was last seen (`wait_for_phc`): a step of the PHC moves its
    /// sighting by the step; any other request that may set or re-tune a clock clears them all
    /// (`handle`), and the next nap is then planned by readings again.
    seen: HashMap<String, Sighting>,
    /// How far each tailed file has been read.
    tails: HashMap<String, u64>,
    /// mock-phc's CUSE server, once started.
    mock: Option<crate::guest::mock::MockServer>,
    /// The Hyper-V host of the kernel's hv_utils, once started.
    hyperv: Option<crate::guest::hyperv::HypervHost>,
}

/// Most bytes of a tailed file returned at once.
const MAX_TAIL: u64 = 64 * 1024;

/// The whole lines of `path` after byte `*from`, advancing `*from` past them. A file that
/// shrank (a new daemon's log) is read from its start.
fn tail_lines(path: &str, from: &mut u64) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *from {
        *from = 0;
    }
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(*from)).and_then(|_| f.take(MAX_TAIL).read_to_end(&mut buf)).is_err() {
        return Vec::new();
    }
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
    *from += end as u64 + 1;
    String::from_utf8_lossy(&buf[..end]).lines().map(str::to_owned).collect()
}

/// The guest's RTC, whose second boundaries follow QEMU's virtual clock (`-rtc clock=vm`).
const RTC: &str = "/dev/rtc0";

/// CLOCK_REALTIME against a PHC with EXTENDED: (PHC time at the reading, realtime minus PHC,
/// window), from the shortest of 5 windows.
fn realtime_vs_phc(phc: &dyn HostPhc) -> Result<(i64, i64, i64), String> {
    let samples = phc.sys_offset_extended(5, phc::SysClock::Realtime).map_err(|e| e.to_string())?;
    let best = samples.iter().min_by_key(|s| s.delay_ns()).ok_or("no samples")?;
    Ok((best.phc_ns, best.offset_ns(), best.delay_ns()))
}

/// PHC minus CLOCK_MONOTONIC_RAW, from the shortest of 5 EXTENDED windows (see `phc_and_raw`).
fn phc_minus_raw(phc: &dyn HostPhc) -> phc::Result<i64> {
    let (phc_ns, raw_ns) = phc_and_raw(phc)?;
    Ok(phc_ns - raw_ns)
}

/// A PHC reading and the CLOCK_MONOTONIC_RAW instant it was taken at (virtual time's igb: host
/// time), from the shortest of 5 EXTENDED windows against CLOCK_MONOTONIC_RAW. A kernel before
/// 6.12 takes only CLOCK_REALTIME there (Debian bookworm's 6.1): the windows are then
/// CLOCK_REALTIME's, carried over to CLOCK_MONOTONIC_RAW by a reading of the two right after, a
/// microsecond or so later (a slew of even 83333 ppm moves that by well under a nanosecond).
fn phc_and_raw(phc: &dyn HostPhc) -> phc::Result<(i64, i64)> {
    let best = |samples: Vec<phc::estimate::Sample>| {
        samples.into_iter().min_by_key(|s| s.delay_ns()).ok_or(phc::Error::InvalidArgument)
    };
    match phc.sys_offset_extended(5, phc::SysClock::MonotonicRaw) {
        Ok(samples) => {
            let b = best(samples)?;
            Ok((b.phc_ns, b.phc_ns + b.offset_ns()))
        }
        Err(phc::Error::ClockIdRejected(_)) => {
            let b = best(phc.sys_offset_extended(5, phc::SysClock::Realtime)?)?;
            let realtime_less_raw =
                phc::device::clock_difference_ns(libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC_RAW)?;
            Ok((b.phc_ns, b.phc_ns + b.offset_ns() - realtime_less_raw))
        }
        Err(e) => Err(e),
    }
}

/// Sets the PHC's frequency and undoes the step that comes with it on QEMU's igb. QEMU computes
/// SYSTIM as the whole virtual clock times TIMINCA's increment, so a new increment moves SYSTIM
/// by (virtual time since QEMU's start) x (the change): a lower one moves it backwards, and the
/// igb driver's timecounter, at its next `timecounter_read` (a gettime), takes the backward
/// step for a wrap of its 2^60-cycle range and jumps 2^41 ns (2199 s) ahead. EXTENDED
/// (`timecounter_cyc2time`) reads a backward step as one. So: PHC against CLOCK_MONOTONIC_RAW
/// before, the new frequency, a gettime to let the timecounter take whatever it takes, PHC
/// against CLOCK_MONOTONIC_RAW again, and the difference stepped back (the readings are
/// microseconds apart: the new rate adds well under a nanosecond). Returns the step undone.
fn adjfine_without_step(phc: &dyn HostPhc, ppb: f64) -> phc::Result<i64> {
    let before = phc_minus_raw(phc)?;
    phc.adjfine(ppb)?;
    phc.gettime()?;
    let jump = phc_minus_raw(phc)? - before;
    // Below a microsecond it is the measurement's own noise, not a step.
    if jump.abs() > 1_000 {
        phc.step(-jump)?;
    }
    Ok(jump)
}

/// Where a PHC was last seen against CLOCK_MONOTONIC, and the rate between the two since the
/// sighting before: enough to sleep to a PHC time without reading the PHC first.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    phc_ns: i64,
    mono_ns: i64,
    /// PHC nanoseconds per CLOCK_MONOTONIC nanosecond, once two sightings are a millisecond apart.
    rate: Option<f64>,
}

impl Sighting {
    fn now(phc_ns: i64, previous: Option<Sighting>) -> Result<Self, String> {
        let mono_ns = clock_now_ns(libc::CLOCK_MONOTONIC).map_err(|e| e.to_string())?;
        let rate = previous
            .filter(|p| mono_ns - p.mono_ns > 1_000_000)
            .map(|p| (phc_ns - p.phc_ns) as f64 / (mono_ns - p.mono_ns) as f64)
            // A daemon slews CLOCK_MONOTONIC by at most 8%: anything else is a step between.
            .filter(|r| (0.9..1.1).contains(r));
        Ok(Self { phc_ns, mono_ns, rate })
    }

    /// How long to sleep from now until the PHC reads `until_ns`, by this sighting; `None`
    /// without a rate.
    fn nap_to(&self, until_ns: i64) -> Result<Option<i64>, String> {
        let Some(rate) = self.rate else { return Ok(None) };
        let mono_now = clock_now_ns(libc::CLOCK_MONOTONIC).map_err(|e| e.to_string())?;
        let target = self.mono_ns + ((until_ns - self.phc_ns) as f64 / rate).ceil() as i64;
        Ok(Some(target - mono_now))
    }
}

/// Sleeps until `phc` reads at least `until_ns`, in as few naps and PHC readings as it can: in
/// virtual time each nap is a wake-up of the guest, each wake-up a hand-off between QEMU's
/// threads, and each reading of an emulated PHC (igb) a few MMIO accesses, each of which makes
/// TCG translate code afresh under icount. With `seen` (where the PHC was at the last
/// observation and its rate against CLOCK_MONOTONIC since the one before) the nap is planned
/// without a reading; the caller's measurement then says whether it landed (`measured` below).
/// Without it: 90% of what is left (a daemon may slew CLOCK_MONOTONIC by up to 8% against the
/// PHC), then the rest at the rate that nap measured.
fn wait_for_phc(phc: &dyn HostPhc, until_ns: i64, seen: Option<Sighting>) -> Result<(), String> {
    if let Some(nap) = seen.map(|s| s.nap_to(until_ns)).transpose()?.flatten() {
        if nap > 0 {
            std::thread::sleep(Duration::from_nanos(nap.unsigned_abs()));
        }
        return Ok(());
    }
    let mut first: Option<Sighting> = None;
    loop {
        let now = phc.gettime().map_err(|e| e.to_string())?;
        let here = Sighting::now(now, first)?;
        let left = until_ns.saturating_sub(now);
        if left <= 0 {
            return Ok(());
        }
        let nap = match here.rate {
            Some(r) => (left as f64 / r).ceil() as i64,
            None if left > 1_000_000 => left / 10 * 9,
            None => left,
        };
        first.get_or_insert(here);
        std::thread::sleep(Duration::from_nanos(nap.max(1).unsigned_abs()));
    }
}

/// Host time now, from `host_ns` as it held at the guest's CLOCK_MONOTONIC_RAW `at_raw_ns` (the
/// raw time since added), or `host_ns` itself where no raw time is given.
fn host_now_ns(host_ns: i64, at_raw_ns: Option<i64>) -> Result<i64, String> {
    let Some(at) = at_raw_ns else { return Ok(host_ns) };
    let raw = clock_now_ns(libc::CLOCK_MONOTONIC_RAW).map_err(|e| e.to_string())?;
    Ok(host_ns + (raw - at))
}

impl Agent {
    /// Hands the host time service (the mock, or hv_utils through the shim) a host sample:
    /// `host_ns` as given (at the raw time given, else now), or read off `reference` now; the rate measured over `rate_since`
    /// where it spans enough, else `rate_ppb`, is the host clock's against CLOCK_MONOTONIC_RAW.
    fn host_sample(
        &mut self,
        host_ns: Option<(i64, Option<i64>)>,
        reference: Option<String>,
        rate_ppb: i64,
        rate_since: Option<[i64; 2]>,
        sync: bool,
    ) -> Result<phc_qemu::agent::HostSampled, String> {
        let (host_ns, raw_ns) = match (host_ns, reference) {
            // A host time that held at a raw time is kept as that pair: hv_utils (and the mock)
            // age a sample by the reference counter since, as on Hyper-V.
            (Some((h, Some(raw))), None) => (h, raw),
            (Some((h, None)), None) => {
                (h, clock_now_ns(libc::CLOCK_MONOTONIC_RAW).map_err(|e| e.to_string())?)
            }
            (None, Some(dev)) => {
                let phc = self.phc(&dev)?;
                phc_and_raw(phc).map_err(|e| format!("{dev}: {e}"))?
            }
            _ => return Err("host_sample: give exactly one of host_ns and reference".into()),
        };
        let rate_ppb = rate_since
            .and_then(|since| phc_qemu::agent::measured_rate_ppb(since, host_ns, raw_ns))
            .unwrap_or(rate_ppb);
        if let Some(h) = self.hyperv.as_mut() {
            let stepped_ns = h.sample(host_ns, raw_ns, rate_ppb, sync)?;
            return Ok(phc_qemu::agent::HostSampled { host_ns, raw_ns, rate_ppb, stepped_ns });
        }
        let m = self
            .mock
            .as_mut()
            .ok_or("host_sample: no host time service (start_mock or start_hyperv first)")?;
        m.sample(host_ns, raw_ns, rate_ppb)?;
        // The server applies its stdin lines on its own thread: a stale clock (no sample
        // yet, or samples just resumed) is read until the sample has reached it, so that
        // nothing observed after this answer sees the clock from before it.
        let device = m.device.clone();
        let phc = self.phc(&device)?.device().ok_or_else(|| format!("{device}: not a device"))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut req = phc::uapi::PtpSysOffset { n_samples: 1, ..Default::default() };
        while let Err(phc::Error::Stale) = phc.sys_offset_raw(phc::Form::Legacy, &mut req) {
            if Instant::now() > deadline {
                return Err(format!("{device}: still stale 2 s after a sample"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(phc_qemu::agent::HostSampled { host_ns, raw_ns, rate_ppb, stepped_ns: None })
    }

    fn phc(&mut self, device: &str) -> Result<&dyn HostPhc, String> {
        if !self.phcs.contains_key(device) {
            let p: Box<dyn HostPhc> = if device == agent::AGENT_CLOCK {
                Box::new(AgentClock::new().map_err(|e| format!("{device}: {e}"))?)
            } else {
                // The host names the devices; a CUSE mock (class cuse) is one of them.
                Box::new(
                    Phc::open_expecting(device, Access::ReadWrite, &phc::Expect::cuse())
                        .map_err(|e| format!("{device}: {e}"))?,
                )
            };
            self.phcs.insert(device.to_owned(), p);
        }
        Ok(self.phcs[device].as_ref())
    }

    /// The wall instant to spin until after this answer, once.
    fn take_spin(&mut self) -> Option<Instant> {
        self.spin_until.take()
    }

    fn handle(&mut self, op: Op) -> Result<Value, String> {
        // Sightings stay true across reads; a step moves them by the step; anything else that may
        // set or re-tune a clock (a frequency, a set, a tick of the RTC that sets the PHC, a
        // reboot's restart) makes the next nap planned by readings again.
        match &op {
            Op::Observe { .. }
            | Op::HostSample { .. }
            | Op::ReadFile { .. }
            | Op::Hello
            | Op::Clocks
            | Op::PhcOffset { .. } => {}
            Op::StepPhc { device, delta_ns } => {
                if let Some(s) = self.seen.get_mut(device) {
                    s.phc_ns += delta_ns;
                }
            }
            _ => self.seen.clear(),
        }
        match op {
            Op::Observe { device, until_ns, spin_s, tail, also } => {
                let seen = self.seen.get(&device).copied();
                let phc = self.phc(&device)?;
                let measured = |phc: &dyn HostPhc| realtime_vs_phc(phc).map_err(|e| format!("{device}: {e}"));
                wait_for_phc(phc, until_ns, seen).map_err(|e| format!("{device}: {e}"))?;
                let mut m = measured(phc)?;
                // A planned nap that fell short (the rate changed since): the rest, measured.
                if m.0 < until_ns {
                    let here = Sighting::now(m.0, seen)?;
                    wait_for_phc(phc, until_ns, Some(here).filter(|h| h.rate.is_some()))
                        .map_err(|e| format!("{device}: {e}"))?;
                    m = measured(phc)?;
                }
                let (phc_ns, realtime_minus_phc_ns, window_ns) = m;
                let sighting = Sighting::now(phc_ns, seen)?;
                self.seen.insert(device.clone(), sighting);
                let (mut also_minus_phc_ns, mut also_error) = (None, None);
                if let Some(dev) = also {
                    match self.phc(&dev).map(|p| p.sys_offset(5)) {
                        Ok(Ok(samples)) => {
                            let est = phc::estimate::linuxptp(&samples).ok_or("no samples")?;
                            // Sample offsets are realtime minus the PHC.
                            also_minus_phc_ns = Some(realtime_minus_phc_ns - est.offset_ns);
                        }
                        Ok(Err(e)) => also_error = Some(e.code().to_owned()),
                        Err(e) => return Err(e),
                    }
                }
                if spin_s > 0.0 {
                    self.spin_until = Some(Instant::now() + Duration::from_secs_f64(spin_s.min(10.0)));
                }
                let lines = match tail {
                    Some(path) => {
                        let from = self.tails.entry(path.clone()).or_insert(0);
                        tail_lines(&path, from)
                    }
                    None => Vec::new(),
                };
                Ok(json!(phc_qemu::agent::Observed {
                    phc_ns,
                    realtime_minus_phc_ns,
                    window_ns,
                    lines,
                    also_minus_phc_ns,
                    also_error,
                }))
            }
            Op::StepPhc { device, delta_ns } => {
                let phc = self.phc(&device)?;
                phc.step(delta_ns).map_err(|e| format!("{device}: step: {e}"))?;
                let phc_ns = phc.gettime().map_err(|e| format!("{device}: {e}"))?;
                Ok(json!(agent::PhcStepped { phc_ns }))
            }
            Op::PhcFrequency { device, ppb } => {
                let phc = self.phc(&device)?;
                let jump_ns =
                    adjfine_without_step(phc, ppb).map_err(|e| format!("{device}: adjfine: {e}"))?;
                Ok(json!(agent::FrequencySet { undone_step_ns: jump_ns }))
            }
            Op::RealtimeToPhc { device } => {
                let phc = self.phc(&device)?;
                let (_, rt_minus_phc, _) = realtime_vs_phc(phc).map_err(|e| format!("{device}: {e}"))?;
                clock_step_ns(libc::CLOCK_REALTIME, -rt_minus_phc).map_err(|e| format!("step: {e}"))?;
                Ok(json!(agent::RealtimeStepped { stepped_ns: -rt_minus_phc }))
            }
            Op::RtcTick { device, set } => {
                let rtc = phc::rtc::Rtc::open(RTC).map_err(|e| format!("{RTC}: {e}"))?;
                let phc = self.phc(&device)?;
                let (rtc_s, phc_ns) = rtc.next_second(|| phc.gettime()).map_err(|e| format!("{RTC}: {e}"))?;
                let phc_ns = phc_ns.map_err(|e| format!("{device}: {e}"))?;
                let set_ns = match set {
                    Some(m) => {
                        // Step by the difference, so the time spent since the boundary stays in.
                        let target = m.host_at(rtc_s);
                        phc.step(target - phc_ns).map_err(|e| format!("{device}: step: {e}"))?;
                        Some(target)
                    }
                    None => None,
                };
                Ok(json!(phc_qemu::agent::RtcTickResult { rtc_s, phc_ns, set_ns }))
            }
            Op::Hello => Ok(json!(agent::Hello { version: env!("CARGO_PKG_VERSION").to_owned() })),
            Op::Clocks => Ok(Value::Null),
            Op::PhcOffset { device } => {
                let phc = self.phc(&device)?;
                // A cross timestamp (ptp_kvm's PRECISE) is exact: no window to halve.
                if let Ok(p) = phc.sys_offset_precise() {
                    let d = p.phc_ns - p.realtime_ns;
                    return Ok(json!(agent::PhcOffsetRead {
                        phc_minus_realtime_ns: d,
                        uncertainty_ns: 0,
                        method: Some("precise".to_owned()),
                    }));
                }
                let samples = phc.sys_offset(25).map_err(|e| format!("{device}: {e}"))?;
                let est = phc::estimate::linuxptp(&samples).ok_or("no samples")?;
                // Sample offsets are system minus PHC; report PHC minus realtime.
                Ok(json!(agent::PhcOffsetRead {
                    phc_minus_realtime_ns: -est.offset_ns,
                    uncertainty_ns: est.uncertainty_ns,
                    method: None,
                }))
            }
            Op::SetPhc { device, host_ns, at_raw_ns } => {
                let phc = self.phc(&device)?;
                let host_ns = host_now_ns(host_ns, at_raw_ns)?;
                phc.settime(host_ns).map_err(|e| format!("{device}: settime: {e}"))?;
                Ok(Value::Null)
            }
            Op::StepRealtime { delta_ns } => {
                clock_step_ns(libc::CLOCK_REALTIME, delta_ns).map_err(|e| format!("step: {e}"))?;
                Ok(Value::Null)
            }
            Op::SetRealtime { host_ns, at_raw_ns } => {
                let host_ns = host_now_ns(host_ns, at_raw_ns)?;
                let now = clock_now_ns(libc::CLOCK_REALTIME).map_err(|e| e.to_string())?;
                clock_step_ns(libc::CLOCK_REALTIME, host_ns - now).map_err(|e| format!("step: {e}"))?;
                Ok(json!(agent::RealtimeStepped { stepped_ns: host_ns - now }))
            }
            Op::Exec { argv, timeout_s } => {
                exec(&argv, timeout_s).map(|r| serde_json::to_value(r).expect("plain"))
            }
            Op::Spawn { name, argv, log } => {
                let (prog, rest) = argv.split_first().ok_or("empty argv")?;
                let f = create_nofollow(&log).map_err(|e| format!("{log}: {e}"))?;
                let f2 = f.try_clone().map_err(|e| e.to_string())?;
                let child = Command::new(prog)
                    .args(rest)
                    .stdin(Stdio::null())
                    .stdout(f)
                    .stderr(f2)
                    .spawn()
                    .map_err(|e| format!("{prog}: {e}"))?;
                let pid = child.id();
                if let Some(mut old) = self.spawned.insert(name, child) {
                    let _ = old.kill();
                    let _ = old.wait();
                }
                Ok(json!(agent::Spawned { pid }))
            }
            Op::StartMock { personality, name } => {
                // The old server goes first: its node has the same name.
                self.phcs.retain(|k, _| !k.ends_with(&format!("/{name}")));
                self.mock = None;
                self.hyperv = None;
                let m = crate::guest::mock::MockServer::start(&personality, &name)?;
                let device = m.device.clone();
                self.mock = Some(m);
                Ok(json!(agent::MockStarted { device }))
            }
            Op::HostSample { host_ns, at_raw_ns, reference, rate_ppb, rate_since, sync } => {
                let host = host_ns.map(|h| (h, at_raw_ns));
                Ok(json!(self.host_sample(host, reference, rate_ppb, rate_since, sync)?))
            }
            Op::ShiftReference { ticks } => {
                let h = self
                    .hyperv
                    .as_ref()
                    .ok_or("shift_reference: hv_utils is not running (start_hyperv first)")?;
                h.shift_reference(ticks)?;
                Ok(json!({ "reference": h.reference_now()? }))
            }
            Op::StartHyperv { implicit, ts_versions, name } => {
                // The PHC behind the link changes with the driver's reload.
                self.phcs.retain(|k, _| !k.ends_with(&format!("/{name}")));
                self.mock = None;
                self.hyperv = None;
                let (h, started) = crate::guest::hyperv::HypervHost::start(implicit, &ts_versions, &name)?;
                self.hyperv = Some(h);
                Ok(json!(started))
            }
            Op::Kill { name } => {
                let mut c = self.spawned.remove(&name).ok_or_else(|| format!("{name}: not running"))?;
                let _ = c.kill();
                let status = c.wait().map_err(|e| e.to_string())?;
                Ok(json!(agent::Killed { status: status.to_string() }))
            }
            Op::WriteFile { path, contents } => {
                create_nofollow(&path)
                    .and_then(|mut f| f.write_all(contents.as_bytes()))
                    .map_err(|e| format!("{path}: {e}"))?;
                Ok(Value::Null)
            }
            Op::ReadFile { path } => {
                let mut f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                let mut buf = Vec::new();
                Read::by_ref(&mut f)
                    .take(MAX_OUTPUT as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("{path}: {e}"))?;
                Ok(Value::String(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
    }
}

/// Waits until process `pid` (a child not yet reaped) ends or `limit` passes, through a pidfd;
/// where the kernel has none (before 5.3), one nap of at most 10 ms.
fn wait_exit(pid: u32, limit: Duration) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
    if fd < 0 {
        std::thread::sleep(limit.min(Duration::from_millis(10)));
        return;
    }
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = limit.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd; the descriptor is ours and closed right after.
    unsafe {
        libc::poll(&mut p, 1, ms);
        libc::close(fd);
    }
}

fn exec(argv: &[String], timeout_s: f64) -> Result<ExecResult, String> {
    let (prog, rest) = argv.split_first().ok_or("empty argv")?;
    // Unnamed temp files (O_TMPFILE where the file system has it): no path to race or follow.
    let so = tempfile::tempfile().map_err(|x| x.to_string())?;
    let se = tempfile::tempfile().map_err(|x| x.to_string())?;
    let (so2, se2) = (so.try_clone().map_err(|x| x.to_string())?, se.try_clone().map_err(|x| x.to_string())?);
    let mut child = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(so2)
        .stderr(se2)
        .spawn()
        .map_err(|x| format!("{prog}: {x}"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s.clamp(0.1, 3600.0));
    let code = loop {
        match child.try_wait().map_err(|x| x.to_string())? {
            Some(s) => break s.code().unwrap_or(-1),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            // One wake-up when the child ends or the deadline comes, not a nap every 10 ms: in
            // virtual time each wake-up of an idle guest is a hand-off between QEMU's threads.
            None => wait_exit(child.id(), deadline.saturating_duration_since(Instant::now())),
        }
    };
    let read = |mut f: std::fs::File| {
        let mut s = Vec::new();
        let _ =
            f.seek(std::io::SeekFrom::Start(0)).and_then(|_| f.take(MAX_OUTPUT as u64).read_to_end(&mut s));
        String::from_utf8_lossy(&s).into_owned()
    };
    Ok(ExecResult { code, stdout: read(so), stderr: read(se) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A host time given with the raw time it held at has the raw time since added (the message's
    /// time in flight), never subtracted; without one it is taken as it is.
    #[test]
    fn host_time_at_a_raw_time_is_carried_to_now() {
        assert_eq!(host_now_ns(42, None), Ok(42));
        let raw = clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap();
        let h = 1_700_000_000_000_000_000;
        let now = host_now_ns(h, Some(raw - 250_000_000)).unwrap();
        // 250 ms in flight, plus what this test took since reading the clock (well under 10 s).
        assert!((h + 250_000_000..h + 10_250_000_000).contains(&now), "{}", now - h);
    }

    fn answers(input: &[u8]) -> Vec<Response> {
        let mut out = Vec::new();
        serve(std::io::BufReader::new(std::io::Cursor::new(input.to_vec())), &mut out, || false, |_| {})
            .unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn the_hold_answers_each_request_in_memory_between_pauses() {
        use phc_qemu::agent::held;
        let requests: Vec<&[u8]> = vec![
            br#"{"id":1,"op":"hello"}"#,
            b"not json",
            br#"{"id":3,"op":"read_file","path":"/nonexistent/x"}"#,
        ];
        let mut mem = vec![0u8; held::SIZE];
        let mut answers: Vec<(u64, Response)> = Vec::new();
        let mut next = 0usize;
        // The host's part, played while the guest stands: take the answer, write the next request.
        let r = serve_held(&mut mem, |mem| {
            if next > 0 {
                let (seq, text) = held::take(mem, held::ANSWER_AT).unwrap();
                answers.push((seq, serde_json::from_slice(&text).unwrap()));
            }
            let Some(req) = requests.get(next) else { return Err(std::io::Error::other("done")) };
            next += 1;
            held::put(mem, held::REQUEST_AT, next as u64, req).unwrap();
            Ok(())
        });
        assert_eq!(r.unwrap_err().to_string(), "done");
        assert_eq!(answers.len(), 3);
        let seqs: Vec<u64> = answers.iter().map(|a| a.0).collect();
        assert_eq!(seqs, [1, 2, 3], "each answer carries its request's number");
        assert!(answers[0].1.ok.as_ref().unwrap()["version"].is_string(), "{:?}", answers[0]);
        assert!(answers[1].1.err.as_ref().unwrap().starts_with("bad request"), "{:?}", answers[1]);
        assert_eq!(answers[2].1.id, 3);
        assert!(answers[2].1.err.as_ref().unwrap().contains("/nonexistent/x"), "{:?}", answers[2]);
    }

    #[test]
    fn tails_return_whole_new_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let path = p.to_str().unwrap();
        std::fs::write(&p, "one\ntwo\npart").unwrap();
        let mut at = 0;
        assert_eq!(tail_lines(path, &mut at), ["one", "two"]);
        assert!(tail_lines(path, &mut at).is_empty());
        std::fs::write(&p, "one\ntwo\npartial done\n").unwrap();
        assert_eq!(tail_lines(path, &mut at), ["partial done"]);
        std::fs::write(&p, "new\n").unwrap();
        assert_eq!(tail_lines(path, &mut at), ["new"], "a shorter file is a new log");
    }

    #[test]
    fn garbage_gets_an_error_answer_and_eof_ends_the_loop() {
        let mut input = Vec::new();
        input.extend_from_slice(b"not json\n");
        input.extend_from_slice(b"\xff\xfe\n");
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend_from_slice(b"\n\n   \n{\"id\":7,\"op\":\"hello\"}\n{\"id\":8,\"op\":\"hello\"}");
        let a = answers(&input);
        assert_eq!(a.len(), 5, "{a:?}");
        assert!(a[0].err.as_deref().unwrap().starts_with("bad request:"));
        assert_eq!(a[1].err.as_deref(), Some("bad request: not UTF-8"));
        assert_eq!(a[2].err.as_deref(), Some(&*format!("bad request: longer than {MAX_LINE} bytes")));
        assert_eq!((a[3].id, a[3].err.is_none()), (7, true));
        assert_eq!((a[4].id, a[4].err.is_none()), (8, true), "a last line without newline is served");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the bytes, lines come back bounded and decoding never panics.
        #[test]
        fn the_line_decoder_never_panics(chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                Just(b"\n".to_vec()),
                Just(b"{\"id\":1,\"op\":".to_vec()),
                (0usize..3).prop_map(|k| vec![b'a'; MAX_LINE - 1 + k]),
            ], 0..8)) {
            let input: Vec<u8> = chunks.concat();
            let mut r = std::io::BufReader::with_capacity(4096, std::io::Cursor::new(&input));
            let mut buf = Vec::new();
            let mut lines = 0;
            while let Some(line) = read_line(&mut r, &mut buf).unwrap() {
                prop_assert!(buf.len() <= MAX_LINE);
                if line.is_ok() {
                    let _ = decode(&buf);
                }
                lines += 1;
                prop_assert!(lines <= input.len() + 1);
            }
        }
    }
}
