//! ntpd (NTPsec 1.2.2, Debian bookworm's `ntpsec`, which `ntp` there installs) against an NTP
//! server on the host: the peer's fitness (ntp_proto.c), local_clock's state
//! machine with the stepout (ntp_loopfilter.c), and Linux's kernel PLL (kernel/time/ntp.c), which
//! slews offsets under the step threshold exponentially. Unjudged: ntpd has no PHC refclock, so
//! no real ntpd runs in the guest. Line numbers are ntpsec-1.2.2's ntpd/ntp_loopfilter.c unless
//! named otherwise; mock-phc/CALIBRATION.md lists them.

use serde::{Deserialize, Serialize};

use crate::discipline::secs_to_ns;
use crate::time::{check_positive, check_range, MAX_ABS_S};
use crate::world::Sim;
use crate::Error;

pub(crate) const SOURCE: &str = "ntpd";

/// ntp_proto.c:57-58: an empty filter slot counts as 16 s of dispersion, weighted by halves, so
/// a fresh peer's distance drops under MAXDISTANCE (1.5 s) only at its 4th sample.
const SAMPLES_TO_FIT: u32 = 4;
/// ntp_loopfilter.c:41 CLOCK_AVG, :45 CLOCK_LIMIT, :46 CLOCK_PGATE: the poll-adjust loop.
const CLOCK_AVG: f64 = 8.0;
const CLOCK_LIMIT: i32 = 30;
const CLOCK_PGATE: f64 = 4.0;
/// sys_precision on a modern Linux guest (2^-23 s): the floor of every jitter.
const PRECISION_S: f64 = 1.0 / 8_388_608.0;
/// kernel/time/ntp.c: SHIFT_PLL, MAXPHASE (0.5 s), MAXFREQ (500 ppm), MAXTC.
const SHIFT_PLL: i32 = 2;
const MAXPHASE_S: f64 = 0.5;
const MAXFREQ: f64 = 500e-6;
const MAXTC: i32 = 10;
/// adjtime()'s fixed slew (kernel MAX_TICKADJ, 500 us/s), used by ntpd's first update.
const ADJTIME_RATE: f64 = 500e-6;
const KERNEL_TICK_NS: i64 = 1_000_000_000;
/// :40 CLOCK_PLL and :43 CLOCK_FLOOR: during the startup clamp (freq_cnt, :213, the stepout's
/// 300 s of SYNC seconds) ntpd slews itself, clock_offset / (16 * 2) per second (:928-930),
/// and an offset under 0.5 ms ends the clamp (:697-698).
const CLOCK_PLL: f64 = 16.0;
const CLOCK_FLOOR_S: f64 = 0.0005;

/// ntpd's clock discipline settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NtpdConfig {
    /// Offsets above this are stepped, after the stepout (`tinker step`, :36 CLOCK_MAX).
    pub step_threshold_s: f64,
    /// How long offsets above the step threshold are ignored before a step (`tinker stepout`,
    /// :37 CLOCK_MINSTEP = 300 s).
    pub stepout_s: f64,
    /// Offsets above this make ntpd exit (`tinker panic`, :38 CLOCK_PANIC).
    pub panic_threshold_s: f64,
    /// The kernel's frequency limit (kernel/time/ntp.c MAXFREQ, 500 ppm).
    pub max_slew_ppm: f64,
    /// `minpoll` (ntp.h NTP_MINDPOLL: 2^6 = 64 s).
    pub poll_s: f64,
    /// `maxpoll` (ntp.h NTP_MAXDPOLL: 2^10 = 1024 s).
    pub maxpoll_s: f64,
}

impl Default for NtpdConfig {
    fn default() -> Self {
        Self {
            step_threshold_s: 0.128,
            stepout_s: 300.0,
            panic_threshold_s: 1000.0,
            max_slew_ppm: MAXFREQ * 1e6,
            poll_s: 64.0,
            maxpoll_s: 1024.0,
        }
    }
}

