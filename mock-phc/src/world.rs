//! The world: host reference time, the guest's clocks, its PHC, the daemons, and the event loop
//! that jumps from one event to the next, computing clocks analytically in between.

use phc::Sample;
use rand_chacha::ChaCha8Rng;

use crate::clock::GuestClock;
use crate::discipline::{secs_to_ns, Discipline};
use crate::noise::{self, Oscillator};
use crate::personality::{HostSample, PhcState};
use crate::{Disturbance, Error, Event, EventKind, WorldConfig};

pub use crate::personality::ReadMethod;

const SOURCE: &str = "world";
/// The world's fixed tick: oscillator wander and host samples (hyperv's 5 s by default).
const DEFAULT_TICK_S: f64 = 5.0;
/// A daemon's frequency change smaller than this is not worth an event.
const FREQ_EVENT_MIN_CHANGE: f64 = 1e-6;
/// clock_gettime's own cost, added around a `Gettime` read.
const SYSCALL_NS: i64 = 60;

/// Everything a daemon can see and touch; the daemons themselves live beside it in `World`.
pub(crate) struct Sim {
    t_ns: i64,
    start_ns: i64,
    /// Host time minus ideal time (host steps).
    host_err_s: f64,
    /// The Hyper-V reference counter: stands still while the guest does.
    refcnt_s: f64,
    running: bool,
    guest: GuestClock,
    osc: Oscillator,
    phc: PhcState,
    latency: noise::LatencyTable,
    normal: noise::NormalTable,
    read_rng: ChaCha8Rng,
    /// `LatencyConfig::slow_batch_share` and its draws.
    slow_batch_share: f64,
    slow_rng: ChaCha8Rng,
    events: Vec<Event>,
    /// The NTP server as it is now, and the draws of its network's delays.
    ntp: crate::NtpServerConfig,
    ntp_rng: ChaCha8Rng,
    /// Steps made by a daemon during the current callback, to tell the others.
    steps: Vec<(&'static str, f64)>,
    last_freq_event: f64,
}

impl Sim {
    fn now_s(&self) -> f64 {
        self.t_ns as f64 * 1e-9
    }

    fn push(&mut self, source: &'static str, kind: EventKind) {
        self.events.push(Event { t_ns: self.t_ns, source, kind });
    }

    pub(crate) fn note(&mut self, source: &'static str, text: String) {
        self.push(source, EventKind::Note(text));
    }

    pub(crate) fn read_error(&mut self, source: &'static str, e: &phc::Error) {
        self.push(source, EventKind::ReadError { code: e.code() });
    }

    /// Guest REALTIME minus host time.
    pub(crate) fn guest_offset_s(&self) -> f64 {
        self.guest.err_s - self.host_err_s
    }

    pub(crate) fn now_ns(&self) -> i64 {
        self.t_ns
    }

    pub(crate) fn mono_s(&self) -> f64 {
        self.guest.mono_s
    }

    pub(crate) fn realtime_minus_mono_s(&self) -> f64 {
        self.guest.err_s + self.now_s() - self.guest.mono_s
    }

    pub(crate) fn freq_adj(&self) -> f64 {
        self.guest.freq_adj
    }

    pub(crate) fn slew_left_s(&self) -> f64 {
        self.guest.slew_left_s
    }

    /// White phase noise of one reading of the guest clock.
    pub(crate) fn read_noise_s(&mut self) -> f64 {
        let s = self.osc.phase_noise_s;
        if s > 0.0 {
            s * self.normal.draw(&mut self.read_rng)
        } else {
            0.0
        }
    }

    pub(crate) fn step(&mut self, source: &'static str, delta_s: f64) {
        self.guest.step(delta_s);
        self.push(source, EventKind::Step { delta_ns: secs_to_ns(delta_s) });
        self.steps.push((source, delta_s));
    }

    pub(crate) fn set_freq(&mut self, source: &'static str, freq: f64) {
        self.guest.freq_adj = freq;
        if (freq - self.last_freq_event).abs() >= FREQ_EVENT_MIN_CHANGE {
            self.last_freq_event = freq;
            self.push(source, EventKind::Frequency { freq_ppb: (freq * 1e9).round() });
        }
    }

