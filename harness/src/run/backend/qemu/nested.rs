//! The QEMU backend for `--phc ptp-kvm` where this machine runs TCG: the guest runs as L2 under
//! KVM nested inside a TCG guest, L1, which is the host (phc_qemu::nested). Wall-clock scenario
//! time; host time is L1's CLOCK_REALTIME, which is exactly what L2's ptp_kvm reads by hypercall,
//! so no time-sync provider runs and every offset is measured in L2 against ptp_kvm
//! (PTP_SYS_OFFSET, the best of 25 readings). Pauses are QMP `stop`/`cont` of L2's QEMU (relayed
//! by L1, which keeps running), reboots L2's `system_reset`, host steps a step of L1's
//! CLOCK_REALTIME through L1's agent.

use phc_qemu::accel;

use super::*;

/// A scenario's nested guest.
pub struct NestedBackend {
    session: Session,
    origin: Instant,
    chrony_conf: Option<String>,
    /// ptp_kvm in L2.
    phc_device: String,
    paused_until: Option<Instant>,
    events: Vec<Event>,
    chrony_lines_seen: usize,
    chrony: ChronyLog,
    info: BTreeMap<String, Value>,
    /// Uncertainties of the offset measurements (0 for a cross timestamp, else half the best
    /// PTP_SYS_OFFSET window).
    uncertainty_ns: Vec<i64>,
}

/// The `accel` a nested run reports.
pub const ACCEL_NAME: &str = "tcg-nested";

/// Whether `--phc ptp-kvm` runs nested here: the acceleration asked for, or decided for this
/// machine (cached), is TCG.
pub fn wanted(opts: &QemuOptions) -> Result<bool, Error> {
    if opts.phc != Some(GuestPhc::PtpKvm) || opts.clock != ClockMode::Real {
        return Ok(false);
    }
    Ok(match opts.accel {
        Some(a) => a == Accel::Tcg,
        None => accel::decide_here(false)?.accel == Accel::Tcg,
    })
}

