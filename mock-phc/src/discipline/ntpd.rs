//! ntpd (NTPsec 1.2.2, Debian bookworm's `ntpsec`, which `ntp` there installs) against the
//! world's NTP server: iburst and the poll (ntp_proto.c), the peer's clock filter and fitness
//! (ntpd_filter.rs), local_clock's state machine with the stepout (ntp_loopfilter.c), and Linux's
//! kernel PLL (kernel/time/ntp.c), which slews offsets under the step threshold exponentially.
//! Judged against the real ntpd in the QEMU guest (scenarios/guide). Line numbers are
//! ntpsec-1.2.2's ntpd/ntp_loopfilter.c unless named otherwise; mock-phc/CALIBRATION.md lists
//! them.

use serde::{Deserialize, Serialize};

use super::kernel_pll::{KernelPll, KERNEL_TICK_NS, MAXFREQ, MAXTC};
use super::ntpd_filter::{Filtered, PeerFilter, MAXDISPERSE_S, PHI};
use crate::discipline::secs_to_ns;
use crate::time::{check_positive, check_range, MAX_ABS_S};
use crate::world::Sim;
use crate::Error;

pub(crate) const SOURCE: &str = "ntpd";

/// ntp_proto.c:51 NTP_IBURST: packets of the burst at the first reply; ntp.h:80 NTP_MINPKT:
/// their spacing.
const NTP_IBURST: u32 = 6;
const BURST_SPACING_S: f64 = 2.0;
/// ntp_proto.c:1236-1243: a poll goes out ((0x1000 | (random() & 0xff)) << hpoll) >> 12 s after
/// the last: 2^hpoll plus 0-6%, 3.1% on average.
const POLL_RANDOM_MEAN: f64 = 1.0 + 127.5 / 4096.0;
/// ntp_proto.c:1306-1308: the first poll, a second per association after the start.
const FIRST_POLL_S: f64 = 1.0;
/// The scenario's server: precision 2^-20 s, root dispersion 16/65536 s (phc-harness's
/// guest::ntp).
const SERVER_PRECISION_S: f64 = 1.0 / 1_048_576.0;
const SERVER_ROOT_DISP_S: f64 = 16.0 / 65_536.0;
/// ntp_loopfilter.c:41 CLOCK_AVG, :45 CLOCK_LIMIT, :46 CLOCK_PGATE: the poll-adjust loop.
const CLOCK_AVG: f64 = 8.0;
const CLOCK_LIMIT: i32 = 30;
const CLOCK_PGATE: f64 = 4.0;
/// sys_precision on a modern Linux guest (2^-23 s): the floor of every jitter.
const PRECISION_S: f64 = 1.0 / 8_388_608.0;
/// adjtime()'s fixed slew (kernel MAX_TICKADJ, 500 us/s), used by ntpd's first update.
const ADJTIME_RATE: f64 = 500e-6;
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
    /// The peer: its clock filter, reachability, the burst still to send, whether iburst is
    /// armed (until the first reply), and whether it is the system peer.
    filter: PeerFilter,
    reach: u8,
    burst: u32,
    retry: bool,
    sys_peer: bool,
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
            next_poll_ns: t_ns + secs_to_ns(FIRST_POLL_S),
            next_tick_ns: t_ns + KERNEL_TICK_NS,
            state: State::Nset,
            epoch_s: 0.0,
            last_offset_s: 0.0,
            clock_jitter_s: PRECISION_S,
            tc_counter: 0,
            sys_poll: min_poll,
            min_poll,
            max_poll,
            filter: PeerFilter::new(t_ns as f64 * 1e-9, PRECISION_S + SERVER_PRECISION_S),
            reach: 0,
            burst: 0,
            retry: true,
            sys_peer: false,
            // Debian runs ntpd with -g: the first offset may be any size.
            allow_panic: true,
            // :213 freq_cnt = clock_minstep. A float-to-int `as` saturates; stepout_s is
            // validated to 0..=1e6.
            freq_cnt: cfg.stepout_s as u32,
            clock_offset_s: 0.0,
            kernel: KernelPll::new(min_poll.min(MAXTC)),
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
        let now_s = sim.mono_s();
        let hpoll_s = 2f64.powi(self.sys_poll);
        // ntp_proto.c poll and receive: the reachability register, the filter, clock_select.
        self.reach <<= 1;
        let filtered = match sim.ntp_exchange() {
            crate::ntp_server::Reply::Time { offset_s, delay_s, .. } => {
                self.reach |= 1;
                // :629-637: the first good reply of an iburst association starts the burst.
                if self.retry {
                    self.retry = false;
                    self.burst = NTP_IBURST - 1;
                }
                // :591-593 epsilon: both precisions and the dispersion over the round trip.
                let disp_s = PRECISION_S + SERVER_PRECISION_S + PHI * delay_s;
                self.filter.add(now_s, (offset_s, delay_s, disp_s), self.freq_cnt == 0, hpoll_s)
            }
            // A lost or insane reply is no sample; eight lost polls put the ceiling in the
            // filter (:905-920).
            _ if self.reach == 0 => {
                self.filter.add(now_s, (0.0, 0.0, MAXDISPERSE_S), self.freq_cnt == 0, hpoll_s)
            }
            _ => Filtered::Nothing,
        };
        let interval_s = if self.burst > 0 {
            self.burst -= 1;
            BURST_SPACING_S
        } else {
            hpoll_s * POLL_RANDOM_MEAN
        };
        self.next_poll_ns += secs_to_ns(interval_s);
        if let Filtered::Offset(offset_s) = filtered {
            // clock_select with one server: it is the system peer while fit.
            if !self.filter.fit(now_s, hpoll_s, SERVER_ROOT_DISP_S) {
                if self.sys_peer {
                    self.sys_peer = false;
                    sim.note(SOURCE, "no_sys_peer".to_owned());
                }
                return;
            }
            if !self.sys_peer {
                self.sys_peer = true;
                sim.note(SOURCE, "sys_peer".to_owned());
            }
            self.local_clock(sim, offset_s);
        }
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
                    sim.note(SOURCE, format!("spike_detect {fp_offset_s:+.6} s"));
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
            // ntp_proto.c clock_update: a step clears every association (clear_all,
            // peer_clear): the filter empties, and the next poll (:1306-1322, at random within
            // 2^minpoll: the middle here) starts an iburst again.
            self.filter = PeerFilter::new(now_s, PRECISION_S + SERVER_PRECISION_S);
            self.reach = 0;
            self.retry = true;
            self.burst = 0;
            self.sys_peer = false;
            self.next_poll_ns = sim.now_ns() + secs_to_ns(2f64.powi(self.min_poll) / 2.0);
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