impl NtpdConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        for (name, v, hi) in [
            ("step_threshold_s", self.step_threshold_s, 1e6),
            ("panic_threshold_s", self.panic_threshold_s, MAX_ABS_S),
            ("max_slew_ppm", self.max_slew_ppm, crate::time::MAX_FREQ_ERROR_PPM),
        ] {
            check_positive(&format!("{key}.{name}"), v, hi)?;
        }
        check_range(&format!("{key}.stepout_s"), self.stepout_s, 0.0, 1e6)?;
        // ntpd's poll exponent runs 0..=17 (1 s to 36 h); a poll that rounds to 0 ns would
        // make the model due again at the same instant for ever.
        check_range(&format!("{key}.poll_s"), self.poll_s, 1.0, 131_072.0)?;
        check_range(&format!("{key}.maxpoll_s"), self.maxpoll_s, self.poll_s, 131_072.0)?;
        Ok(())
    }

    fn log2(s: f64) -> i32 {
        // Within 0..=17 by validation.
        let mut p = 0;
        while p < 17 && 2f64.powi(p + 1) <= s {
            p += 1;
        }
        p
    }
}

/// local_clock's states (ntp_loopfilter.c EVNT_NSET, EVNT_FREQ, EVNT_SPIK, EVNT_SYNC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Nset,
    Freq,
    Spik,
    Sync,
}

/// The kernel's PLL (kernel/time/ntp.c), offsets as the guest gains them.
#[derive(Debug, Clone, Default)]
struct KernelPll {
    /// time_offset: what is still to be slewed in.
    offset_s: f64,
    /// time_freq.
    freq: f64,
    time_constant: i32,
    /// time_reftime (guest REALTIME seconds), once set.
    reftime_s: Option<f64>,
}

impl KernelPll {
    /// ntp_update_offset: a new phase error and the PLL's frequency step.
    fn update_offset(&mut self, offset_s: f64, now_s: f64) {
        let offset_s = offset_s.clamp(-MAXPHASE_S, MAXPHASE_S);
        let mut secs = self.reftime_s.map_or(0.0, |t| (now_s - t).max(0.0)).floor();
        self.reftime_s = Some(now_s);
        // PLL only: the FLL needs STA_FLL or more than MAXSEC (2048 s) between updates.
        let cap = f64::from(1 << (SHIFT_PLL + 1 + self.time_constant));
        secs = secs.min(cap);
        let gain = 2f64.powi(-2 * (SHIFT_PLL + 2 + self.time_constant));
        self.freq = (self.freq + offset_s * secs * gain).clamp(-MAXFREQ, MAXFREQ);
        self.offset_s = offset_s;
    }

