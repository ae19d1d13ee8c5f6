//! Wall-clock time, shared by a guest booted directly (`real`) and a nested one (`nested`):
//! scenario time from an origin, the wait loop, pauses held as QMP `stop`/`cont`, reboots as
//! `system_reset`, chronyd's log polled. `Host` is what differs: how host time reaches the guest.

use phc_qemu::qmp::Qmp;

use super::guest::{Clock, GuestRun};
use super::*;

/// How host time reaches a guest running in wall-clock time, and how its offsets are read.
pub trait Host {
    /// The guest is L2 of a nested run: its QMP is relayed by L1, and the notes say so.
    const L2: bool;
    /// Longest wait for the agent after a reset.
    const REBOOT_WAIT: Duration;
    /// After boot or reboot, before the daemons start.
    fn prepare(&mut self, g: &mut GuestRun, origin: Instant) -> Result<(), Error>;
    /// The guest runs again at `now_ns`; `sync` as the pause asked.
    fn resumed(&mut self, _now_ns: i64, _sync: bool) {}
    /// The guest is stopped.
    fn paused(&mut self) {}
    /// Whatever is due at `now_ns` while the guest runs.
    fn due(&mut self, _g: &mut GuestRun, _origin: Instant, _now_ns: i64) -> Result<(), Error> {
        Ok(())
    }
    /// When something is due next.
    fn next_due_ns(&self) -> Option<i64> {
        None
    }
    /// The disturbances other than pause, reboot and guest step; `running` is false while the
    /// guest is paused.
    fn apply(
        &mut self,
        g: &mut GuestRun,
        origin: Instant,
        running: bool,
        d: &Disturbance,
    ) -> Result<Option<f64>, Error>;
    /// The offsets of the running guest at `t_s`.
    fn look(&mut self, g: &mut GuestRun, t_s: f64) -> Result<Observation, Error>;
    /// This host's own facts for the report.
    fn info(&self, _info: &mut BTreeMap<String, Value>) {}
}

/// Scenario time since `origin`.
pub fn since(origin: Instant) -> i64 {
    origin.elapsed().as_nanos() as i64
}

/// A guest in wall-clock time.
pub struct Wall<H> {
    /// Scenario time 0.
    pub(crate) origin: Instant,
    /// Until when the guest is paused, and whether a SYNC sample follows.
    paused_until: Option<(Instant, bool)>,
    /// How host time reaches the guest.
    pub(crate) host: H,
}

impl<H: Host> Wall<H> {
    /// Scenario time starts now.
    pub fn new(host: H) -> Self {
        Self { origin: Instant::now(), paused_until: None, host }
    }

    /// After boot or reboot: the host's part, then the daemons with an empty state.
    pub fn prepare(&mut self, g: &mut GuestRun) -> Result<(), Error> {
        self.host.prepare(g, self.origin)?;
        let origin = self.origin;
        g.start_daemons(|| since(origin), if H::L2 { " in L2" } else { "" })
    }

    fn qmp(session: &mut Session) -> &mut Qmp {
        if H::L2 {
            session.vm_qmp()
        } else {
            session.guest.qmp()
        }
    }

    fn note(&self, g: &mut GuestRun, text: impl Into<String>) {
        g.note(since(self.origin), "world", text);
    }

    fn deadline() -> Instant {
        Instant::now() + CALL_TIMEOUT
    }
}

impl<H: Host> Clock for Wall<H> {
    fn now_ns(&self) -> i64 {
        since(self.origin)
    }

    fn advance(&mut self, g: &mut GuestRun, t_ns: i64) -> Result<(), Error> {
        loop {
            let now = self.now_ns();
            if let Some((until, sync)) = self.paused_until {
                if Instant::now() >= until {
                    Self::qmp(&mut g.session).cont(Self::deadline())?;
                    self.paused_until = None;
                    self.host.resumed(now, sync);
                    self.note(g, if H::L2 { "L2 resumed (QMP cont)" } else { "resumed (QMP cont)" });
                }
            }
            if self.paused_until.is_none() {
                self.host.due(g, self.origin, now)?;
            }
            let now = self.now_ns();
            if now >= t_ns {
                return Ok(());
            }
            if let Some(e) = g.session.guest.exit_error() {
                return Err(e);
            }
            signals::check()?;
            let mut wake = t_ns;
            if let Some(n) = self.host.next_due_ns() {
                wake = wake.min(n);
            }
            if let Some((until, _)) = self.paused_until {
                wake = wake.min(now + until.saturating_duration_since(Instant::now()).as_nanos() as i64);
            }
            let sleep = (wake - now).clamp(0, 200_000_000);
            std::thread::sleep(Duration::from_nanos(sleep as u64));
        }
    }

    fn apply(&mut self, g: &mut GuestRun, d: &Disturbance) -> Result<Option<f64>, Error> {
        match d {
            Disturbance::Pause { duration_s, sync_on_resume } => {
                self.poll(g)?;
                Self::qmp(&mut g.session).stop(Self::deadline())?;
                self.host.paused();
                self.paused_until =
                    Some((Instant::now() + Duration::from_secs_f64(*duration_s), *sync_on_resume));
                self.note(
                    g,
                    if H::L2 {
                        format!("L2 paused (QMP stop through L1) for {duration_s} s; L1 runs on")
                    } else {
                        format!("paused (QMP stop) for {duration_s} s")
                    },
                );
                Ok(None)
            }
            Disturbance::Reboot { .. } => {
                self.poll(g)?;
                Self::qmp(&mut g.session).system_reset(Self::deadline())?;
                self.note(
                    g,
                    if H::L2 { "L2 reset (QMP system_reset through L1)" } else { "reset (QMP system_reset)" },
                );
                let took = g.session.wait_agent_again(Instant::now() + H::REBOOT_WAIT)?;
                g.info.insert("reboot_to_ready_s".into(), json!(round3(took.as_secs_f64())));
                let back_s = self.now_ns() as f64 / 1e9;
                // As a freshly started VM: the host's part, then the daemon afresh.
                self.prepare(g)?;
                Ok(Some(back_s))
            }
            Disturbance::GuestStep { delta_s } => {
                let delta_ns = checked_ns(*delta_s)?;
                g.call::<Value>(Op::StepRealtime { delta_ns })?;
                let l2 = if H::L2 { " (L2)" } else { "" };
                self.note(g, format!("guest{l2} clock set {delta_s:+} s"));
                Ok(None)
            }
            other => self.host.apply(g, self.origin, self.paused_until.is_none(), other),
        }
    }

    fn look(&mut self, g: &mut GuestRun) -> Result<Observation, Error> {
        let t_s = self.now_ns() as f64 / 1e9;
        if self.paused_until.is_some() {
            return Ok(Observation { t_s, guest_offset_ns: None, phc_offset_ns: None, phc_error: None });
        }
        self.host.look(g, t_s)
    }

    fn poll(&mut self, g: &mut GuestRun) -> Result<(), Error> {
        if self.paused_until.is_some() {
            return Ok(());
        }
        let origin = self.origin;
        g.poll_log(|| since(origin))
    }

    fn running(&self) -> bool {
        self.paused_until.is_none()
    }

    fn info(&self, info: &mut BTreeMap<String, Value>) {
        self.host.info(info);
    }
}

/// A disturbance's seconds as nanoseconds; the scenario loader keeps them in range.
pub fn checked_ns(s: f64) -> Result<i64, Error> {
    mock_phc::time::secs_to_ns(s)
        .map_err(|e| Error::Unsupported { what: "a disturbance".into(), why: e.to_string() })
}
