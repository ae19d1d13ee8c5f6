//! The QEMU backend in real time: wall-clock scenario time (`wall`), host time fed to the igb PHC
//! by the harness's time-sync provider over virtio-serial, offsets from the shortest of 3 round
//! trips. This module owns the feeding (`Fed`): samples, hv_utils, host steps, snapshot restore.

use super::guest::{Guest, GuestRun};
use super::wall::{checked_ns, since, Host, Wall};
use super::*;
use phc_qemu::agent::HostSampled;

/// A scenario's guest in real time.
pub type QemuBackend = Guest<Wall<Fed>>;

/// Host time fed to a directly booted guest by the provider.
pub struct Fed {
    provider: Provider,
    hv_utils: Option<mock_phc::HvUtilsConfig>,
    /// The guest PHC the daemon reads.
    phc_device: String,
    /// Whether the provider sets the PHC to host time (igb); ptp_kvm reads host time itself.
    feed_phc: bool,
    /// The hyperv clock's host time service (the kernel's hv_utils or the CUSE mock), which the
    /// provider hands host samples; `Feed::None` where the daemon reads igb or ptp_kvm.
    feed: Feed,
    /// The TimeSync versions offered to the real hv_utils.
    hyperv: HypervOptions,
    /// Whether the guest has QEMU's vmclock device (the kernel line has the driver).
    vmclock: bool,
    reference_offset_ns: i64,
}

