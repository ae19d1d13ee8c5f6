//! The QEMU backend in virtual time. QEMU runs TCG with `-icount shift=0,sleep=off`: an idle
//! guest's time jumps to its next timer, so a scenario runs many times faster than real time, and
//! every guest clock follows QEMU's virtual clock. The igb PHC is then the host clock itself: set
//! once from the RTC (`clock=vm`, which starts at the scenario's start time), run at the host's
//! rate against the guest's oscillator (adjfine by minus the guest's frequency error), and moved
//! only by what the scenario injects (a pause of D is QMP `stop`, a PHC step of +D queued to the
//! agent, `cont`; a host step steps it). Scenario time is PHC time less the host steps; every
//! offset is CLOCK_REALTIME against the PHC, read in the guest with PTP_SYS_OFFSET_EXTENDED.
//!
//! Two things make the guest's world the sim's: the guest oscillator's wander (the sim's own
//! random path, `wander`) moves the host clock the other way in nanosecond steps, since QEMU's
//! virtual clock cannot wander; and the hyperv mock extrapolates between host samples at the rate
//! igb really runs at, measured from its samples (igb's frequency comes in 2^-23 steps: -12000
//! ppb asked is -11920.9 ppb got, a 0.4 us sawtooth every 5 s at the nominal rate).

use super::guest::{Clock, Guest, GuestRun};
use super::*;
use phc_qemu::agent::{HostSampled, Observed, RtcMapping, RtcTickResult};

/// A scenario's guest in virtual time.
pub type VirtualBackend = Guest<Virtual>;

/// Wall seconds the agent spins after an observation a disturbance follows, where the guest does
/// not hold (without `PHC_HOLD=1`): long enough for the host's QMP `stop` to arrive, so the guest's time
/// cannot leap to its next timer meanwhile.
const SPIN_BEFORE_DISTURBANCE_S: f64 = 0.5;
/// Wall time allowed per call on top of the virtual time it waits for (which runs faster than
/// wall time, but a busy guest can slow it to about real time).
const CALL_SLACK: Duration = Duration::from_secs(30);

/// How far back the mock's rate is measured: long enough for a reading's few ns to matter little
/// (0.1 ppb), short enough to follow the wander.
const RATE_SPAN_NS: i64 = 60_000_000_000;

/// Virtual time: QEMU's clock, the igb PHC as the host clock.
pub struct Virtual {
    /// The clock host time is kept on in the guest: igb's PHC, or the agent's clock.
    host: &'static str,
    provider: Provider,
    hv_utils: Option<mock_phc::HvUtilsConfig>,
    /// The hyperv clock's host time service (the kernel's hv_utils or the CUSE mock), handed
    /// samples of the igb PHC; `Feed::None` where the daemon reads igb.
    feed: Feed,
    /// Whether the feed is serving now (not before it starts, not across a reset).
    feed_up: bool,
    /// The TimeSync versions offered to the real hv_utils.
    hyperv: HypervOptions,
    /// PHC time at scenario time 0.
    phc_origin_ns: i64,
    /// Host steps so far: they moved the PHC, not scenario time.
    host_steps_ns: i64,
    /// Host time at an RTC second boundary, carried forward by every injected step: what the
    /// PHC is set to again after a reboot resets it.
    rtc_map: RtcMapping,
    /// The PHC's frequency offset: the guest oscillator's error, the other way round.
    phc_ppb: f64,
    /// Scenario time of the last observation, and what it saw (taken by `observe`).
    now_ns: i64,
    last: Option<Observed>,
    /// Scenario times a disturbance starts at: the agent spins after observing there.
    disturb_at: Vec<i64>,
    /// Guest time from the last observation before each pause to the PHC step after `cont`.
    pause_step_gaps_ns: Vec<i64>,
    /// Steps of the igb PHC that came with a new frequency, undone (see the agent's
    /// `adjfine_without_step`).
    undone_steps_ns: Vec<i64>,
    /// The reference samples handed to the mock (host ns, raw ns) since igb was last re-tuned
    /// or reset, the last `RATE_SPAN_NS` of them: later samples measure igb's true rate from the
    /// oldest, which follows the wander.
    rate_samples: std::collections::VecDeque<[i64; 2]>,
    /// The rate last handed to the mock, ppb.
    mock_rate_ppb: Option<i64>,
    /// The rate last measured less `phc_ppb` then: igb's quantization and the guest's TSC
    /// calibration (seen at 0 and at -958 ppb in two boots), for a sample with no span to measure
    /// over (after a re-tune or reboot).
    rate_offset_ppb: f64,
    /// The guest oscillator's wander, moved onto the host clock (`wander`).
    wander: Option<super::wander::HostWander>,
}