    pub(crate) fn slew(&mut self, offset_s: f64, rate: f64) {
        self.guest.set_slew(offset_s, rate);
    }

    /// One NTP exchange with the world's server, now: what the client's request gets back. The
    /// four timestamps are taken over a few milliseconds at most, in which the guest clock's
    /// drift (under 1e-4) moves the offset by well under a microsecond: it is left out.
    pub(crate) fn ntp_exchange(&mut self) -> crate::ntp_server::Reply {
        use crate::ntp_server::Reply;
        use rand::Rng;
        if !self.running {
            return Reply::None;
        }
        match self.ntp.answer {
            crate::NtpAnswer::Silent => Reply::None,
            crate::NtpAnswer::Garbage => Reply::Garbage,
            crate::NtpAnswer::Time => {
                let (fixed, jitter) = (self.ntp.delay_s, self.ntp.jitter_s);
                let mut way = || {
                    let u: f64 = self.ntp_rng.random::<f64>().max(f64::MIN_POSITIVE);
                    fixed - jitter * u.ln()
                };
                let (d_in, d_out) = (way(), way());
                // The client reads its clock at both ends: its noise enters the offset.
                let noise = self.read_noise_s();
                Reply::Time {
                    offset_s: self.ntp.offset_s - self.guest_offset_s() + (d_in - d_out) / 2.0 - noise,
                    delay_s: d_in + d_out,
                    stratum: self.ntp.stratum,
                }
            }
        }
    }

    /// Sets how the server answers (unit tests of the NTP clients).
    #[cfg(test)]
    pub(crate) fn set_ntp_answer(&mut self, a: crate::NtpAnswer) {
        self.ntp.answer = a;
    }

    /// Sets the server's own error and its one-way delay, without jitter (unit tests).
    #[cfg(test)]
    pub(crate) fn set_ntp_server(&mut self, offset_s: f64, delay_s: f64) {
        self.ntp.offset_s = offset_s;
        self.ntp.delay_s = delay_s;
        self.ntp.jitter_s = 0.0;
    }

    fn phc_err_s(&self) -> Result<f64, phc::Error> {
        self.phc.err_s(self.now_s(), self.refcnt_s, self.host_err_s)
    }

    /// The PTP ioctl (or clock_gettime) answered at now, as the driver would.
    pub(crate) fn read(&mut self, method: ReadMethod, n: usize) -> Result<Vec<Sample>, phc::Error> {
        let mut out = Vec::with_capacity(n);
        self.read_kept(method, n, None, &mut out)?;
        Ok(out)
    }

    /// The `q` quantile (0..=1) of this PHC's read windows, ns: what chrony's delay quantiles
    /// (hwclock.c) converge to over many reads.
    pub(crate) fn window_quantile_ns(&self, q: f64) -> i64 {
        self.latency.quantile_ns(q)
    }