impl NestedBackend {
    /// Boots L1 and L2, aligns L2's clock with ptp_kvm (a KVM guest boots with its host's time),
    /// starts the scenario's daemon in L2; scenario time starts when this returns.
    pub fn start(s: &Scenario, opts: &QemuOptions) -> Result<Self, Error> {
        if let Some(why) = unsupported(s, ClockMode::Real, GuestPhc::PtpKvm) {
            return Err(Error::Unsupported { what: s.name.clone(), why });
        }
        let (mut session, bi) = boot(opts, "scenario", GuestClock::Real)?;
        if !bi.nested {
            return Err(Error::Unsupported {
                what: "a nested ptp_kvm run".into(),
                why: format!("the guest booted directly under {}", bi.accel.name()),
            });
        }
        let mut info = BTreeMap::new();
        info.insert("accel".into(), json!(ACCEL_NAME));
        info.insert("accel_reason".into(), json!(bi.accel_reason));
        info.insert("image_build_s".into(), json!(bi.image_build_s));
        info.insert("accel_detect_s".into(), json!(bi.accel_detect_s));
        info.insert("boot_to_ready_s".into(), json!(round3(session.boot_to_ready.as_secs_f64())));
        info.insert("nesting".into(), json!(NESTING));
        let dev = find_phc_by_name(&mut session, "KVM virtual PTP")?;
        info.insert(
            "phc".into(),
            json!(format!(
                "ptp_kvm ({dev}) in L2, reading L1's CLOCK_REALTIME by hypercall; no provider; standing in for the scenario's {} clock",
                personality(s)
            )),
        );
        if s.world.disciplines.iter().any(|d| matches!(d, DisciplineConfig::HvUtils(_))) {
            info.insert(
                "hv_utils".into(),
                json!("not run: Hyper-V's, and ptp_kvm has no host samples for it"),
            );
        }
        let chrony_conf = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::Chrony(c) => Some(c.chrony_conf(&dev)),
            _ => None,
        });
        if let Some(c) = &chrony_conf {
            info.insert("chrony_conf".into(), json!(c));
        }
        let mut b = Self {
            session,
            origin: Instant::now(),
            chrony_conf,
            phc_device: dev,
            paused_until: None,
            events: Vec::new(),
            chrony_lines_seen: 0,
            chrony: ChronyLog::default(),
            info,
            uncertainty_ns: Vec::new(),
        };
        // L2's clock starts 50-900 ms off (ticks lost early in boot): set it from ptp_kvm once,
        // as a KVM guest's clock starts at its host's time.
        let (phc_minus_rt, _) = b.phc_minus_realtime()?;
        b.session.agent.call(Op::StepRealtime { delta_ns: phc_minus_rt }, Self::deadline())?;
        b.info.insert("l2_boot_offset_ns".into(), json!(-phc_minus_rt));
        b.origin = Instant::now();
        b.start_daemon()?;
        Ok(b)
    }

    fn deadline() -> Instant {
        Instant::now() + CALL_TIMEOUT
    }

    fn now_ns(&self) -> i64 {
        self.origin.elapsed().as_nanos() as i64
    }

    fn note(&mut self, text: impl Into<String>) {
        self.events.push(Event { t_ns: self.now_ns(), source: "world", kind: EventKind::Note(text.into()) });
    }

    fn start_daemon(&mut self) -> Result<(), Error> {
        if let Some(conf) = self.chrony_conf.clone() {
            let a = &mut self.session.agent;
            let conf = super::calibrate::chrony_conf(conf);
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
            self.note("chronyd started in L2");
        }
        Ok(())
    }

    /// ptp_kvm minus L2's CLOCK_REALTIME, and its uncertainty.
    fn phc_minus_realtime(&mut self) -> Result<(i64, i64), Error> {
        let r: PhcOffsetRead = self
            .session
            .agent
            .call_value(Op::PhcOffset { device: self.phc_device.clone() }, Self::deadline())?;
        Ok((r.phc_minus_realtime_ns, r.uncertainty_ns))
    }

    fn poll_chrony_log(&mut self) -> Result<(), Error> {
        if self.chrony_conf.is_none() || self.paused_until.is_some() {
            return Ok(());
        }
        let text: String =
            self.session.agent.call_value(Op::ReadFile { path: CHRONY_LOG.into() }, Self::deadline())?;
        let t_ns = self.now_ns();
        let fresh: Vec<&str> = text.lines().skip(self.chrony_lines_seen).collect();
        self.chrony_lines_seen += fresh.len();
        self.chrony.take(t_ns, &fresh, &mut self.events);
        Ok(())
    }

    /// Facts for the report: nesting, boot, chronyd's own view and log, measurement spread.
    pub fn finish(mut self) -> BTreeMap<String, Value> {
        if self.chrony_conf.is_some() && self.paused_until.is_none() {
            chronyc_views(|op| self.session.agent.call_value(op, Self::deadline()), &mut self.info);
            let mut info = std::mem::take(&mut self.info);
            super::calibrate::collect(|op| self.session.agent.call_value(op, Self::deadline()), &mut info);
            self.info = info;
            let _ = self.poll_chrony_log();
            self.info.insert("chronyd_log".into(), json!(self.chrony.text.clone()));
        }
        self.info()
    }

    /// Backend facts gathered so far (for an aborted run's report too).
    pub fn info(&self) -> BTreeMap<String, Value> {
        let mut info = self.info.clone();
        if !self.uncertainty_ns.is_empty() {
            let mut u = self.uncertainty_ns.clone();
            u.sort_unstable();
            info.insert(
                "offset_uncertainty_ns".into(),
                json!({ "median": u[u.len() / 2], "max": u[u.len() - 1], "n": u.len() }),
            );
        }
        info
    }

    fn step_to(&mut self, t_ns: i64) -> Result<(), Error> {
        loop {
            if let Some(until) = self.paused_until {
                if Instant::now() >= until {
                    self.session.vm_qmp().cont(Self::deadline())?;
                    self.paused_until = None;
                    self.note("L2 resumed (QMP cont)");
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
            if let Some(until) = self.paused_until {
                wake = wake.min(now + until.saturating_duration_since(Instant::now()).as_nanos() as i64);
            }
            let sleep = (wake - now).clamp(0, 200_000_000);
            std::thread::sleep(Duration::from_nanos(sleep as u64));
        }
    }

    fn apply(&mut self, d: &Disturbance) -> Result<Option<f64>, Error> {
        match d {
            Disturbance::Pause { duration_s, .. } => {
                self.poll_chrony_log()?;
                self.session.vm_qmp().stop(Self::deadline())?;
                self.paused_until = Some(Instant::now() + Duration::from_secs_f64(*duration_s));
                self.note(format!("L2 paused (QMP stop through L1) for {duration_s} s; L1 runs on"));
            }
            Disturbance::Reboot { .. } => {
                self.poll_chrony_log()?;
                self.session.vm_qmp().system_reset(Self::deadline())?;
                self.note("L2 reset (QMP system_reset through L1)");
                let took = self.session.wait_agent_again(Instant::now() + Duration::from_secs(180))?;
                self.info.insert("reboot_to_ready_s".into(), json!(round3(took.as_secs_f64())));
                let back_s = self.now_ns() as f64 / 1e9;
                // As a rebooted KVM guest: its clock from the RTC, then the daemon afresh.
                self.start_daemon()?;
                return Ok(Some(back_s));
            }
            Disturbance::HostStep { delta_s } => {
                let delta_ns = real::checked_ns(*delta_s)?;
                let Some(n) = self.session.nested.as_mut() else {
                    return Err(Error::Unsupported { what: "host_step".into(), why: "not nested".into() });
                };
                n.l1_agent.call(Op::StepRealtime { delta_ns }, Self::deadline())?;
                self.note(format!("host (L1) CLOCK_REALTIME stepped {delta_s:+} s; ptp_kvm reads it"));
            }
            Disturbance::GuestStep { delta_s } => {
                let delta_ns = real::checked_ns(*delta_s)?;
                self.session.agent.call(Op::StepRealtime { delta_ns }, Self::deadline())?;
                self.note(format!("guest (L2) clock set {delta_s:+} s"));
            }
            other => {
                return Err(Error::Unsupported {
                    what: format!("{other:?}"),
                    why: "a nested ptp_kvm run has no provider to stop and no oscillator to change".into(),
                })
            }
        }
        Ok(None)
    }

    fn look(&mut self) -> Result<Observation, Error> {
        let t_s = self.now_ns() as f64 / 1e9;
        if self.paused_until.is_some() {
            return Ok(Observation { t_s, guest_offset_ns: None, phc_offset_ns: None, phc_error: None });
        }
        match self.phc_minus_realtime() {
            Ok((phc_minus_rt, u)) => {
                self.uncertainty_ns.push(u);
                // The PHC is the host clock here: there is no separate PHC error to show.
                Ok(Observation {
                    t_s,
                    guest_offset_ns: Some(-phc_minus_rt),
                    phc_offset_ns: None,
                    phc_error: None,
                })
            }
            Err(Error::Guest(m)) => {
                Ok(Observation { t_s, guest_offset_ns: None, phc_offset_ns: None, phc_error: Some(m) })
            }
            Err(e) => Err(e),
        }
    }
}

/// How the run is nested, for the report.
pub const NESTING: &str = "L2 (the guest: chronyd, agent, ptp_kvm) runs under KVM inside L1, a TCG guest \
    (-cpu max: AMD SVM with nested paging; kvm_amd) whose CLOCK_REALTIME is host time; L2's agent \
    and QMP are relayed through L1's virtio-serial ports";

impl Backend for NestedBackend {
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
        Vec::new()
    }

    fn drain_events(&mut self) -> Result<Vec<Event>, Error> {
        let r = self.poll_chrony_log();
        r.map_err(|e| self.session.explain(e))?;
        Ok(std::mem::take(&mut self.events))
    }
}