impl VirtualBackend {
    /// Boots the guest in virtual time, makes the PHC the host clock, aligns the guest's clock
    /// with it and starts the scenario's daemon; scenario time 0 is when this returns.
    pub fn start(s: &Scenario, opts: &QemuOptions) -> Result<Self, Error> {
        let phc = GuestPhc::for_scenario(opts.phc, s);
        if phc == GuestPhc::PtpKvm {
            return Err(Error::Unsupported {
                what: "--phc ptp-kvm with --clock virtual".into(),
                why: "ptp_kvm needs KVM and virtual time runs under TCG; use --clock real".into(),
            });
        }
        let feed = Feed::for_phc(phc);
        if let Some(why) = unsupported_with(s, &QemuOptions { clock: ClockMode::Virtual, ..opts.clone() }) {
            return Err(Error::Unsupported { what: s.name.clone(), why });
        }
        if feed == Feed::Driver {
            shim_check(&kernel_dir(opts))?;
        }
        let host = host_clock_device(opts)?;
        let why_agent = if opts.host_clock == HostClock::Agent { "--host-clock agent" } else { NO_IGB };
        let rtc_base_s = s.world.start_realtime_ns.div_euclid(1_000_000_000);
        let (session, bi) = boot(opts, "scenario", GuestClock::Virtual { rtc_base_s })?;
        let mut g = GuestRun::new(session, &bi, bi.accel.name(), Some(opts));
        g.timeout = CALL_SLACK;
        let interval_ns = sample_interval_ns(s);
        let host_text = if host == GUEST_PHC {
            format!("igb ({GUEST_PHC})")
        } else {
            format!("the agent's clock ({host}: CLOCK_MONOTONIC_RAW, which follows QEMU's virtual clock; {why_agent})")
        };
        let phc_text = if feed == Feed::Driver {
            format!(
                "hyperv: the kernel's own hv_utils ({MOCK_DEVICE}) on the VMBus shim, the harness as the \
                 Hyper-V host handing it a sample of the host clock every {} s (SYNC at start and after \
                 a resume); the host clock is {host_text}: QEMU's virtual clock plus the host-time \
                 events the scenario injects",
                interval_ns as f64 / 1e9
            )
        } else if feed == Feed::Mock {
            format!(
                "hyperv mock ({MOCK_DEVICE}: CUSE, mock-phc serve) handed a sample of the host clock every \
                 {} s; the host clock is {host_text}: QEMU's virtual clock plus the host-time events \
                 the scenario injects",
                interval_ns as f64 / 1e9
            )
        } else {
            format!(
                "igb ({GUEST_PHC}) as the host clock: QEMU's virtual clock plus the host-time events the \
                 scenario injects, standing in for the scenario's {} clock",
                personality(s)
            )
        };
        g.info.insert("phc".into(), json!(phc_text));
        g.info.insert("host_clock".into(), json!(host));
        let hv_utils = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::HvUtils(h) => Some(h.clone()),
            _ => None,
        });
        g.daemons(s, if feed == Feed::None { GUEST_PHC } else { MOCK_DEVICE });
        let tl = &s.timeline;
        let disturb_at =
            tl.events.iter().filter_map(|e| mock_phc::time::secs_to_ns(tl.warmup_s + e.at_s).ok()).collect();
        let mut b = Virtual {
            host,
            provider: Provider::new(interval_ns, 0),
            hv_utils,
            feed,
            feed_up: false,
            hyperv: opts.hyperv,
            phc_origin_ns: 0,
            host_steps_ns: 0,
            rtc_map: RtcMapping { rtc_s: 0, host_ns: 0, ppb: 0.0 },
            phc_ppb: -s.world.guest.freq_error_ppm * 1000.0,
            now_ns: 0,
            last: None,
            disturb_at,
            pause_step_gaps_ns: Vec::new(),
            undone_steps_ns: Vec::new(),
            rate_samples: std::collections::VecDeque::new(),
            mock_rate_ppb: None,
            rate_offset_ppb: 0.0,
            wander: super::wander::HostWander::new(&s.world),
        };
        // Host time is the RTC's at the start: the PHC runs at the host's rate against the guest's
        // oscillator, then a second boundary sets it to the RTC's time exactly, and the guest's
        // clock starts on it (as the sim's does).
        b.set_phc_frequency(&mut g)?;
        let tick = b.rtc_tick(&mut g, Some(RtcMapping { rtc_s: 0, host_ns: 0, ppb: 0.0 }))?;
        b.rtc_map =
            RtcMapping { rtc_s: tick.rtc_s, host_ns: tick.set_ns.unwrap_or(tick.phc_ns), ppb: b.phc_ppb };
        g.call::<RealtimeStepped>(Op::RealtimeToPhc { device: host.into() })?;
        let o = b.observe_raw(&mut g, 0, 0.0)?;
        b.phc_origin_ns = o.phc_ns;
        b.prepare_guest(&mut g)?;
        Ok(Guest { run: g, clock: b })
    }
}