    /// Like `read`, but returns only the readings whose window lies within `keep_ns` (low,
    /// high), or the shortest when none does: the readings chrony 4.3 combines
    /// (hwclock.c:207-236). The windows of the others are still drawn, so the batch's timing and
    /// the random stream are those of a full read; skipping their timestamps is what lets a day
    /// of 4 Hz reads run in a fraction of a second. `Ok(true)` when readings lay within
    /// `keep_ns`, `Ok(false)` when `out` holds the shortest instead. A slow batch
    /// (`LatencyConfig::slow_batch_share`) has every window moved up, its shortest just above
    /// `keep_ns`.
    pub(crate) fn read_kept(
        &mut self,
        method: ReadMethod,
        n: usize,
        keep_ns: Option<(i64, i64)>,
        out: &mut Vec<Sample>,
    ) -> Result<bool, phc::Error> {
        out.clear();
        self.phc.check_read(method, n)?;
        if n == 0 && matches!(method, ReadMethod::Basic | ReadMethod::Extended(_)) {
            // A valid request that asks for no reading (ptp_chardev.c).
            return Ok(true);
        }
        // PRECISE takes no count: one reading (sys_linux.c get_precise_phc_readings).
        let n = if method == ReadMethod::Precise { 1 } else { n.max(1) };
        let phc_err_s = self.phc_err_s()?;
        let osc = self.osc.freq();
        let phc_rate = self.phc.rate(self.running);
        let ideal_ns = self.start_ns + self.t_ns;
        let phc0_ns = ideal_ns + secs_to_ns(phc_err_s);
        // One noise draw per batch: phase noise wanders far slower than a batch lasts, and a
        // per-timestamp draw would give negative windows no real clock shows.
        let noise_ns = secs_to_ns(self.read_noise_s());
        let (sys0_ns, sys_rate) = match method {
            ReadMethod::Extended(phc::SysClock::Monotonic) => {
                (secs_to_ns(self.guest.mono_s), self.guest.rate(osc, self.running))
            }
            ReadMethod::Extended(phc::SysClock::MonotonicRaw) => {
                (secs_to_ns(self.guest.raw_s), if self.running { 1.0 + osc } else { 0.0 })
            }
            _ => (ideal_ns + secs_to_ns(self.guest.err_s) + noise_ns, self.guest.rate(osc, self.running)),
        };
        let sys_at = |tau_ns: i64| sys0_ns + (tau_ns as f64 * sys_rate) as i64;
        let phc_at = |tau_ns: i64| phc0_ns + (tau_ns as f64 * phc_rate) as i64;
        let mut windows = [0i64; phc::uapi::PTP_MAX_SAMPLES];
        if method != ReadMethod::Precise {
            let extra = if method == ReadMethod::Gettime { 2 * SYSCALL_NS } else { 0 };
            self.latency.fill(&mut self.read_rng, &mut windows[..n]);
            if extra != 0 {
                for w in &mut windows[..n] {
                    *w += extra;
                }
            }
        }
        let (lo_ns, hi_ns) = keep_ns.unwrap_or((i64::MIN, i64::MAX));
        if keep_ns.is_some()
            && method != ReadMethod::Precise
            && self.slow_batch_share > 0.0
            && rand::Rng::random::<f64>(&mut self.slow_rng) < self.slow_batch_share
        {
            let shortest = windows[..n].iter().copied().min().unwrap_or(0);
            for w in &mut windows[..n] {
                *w += hi_ns.saturating_add(1).saturating_sub(shortest).max(0);
            }
        }
        let step = if method == ReadMethod::Basic { 0 } else { SYSCALL_NS };
        let mut tau_ns = 0i64;
        for &window in &windows[..n] {
            if window >= lo_ns && window <= hi_ns {
                out.push(Sample {
                    sys_before_ns: sys_at(tau_ns),
                    phc_ns: phc_at(tau_ns + window / 2),
                    sys_after_ns: sys_at(tau_ns + window),
                });
            }
            // Basic readings share a timestamp between neighbours; the others do not, and
            // successive cross timestamps are distinct instants.
            tau_ns += window + step;
        }
        if out.is_empty() {
            // None in range: the shortest.
            let (mut tau_ns, mut best) = (0i64, (i64::MAX, 0i64));
            for &window in &windows[..n] {
                if window < best.0 {
                    best = (window, tau_ns);
                }
                tau_ns += window + step;
            }
            let (window, tau_ns) = best;
            out.push(Sample {
                sys_before_ns: sys_at(tau_ns),
                phc_ns: phc_at(tau_ns + window / 2),
                sys_after_ns: sys_at(tau_ns + window),
            });
            return Ok(false);
        }
        Ok(true)
    }
}

/// A simulated VM guest, its host and its daemons, in virtual time.
pub struct World {
    cfg: WorldConfig,
    sim: Sim,
    disciplines: Vec<Discipline>,
    tick_ns: i64,
    next_tick_ns: i64,
    /// When a pause or a reboot ends.
    resume_at_ns: Option<i64>,
    /// When the guest stopped for the pause in progress.
    paused_at_ns: Option<i64>,
    rebooting: bool,
    /// When the reboot in progress began (the reset).
    reboot_at_ns: Option<i64>,
    sync_on_resume: bool,
    samples_stopped: bool,
    /// When the SYNC sample sent on resume reaches the guest.
    sync_at_ns: Option<i64>,
}

/// The world's fixed tick for a PHC: hyperv's sample interval, else `DEFAULT_TICK_S`.
fn tick_ns(phc: &PhcState) -> i64 {
    secs_to_ns(if phc.is_hyperv() { phc.sample_interval_s() } else { DEFAULT_TICK_S })
}

/// From a reset to the kernel's rtc_hctosys reading the RTC. Measured in the QEMU guest (Debian's
/// 6.12 under TCG, virtual time, a reset at a whole second of host time): the clock came back
/// 0.232 s behind in 62 of 64 runs of `reboot` (0.457 s in the other two), an RTC read 0.73 s
/// (0.96 s) into the boot.
pub const RTC_READ_AFTER_RESET_NS: i64 = 732_000_000;

/// Time from resume (or boot) to the host's SYNC sample reaching hv_utils: the host sends it
/// when the VM runs again and the guest handles it in a work item, so the guest is seen, briefly,
/// with the error the pause left.
pub const SYNC_DELIVERY_NS: i64 = 10_000_000;

impl World {
    /// Builds a world at t = 0 with every daemon just started.
    pub fn new(cfg: &WorldConfig) -> Result<World, Error> {
        cfg.validate()?;
        let osc = Oscillator::new(&cfg.guest, noise::rng(cfg.seed, noise::STREAM_GUEST));
        let phc = PhcState::new(&cfg.phc, cfg.seed);
        let tick_ns = tick_ns(&phc);
        let mut read_rng = noise::rng(cfg.seed, noise::STREAM_READS);
        let sim = Sim {
            t_ns: 0,
            start_ns: cfg.start_realtime_ns,
            host_err_s: 0.0,
            refcnt_s: 0.0,
            running: true,
            guest: GuestClock::default(),
            osc,
            phc,
            latency: noise::LatencyTable::new(&cfg.phc.read_latency(), &mut read_rng),
            normal: noise::NormalTable::new(&mut read_rng),
            read_rng,
            slow_batch_share: cfg.phc.read_latency().slow_batch_share,
            slow_rng: noise::rng(cfg.seed, noise::STREAM_SLOW_BATCHES),
            events: Vec::new(),
            ntp: cfg.ntp_server(),
            ntp_rng: noise::rng(cfg.seed, noise::STREAM_NTP),
            steps: Vec::new(),
            last_freq_event: 0.0,
        };
        let mut world = World {
            cfg: cfg.clone(),
            sim,
            disciplines: cfg.disciplines.iter().map(|d| Discipline::start(d, 0)).collect(),
            tick_ns,
            next_tick_ns: 0,
            resume_at_ns: None,
            paused_at_ns: None,
            rebooting: false,
            reboot_at_ns: None,
            sync_on_resume: true,
            samples_stopped: false,
            sync_at_ns: None,
        };
        if world.disciplines.iter().any(|d| matches!(d, Discipline::HvUtils(_))) && !world.sim.phc.is_hyperv()
        {
            world.sim.note("hv_utils", "no Hyper-V time sync channel; hv_utils does nothing".to_owned());
        }
        // The host's first sample at boot is SYNC-flagged, as when the IC channel opens.
        world.host_tick(true);
        world.next_tick_ns = tick_ns;
        Ok(world)
    }

