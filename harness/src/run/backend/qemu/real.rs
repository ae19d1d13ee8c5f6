//! The QEMU backend in real time: wall-clock scenario time, host time fed to the igb PHC by the
//! harness's time-sync provider over virtio-serial, offsets from the shortest of 3 round trips.
//! Pauses are QMP `stop`/`cont` held for the scenario's duration, reboots `system_reset`.

use super::*;

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
    /// Whether the daemon reads the CUSE hyperv mock, which the provider hands host samples.
    mock: bool,
    /// Whether the guest has QEMU's vmclock device (the kernel line has the driver).
    vmclock: bool,
    paused_until: Option<(Instant, bool)>,
    reference_offset_ns: i64,
    events: Vec<Event>,
    chrony_lines_seen: usize,
    chrony: ChronyLog,
    half_rtt_ns: i64,
    info: BTreeMap<String, Value>,
    taken: Vec<Observation>,
}

impl QemuBackend {
    /// Boots the guest, aligns its clocks with the host, starts the scenario's daemon; scenario
    /// time starts when this returns.
    pub fn start(s: &Scenario, opts: &QemuOptions) -> Result<Self, Error> {
        let phc = GuestPhc::for_scenario(opts.phc, s);
        if let Some(why) = unsupported(s, ClockMode::Real, phc) {
            return Err(Error::Unsupported { what: s.name.clone(), why });
        }
        if phc == GuestPhc::PtpKvm
            && s.timeline.events.iter().any(|e| matches!(e.disturbance, Disturbance::HostStep { .. }))
        {
            return Err(Error::Unsupported {
                what: format!("{} with ptp_kvm", s.name),
                why: "host_step cannot be emulated for ptp_kvm, which reads the real host clock".into(),
            });
        }
        let (mut session, bi) = boot(opts, "scenario", GuestClock::Real)?;
        let (accel, why) = (bi.accel, bi.accel_reason);
        let mut info = BTreeMap::new();
        info.insert("accel".into(), json!(accel.name()));
        info.insert("accel_reason".into(), json!(why));
        info.insert("image_build_s".into(), json!(bi.image_build_s));
        info.insert("accel_detect_s".into(), json!(bi.accel_detect_s));
        info.insert("kernel_line".into(), json!(opts.kernel_line.name()));
        info.insert("kernel_release".into(), json!(bi.kernel_release));
        info.insert("boot_to_ready_s".into(), json!(round3(session.boot_to_ready.as_secs_f64())));
        let (phc_device, feed_phc) = if phc == GuestPhc::PtpKvm {
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
        } else if phc == GuestPhc::Hyperv {
            info.insert(
                "phc".into(),
                json!(format!(
                    "hyperv mock ({MOCK_DEVICE}: CUSE, mock-phc serve) handed a host sample every 5 s by \
                     the harness's time-sync provider; the guest's igb ({GUEST_PHC}) is fed too"
                )),
            );
            (MOCK_DEVICE.to_owned(), true)
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
            mock: phc == GuestPhc::Hyperv,
            vmclock: opts.kernel_line.has_vmclock(),
            paused_until: None,
            reference_offset_ns: 0,
            events: Vec::new(),
            chrony_lines_seen: 0,
            chrony: ChronyLog::default(),
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
        if self.mock {
            let op = Op::StartMock { personality: "hyperv".into(), name: MOCK_NAME.into() };
            self.session.agent.call(op, Self::deadline() + CALL_TIMEOUT)?;
            self.note("world", format!("mock-phc serving {MOCK_DEVICE}"));
        }
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
        if self.mock {
            // hv_utils keeps every sample, not only those of a clock gone off.
            let host_ns = self.reference_ns() + self.half_rtt_ns;
            self.session.agent.call(
                Op::MockSample { host_ns: Some(host_ns), reference: None, rate_ppb: 0, rate_since: None },
                Self::deadline(),
            )?;
        }
        if self.feed_phc && (sync || force || phc_minus_ref.abs() > RESET_THRESHOLD_NS) {
            let host_ns = self.reference_ns() + self.half_rtt_ns;
            self.session.agent.call(Op::SetPhc { device: GUEST_PHC.into(), host_ns }, Self::deadline())?;
        }
        if let Some(hv) = self.hv_utils.clone() {
            // hv_utils: settimeofday on SYNC; with timesync_implicit also on a plain sample when
            // the guest is at least 5 s behind.
            if sync || (hv.timesync_implicit && guest_minus_ref <= -5_000_000_000) {
                let host_ns = self.reference_ns() + self.half_rtt_ns;
                let RealtimeStepped { stepped_ns: delta } =
                    self.session.agent.call_value(Op::SetRealtime { host_ns }, Self::deadline())?;
                self.events.push(Event {
                    t_ns: self.now_ns(),
                    source: "hv_utils",
                    kind: EventKind::Step { delta_ns: delta },
                });
            }
        }
        Ok(())
    }

    /// The PHC the provider keeps at host time: igb, also when the daemon reads the mock (which
    /// goes stale by design and so cannot be the measure of how far the feeding is off).
    fn fed_device(&self) -> String {
        if self.mock {
            GUEST_PHC.into()
        } else {
            self.phc_device.clone()
        }
    }

    fn phc_minus_realtime(&mut self) -> Result<i64, Error> {
        let r: PhcOffsetRead =
            self.session.agent.call_value(Op::PhcOffset { device: self.fed_device() }, Self::deadline())?;
        Ok(r.phc_minus_realtime_ns)
    }

    /// Facts for the report: acceleration, boot time, chronyd's own view and log.
    pub fn finish(mut self) -> BTreeMap<String, Value> {
        if self.chrony_conf.is_some() && self.paused_until.is_none() {
            chronyc_views(|op| self.session.agent.call_value(op, Self::deadline()), &mut self.info);
            let _ = self.poll_chrony_log();
            self.info.insert("chronyd_log".into(), json!(self.chrony.text.clone()));
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
        let t_ns = self.now_ns();
        let fresh: Vec<&str> = text.lines().skip(self.chrony_lines_seen).collect();
        self.chrony_lines_seen += fresh.len();
        self.chrony.take(t_ns, &fresh, &mut self.events);
        Ok(())
    }
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
                self.reference_offset_ns += checked_ns(*delta_s)?;
                self.note("world", format!("host time steps {delta_s:+} s"));
                // A PHC that reads host time (ptp_kvm, the sim's kvm personality) jumps at once;
                // the provider makes the igb clock do the same.
                self.deliver(false, true)?;
            }
            Disturbance::GuestStep { delta_s } => {
                let delta_ns = checked_ns(*delta_s)?;
                self.session.agent.call(Op::StepRealtime { delta_ns }, Self::deadline())?;
                self.note("world", format!("guest clock set {delta_s:+} s"));
            }
            Disturbance::SnapshotRestore { gap_s } => {
                self.poll_chrony_log()?;
                self.provider.pause();
                self.note("world", format!("saved (QMP migrate to a file); restoring in {gap_s} s"));
                let facts = super::restore::snapshot_restore(
                    &mut self.session,
                    Duration::from_secs_f64(*gap_s),
                    self.vmclock,
                )?;
                self.note("world", format!("restored (-incoming): {facts}"));
                self.info.insert("snapshot_restore".into(), facts);
                let back_ns = self.now_ns();
                // As the sim's world does for a PHC the host feeds: its first sample after the
                // resume is due at once and re-sets the PHC. Where hv_utils runs, no SYNC: that
                // would step the guest clock, and a restore is no Hyper-V resume.
                self.provider.resume(back_ns, self.hv_utils.is_none());
                return Ok(Some(back_ns as f64 / 1e9));
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

/// A disturbance's seconds as nanoseconds; the scenario loader keeps them in range.
pub(super) fn checked_ns(s: f64) -> Result<i64, Error> {
    mock_phc::time::secs_to_ns(s)
        .map_err(|e| Error::Unsupported { what: "a disturbance".into(), why: e.to_string() })
}
