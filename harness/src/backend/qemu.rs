//! The QEMU backend: the scenario runs against a real Linux guest. Pauses are QMP `stop`/`cont`,
//! reboots `system_reset`; the guest PHC is QEMU's igb clock, fed with host time by the harness's
//! time-sync provider (VMICTimeSync emulation); the discipline is the real chronyd in the guest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mock_phc::{DisciplineConfig, Disturbance, Event, EventKind};
use phc_qemu::accel::{self, Decision};
use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::client::host_realtime_ns;
use phc_qemu::image::ImageSpec;
use phc_qemu::session::Session;
use phc_qemu::{signals, tmp, Accel, Error};
use serde_json::{json, Value};

use super::chronylog::{self, Line};
use super::provider::Provider;
use crate::engine::{Backend, Observation};
use crate::scenario::Scenario;

/// The guest's PHC: the igb NIC clock.
pub const GUEST_PHC: &str = "/dev/ptp0";
const CHRONY_LOG: &str = "/tmp/chronyd.log";
/// A regular sample re-sets the PHC only when it is off by more than this: QEMU's igb clock
/// keeps host time between pauses, and re-setting it every 5 s would only add transfer noise.
const RESET_THRESHOLD_NS: i64 = 1_000_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the guest.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The static harness binary to install as the guest agent.
    pub agent_bin: PathBuf,
    /// Acceleration; `None` takes this machine's decision (phc_qemu::accel: cached, or found by
    /// a trial guest).
    pub accel: Option<Accel>,
    /// Longest wait for boot to agent-ready.
    pub boot_timeout: Duration,
    /// Use the guest's ptp_kvm clock (needs KVM) instead of the igb clock fed by the provider.
    pub ptp_kvm: bool,
}

/// The guest agent binary: `--agent-bin`, else `PHC_AGENT_BIN`, else what ci/build-agent.sh builds.
pub fn find_agent_bin(explicit: Option<PathBuf>) -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = explicit
        .into_iter()
        .chain(std::env::var_os("PHC_AGENT_BIN").map(PathBuf::from))
        .chain(std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join(GUEST_REL)))
        .chain(std::iter::once(PathBuf::from("target").join(GUEST_REL)))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or(Error::AgentBinMissing { looked_at: candidates })
}

/// The stripped static copy ci/build-agent.sh leaves for guest images.
const GUEST_REL: &str = "x86_64-unknown-linux-gnu/release/phc-harness-guest";

/// Prepares this process for guests, once, before the first: SIGINT and SIGTERM end the run
/// through its normal path from now on (phc_qemu::signals: QEMU killed, temp files removed,
/// an aborted report), and what runs killed outright (SIGKILL, a crash: no destructors) left in
/// the temp dir is removed, by the dead pid in its name, never a live run's.
pub fn prepare_process() {
    if let Err(e) = signals::install() {
        eprintln!("phc-harness: cannot handle SIGINT/SIGTERM: {e}");
    }
    for p in tmp::sweep(&std::env::temp_dir()) {
        eprintln!("phc-harness: removed {} (left by a run that died)", p.display());
    }
}

/// Why a scenario cannot run on QEMU, or `None` when it can.
pub fn unsupported(s: &Scenario) -> Option<String> {
    for d in &s.world.disciplines {
        match d {
            DisciplineConfig::Chrony(_) | DisciplineConfig::HvUtils(_) | DisciplineConfig::None => {}
            other => {
                return Some(format!(
                "discipline {:?} has no real daemon in the guest image (chronyd and hv_utils emulation only)",
                kind_name(other)
            ))
            }
        }
    }
    for e in &s.timeline.events {
        match e.disturbance {
            Disturbance::FrequencyJump { .. } => {
                return Some("frequency_jump: QEMU cannot change a running guest's oscillator".into())
            }
            Disturbance::SamplesStop | Disturbance::SamplesResume => {
                return Some(
                    "samples_stop/resume: the igb PHC never goes stale (ESTALE needs the CUSE hyperv mock)"
                        .into(),
                )
            }
            _ => {}
        }
    }
    None
}

fn kind_name(d: &DisciplineConfig) -> &'static str {
    match d {
        DisciplineConfig::Chrony(_) => "chrony",
        DisciplineConfig::Ntpd(_) => "ntpd",
        DisciplineConfig::Phc2sys(_) => "phc2sys",
        DisciplineConfig::HvUtils(_) => "hv_utils",
        DisciplineConfig::None => "none",
    }
}