impl QemuBackend {
    /// Boots the guest, aligns its clocks with the host, starts the scenario's daemon; scenario
    /// time starts when this returns.
    pub fn start(s: &Scenario, opts: &QemuOptions) -> Result<Self, Error> {
        let phc = GuestPhc::for_scenario(opts.phc, s);
        if let Some(why) = unsupported_with(s, &QemuOptions { clock: ClockMode::Real, ..opts.clone() }) {
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
        if phc == GuestPhc::Hyperv {
            shim_check(&kernel_dir(opts))?;
        }
        let (session, bi) = boot(opts, "scenario", GuestClock::Real)?;
        let (accel, why) = (bi.accel, bi.accel_reason.clone());
        let mut g = GuestRun::new(session, &bi, accel.name(), Some(opts));
        let interval_ns = sample_interval_ns(s);
        let (phc_device, feed_phc) = if phc == GuestPhc::PtpKvm {
            if accel != Accel::Kvm {
                return Err(Error::Unsupported {
                    what: "ptp_kvm".into(),
                    why: format!("it needs KVM, and this machine runs TCG ({why})"),
                });
            }
            let dev = find_phc_by_name(&mut g.session, "KVM virtual PTP")?;
            g.info.insert(
                "phc".into(),
                json!(format!("ptp_kvm ({dev}), reading host time itself; no provider")),
            );
            (dev, false)
        } else if phc == GuestPhc::Hyperv {
            g.info.insert(
                "phc".into(),
                json!(format!(
                    "hyperv: the kernel's own hv_utils ({MOCK_DEVICE}) on the VMBus shim, handed a host \
                     sample every {} s by the harness's time-sync provider as the Hyper-V host; the \
                     guest's igb ({GUEST_PHC}) is fed too",
                    interval_ns as f64 / 1e9
                )),
            );
            (MOCK_DEVICE.to_owned(), true)
        } else if phc == GuestPhc::HypervMock {
            g.info.insert(
                "phc".into(),
                json!(format!(
                    "hyperv mock ({MOCK_DEVICE}: CUSE, mock-phc serve) handed a host sample every {} s by \
                     the harness's time-sync provider; the guest's igb ({GUEST_PHC}) is fed too",
                    interval_ns as f64 / 1e9
                )),
            );
            (MOCK_DEVICE.to_owned(), true)
        } else {
            g.info.insert(
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
        g.daemons(s, &phc_device);
        let mut clock = Wall::new(Fed {
            provider: Provider::new(interval_ns, 0),
            hv_utils,
            phc_device,
            feed_phc,
            feed: Feed::for_phc(phc),
            hyperv: opts.hyperv,
            vmclock: opts.kernel_line.has_vmclock(),
            reference_offset_ns: 0,
        });
        clock.prepare(&mut g)?;
        Ok(Guest { run: g, clock })
    }
}

/// A round trip to the agent short enough that the offset it gives (within half of it) reads a
/// clock well inside 1 ms; longer ones (a busy host) are retried, up to 20 exchanges in all.
const GOOD_RTT_NS: i64 = 200_000;

impl Fed {
    fn deadline() -> Instant {
        Instant::now() + CALL_TIMEOUT
    }

    /// Delivers one host sample: sets the PHC to host time (always on SYNC or `force`, else when
    /// it is off), and plays hv_utils on the guest clock.
    fn deliver(&mut self, g: &mut GuestRun, origin: Instant, sync: bool, force: bool) -> Result<(), Error> {
        let est = g.session.agent.offset_within(3, 20, GOOD_RTT_NS, Self::deadline())?;
        // Host time as it held at the guest's raw time in the best exchange: the guest adds the
        // raw time since, so what the messages below spend in flight (milliseconds when the
        // host is busy) does not reach the clocks set from them.
        let at_host_ns = est.clocks.realtime_ns - est.offset_ns + self.reference_offset_ns;
        let at_raw_ns = Some(est.clocks.monotonic_raw_ns);
        let guest_minus_ref = est.offset_ns - self.reference_offset_ns;
        let phc_minus_rt: i64 = self.phc_minus_realtime(g)?;
        let phc_minus_ref = phc_minus_rt + guest_minus_ref;
        if sync {
            // How the guest came back, before the SYNC sample corrects anything.
            g.taken.push(Observation {
                t_s: since(origin) as f64 / 1e9,
                guest_offset_ns: Some(guest_minus_ref),
                phc_offset_ns: Some(phc_minus_ref),
                phc_error: None,
            });
        }
        let mut driver_stepped = None;
        if self.feed != Feed::None {
            // hv_utils keeps every sample, not only those of a clock gone off. The real driver
            // steps on every SYNC: a scenario without hv_utils' discipline gets plain samples.
            let m: HostSampled = g.call(Op::HostSample {
                host_ns: Some(at_host_ns),
                at_raw_ns,
                reference: None,
                rate_ppb: 0,
                rate_since: None,
                sync: sync && self.hv_utils.is_some(),
            })?;
            driver_stepped = m.stepped_ns;
        }
        if self.feed_phc && (sync || force || phc_minus_ref.abs() > RESET_THRESHOLD_NS) {
            g.call::<Value>(Op::SetPhc { device: GUEST_PHC.into(), host_ns: at_host_ns, at_raw_ns })?;
        }
        if self.feed == Feed::Driver {
            // The kernel's hv_utils made its own step (or none).
            if let Some(delta) = driver_stepped {
                g.events.push(Event {
                    t_ns: since(origin),
                    source: "hv_utils",
                    kind: EventKind::Step { delta_ns: delta },
                });
            }
        } else if let Some(hv) = self.hv_utils.clone() {
            // hv_utils: settimeofday on SYNC; with timesync_implicit also on a plain sample when
            // the guest is at least 5 s behind.
            if sync || (hv.timesync_implicit && guest_minus_ref <= -5_000_000_000) {
                let RealtimeStepped { stepped_ns: delta } =
                    g.call(Op::SetRealtime { host_ns: at_host_ns, at_raw_ns })?;
                g.events.push(Event {
                    t_ns: since(origin),
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
        if self.feed != Feed::None {
            GUEST_PHC.into()
        } else {
            self.phc_device.clone()
        }
    }

    fn phc_minus_realtime(&mut self, g: &mut GuestRun) -> Result<i64, Error> {
        let r: PhcOffsetRead = g.call(Op::PhcOffset { device: self.fed_device() })?;
        Ok(r.phc_minus_realtime_ns)
    }
}

impl Host for Fed {
    const L2: bool = false;
    const REBOOT_WAIT: Duration = Duration::from_secs(120);

    /// The host's first (SYNC) sample sets PHC and clock, as on a freshly started VM.
    fn prepare(&mut self, g: &mut GuestRun, origin: Instant) -> Result<(), Error> {
        if self.feed != Feed::None {
            let implicit = self.hv_utils.as_ref().is_some_and(|h| h.timesync_implicit);
            self.feed.start(g, &self.hyperv, implicit)?;
            g.note(since(origin), "world", format!("{MOCK_DEVICE} served ({:?})", self.feed));
        }
        self.provider.reboot(since(origin));
        let now = since(origin);
        if let Some(due) = self.provider.poll(now) {
            self.deliver(g, origin, due.sync, true)?;
        }
        Ok(())
    }

    fn resumed(&mut self, now_ns: i64, sync: bool) {
        self.provider.resume(now_ns, sync);
    }

    fn paused(&mut self) {
        self.provider.pause();
    }

    fn due(&mut self, g: &mut GuestRun, origin: Instant, now_ns: i64) -> Result<(), Error> {
        if let Some(due) = self.provider.poll(now_ns) {
            self.deliver(g, origin, due.sync, false)?;
        }
        Ok(())
    }

    fn next_due_ns(&self) -> Option<i64> {
        self.provider.next_due_ns()
    }

    fn apply(
        &mut self,
        g: &mut GuestRun,
        origin: Instant,
        running: bool,
        d: &Disturbance,
    ) -> Result<Option<f64>, Error> {
        match d {
            Disturbance::HostStep { delta_s } => {
                self.reference_offset_ns += checked_ns(*delta_s)?;
                g.note(since(origin), "world", format!("host time steps {delta_s:+} s"));
                // A PHC that reads host time (ptp_kvm, the sim's kvm personality) jumps at once;
                // the provider makes the igb clock do the same.
                self.deliver(g, origin, false, true)?;
            }
            Disturbance::SnapshotRestore { gap_s } => {
                if running {
                    g.poll_log(|| since(origin))?;
                }
                self.provider.pause();
                g.note(
                    since(origin),
                    "world",
                    format!("saved (QMP migrate to a file); restoring in {gap_s} s"),
                );
                let facts = super::restore::snapshot_restore(
                    &mut g.session,
                    Duration::from_secs_f64(*gap_s),
                    self.vmclock,
                )?;
                g.note(since(origin), "world", format!("restored (-incoming): {facts}"));
                g.info.insert("snapshot_restore".into(), facts);
                let back_ns = since(origin);
                // As the sim's world does for a PHC the host feeds: its first sample after the
                // resume is due at once and re-sets the PHC. Where hv_utils runs, no SYNC: that
                // would step the guest clock, and a restore is no Hyper-V resume.
                self.provider.resume(back_ns, self.hv_utils.is_none());
                return Ok(Some(back_ns as f64 / 1e9));
            }
            Disturbance::SamplesStop => self.provider.stop(),
            Disturbance::SamplesResume => self.provider.resume_samples(since(origin)),
            Disturbance::FrequencyJump { .. } => {
                return Err(Error::Unsupported {
                    what: "frequency_jump".into(),
                    why: "QEMU cannot change a running guest's oscillator".into(),
                });
            }
            Disturbance::Pause { .. } | Disturbance::Reboot { .. } | Disturbance::GuestStep { .. } => {
                unreachable!("the wall clock applies {d:?}")
            }
            Disturbance::NtpServer { .. } => {
                unreachable!("Guest::disturb applies {d:?}")
            }
        }
        Ok(None)
    }

    fn look(&mut self, g: &mut GuestRun, t_s: f64) -> Result<Observation, Error> {
        let est = g.session.agent.offset_within(3, 20, GOOD_RTT_NS, Self::deadline())?;
        let guest = est.offset_ns - self.reference_offset_ns;
        let (phc, err) = match self.phc_minus_realtime(g) {
            Ok(v) => (Some(v + guest), None),
            Err(Error::Guest(m)) => (None, Some(m)),
            Err(e) => return Err(e),
        };
        Ok(Observation { t_s, guest_offset_ns: Some(guest), phc_offset_ns: phc, phc_error: err })
    }
}