    /// The guest oscillator's wander as this world draws it (`noise::WanderPath`).
    pub fn wander_path(cfg: &WorldConfig) -> crate::noise::WanderPath {
        crate::noise::WanderPath::new(&cfg.guest, cfg.seed, tick_ns(&PhcState::new(&cfg.phc, cfg.seed)))
    }

    /// A world on a kvm PHC with the default NTP server (unit tests of the NTP clients).
    #[cfg(test)]
    pub(crate) fn for_ntp_tests() -> World {
        World::new(&crate::WorldConfig {
            phc: crate::PhcConfig::Kvm { read_latency: crate::LatencyConfig::kvm() },
            ntp_server: Some(crate::NtpServerConfig::default()),
            ..Default::default()
        })
        .unwrap()
    }

    /// What the daemons see, for unit tests of the models.
    #[cfg(test)]
    pub(crate) fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// The noise of chronyd's samples and of its regression so far, estimated as from the real
    /// chronyd's logs (`discipline::sample_noise`); None without chrony.
    pub fn chrony_noise(&self) -> Option<crate::discipline::sample_noise::Noise> {
        self.disciplines.iter().find_map(|d| d.chrony_noise())
    }

    /// Reference time since the start.
    pub fn now_ns(&self) -> i64 {
        self.sim.t_ns
    }