impl Virtual {
    fn set_phc_frequency(&mut self, g: &mut GuestRun) -> Result<(), Error> {
        self.rate_samples.clear();
        let f: FrequencySet = g.call(Op::PhcFrequency { device: self.host.into(), ppb: self.phc_ppb })?;
        self.undone_steps_ns.push(f.undone_step_ns);
        Ok(())
    }

    /// A new anchor for `rtc_map` at the next RTC second, at the PHC's current rate.
    fn rebase_rtc_map(&mut self, g: &mut GuestRun) -> Result<(), Error> {
        let tick = self.rtc_tick(g, None)?;
        self.rtc_map = RtcMapping { rtc_s: tick.rtc_s, host_ns: tick.phc_ns, ppb: self.phc_ppb };
        Ok(())
    }

    fn rtc_tick(&mut self, g: &mut GuestRun, set: Option<RtcMapping>) -> Result<RtcTickResult, Error> {
        if set.is_some() {
            self.rate_samples.clear();
        }
        g.call(Op::RtcTick { device: self.host.into(), set })
    }

    /// The agent's observation once the PHC reads `until_ns`, without bookkeeping.
    fn observe_raw(&mut self, g: &mut GuestRun, until_ns: i64, spin_s: f64) -> Result<Observed, Error> {
        let tail = g.tail_log();
        let also = self.feed_up.then(|| MOCK_DEVICE.to_owned());
        g.call(Op::Observe { device: self.host.into(), until_ns, spin_s, tail, also })
    }

    /// Scenario time of a PHC reading.
    fn scenario_ns(&self, phc_ns: i64) -> i64 {
        phc_ns - self.phc_origin_ns - self.host_steps_ns
    }

    /// Lets the guest run to scenario time `t_ns` (at once if it is past) and observes there.
    fn observe_at(&mut self, g: &mut GuestRun, t_ns: i64, spin_s: f64) -> Result<(), Error> {
        let until = self.phc_origin_ns + self.host_steps_ns + t_ns;
        let o = self.observe_raw(g, until, spin_s)?;
        self.now_ns = self.scenario_ns(o.phc_ns);
        let lines: Vec<&str> = o.lines.iter().map(String::as_str).collect();
        g.take_lines(self.now_ns, &lines);
        self.last = Some(o);
        Ok(())
    }

    /// After boot or reboot: the host's first (SYNC) sample, then the daemon with an empty state.
    fn prepare_guest(&mut self, g: &mut GuestRun) -> Result<(), Error> {
        if self.feed != Feed::None {
            let implicit = self.hv_utils.as_ref().is_some_and(|h| h.timesync_implicit);
            self.feed.start(g, &self.hyperv, implicit)?;
            self.feed_up = true;
            self.rate_samples.clear();
            let what = match self.feed {
                Feed::Driver => "hv_utils (the kernel's) bound to the VMBus shim",
                _ => "mock-phc serving",
            };
            g.note(self.now_ns, "world", format!("{what} {MOCK_DEVICE}"));
        }
        self.provider.reboot(self.now_ns);
        if let Some(due) = self.provider.poll(self.now_ns) {
            self.deliver(g, due.sync)?;
        }
        g.start_daemons(|| self.now_ns, "")
    }