/// How a guest came up.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// Acceleration used.
    pub accel: Accel,
    /// How it was chosen and why: asked for, cached, or probed (`Decision::reason`).
    pub accel_reason: String,
    /// Seconds spent writing the initramfs.
    pub image_build_s: f64,
    /// Seconds spent deciding the acceleration (a cache read, or a trial guest).
    pub accel_detect_s: f64,
}

/// Builds the guest image, picks the acceleration (this machine's decision unless `opts` names
/// one) and boots. `role` names the guest (`GuestBuilder::role`: `scenario`, `device`).
pub fn boot(opts: &QemuOptions, role: &str) -> Result<(Session, BootInfo), Error> {
    let t0 = Instant::now();
    let spec = ImageSpec::with_agent(&opts.agent_bin);
    let initrd = tmp::file("initrd", role, ".cpio")?;
    let kernel = phc_qemu::image::build(&spec, &initrd)?;
    let t1 = Instant::now();
    let decision = match opts.accel {
        Some(a) => Decision::asked(a),
        None => accel::decide_here(false)?,
    };
    let (accel, accel_reason) = (decision.accel, decision.reason());
    let t2 = Instant::now();
    let builder = phc_qemu::GuestBuilder::new(&kernel, &initrd).accel(accel).role(role);
    let session = Session::boot_with(builder, initrd, Instant::now() + opts.boot_timeout)?;
    let info = BootInfo {
        accel,
        accel_reason,
        image_build_s: round3((t1 - t0).as_secs_f64()),
        accel_detect_s: round3((t2 - t1).as_secs_f64()),
    };
    Ok((session, info))
}

/// The guest's PHC whose sysfs clock_name is `name`, as a device path.
pub fn find_phc_by_name(session: &mut Session, name: &str) -> Result<String, Error> {
    let script = "for d in /sys/class/ptp/*; do echo \"$(basename $d) $(cat $d/clock_name)\"; done";
    let r: ExecResult = session.agent.call_value(
        Op::Exec { argv: vec!["sh".into(), "-c".into(), script.into()], timeout_s: 10.0 },
        Instant::now() + CALL_TIMEOUT,
    )?;
    r.stdout
        .lines()
        .find_map(|l| {
            l.split_once(' ').filter(|(_, n)| n.trim() == name).map(|(dev, _)| format!("/dev/{dev}"))
        })
        .ok_or_else(|| Error::NoSuchPhc { name: name.to_owned(), have: r.stdout.trim().to_owned() })
}

/// A scenario's guest.
pub struct QemuBackend {
    session: Session,
    origin: Instant,
    provider: Provider,
    hv_utils: Option<mock_phc::HvUtilsConfig>,
    chrony_conf: Option<String>,
    /// The guest PHC the daemon reads.
    phc_device: String,
    /// Whether the provider sets the PHC to host time (igb); ptp_kvm reads host time itself.
    feed_phc: bool,
    paused_until: Option<(Instant, bool)>,
    reference_offset_ns: i64,
    events: Vec<Event>,
    chrony_lines_seen: usize,
    chrony_log: String,
    half_rtt_ns: i64,
    info: BTreeMap<String, Value>,
    taken: Vec<Observation>,
}