    /// Whether the guest runs (false while paused or rebooting).
    pub fn is_running(&self) -> bool {
        self.sim.running
    }

    /// Guest CLOCK_REALTIME minus host time, now.
    pub fn guest_offset_ns(&self) -> i64 {
        secs_to_ns(self.sim.guest_offset_s())
    }

    /// Guest CLOCK_REALTIME now.
    pub fn guest_realtime_ns(&self) -> i64 {
        self.sim.start_ns + self.sim.t_ns + secs_to_ns(self.sim.guest.err_s)
    }

    /// Guest CLOCK_MONOTONIC_RAW now (since the last boot).
    pub fn guest_monotonic_raw_ns(&self) -> i64 {
        secs_to_ns(self.sim.guest.raw_s)
    }

    /// Guest CLOCK_MONOTONIC now (since the last boot).
    pub fn guest_monotonic_ns(&self) -> i64 {
        secs_to_ns(self.sim.guest.mono_s)
    }

    /// PHC time minus host time as a clock_gettime client sees it now.
    pub fn phc_offset_ns(&mut self) -> Result<i64, phc::Error> {
        Ok(secs_to_ns(self.sim.phc_err_s()? - self.sim.host_err_s))
    }

    /// Answers a PTP read at now exactly as the driver would.
    pub fn read(&mut self, method: ReadMethod, n: usize) -> Result<Vec<phc::Sample>, phc::Error> {
        self.sim.read(method, n)
    }

    /// Everything that happened since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.sim.events)
    }

    /// Advances to `t_ns`, processing every event up to it in order.
    pub fn run_until(&mut self, t_ns: i64) {
        loop {
            let (due_ns, what) = self.next_due();
            if due_ns > t_ns {
                break;
            }
            self.advance_to(due_ns);
            match what {
                Due::Tick => {
                    self.next_tick_ns += self.tick_ns;
                    self.host_tick(false);
                }
                Due::Resume => self.resume(),
                Due::Sync => {
                    self.sync_at_ns = None;
                    if !self.samples_stopped {
                        self.deliver_sample(true);
                    }
                }
                Due::Daemon(i) => {
                    self.disciplines[i].on_timer(&mut self.sim);
                    self.dispatch_steps();
                }
            }
        }
        self.advance_to(t_ns);
    }

    fn next_due(&self) -> (i64, Due) {
        let mut best = (self.next_tick_ns, Due::Tick);
        if let Some(t) = self.resume_at_ns {
            if t < best.0 {
                best = (t, Due::Resume);
            }
        }
        if let Some(t) = self.sync_at_ns.filter(|_| self.sim.running) {
            if t < best.0 {
                best = (t, Due::Sync);
            }
        }
        if self.sim.running {
            for (i, d) in self.disciplines.iter().enumerate() {
                // Timers run on the guest's clocks, which stood still during a pause; `resume`
                // moved them on by the pause, so none is behind now (the max is a guard).
                if let Some(t) = d.next_due_ns() {
                    let t = t.max(self.sim.t_ns);
                    if t < best.0 {
                        best = (t, Due::Daemon(i));
                    }
                }
            }
        }
        best
    }

