//! A booted guest with its agent connected: builds the image, starts QEMU, waits for the agent's
//! first answer and measures boot-to-ready. Everything is bounded by the caller's deadline, and a
//! failure on the way leaves no QEMU behind (the `Guest` drops).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::accel::{self, Decision};
use crate::agent::{held, Op, Request, Response};
use crate::bootsnap::{self, BootSnapshot};
use crate::client::{host_realtime_ns, AgentClient, Exchange};
use crate::image::{self, ImageSpec};
use crate::launcher::{Accel, Guest, GuestBuilder, GuestClock};
use crate::nested::{self, Nested};
use crate::qmp::Qmp;
use crate::tmp::{self, TempPath};
use crate::{Error, Waited};

/// How to start a guest: everything `Session::start` needs.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The image: kernel, modules, the agent binary.
    pub spec: ImageSpec,
    /// Acceleration; `None` takes this machine's decision (cached, see `accel`).
    pub accel: Option<Accel>,
    /// Real or virtual time.
    pub clock: GuestClock,
    /// What the guest is for (`GuestBuilder::role`).
    pub role: String,
    /// Longest wait from starting QEMU to the agent's first answer.
    pub timeout: Duration,
    /// Where this machine runs TCG and the image loads ptp_kvm: boot the image as L2 under KVM
    /// nested inside a TCG guest (`nested`), so that ptp_kvm really runs.
    pub nested: bool,
    /// In virtual time: restore the guest from the boot snapshot cache where it has this
    /// guest, else boot it and save it there (`bootsnap`).
    pub snapshot: bool,
}

/// How a guest came up.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// Acceleration used.
    pub accel: Accel,
    /// How the acceleration was chosen, and why.
    pub accel_reason: String,
    /// Seconds spent writing the initramfs.
    pub image_build_s: f64,
    /// Seconds spent deciding the acceleration.
    pub accel_detect_s: f64,
    /// The guest kernel's release (`uname -r`), from the kernel cache.
    pub kernel_release: String,
    /// Whether the guest runs as L2 under KVM inside a TCG guest (`nested`).
    pub nested: bool,
    /// Where the boot snapshot cache was asked for: whether this guest was restored from it or
    /// booted and saved, and how long that took.
    pub snapshot: Option<BootSnapshot>,
}

/// A guest whose agent answers.
pub struct Session {
    /// The QEMU guest.
    pub guest: Guest,
    /// The agent connection.
    pub agent: AgentClient,
    /// From starting QEMU to the agent's first answer.
    pub boot_to_ready: Duration,
    /// The initramfs used (kept for reboots), removed when the session drops.
    pub initrd: TempPath,
    /// L1's side when the guest is nested (`nested`): then `guest` is L1's QEMU and `agent` L2's.
    pub nested: Option<Nested>,
    builder: GuestBuilder,
    hold: Hold,
}

/// Where a guest that holds (`agent::held`) stands.
#[derive(Debug)]
struct Hold {
    /// The last request's number; 0 for a guest that does not hold.
    seq: u64,
    /// Whether the guest stands now (and its agent waits for a request in memory).
    standing: bool,
    /// The file behind the hold's memory, opened at the first request.
    file: Option<std::fs::File>,
}

impl Hold {
    /// A guest that does not hold.
    const OFF: Self = Self { seq: 0, standing: false, file: None };
}

/// Longest a restore may take before the guest is booted instead (a restore is about a second).
const RESTORE_LIMIT: Duration = Duration::from_secs(30);

/// Round trip under which one offset exchange with L1's agent is taken as good enough to step
/// its clock by (L1 is the host clock of a nested run: it need not match the host's to the
/// microsecond, only not stand days behind it).
const L1_ALIGN_RTT_NS: i64 = 2_000_000;

/// Steps L1's CLOCK_REALTIME to the host's (best of up to 10 exchanges); returns the step, ns.
fn align_l1(l1: &mut AgentClient, deadline: Instant) -> Result<i64, Error> {
    let est = l1.offset_within(3, 10, L1_ALIGN_RTT_NS, deadline)?;
    let delta_ns = -est.offset_ns;
    l1.call(Op::StepRealtime { delta_ns }, deadline)?;
    Ok(delta_ns)
}