impl QemuBackend {
    /// Boots the guest, aligns its clocks with the host, starts the scenario's daemon; scenario
    /// time starts when this returns.
    pub fn start(s: &Scenario, opts: &QemuOptions) -> Result<Self, Error> {
        if let Some(why) = unsupported(s) {
            return Err(Error::Unsupported { what: s.name.clone(), why });
        }
        if opts.ptp_kvm
            && s.timeline.events.iter().any(|e| matches!(e.disturbance, Disturbance::HostStep { .. }))
        {
            return Err(Error::Unsupported {
                what: format!("{} with ptp_kvm", s.name),
                why: "host_step cannot be emulated for ptp_kvm, which reads the real host clock".into(),
            });
        }
        let (mut session, bi) = boot(opts, "scenario")?;
        let (accel, why) = (bi.accel, bi.accel_reason);
        let mut info = BTreeMap::new();
        info.insert("accel".into(), json!(accel.name()));
        info.insert("accel_reason".into(), json!(why));
        info.insert("image_build_s".into(), json!(bi.image_build_s));
        info.insert("accel_detect_s".into(), json!(bi.accel_detect_s));
        info.insert("boot_to_ready_s".into(), json!(round3(session.boot_to_ready.as_secs_f64())));
        let (phc_device, feed_phc) = if opts.ptp_kvm {
            if accel != Accel::Kvm {
                return Err(Error::Unsupported {
                    what: "ptp_kvm".into(),
                    why: format!("it needs KVM, and this machine runs TCG ({why})"),
                });
            }
            let dev = find_phc_by_name(&mut session, "KVM virtual PTP")?;
            info.insert(
                "phc".into(),
                json!(format!("ptp_kvm ({dev}), reading host time itself; no provider")),
            );
            (dev, false)
        } else {
            info.insert(
                "phc".into(),
                json!(format!("igb ({GUEST_PHC}) fed by the harness's time-sync provider, standing in for the scenario's {} clock", personality(s))),
            );
            (GUEST_PHC.to_owned(), true)
        };
        // hv_utils is Hyper-V's: with ptp_kvm there is no host sample for it to act on.
        let hv_utils = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::HvUtils(h) if feed_phc => Some(h.clone()),
            _ => None,
        });
        let chrony_conf = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::Chrony(c) => Some(c.chrony_conf(&phc_device)),
            _ => None,
        });
        if let Some(c) = &chrony_conf {
            info.insert("chrony_conf".into(), json!(c));
        }
        let origin = Instant::now();
        let mut b = Self {
            session,
            origin,
            provider: Provider::new(5_000_000_000, 0),
            hv_utils,
            chrony_conf,
            phc_device,
            feed_phc,
            paused_until: None,
            reference_offset_ns: 0,
            events: Vec::new(),
            chrony_lines_seen: 0,
            chrony_log: String::new(),
            half_rtt_ns: 0,
            info,
            taken: Vec::new(),
        };
        b.prepare_guest()?;
        Ok(b)
    }

    fn deadline() -> Instant {
        Instant::now() + CALL_TIMEOUT
    }

    fn now_ns(&self) -> i64 {
        self.origin.elapsed().as_nanos() as i64
    }

    fn reference_ns(&self) -> i64 {
        host_realtime_ns() + self.reference_offset_ns
    }

    fn note(&mut self, source: &'static str, text: impl Into<String>) {
        self.events.push(Event { t_ns: self.now_ns(), source, kind: EventKind::Note(text.into()) });
    }

    /// After boot or reboot: the host's first (SYNC) sample sets PHC and clock, then the daemon
    /// starts with an empty state, as on a freshly started VM.
    fn prepare_guest(&mut self) -> Result<(), Error> {
        self.provider.reboot(self.now_ns());
        let now = self.now_ns();
        if let Some(due) = self.provider.poll(now) {
            self.deliver(due.sync, true)?;
        }
        if let Some(conf) = self.chrony_conf.clone() {
            let a = &mut self.session.agent;
            a.call(Op::WriteFile { path: "/etc/chrony.conf".into(), contents: conf }, Self::deadline())?;
            a.call(
                Op::Spawn {
                    name: "chronyd".into(),
                    argv: ["chronyd", "-u", "root", "-d", "-f", "/etc/chrony.conf"]
                        .map(String::from)
                        .to_vec(),
                    log: CHRONY_LOG.into(),
                },
                Self::deadline(),
            )?;
            self.chrony_lines_seen = 0;
            self.note("world", "chronyd started");
        }
        Ok(())
    }

    /// Delivers one host sample: sets the PHC to host time (always on SYNC or `force`, else when
    /// it is off), and plays hv_utils on the guest clock.
    fn deliver(&mut self, sync: bool, force: bool) -> Result<(), Error> {
        let est = self.session.agent.offset(3, Self::deadline())?;
        self.half_rtt_ns = est.uncertainty_ns;
        let guest_minus_ref = est.offset_ns - self.reference_offset_ns;
        let phc_minus_rt: i64 = self.phc_minus_realtime()?;
        let phc_minus_ref = phc_minus_rt + guest_minus_ref;
        if sync {
            // How the guest came back, before the SYNC sample corrects anything.
            self.taken.push(Observation {
                t_s: self.now_ns() as f64 / 1e9,
                guest_offset_ns: Some(guest_minus_ref),
                phc_offset_ns: Some(phc_minus_ref),
                phc_error: None,
            });
        }
        if self.feed_phc && (sync || force || phc_minus_ref.abs() > RESET_THRESHOLD_NS) {
            let host_ns = self.reference_ns() + self.half_rtt_ns;
            self.session
                .agent
                .call(Op::SetPhc { device: self.phc_device.clone(), host_ns }, Self::deadline())?;
        }
        if let Some(hv) = self.hv_utils.clone() {
            // hv_utils: settimeofday on SYNC; with timesync_implicit also on a plain sample when
            // the guest is at least 5 s behind.
            if sync || (hv.timesync_implicit && guest_minus_ref <= -5_000_000_000) {
                let host_ns = self.reference_ns() + self.half_rtt_ns;
                let ex = self.session.agent.call(Op::SetRealtime { host_ns }, Self::deadline())?;
                let delta = ex.response.ok.as_ref().and_then(|v| v["stepped_ns"].as_i64()).unwrap_or(0);
                self.events.push(Event {
                    t_ns: self.now_ns(),
                    source: "hv_utils",
                    kind: EventKind::Step { delta_ns: delta },
                });
            }
        }
        Ok(())
    }

    fn phc_minus_realtime(&mut self) -> Result<i64, Error> {
        let v: Value = self
            .session
            .agent
            .call_value(Op::PhcOffset { device: self.phc_device.clone() }, Self::deadline())?;
        v["phc_minus_realtime_ns"]
            .as_i64()
            .ok_or_else(|| Error::AgentAnswer { answer: v.to_string(), source: None })
    }

    fn exec(&mut self, argv: &[&str]) -> Result<ExecResult, Error> {
        self.session.agent.call_value(
            Op::Exec { argv: argv.iter().map(|s| (*s).to_owned()).collect(), timeout_s: 10.0 },
            Self::deadline(),
        )
    }

    /// Facts for the report: acceleration, boot time, chronyd's own view and log.
    pub fn finish(mut self) -> BTreeMap<String, Value> {
        if self.chrony_conf.is_some() && self.paused_until.is_none() {
            for (key, argv) in [
                ("chronyc_tracking", ["chronyc", "-n", "tracking"]),
                ("chronyc_sources", ["chronyc", "-n", "sources"]),
            ] {
                if let Ok(r) = self.exec(&argv) {
                    self.info.insert(key.into(), json!(format!("{}{}", r.stdout, r.stderr)));
                }
            }
            let _ = self.poll_chrony_log();
            self.info.insert("chronyd_log".into(), json!(self.chrony_log.clone()));
        }
        std::mem::take(&mut self.info)
    }

    /// Backend facts gathered so far (for an aborted run's report).
    pub fn info(&self) -> BTreeMap<String, Value> {
        self.info.clone()
    }

    fn poll_chrony_log(&mut self) -> Result<(), Error> {
        if self.chrony_conf.is_none() || self.paused_until.is_some() {
            return Ok(());
        }
        let text: String =
            self.session.agent.call_value(Op::ReadFile { path: CHRONY_LOG.into() }, Self::deadline())?;
        let lines: Vec<&str> = text.lines().collect();
        let t_ns = self.now_ns();
        for l in lines.iter().skip(self.chrony_lines_seen) {
            self.chrony_log.push_str(l);
            self.chrony_log.push('\n');
            match chronylog::parse(l) {
                Line::Stepped { delta_ns } => {
                    self.events.push(Event { t_ns, source: "chrony", kind: EventKind::Step { delta_ns } })
                }
                Line::Note(n) => self.events.push(Event { t_ns, source: "chrony", kind: EventKind::Note(n) }),
                Line::Other => {}
            }
        }
        self.chrony_lines_seen = lines.len();
        Ok(())
    }
}