    fn advance_to(&mut self, t_ns: i64) {
        if t_ns <= self.sim.t_ns {
            return;
        }
        let dt_s = (t_ns - self.sim.t_ns) as f64 * 1e-9;
        let running = self.sim.running;
        self.sim.guest.advance(dt_s, self.sim.osc.freq(), running);
        self.sim.phc.advance(dt_s, running);
        if running {
            self.sim.refcnt_s += dt_s;
        }
        self.sim.t_ns = t_ns;
    }

    /// The fixed tick: oscillators wander, the host sends a sample.
    fn host_tick(&mut self, sync: bool) {
        let dt_s = self.tick_ns as f64 * 1e-9;
        self.sim.osc.tick(dt_s);
        self.sim.phc.tick(dt_s);
        if self.sim.running && !self.samples_stopped {
            self.deliver_sample(sync);
        }
    }

    fn deliver_sample(&mut self, sync: bool) {
        if !self.sim.phc.host_sends_samples() {
            return;
        }
        let sample = HostSample {
            host_err_s: self.sim.host_err_s,
            refcnt_s: self.sim.refcnt_s,
            t_s: self.sim.now_s(),
        };
        self.sim.phc.host_sample(sample);
        if self.sim.phc.is_hyperv() {
            for i in 0..self.disciplines.len() {
                self.disciplines[i].on_host_sample(&mut self.sim, sync);
                self.dispatch_steps();
            }
        }
    }

    /// Tells every other daemon about steps made in the last callback.
    fn dispatch_steps(&mut self) {
        while !self.sim.steps.is_empty() {
            let steps = std::mem::take(&mut self.sim.steps);
            for (source, delta_s) in steps {
                for d in &mut self.disciplines {
                    if d.source() != source {
                        d.on_external_step(&mut self.sim, delta_s);
                    }
                }
            }
        }
    }

    fn resume(&mut self) {
        self.resume_at_ns = None;
        let paused_at = self.paused_at_ns.take();
        self.sim.running = true;
        if self.rebooting {
            self.rebooting = false;
            // The RTC holds whole seconds of host time; the kernel's rtc_hctosys, early in the
            // boot, sets the clock to them plus half a second, and the clock runs from there: a
            // booted guest is off by up to 0.5 s either way, by where in its second the RTC was
            // read.
            let read_ns = self
                .reboot_at_ns
                .take()
                .map_or(self.sim.t_ns, |at| (at + RTC_READ_AFTER_RESET_NS).min(self.sim.t_ns));
            let host_ns = self.sim.start_ns + read_ns + secs_to_ns(self.sim.host_err_s);
            let rtc_ns = host_ns.div_euclid(1_000_000_000) * 1_000_000_000 + 500_000_000;
            self.sim.guest.reboot((rtc_ns - host_ns) as f64 * 1e-9);
            self.sim.refcnt_s = 0.0;
            self.sim.phc.reboot();
            self.sim.last_freq_event = 0.0;
            let t_ns = self.sim.t_ns;
            self.disciplines = self.cfg.disciplines.iter().map(|d| Discipline::start(d, t_ns)).collect();
            self.sim.note(SOURCE, "booted".to_owned());
            self.sync_at_ns = Some(self.sim.t_ns + SYNC_DELIVERY_NS);
        } else {
            // The daemons' timers (chrony's SCH_AddTimeoutByDelay, phc2sys's clock_nanosleep on
            // MONOTONIC, ntpd's interval timer) count guest time, which did not pass while the
            // guest was stopped: each falls due as long after the resume as it was due after
            // the stop. None fires for the periods the pause spanned.
            if let Some(at) = paused_at {
                let paused_ns = self.sim.t_ns - at;
                for d in &mut self.disciplines {
                    d.delay_timers(paused_ns);
                }
            }
            self.sim.note(SOURCE, "resumed".to_owned());
            if self.sync_on_resume || !self.sim.phc.is_hyperv() {
                self.sync_at_ns = Some(self.sim.t_ns + SYNC_DELIVERY_NS);
            }
        }
    }