    /// One host sample: the hyperv clock's service keeps it (host time read off the igb PHC,
    /// which is the host clock). The kernel's hv_utils steps the guest clock to host time itself
    /// on SYNC (and with timesync_implicit on a sample that finds it 5 s or more behind); with
    /// the mock, or no hyperv clock, the agent plays that step. The igb PHC needs no feeding: it
    /// is host time.
    fn deliver(&mut self, g: &mut GuestRun, sync: bool) -> Result<(), Error> {
        let before = self.last.as_ref().map(|o| Observation {
            t_s: self.now_ns as f64 / 1e9,
            guest_offset_ns: Some(o.realtime_minus_phc_ns),
            phc_offset_ns: None,
            phc_error: None,
        });
        if self.feed == Feed::Driver {
            // The real driver steps on every SYNC; a scenario without hv_utils' discipline gets
            // plain samples.
            let sync = sync && self.hv_utils.is_some();
            let stepped = self.sample_feed(g, sync)?;
            if let Some(delta_ns) = stepped {
                // How the guest came back, before the step corrected anything.
                g.taken.extend(before);
                g.events.push(Event {
                    t_ns: self.now_ns,
                    source: "hv_utils",
                    kind: EventKind::Step { delta_ns },
                });
                self.last = None;
            }
            return Ok(());
        }
        if self.feed == Feed::Mock {
            self.sample_feed(g, sync)?;
        }
        let Some(hv) = self.hv_utils.clone() else { return Ok(()) };
        let behind = self.last.as_ref().is_some_and(|o| o.realtime_minus_phc_ns <= -5_000_000_000);
        if sync || (hv.timesync_implicit && behind) {
            g.taken.extend(before);
            let RealtimeStepped { stepped_ns: delta_ns } =
                g.call(Op::RealtimeToPhc { device: self.host.into() })?;
            g.events.push(Event {
                t_ns: self.now_ns,
                source: "hv_utils",
                kind: EventKind::Step { delta_ns },
            });
            // What was observed at this instant is no longer the guest's offset.
            self.last = None;
        }
        Ok(())
    }

    /// Hands the hyperv clock's service (the kernel's hv_utils or the mock) a sample of the host
    /// clock (igb) read now, with the rate of the host's reference counter until the next: what
    /// igb really runs at against the guest's CLOCK_MONOTONIC_RAW, measured over the samples of
    /// up to the last minute (steps of igb taken out), since Hyper-V's reference counter runs at
    /// the host's own rate and hv_utils shows no sawtooth between samples. With nothing to
    /// measure over yet (the start, a re-tune, a reboot), the nominal rate plus the last
    /// measured offset from it. Answers hv_utils' step of the guest clock, where it made one.
    fn sample_feed(&mut self, g: &mut GuestRun, sync: bool) -> Result<Option<i64>, Error> {
        let m: HostSampled = g.call(Op::HostSample {
            host_ns: None,
            at_raw_ns: None,
            reference: Some(self.host.into()),
            // Within 1e8 ppb by the scenario bounds (and 10% at most measured): no saturation.
            rate_ppb: (self.phc_ppb + self.rate_offset_ppb).round() as i64,
            rate_since: self.rate_samples.front().copied(),
            sync,
        })?;
        if !self.rate_samples.is_empty() {
            // Measured once the span allows; else the guess handed over, the offset unchanged.
            self.rate_offset_ppb = m.rate_ppb as f64 - self.phc_ppb;
        }
        self.rate_samples.push_back([m.host_ns, m.raw_ns]);
        while self.rate_samples.len() > 2
            && self.rate_samples.get(1).is_some_and(|s| m.raw_ns - s[1] >= RATE_SPAN_NS)
        {
            self.rate_samples.pop_front();
        }
        self.mock_rate_ppb = Some(m.rate_ppb);
        Ok(m.stepped_ns)
    }