fn personality(s: &Scenario) -> &'static str {
    match s.world.phc {
        mock_phc::PhcConfig::Hyperv { .. } => "hyperv",
        mock_phc::PhcConfig::Kvm { .. } => "kvm",
        mock_phc::PhcConfig::Vmclock { .. } => "vmclock",
        mock_phc::PhcConfig::Nic { .. } => "nic",
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The engine's steps; `Backend` below runs each and explains a lost channel by QEMU's exit.
impl QemuBackend {
    fn step_to(&mut self, t_ns: i64) -> Result<(), Error> {
        loop {
            let now = self.now_ns();
            if let Some((until, sync)) = self.paused_until {
                if Instant::now() >= until {
                    self.session.guest.qmp().cont(Self::deadline())?;
                    self.paused_until = None;
                    self.provider.resume(now, sync);
                    self.note("world", "resumed (QMP cont)");
                }
            }
            if self.paused_until.is_none() {
                if let Some(due) = self.provider.poll(now) {
                    self.deliver(due.sync, false)?;
                }
            }
            let now = self.now_ns();
            if now >= t_ns {
                return Ok(());
            }
            if let Some(e) = self.session.guest.exit_error() {
                return Err(e);
            }
            signals::check()?;
            let mut wake = t_ns;
            if let Some(n) = self.provider.next_due_ns() {
                wake = wake.min(n);
            }
            if let Some((until, _)) = self.paused_until {
                let u = now + until.saturating_duration_since(Instant::now()).as_nanos() as i64;
                wake = wake.min(u);
            }
            let sleep = (wake - now).clamp(0, 200_000_000);
            std::thread::sleep(Duration::from_nanos(sleep as u64));
        }
    }

    fn apply(&mut self, d: &Disturbance) -> Result<Option<f64>, Error> {
        match d {
            Disturbance::Pause { duration_s, sync_on_resume } => {
                self.poll_chrony_log()?;
                self.session.guest.qmp().stop(Self::deadline())?;
                self.provider.pause();
                self.paused_until =
                    Some((Instant::now() + Duration::from_secs_f64(*duration_s), *sync_on_resume));
                self.note("world", format!("paused (QMP stop) for {duration_s} s"));
            }
            Disturbance::Reboot { .. } => {
                self.poll_chrony_log()?;
                self.session.guest.qmp().system_reset(Self::deadline())?;
                self.note("world", "reset (QMP system_reset)");
                let took = self.session.wait_agent_again(Instant::now() + Duration::from_secs(120))?;
                self.info.insert("reboot_to_ready_s".into(), json!(round3(took.as_secs_f64())));
                let back_s = self.now_ns() as f64 / 1e9;
                self.prepare_guest()?;
                return Ok(Some(back_s));
            }
            Disturbance::HostStep { delta_s } => {
                self.reference_offset_ns += (delta_s * 1e9).round() as i64;
                self.note("world", format!("host time steps {delta_s:+} s"));
                // A PHC that reads host time (ptp_kvm, the sim's kvm personality) jumps at once;
                // the provider makes the igb clock do the same.
                self.deliver(false, true)?;
            }
            Disturbance::GuestStep { delta_s } => {
                let delta_ns = (delta_s * 1e9).round() as i64;
                self.session.agent.call(Op::StepRealtime { delta_ns }, Self::deadline())?;
                self.note("world", format!("guest clock set {delta_s:+} s"));
            }
            Disturbance::SamplesStop => self.provider.stop(),
            Disturbance::SamplesResume => self.provider.resume_samples(self.now_ns()),
            Disturbance::FrequencyJump { .. } => {
                return Err(Error::Unsupported {
                    what: "frequency_jump".into(),
                    why: "QEMU cannot change a running guest's oscillator".into(),
                });
            }
        }
        Ok(None)
    }

    fn look(&mut self) -> Result<Observation, Error> {
        let t_s = self.now_ns() as f64 / 1e9;
        if self.paused_until.is_some() {
            return Ok(Observation { t_s, guest_offset_ns: None, phc_offset_ns: None, phc_error: None });
        }
        let est = self.session.agent.offset(3, Self::deadline())?;
        let guest = est.offset_ns - self.reference_offset_ns;
        let (phc, err) = match self.phc_minus_realtime() {
            Ok(v) => (Some(v + guest), None),
            Err(Error::Guest(m)) => (None, Some(m)),
            Err(e) => return Err(e),
        };
        Ok(Observation { t_s, guest_offset_ns: Some(guest), phc_offset_ns: phc, phc_error: err })
    }

    fn drain(&mut self) -> Result<Vec<Event>, Error> {
        self.poll_chrony_log()?;
        Ok(std::mem::take(&mut self.events))
    }
}

impl Backend for QemuBackend {
    type Error = Error;

    fn name(&self) -> &'static str {
        "qemu"
    }

    fn advance_to(&mut self, t_ns: i64) -> Result<(), Error> {
        self.step_to(t_ns).map_err(|e| self.session.explain(e))
    }

    fn disturb(&mut self, d: &Disturbance) -> Result<Option<f64>, Error> {
        self.apply(d).map_err(|e| self.session.explain(e))
    }

    fn observe(&mut self) -> Result<Observation, Error> {
        self.look().map_err(|e| self.session.explain(e))
    }

    fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.taken)
    }

    fn drain_events(&mut self) -> Result<Vec<Event>, Error> {
        self.drain().map_err(|e| self.session.explain(e))
    }
}