    /// Applies a disturbance at now.
    pub fn apply(&mut self, d: &Disturbance) {
        match *d {
            Disturbance::NtpServer { answer, offset_s } => {
                if let Some(a) = answer {
                    self.sim.ntp.answer = a;
                }
                if let Some(o) = offset_s {
                    self.sim.ntp.offset_s = o;
                }
                let text = format!(
                    "NTP server: answers {:?}, off by {} s",
                    self.sim.ntp.answer, self.sim.ntp.offset_s
                );
                self.sim.note(SOURCE, text);
            }
            Disturbance::Pause { duration_s, sync_on_resume } => {
                let end = self.sim.t_ns + secs_to_ns(duration_s.max(0.0));
                if self.sim.running {
                    self.sim.running = false;
                    self.paused_at_ns = Some(self.sim.t_ns);
                    self.sim.note(SOURCE, "paused".to_owned());
                }
                self.sync_on_resume = sync_on_resume;
                self.resume_at_ns = Some(self.resume_at_ns.map_or(end, |t| t.max(end)));
            }
            Disturbance::SnapshotRestore { gap_s } => {
                // For the clocks a restore is a pause without a SYNC sample; the sim's vmclock
                // personality has no disruption marker to bump.
                self.apply(&Disturbance::Pause { duration_s: gap_s, sync_on_resume: false });
                self.sim.note(SOURCE, format!("snapshot restored {gap_s} s after it was saved"));
            }
            Disturbance::Reboot { downtime_s } => {
                self.sim.running = false;
                self.rebooting = true;
                self.reboot_at_ns = Some(self.sim.t_ns);
                self.sim.note(SOURCE, "rebooting".to_owned());
                let end = self.sim.t_ns + secs_to_ns(downtime_s.max(0.0));
                self.resume_at_ns = Some(self.resume_at_ns.map_or(end, |t| t.max(end)));
            }
            Disturbance::HostStep { delta_s } => {
                self.sim.host_err_s += delta_s;
                self.sim.note(SOURCE, format!("host time stepped by {delta_s:+} s"));
            }
            Disturbance::GuestStep { delta_s } => {
                self.sim.step(SOURCE, delta_s);
                self.dispatch_steps();
            }
            Disturbance::SamplesStop => {
                self.samples_stopped = true;
                self.sim.note(SOURCE, "host stopped sending time samples".to_owned());
            }
            Disturbance::SamplesResume => {
                self.samples_stopped = false;
                self.sim.note(SOURCE, "host sends time samples again".to_owned());
            }
            Disturbance::FrequencyJump { delta_ppm } => {
                self.sim.osc.jump(delta_ppm * 1e-6);
                self.sim.note(SOURCE, format!("guest oscillator frequency changed by {delta_ppm:+} ppm"));
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Due {
    Tick,
    Resume,
    Sync,
    Daemon(usize),
}

#[cfg(test)]
mod wander_path_tests {
    use super::*;
    use crate::{OscillatorConfig, PhcConfig};

    /// The path a backend replays is the world's own: the same draw at every tick, paused or not.
    #[test]
    fn wander_path_replays_the_worlds_oscillator() {
        let hyperv_3s = PhcConfig::Hyperv {
            sample_interval_s: 3.0,
            stale_after_s: 600.0,
            read_latency: crate::LatencyConfig::hyperv(),
        };
        let kvm = PhcConfig::Kvm { read_latency: crate::LatencyConfig::kvm() };
        for phc in [hyperv_3s, kvm] {
            let cfg = WorldConfig {
                seed: 11,
                phc,
                guest: OscillatorConfig {
                    freq_error_ppm: 3.0,
                    wander_ppb_per_sqrt_s: 2.0,
                    phase_noise_ns: 0.0,
                },
                disciplines: vec![],
                ..Default::default()
            };
            let mut world = World::new(&cfg).unwrap();
            let mut path = World::wander_path(&cfg);
            for k in 1..=40 {
                let w = path.draw();
                let got = world.sim_mut().osc.freq() - 3e-6;
                assert!((got - w).abs() < 1e-15, "tick {k}: world {got:e}, path {w:e}");
                if k == 10 {
                    world.apply(&crate::Disturbance::Pause { duration_s: 30.0, sync_on_resume: true });
                }
                world.run_until(k * path.tick_ns());
            }
        }
    }
}