    /// The host clock (igb) was stepped by `d_ns`: the rate's anchor moves with it.
    fn anchor_stepped(&mut self, d_ns: i64) {
        for a in &mut self.rate_samples {
            a[0] += d_ns;
        }
    }

    fn run_to(&mut self, g: &mut GuestRun, t_ns: i64) -> Result<(), Error> {
        loop {
            let target = match self.provider.next_due_ns() {
                Some(d) if d < t_ns => d.max(self.now_ns),
                _ => t_ns,
            };
            let spin = if !g.session.holding() && target == t_ns && self.disturb_at.contains(&t_ns) {
                SPIN_BEFORE_DISTURBANCE_S
            } else {
                0.0
            };
            self.observe_at(g, target, spin)?;
            self.step_wander(g, true)?;
            if let Some(due) = self.provider.poll(self.now_ns) {
                self.deliver(g, due.sync)?;
            }
            if target == t_ns {
                return Ok(());
            }
        }
    }

    /// Steps the host clock by the wander owed up to now (`wander`); across a pause the guest
    /// stood still and nothing is owed.
    fn step_wander(&mut self, g: &mut GuestRun, running: bool) -> Result<(), Error> {
        let Some(w) = self.wander.as_mut() else { return Ok(()) };
        let step = w.advance(self.now_ns, running);
        if step != 0 {
            g.call::<Value>(Op::StepPhc { device: self.host.into(), delta_ns: step })?;
            // Host time after a reboot carries it too.
            self.rtc_map.host_ns += step;
        }
        Ok(())
    }

    fn disturb_now(&mut self, g: &mut GuestRun, d: &Disturbance) -> Result<Option<f64>, Error> {
        let ns = |s: f64| {
            mock_phc::time::secs_to_ns(s)
                .map_err(|e| Error::Unsupported { what: "a disturbance".into(), why: e.to_string() })
        };
        match d {
            Disturbance::Pause { duration_s, sync_on_resume } => {
                let d_ns = ns(*duration_s)?;
                let before = g.last_raw_ns;
                // Queued while the guest stands still (QMP `stop`, or where the guest holds, the
                // stand after its last answer): the first thing it does when it runs again.
                let step = Op::StepPhc { device: self.host.into(), delta_ns: d_ns };
                let provider = &mut self.provider;
                let ex = g.session.call_after_stop(step, || provider.pause(), Instant::now() + CALL_SLACK)?;
                // The guest's clocks stood still while stopped, and the step was exact.
                self.anchor_stepped(d_ns);
                if let Some(b) = before {
                    self.pause_step_gaps_ns.push(ex.response.clocks.monotonic_raw_ns - b);
                }
                self.rtc_map.host_ns += d_ns;
                let PhcStepped { phc_ns } = ex.answer("step_phc")?;
                self.now_ns = self.scenario_ns(phc_ns);
                self.last = None;
                self.step_wander(g, false)?;
                g.note(
                    self.now_ns,
                    "world",
                    format!("paused (QMP stop, PHC stepped {duration_s:+} s, QMP cont)"),
                );
                // The host's SYNC reaches hv_utils shortly after the guest runs again.
                self.provider.resume(self.now_ns + mock_phc::SYNC_DELIVERY_NS, *sync_on_resume);
                Ok(Some(self.now_ns as f64 / 1e9))
            }
            Disturbance::Reboot { .. } => {
                g.session.reset(Instant::now() + CALL_SLACK)?;
                self.feed_up = false;
                let wall = Instant::now();
                g.session.wait_agent_again(Instant::now() + Duration::from_secs(120))?;
                g.info.insert("reboot_to_ready_s".into(), json!(round3(wall.elapsed().as_secs_f64())));
                // The reset zeroed the igb clock: host time again from the RTC, carried forward.
                self.set_phc_frequency(g)?;
                let map = self.rtc_map;
                self.rtc_tick(g, Some(map))?;
                self.observe_at(g, 0, 0.0)?;
                g.note(self.now_ns, "world", "reset (QMP system_reset); PHC set from the RTC");
                self.prepare_guest(g)?;
                Ok(Some(self.now_ns as f64 / 1e9))
            }
            Disturbance::HostStep { delta_s } => {
                let d_ns = ns(*delta_s)?;
                self.anchor_stepped(d_ns);
                g.call::<Value>(Op::StepPhc { device: self.host.into(), delta_ns: d_ns })?;
                self.host_steps_ns += d_ns;
                self.rtc_map.host_ns += d_ns;
                self.last = None;
                g.note(self.now_ns, "world", format!("host time steps {delta_s:+} s (PHC stepped)"));
                Ok(None)
            }
            Disturbance::GuestStep { delta_s } => {
                let delta_ns = ns(*delta_s)?;
                g.call::<Value>(Op::StepRealtime { delta_ns })?;
                self.last = None;
                g.note(self.now_ns, "world", format!("guest clock set {delta_s:+} s"));
                Ok(None)
            }
            Disturbance::FrequencyJump { delta_ppm } => {
                // The guest's oscillator gains delta: the host clock, against it, loses as much.
                self.phc_ppb -= delta_ppm * 1000.0;
                self.set_phc_frequency(g)?;
                if self.feed_up {
                    // Hyper-V's reference counter runs at the host's rate and never sees the
                    // guest's oscillator change; the shim's counter and the mock run on the
                    // guest's CLOCK_MONOTONIC_RAW, so they start again from here at the new rate
                    // (else up to 5 s at the old one: 250 us at 50 ppm). A plain sample.
                    let sync = false;
                    self.sample_feed(g, sync)?;
                }
                // Host time runs at the new rate against the RTC from here.
                self.rebase_rtc_map(g)?;
                g.note(
                    self.now_ns,
                    "world",
                    format!("guest oscillator frequency changed by {delta_ppm:+} ppm (PHC adjfine)"),
                );
                Ok(None)
            }
            Disturbance::SamplesStop => {
                self.provider.stop();
                Ok(None)
            }
            Disturbance::SnapshotRestore { .. } => Err(Error::Unsupported {
                what: "snapshot_restore with --clock virtual".into(),
                why: "the restore starts a second QEMU (use --clock real)".into(),
            }),
            Disturbance::SamplesResume => {
                self.provider.resume_samples(self.now_ns);
                Ok(None)
            }
            Disturbance::NtpServer { .. } => unreachable!("Guest::disturb applies {d:?}"),
        }
    }
}