    /// second_overflow: this second's share of the phase error.
    fn chunk(&mut self) -> f64 {
        let c = self.offset_s * 2f64.powi(-(SHIFT_PLL + self.time_constant));
        self.offset_s -= c;
        c
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Ntpd {
    cfg: NtpdConfig,
    running: bool,
    next_poll_ns: i64,
    next_tick_ns: i64,
    state: State,
    /// local_clock's clock_epoch (guest seconds) and last accepted offset.
    epoch_s: f64,
    last_offset_s: f64,
    clock_jitter_s: f64,
    tc_counter: i32,
    sys_poll: i32,
    min_poll: i32,
    max_poll: i32,
    /// The peer: samples since it was (re)started.
    samples: u32,
    allow_panic: bool,
    /// freq_cnt: seconds of startup clamp left.
    freq_cnt: u32,
    /// clock_offset: what ntpd itself still slews during the clamp.
    clock_offset_s: f64,
    kernel: KernelPll,
}

impl Ntpd {
    pub(crate) fn new(cfg: NtpdConfig, t_ns: i64) -> Self {
        let min_poll = NtpdConfig::log2(cfg.poll_s);
        let max_poll = NtpdConfig::log2(cfg.maxpoll_s).max(min_poll);
        Self {
            running: true,
            next_poll_ns: t_ns,
            next_tick_ns: t_ns + KERNEL_TICK_NS,
            state: State::Nset,
            epoch_s: 0.0,
            last_offset_s: 0.0,
            clock_jitter_s: PRECISION_S,
            tc_counter: 0,
            sys_poll: min_poll,
            min_poll,
            max_poll,
            samples: 0,
            // Debian runs ntpd with -g: the first offset may be any size.
            allow_panic: true,
            // :213 freq_cnt = clock_minstep. A float-to-int `as` saturates; stepout_s is
            // validated to 0..=1e6.
            freq_cnt: cfg.stepout_s as u32,
            clock_offset_s: 0.0,
            kernel: KernelPll { time_constant: min_poll.min(MAXTC), ..KernelPll::default() },
            cfg,
        }
    }

    pub(crate) fn next_due_ns(&self) -> Option<i64> {
        self.running.then_some(self.next_poll_ns.min(self.next_tick_ns))
    }

    pub(crate) fn delay_timers(&mut self, delta_ns: i64) {
        self.next_poll_ns += delta_ns;
        self.next_tick_ns += delta_ns;
    }

    pub(crate) fn on_timer(&mut self, sim: &mut Sim) {
        if self.next_tick_ns <= self.next_poll_ns {
            self.next_tick_ns += KERNEL_TICK_NS;
            // The kernel's second_overflow: this second's share of the phase error, slewed in
            // over the second; during ntpd's startup clamp, ntpd's own adj_host_clock instead.
            let c = if self.state == State::Sync && self.freq_cnt > 0 {
                self.freq_cnt -= 1;
                let adj = self.clock_offset_s / (CLOCK_PLL * 2.0);
                self.clock_offset_s -= adj;
                adj
            } else {
                self.kernel.chunk()
            };
            if c != 0.0 {
                sim.slew(c, c.abs() / (KERNEL_TICK_NS as f64 * 1e-9));
            }
            return;
        }
        self.next_poll_ns += secs_to_ns(2f64.powi(self.sys_poll));
        // ntpd's offset: server minus guest, from one exchange with the world's server; an
        // unanswered request or a reply that fails ntp_proto.c's sanity checks is no sample.
        let crate::ntp_server::Reply::Time { offset_s: fp_offset_s, .. } = sim.ntp_exchange() else {
            return;
        };
        if let Some(offset_s) = self.clock_filter(fp_offset_s) {
            self.local_clock(sim, offset_s);
        }
    }

    /// ntp_proto.c clock_filter: a new sample reaches local_clock once the peer is fit. Its
    /// popcorn suppressor (ntp_proto.c:1472-1480) and the sort by delay are not modelled: the
    /// newest sample is taken (a server on a local network, whose delays scatter by microseconds).
    fn clock_filter(&mut self, offset_s: f64) -> Option<f64> {
        self.samples = self.samples.saturating_add(1);
        (self.samples >= SAMPLES_TO_FIT).then_some(offset_s)
    }

    /// ntp_loopfilter.c local_clock (:460-890), offsets host minus guest.
    fn local_clock(&mut self, sim: &mut Sim, fp_offset_s: f64) {
        let now_s = sim.mono_s();
        if fp_offset_s.abs() > self.cfg.panic_threshold_s && !self.allow_panic {
            sim.note(
                SOURCE,
                format!(
                    "time correction of {:.0} seconds exceeds sanity limit ({:.0}); set clock manually to the correct UTC time",
                    fp_offset_s.abs(),
                    self.cfg.panic_threshold_s
                ),
            );
            // Real ntpd exits here.
            self.running = false;
            return;
        }
        let mu = now_s - self.epoch_s;
        let stepout = mu >= self.cfg.stepout_s;
        if fp_offset_s.abs() > self.cfg.step_threshold_s {
            match self.state {
                // :555-560: the first outlier in SYNC is ignored.
                State::Sync => {
                    self.state = State::Spik;
                    return;
                }
                // :567-583: later ones until the stepout.
                State::Freq | State::Spik if !stepout => return,
                State::Freq => self.set_freq(sim, fp_offset_s / mu),
                State::Spik | State::Nset => {}
            }
            // :612-625: step, and the kernel's ntp_clear drops its pending phase.
            sim.note(SOURCE, format!("CLOCK: time stepped by {fp_offset_s:+.6}"));
            self.kernel.offset_s = 0.0;
            sim.slew(0.0, 0.0);
            sim.step(SOURCE, fp_offset_s);
            self.tc_counter = 0;
            self.clock_jitter_s = PRECISION_S;
            let next = if self.state == State::Nset { State::Freq } else { State::Sync };
            self.rstclock(next, now_s, 0.0);
            // ntp_proto.c clock_update: a step clears every association (clear_all).
            self.samples = 0;
            return;
        }
        let e2 = self.clock_jitter_s.powi(2);
        let d2 = (fp_offset_s - self.last_offset_s).powi(2);
        self.clock_jitter_s = (e2 + (d2 - e2) / CLOCK_AVG).sqrt();
        match self.state {
            // :643-646: the first update slews with adjtime and waits for the stepout to
            // measure the frequency.
            State::Nset => {
                sim.slew(fp_offset_s, ADJTIME_RATE);
                self.rstclock(State::Freq, now_s, fp_offset_s);
                return;
            }
            State::Freq if !stepout => return,
            // :654-660 direct_freq.
            State::Freq => self.set_freq(sim, fp_offset_s / mu),
            State::Spik | State::Sync => {}
        }
        self.allow_panic = false;
        self.rstclock(State::Sync, now_s, fp_offset_s);
        if fp_offset_s.abs() < CLOCK_FLOOR_S {
            self.freq_cnt = 0;
        }
        if self.freq_cnt > 0 {
            self.clock_offset_s = fp_offset_s;
            return;
        }
        // :719-760: the kernel takes the offset with time constant sys_poll (STA_NANO).
        self.kernel.time_constant = self.sys_poll.clamp(0, MAXTC);
        let realtime_s = sim.mono_s() + sim.realtime_minus_mono_s();
        self.kernel.update_offset(fp_offset_s, realtime_s);
        let max = self.cfg.max_slew_ppm * 1e-6;
        self.kernel.freq = self.kernel.freq.clamp(-max, max);
        sim.set_freq(SOURCE, self.kernel.freq);
        self.adjust_poll();
    }

    fn set_freq(&mut self, sim: &mut Sim, freq: f64) {
        let max = self.cfg.max_slew_ppm * 1e-6;
        self.kernel.freq = freq.clamp(-max, max);
        sim.set_freq(SOURCE, self.kernel.freq);
    }

    fn rstclock(&mut self, state: State, now_s: f64, offset_s: f64) {
        self.state = state;
        self.last_offset_s = offset_s;
        self.epoch_s = now_s;
    }

    /// :853-874: the poll interval follows the offset against the jitter.
    fn adjust_poll(&mut self) {
        if self.last_offset_s.abs() < CLOCK_PGATE * self.clock_jitter_s {
            self.tc_counter += self.sys_poll;
            if self.tc_counter > CLOCK_LIMIT {
                self.tc_counter = CLOCK_LIMIT;
                if self.sys_poll < self.max_poll {
                    self.tc_counter = 0;
                    self.sys_poll += 1;
                }
            }
        } else {
            self.tc_counter -= self.sys_poll << 1;
            if self.tc_counter < -CLOCK_LIMIT {
                self.tc_counter = -CLOCK_LIMIT;
                if self.sys_poll > self.min_poll {
                    self.tc_counter = 0;
                    self.sys_poll -= 1;
                }
            }
        }
    }
}