/// `more` after `note`, where there is one.
fn join_note(note: Option<String>, more: String) -> String {
    match note {
        Some(n) => format!("{n}; {more}"),
        None => more,
    }
}

/// Drops the boot snapshot `key` whose `file` failed to restore, and says so for the note.
fn restore_failed(key: &str, file: &Path, e: &Error) -> String {
    bootsnap::forget(key);
    format!("restoring {} failed, booted instead: {}", file.display(), crate::chain(e))
}

/// The size of `file`, 0 where it cannot be read.
fn file_bytes(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// Waits for the agent to answer `Hello`, retrying the connection while the guest boots. A guest
/// that `holds` stands before its agent's first request: `Hello` then goes through the hold's
/// memory (`held_call`).
fn wait_ready(guest: &mut Guest, holds: bool, deadline: Instant) -> Result<(AgentClient, Hold), Error> {
    if holds {
        // Never connected: the socket's "host connected" would reach the guest as an interrupt
        // at a moment of the host's choosing.
        let agent = AgentClient::unconnected(&guest.agent_socket());
        let mut hold = Hold::OFF;
        hello_held(guest, &mut hold, deadline)?;
        return Ok((agent, hold));
    }
    let mut agent = AgentClient::connect(&guest.agent_socket(), deadline).map_err(|e| explain(guest, e))?;
    hello_until_answered(guest, &mut agent, deadline)?;
    Ok((agent, Hold::OFF))
}

/// Waits for a holding guest's agent to stand before its first request (a boot, a restore, a
/// reboot), then says `Hello` through the hold.
fn hello_held(guest: &mut Guest, hold: &mut Hold, deadline: Instant) -> Result<(), Error> {
    wait_stand(guest, deadline)?;
    hold.standing = true;
    held_call(guest, hold, Op::Hello, deadline).map(drop)
}

/// Waits until the guest stands: pvpanic's `guest-panicked` where the agent held it, or
/// `postmigrate` after a save. A boot or restore on the way reads `running`, `inmigrate` or
/// `prelaunch`: polled less often the longer it takes.
fn wait_stand(guest: &mut Guest, deadline: Instant) -> Result<(), Error> {
    let mut nap = Duration::from_micros(50);
    loop {
        if let Some(Error::QemuExited { status, stderr_tail, .. }) = guest.exit_error() {
            return Err(Error::QemuExited { status, stderr_tail, console_tail: console_tail(guest) });
        }
        let status = guest.qmp().status(deadline).map_err(|e| explain(guest, e))?;
        match status.as_str() {
            "guest-panicked" | "paused" | "postmigrate" => return Ok(()),
            "running" | "inmigrate" | "prelaunch" | "finish-migrate" => {}
            other => {
                return Err(Error::Guest(format!(
                    "waiting for the guest's agent to hold it, QEMU's state is {other}"
                )))
            }
        }
        if Instant::now() + nap >= deadline {
            return Err(Error::Timeout { what: Waited::Agent, console_tail: console_tail(guest) });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// One request to a guest that stands (`agent::held`): written into the hold's memory, the guest
/// resumed (QMP `cont`), and the answer read back once it stands again (QMP's `STOP`).
fn held_call(guest: &mut Guest, hold: &mut Hold, op: Op, deadline: Instant) -> Result<Exchange, Error> {
    use std::os::unix::fs::FileExt;
    if !hold.standing {
        return Err(Error::Guest("a request to a holding guest that does not stand".into()));
    }
    hold.seq += 1;
    let id = hold.seq;
    let text = serde_json::to_vec(&Request { id, op }).expect("requests serialize");
    let path = guest.hold_file();
    let io = |source| Error::Io { op: "use", path: path.clone(), source };
    if hold.file.is_none() {
        hold.file = Some(std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(io)?);
    }
    let file = hold.file.as_ref().expect("opened above");
    let framed = held::frame(held::REQUEST_AT, id, &text).map_err(Error::Guest)?;
    file.write_all_at(&framed, held::REQUEST_AT as u64).map_err(io)?;
    let host_sent_ns = host_realtime_ns();
    guest.qmp().events.clear();
    hold.standing = false;
    guest.qmp().cont(deadline).map_err(|e| explain(guest, e))?;
    // The agent answers, then stands again: a STOP with no answer is a guest that stopped on its
    // own (its kernel's panic, through the same pvpanic).
    guest.qmp().wait_event("STOP", deadline).map_err(|e| match e {
        Error::Timeout { .. } => {
            Error::Timeout { what: Waited::AgentAnswer, console_tail: console_tail(guest) }
        }
        e => explain(guest, e),
    })?;
    hold.standing = true;
    let host_received_ns = host_realtime_ns();
    let mut h = [0u8; held::HEADER_LEN];
    file.read_exact_at(&mut h, held::ANSWER_AT as u64).map_err(io)?;
    let (seq, len) = held::header(&h);
    if len > held::room(held::ANSWER_AT) {
        return Err(Error::Guest(format!("the hold's answer claims {len} bytes, more than it has")));
    }
    let mut answer = vec![0u8; len];
    file.read_exact_at(&mut answer, (held::ANSWER_AT + held::HEADER_LEN) as u64).map_err(io)?;
    if seq != id {
        return Err(Error::Guest(format!(
            "the guest stood without answering request {id} (its kernel panicked?): {}",
            console_tail(guest)
        )));
    }
    let text = String::from_utf8_lossy(&answer);
    let response: Response = serde_json::from_str(text.trim())
        .map_err(|source| Error::AgentGarbage { shown: text.chars().take(80).collect(), source })?;
    if let Some(err) = &response.err {
        return Err(Error::Guest(err.clone()));
    }
    Ok(Exchange { response, host_sent_ns, host_received_ns })
}

fn hello_until_answered(guest: &mut Guest, agent: &mut AgentClient, deadline: Instant) -> Result<(), Error> {
    loop {
        if let Some(Error::QemuExited { status, stderr_tail, .. }) = guest.exit_error() {
            return Err(Error::QemuExited { status, stderr_tail, console_tail: console_tail(guest) });
        }
        // Until the guest opens the port, requests vanish: ask again every half second.
        let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
        match agent.call(Op::Hello, step) {
            Ok(_) => return Ok(()),
            Err(Error::Timeout { .. }) if Instant::now() < deadline => continue,
            Err(Error::Timeout { .. }) => {
                return Err(Error::Timeout { what: Waited::Agent, console_tail: console_tail(guest) })
            }
            Err(e) => return Err(explain(guest, e)),
        }
    }
}

/// `e`, or what it is a symptom of, with the console's last lines: a channel (agent or QMP)
/// that broke because QEMU died says less than `QEMU exited (signal: 9 (SIGKILL))`, and an agent
/// channel that broke while QEMU runs on means the agent died in the guest, which its console
/// tells. The socket breaks a moment before QEMU can be reaped, so this waits up to a second
/// for the exit.
fn explain(guest: &mut Guest, e: Error) -> Error {
    if !(e.is_channel_lost() || matches!(e, Error::QmpIo(_) | Error::QmpClosed)) {
        return e;
    }
    match guest.exit_within(Duration::from_secs(1)) {
        Some(Error::QemuExited { status, stderr_tail, .. }) => {
            Error::QemuExited { status, stderr_tail, console_tail: console_tail(guest) }
        }
        _ if e.is_channel_lost() => Error::AgentLost { console_tail: console_tail(guest) },
        _ => e,
    }
}

/// The last lines of the console, for error messages.
pub fn console_tail(guest: &Guest) -> String {
    let c = guest.console();
    let lines: Vec<&str> = c.lines().filter(|l| !l.trim().is_empty()).rev().take(4).collect();
    if lines.is_empty() {
        // The default command line has `quiet`: nothing shows before init's first line.
        return "(empty: the kernel had not reached init)".into();
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

impl Session {
    /// The one way a guest is booted: decides the acceleration (virtual time is TCG's alone),
    /// builds the image into a fresh temp file (without ptp_kvm under TCG; or, with `o.nested`
    /// under TCG, the image as L2 inside L1's: `start_nested`), starts QEMU and waits for the
    /// agent.
    pub fn start(o: &BootOptions) -> Result<(Self, BootInfo), Error> {
        let t0 = Instant::now();
        let (accel, accel_reason) = match (o.clock, o.accel) {
            (GuestClock::Virtual { .. }, Some(Accel::Kvm)) => {
                return Err(Error::Unsupported {
                    what: "--accel kvm with --clock virtual".into(),
                    why: "virtual time (icount) exists under TCG only; use --clock real for KVM".into(),
                })
            }
            (GuestClock::Virtual { .. }, _) => {
                (Accel::Tcg, "virtual time (icount) runs under TCG only".to_owned())
            }
            (GuestClock::Real, Some(a)) => (a, Decision::asked(a).reason()),
            (GuestClock::Real, None) => {
                let d = accel::decide_here(false)?;
                (d.accel, d.reason())
            }
        };
        let t1 = Instant::now();
        let initrd = tmp::file("initrd", &o.role, ".cpio")?;
        if o.nested && accel == Accel::Tcg && o.spec.modules.iter().any(|m| m == "ptp_kvm") {
            return Self::start_nested(o, initrd, accel_reason, t1 - t0);
        }
        let kernel = if accel == Accel::Tcg && o.spec.modules.iter().any(|m| m == "ptp_kvm") {
            // ptp_kvm needs KVM's paravirtual clock: under TCG its insmod only fails, after
            // 0.2 s of boot time.
            let mut spec = o.spec.clone();
            spec.modules.retain(|m| m != "ptp_kvm");
            image::build(&spec, &initrd)?
        } else {
            image::build(&o.spec, &initrd)?
        };
        let t2 = Instant::now();
        let mut builder = GuestBuilder::new(kernel, &initrd).accel(accel).role(o.role.clone()).clock(o.clock);
        if o.spec.vmclock {
            builder = builder.arg("-device").arg("vmclock");
        }
        let kernel_release = o.spec.kernel_release()?;
        let deadline = Instant::now() + o.timeout;
        let cached = o.snapshot && accel == Accel::Tcg && matches!(o.clock, GuestClock::Virtual { .. });
        let (session, snapshot) = if !cached {
            (Self::boot_with(builder, initrd, deadline)?, None)
        } else if !builder.kernel_path().starts_with(image::cache_dir()) {
            // A user's kernel (--kernel, --kernel-deb) is unpacked afresh for each run: a file
            // keyed by it would never be restored.
            let note = "not cached: the kernel is a copy made for this run (--kernel or --kernel-deb), not \
                        one of the cache's";
            (Self::boot_with(builder, initrd, deadline)?, Some(BootSnapshot::skipped(note)))
        } else {
            let (s, snap) = Self::boot_cached(builder, initrd, deadline)?;
            (s, Some(snap))
        };
        let round3 = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        let info = BootInfo {
            accel,
            accel_reason,
            image_build_s: round3(t2 - t1),
            accel_detect_s: round3(t1 - t0),
            kernel_release,
            nested: false,
            snapshot,
        };
        Ok((session, info))
    }

    /// `start` for a nested guest: L1's image (L2's inside), L1 booted under TCG until its agent
    /// answers, then L2's QMP and agent through L1's relays. `boot_to_ready` runs from starting
    /// L1's QEMU to L2's agent's first answer.
    ///
    /// Boot once, restore many (`o.snapshot`): L1 is saved with L2 up to its agent (nothing of a
    /// scenario started) in the boot snapshot cache, keyed by L1's command line (its socket folder
    /// written as a name) and the image, which holds L2's; later runs restore it. Both clocks stood
    /// still in the file (the stream carries L1's TSC, and L2's kvmclock follows L1's), so L1's
    /// CLOCK_REALTIME, the host clock ptp_kvm reads, comes back as far behind the host's as the
    /// file is old: it is stepped to the host's (`align_l1`), in the booted run too (the save stood
    /// it still for seconds). L2's clock is then set from ptp_kvm by the caller, as after a boot.
    fn start_nested(
        o: &BootOptions,
        initrd: tmp::TempPath,
        accel_reason: String,
        detect: Duration,
    ) -> Result<(Self, BootInfo), Error> {
        let t1 = Instant::now();
        let dir = Nested::socket_dir()?;
        let (kernel, _cached) = nested::build(&o.spec, &initrd)?;
        let image_build = t1.elapsed();
        let builder =
            nested::l1_builder(kernel.clone(), &initrd, dir.path()).role(o.role.clone()).clock(o.clock);
        let deadline = Instant::now() + o.timeout;
        let key = if o.snapshot {
            Some(bootsnap::key_with(&builder, &[(dir.path(), "(l2-sockets)")])?)
        } else {
            None
        };
        let mut note = None;
        let mut initrd = Some(initrd);
        let mut restored = None;
        if let Some((key, file)) = key.as_ref().and_then(|k| Some((k, bootsnap::lookup(k)?))) {
            let within = deadline.min(Instant::now() + RESTORE_LIMIT);
            let attempt = Self::restore_from(&builder, initrd.take().expect("initrd"), &file, within)
                .map_err(|(e, back)| {
                    initrd = Some(back);
                    e
                })
                .and_then(|mut s| Self::reach_l2(&mut s, dir.path(), within).map(|l2| (s, l2)));
            match attempt {
                Ok((mut s, l2)) => {
                    s.boot_to_ready = s.guest.started().elapsed();
                    let seconds = s.boot_to_ready.as_secs_f64();
                    let bytes = file_bytes(&file);
                    let snap = BootSnapshot { key: key.clone(), restored: true, seconds, bytes, note: None };
                    restored = Some((s, l2, snap));
                }
                Err(e) => note = Some(restore_failed(key, &file, &e)),
            }
        }
        let (mut s, l2, snapshot) = match restored {
            Some((s, l2, snap)) => (s, l2, Some(snap)),
            None => {
                // A failed restore's session removed its initramfs: the image again (a hard link
                // from the image cache).
                let (initrd, builder) = match initrd {
                    Some(i) => (i, builder),
                    None => {
                        let i = tmp::file("initrd", &o.role, ".cpio")?;
                        nested::build(&o.spec, &i)?;
                        let b =
                            nested::l1_builder(kernel, &i, dir.path()).role(o.role.clone()).clock(o.clock);
                        (i, b)
                    }
                };
                let mut s = Self::boot_with(builder, initrd, deadline)?;
                let l2 = Self::reach_l2(&mut s, dir.path(), deadline)?;
                // Ready when L2's agent answers, before the save.
                s.boot_to_ready = s.guest.started().elapsed();
                let snapshot = match key {
                    None => None,
                    Some(key) => Some(s.save_booted(key, true, note, deadline)?),
                };
                (s, l2, snapshot)
            }
        };
        let (l2_agent, qmp) = l2;
        let mut l1_agent = std::mem::replace(&mut s.agent, l2_agent);
        let snapshot = match snapshot {
            Some(mut snap) => {
                let stepped = align_l1(&mut l1_agent, deadline).map_err(|e| s.explain(e))?;
                let said =
                    format!("L1's CLOCK_REALTIME stepped {:+.3} s to the host's", stepped as f64 / 1e9);
                snap.note = Some(join_note(snap.note.take(), said));
                Some(snap)
            }
            None => None,
        };
        s.nested = Some(Nested::new(l1_agent, qmp, dir));
        let round3 = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        let info = BootInfo {
            accel: Accel::Tcg,
            accel_reason,
            image_build_s: round3(image_build),
            accel_detect_s: round3(detect),
            // L2 runs the same kernel as L1.
            kernel_release: o.spec.kernel_release()?,
            nested: true,
            snapshot,
        };
        Ok((s, info))
    }

    /// L2's agent (answering) and QMP, through L1's relays whose host sockets are in `dir`.
    fn reach_l2(s: &mut Self, dir: &Path, deadline: Instant) -> Result<(AgentClient, Qmp), Error> {
        let mut l2 =
            AgentClient::connect(&Nested::l2_agent_socket(dir), deadline).map_err(|e| s.explain(e))?;
        let qmp = Nested::connect_qmp(dir, deadline).map_err(|e| s.explain(e))?;
        hello_until_answered(&mut s.guest, &mut l2, deadline)?;
        Ok((l2, qmp))
    }

    /// The QMP of the machine the scenario runs on: L2's (relayed by L1) when nested, else the
    /// guest's.
    pub fn vm_qmp(&mut self) -> &mut Qmp {
        match &mut self.nested {
            Some(n) => &mut n.qmp,
            None => self.guest.qmp(),
        }
    }

    /// Boots `spec` under `accel` in real time by `Session::start`, for callers that need no
    /// `BootInfo`.
    pub fn boot(spec: &ImageSpec, accel: Accel, deadline: Instant) -> Result<Self, Error> {
        let o = BootOptions {
            spec: spec.clone(),
            accel: Some(accel),
            clock: GuestClock::Real,
            role: "guest".into(),
            timeout: deadline.saturating_duration_since(Instant::now()),
            nested: false,
            snapshot: false,
        };
        Self::start(&o).map(|(s, _)| s)
    }

    /// Boots a prepared builder. The session owns `initrd` from here: it is removed when the
    /// session drops, or at once if the boot fails.
    pub fn boot_with(builder: GuestBuilder, initrd: TempPath, deadline: Instant) -> Result<Self, Error> {
        Self::try_boot(builder, initrd, deadline).map_err(|(e, _)| e)
    }

    /// `boot_with`, handing the initramfs back with the error (QEMU is gone by then).
    fn try_boot(
        builder: GuestBuilder,
        initrd: TempPath,
        deadline: Instant,
    ) -> Result<Self, (Error, TempPath)> {
        let t0 = Instant::now();
        let mut guest = match builder.start(deadline) {
            Ok(g) => g,
            Err(e) => return Err((e, initrd)),
        };
        match wait_ready(&mut guest, builder.holds(), deadline) {
            Ok((agent, hold)) => {
                Ok(Self { guest, agent, boot_to_ready: t0.elapsed(), initrd, nested: None, builder, hold })
            }
            Err(e) => {
                guest.shutdown();
                Err((e, initrd))
            }
        }
    }

    /// Boot once, restore many (`bootsnap`): restores the guest `builder` would boot where the
    /// cache has it (`boot_to_ready` is then the restore's), else boots it and saves it at
    /// agent-ready before handing it over. A file that fails to restore is dropped and the guest
    /// booted, the reason kept in the note; a failed save leaves the guest running, with its note.
    fn boot_cached(
        builder: GuestBuilder,
        initrd: TempPath,
        deadline: Instant,
    ) -> Result<(Self, BootSnapshot), Error> {
        let key = bootsnap::key(&builder)?;
        let mut note = None;
        let mut initrd = initrd;
        if let Some(file) = bootsnap::lookup(&key) {
            match Self::restore_from(&builder, initrd, &file, deadline) {
                Ok(s) => {
                    let (seconds, bytes) = (s.boot_to_ready.as_secs_f64(), file_bytes(&file));
                    return Ok((s, BootSnapshot { key, restored: true, seconds, bytes, note }));
                }
                Err((e, back)) => {
                    note = Some(restore_failed(&key, &file, &e));
                    initrd = back;
                }
            }
        }
        let mut s = Self::boot_with(builder, initrd, deadline)?;
        // A guest that holds is saved standing after its first answer: restored, it resumes
        // from that same instruction with the next request in its memory.
        let resume = !s.holding();
        let snap = s.save_booted(key, resume, note, deadline)?;
        Ok((s, snap))
    }

    /// The guest `builder` boots, restored from the boot snapshot `file` instead (within
    /// `RESTORE_LIMIT`), its agent answering; later reboots boot the image (the session's
    /// builder is `builder`, without the stream). A failure hands the initramfs back.
    fn restore_from(
        builder: &GuestBuilder,
        initrd: TempPath,
        file: &Path,
        deadline: Instant,
    ) -> Result<Self, (Error, TempPath)> {
        let restoring = builder.clone().arg("-incoming").arg(format!("file:{}", file.display()));
        let mut s = Self::try_boot(restoring, initrd, deadline.min(Instant::now() + RESTORE_LIMIT))?;
        bootsnap::touch(file);
        s.builder = builder.clone();
        Ok(s)
    }

    /// Saves this booted guest in the boot snapshot cache as `key` (`bootsnap::save`), running
    /// on after it where `resume`. A save that failed leaves the guest running, and says so after
    /// `note`.
    fn save_booted(
        &mut self,
        key: String,
        resume: bool,
        note: Option<String>,
        deadline: Instant,
    ) -> Result<BootSnapshot, Error> {
        match bootsnap::save(self.guest.qmp(), &key, resume, deadline) {
            Ok((seconds, bytes)) => Ok(BootSnapshot { key, restored: false, seconds, bytes, note }),
            Err(e) => {
                // The guest must run on: a save that failed after pausing it is undone here.
                if resume {
                    self.guest.qmp().execute("cont", None, deadline)?;
                }
                let why = format!("saving the booted guest failed: {}", crate::chain(&e));
                Ok(BootSnapshot {
                    key,
                    restored: false,
                    seconds: 0.0,
                    bytes: 0,
                    note: Some(join_note(note, why)),
                })
            }
        }
    }

    /// After a `system_reset`: waits for the rebooted guest's agent on the same channel (QEMU
    /// keeps the host side of the socket across a reset); a guest that holds stands again before
    /// its first request.
    pub fn wait_agent_again(&mut self, deadline: Instant) -> Result<Duration, Error> {
        let t0 = Instant::now();
        if self.holding() {
            hello_held(&mut self.guest, &mut self.hold, deadline)?;
        } else {
            hello_until_answered(&mut self.guest, &mut self.agent, deadline)?;
        }
        Ok(t0.elapsed())
    }

    /// `e`, or what it is a symptom of, with the console's last lines (see `explain`).
    pub fn explain(&mut self, e: Error) -> Error {
        explain(&mut self.guest, e)
    }

    /// Whether the guest holds between requests (`agent::held`, `GuestBuilder::holds`): then
    /// nothing the host does between two requests takes guest time.
    pub fn holding(&self) -> bool {
        self.builder.holds()
    }

    /// One agent request: `AgentClient::call`, or, where the guest holds, through the hold
    /// (`agent::held`).
    pub fn call(&mut self, op: Op, deadline: Instant) -> Result<Exchange, Error> {
        if !self.holding() {
            return self.agent.call(op, deadline);
        }
        held_call(&mut self.guest, &mut self.hold, op, deadline)
    }

    /// A request that is the first thing the guest does after standing a while (a pause): where
    /// the guest holds, it stands already between requests; else it is stopped (QMP `stop`),
    /// `meanwhile` runs, and the request is queued before the guest runs again (`cont`).
    pub fn call_after_stop(
        &mut self,
        op: Op,
        meanwhile: impl FnOnce(),
        deadline: Instant,
    ) -> Result<Exchange, Error> {
        if self.holding() {
            meanwhile();
            return held_call(&mut self.guest, &mut self.hold, op, deadline);
        }
        self.guest.qmp().stop(deadline)?;
        meanwhile();
        let (id, sent) = self.agent.send(op)?;
        self.guest.qmp().cont(deadline)?;
        self.agent.wait(id, sent, deadline)
    }

    /// `system_reset` (a hard reboot); a guest that holds is resumed into it. Wait for the
    /// rebooted agent with `wait_agent_again`.
    pub fn reset(&mut self, deadline: Instant) -> Result<(), Error> {
        self.guest.qmp().system_reset(deadline)?;
        if self.holding() {
            self.hold.standing = false;
            // A reset of a stopped guest leaves it in `prelaunch`: start it.
            if self.guest.qmp().status(deadline)? != "running" {
                self.guest.qmp().cont(deadline)?;
            }
        }
        Ok(())
    }

    /// The builder this session was started with.
    pub fn builder(&self) -> &GuestBuilder {
        &self.builder
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // QEMU first: it has the initramfs open until it exits.
        self.guest.shutdown();
    }
}