impl Clock for Virtual {
    fn now_ns(&self) -> i64 {
        self.now_ns
    }

    fn advance(&mut self, g: &mut GuestRun, t_ns: i64) -> Result<(), Error> {
        self.run_to(g, t_ns)
    }

    fn apply(&mut self, g: &mut GuestRun, d: &Disturbance) -> Result<Option<f64>, Error> {
        self.disturb_now(g, d)
    }

    fn look(&mut self, g: &mut GuestRun) -> Result<Observation, Error> {
        if self.last.is_none() {
            let now = self.now_ns;
            self.observe_at(g, now, 0.0)?;
        }
        let o = self.last.take().expect("observed above");
        Ok(Observation {
            t_s: self.now_ns as f64 / 1e9,
            guest_offset_ns: Some(o.realtime_minus_phc_ns),
            // The igb PHC is the host clock here; the hyperv mock, when the daemon reads it, is
            // measured against it.
            phc_offset_ns: o.also_minus_phc_ns,
            phc_error: o.also_error,
        })
    }

    /// Timing, the host's wander, the mock's rate.
    fn info(&self, info: &mut BTreeMap<String, Value>) {
        info.insert("phc_adjfine_steps_undone_ns".into(), json!(self.undone_steps_ns));
        if let Some(w) = &self.wander {
            info.insert("host_wander_stepped_ns".into(), json!(w.stepped_ns));
            info.insert("host_wander_steps".into(), json!(w.steps));
        }
        if let Some(r) = self.mock_rate_ppb {
            info.insert("mock_rate_ppb".into(), json!(r));
            info.insert("phc_nominal_ppb".into(), json!(self.phc_ppb));
        }
        if !self.pause_step_gaps_ns.is_empty() {
            info.insert("pause_step_gap_ns".into(), json!(self.pause_step_gaps_ns));
        }
    }
}
