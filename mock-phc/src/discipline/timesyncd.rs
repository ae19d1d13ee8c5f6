//! systemd-timesyncd 252 (Debian bookworm's systemd-timesyncd 252.39, what the guest image
//! runs) against the world's NTP server: SNTP, one request per poll interval, its spike
//! detection and poll rule, a jump above 0.4 s and below it a slew handed to the kernel's PLL
//! (adjtimex ADJ_OFFSET with STA_PLL, time constant log2(poll) - 4), its retries and timeout when
//! the server does not answer, and a resync when someone else sets the clock. Line numbers are
//! systemd-252.39's src/timesync/timesyncd-manager.c; mock-phc/CALIBRATION.md lists them.

use serde::{Deserialize, Serialize};

use super::kernel_pll::{KernelPll, KERNEL_TICK_NS, MAXTC};
use crate::discipline::secs_to_ns;
use crate::ntp_server::Reply;
use crate::time::check_range;
use crate::world::Sim;
use crate::Error;

pub(crate) const SOURCE: &str = "timesyncd";

/// :50 NTP_MAX_ADJUST: offsets at least this large are jumped, smaller ones slewed.
const MAX_ADJUST_S: f64 = 0.4;
/// :43 NTP_ACCURACY_SEC: the poll interval's thresholds are fractions of it.
const ACCURACY_S: f64 = 0.2;
/// timesyncd-manager.h:28-29 NTP_RETRY_INTERVAL_MIN/MAX_USEC.
const RETRY_MIN_S: f64 = 15.0;
const RETRY_MAX_S: f64 = 360.0;
/// :56 NTP_MAX_MISSED_REPLIES, :61 TIMEOUT_USEC.
const MAX_MISSED_REPLIES: u32 = 2;
const TIMEOUT_S: f64 = 10.0;
/// From the clock being set to the resync's answer: the wake-up, the request and its round trip
/// (a millisecond on a local network).
const RESYNC_NS: i64 = 1_000_000;
/// timesyncd-manager.h:90: the spike detector's ring of samples.
const SAMPLES: usize = 8;

/// timesyncd's settings (`/etc/systemd/timesyncd.conf`, `[Time]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimesyncdConfig {
    /// `PollIntervalMinSec` (32 s, timesyncd-manager.h:25).
    pub poll_min_s: f64,
    /// `PollIntervalMaxSec` (2048 s, timesyncd-manager.h:26).
    pub poll_max_s: f64,
    /// From the daemon's start to its first request.
    pub start_delay_s: f64,
}

impl Default for TimesyncdConfig {
    fn default() -> Self {
        Self { poll_min_s: 32.0, poll_max_s: 2048.0, start_delay_s: 0.1 }
    }
}

impl TimesyncdConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        // timesyncd-conf.c:116-129 refuses a minimum under 16 s.
        check_range(&format!("{key}.poll_min_s"), self.poll_min_s, 16.0, 1e6)?;
        check_range(&format!("{key}.poll_max_s"), self.poll_max_s, self.poll_min_s, 1e6)?;
        check_range(&format!("{key}.start_delay_s"), self.start_delay_s, 0.0, 3600.0)?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Timesyncd {
    cfg: TimesyncdConfig,
    /// The poll/retry timer, the reply timeout, the kernel's second.
    next_send_ns: Option<i64>,
    timeout_ns: Option<i64>,
    next_tick_ns: i64,
    /// After a timeout the server list is exhausted: the retry (manager_retry_connect) is due.
    reconnect_ns: Option<i64>,
    exhausted: bool,
    poll_s: f64,
    /// retry_interval: 0 until a request goes unanswered.
    retry_s: f64,
    missed: u32,
    pending: bool,
    packet_count: u64,
    /// (offset, delay) of the spike detector's ring, and the index of the newest.
    samples: [(f64, f64); SAMPLES],
    idx: usize,
    jitter_s: f64,
    poll_resync: bool,
    talking: bool,
    synchronized: bool,
    kernel: KernelPll,
}

impl Timesyncd {
    pub(crate) fn new(cfg: TimesyncdConfig, t_ns: i64) -> Self {
        // manager_begin (:667-689): missed_replies starts at NTP_MAX_MISSED_REPLIES and the first
        // request goes out at once.
        Self {
            next_send_ns: Some(t_ns + secs_to_ns(cfg.start_delay_s)),
            timeout_ns: None,
            next_tick_ns: t_ns + KERNEL_TICK_NS,
            reconnect_ns: None,
            exhausted: false,
            poll_s: cfg.poll_min_s,
            retry_s: 0.0,
            missed: MAX_MISSED_REPLIES,
            pending: false,
            packet_count: 0,
            samples: [(0.0, 0.0); SAMPLES],
            idx: 0,
            jitter_s: 0.0,
            poll_resync: false,
            talking: false,
            synchronized: false,
            kernel: KernelPll::new(0),
            cfg,
        }
    }

    pub(crate) fn next_due_ns(&self) -> Option<i64> {
        [self.next_send_ns, self.timeout_ns, self.reconnect_ns, Some(self.next_tick_ns)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Its timers run on CLOCK_BOOTTIME, which stood still with the guest.
    pub(crate) fn delay_timers(&mut self, delta_ns: i64) {
        for t in [&mut self.next_send_ns, &mut self.timeout_ns, &mut self.reconnect_ns].into_iter().flatten()
        {
            *t += delta_ns;
        }
        self.next_tick_ns += delta_ns;
    }

    pub(crate) fn on_timer(&mut self, sim: &mut Sim) {
        let now = sim.now_ns();
        if self.next_tick_ns <= now {
            self.next_tick_ns += KERNEL_TICK_NS;
            // The kernel's second_overflow: this second's share of the phase error.
            let c = self.kernel.chunk();
            if c != 0.0 {
                sim.slew(c, c.abs() / (KERNEL_TICK_NS as f64 * 1e-9));
            }
        } else if self.timeout_ns.is_some_and(|t| t <= now) {
            self.timeout_ns = None;
            sim.note(
                SOURCE,
                format!(
                    "Timed out waiting for reply from {0}:123 ({0}).",
                    crate::ntp_server::NTP_SERVER_ADDR
                ),
            );
            self.connect(sim);
        } else if self.reconnect_ns.is_some_and(|t| t <= now) {
            self.reconnect_ns = None;
            self.connect(sim);
        } else if self.next_send_ns.is_some_and(|t| t <= now) {
            self.send(sim);
        }
    }

    /// manager_connect (:781-890) with one server: the first time the list is exhausted it waits
    /// a poll interval and doubles it; the next time it begins again with the server.
    fn connect(&mut self, sim: &mut Sim) {
        self.pending = false;
        self.next_send_ns = None;
        self.timeout_ns = None;
        if !self.exhausted {
            self.exhausted = true;
            sim.note(SOURCE, "Waiting after exhausting servers.".to_owned());
            self.reconnect_ns = Some(sim.now_ns() + secs_to_ns(self.poll_s));
            if self.poll_s < self.cfg.poll_max_s {
                self.poll_s *= 2.0;
            }
            return;
        }
        self.exhausted = false;
        // manager_begin.
        self.talking = false;
        self.missed = MAX_MISSED_REPLIES;
        self.send(sim);
    }

    /// manager_send_request (:94-170), and the reply at once (a round trip of milliseconds).
    fn send(&mut self, sim: &mut Sim) {
        let now = sim.now_ns();
        self.timeout_ns = None;
        self.pending = true;
        self.retry_s =
            if self.retry_s == 0.0 { RETRY_MIN_S } else { (self.retry_s * 4.0 / 3.0).min(RETRY_MAX_S) };
        self.next_send_ns = Some(now + secs_to_ns(self.retry_s));
        self.missed += 1;
        if self.missed > MAX_MISSED_REPLIES {
            self.timeout_ns = Some(now + secs_to_ns(TIMEOUT_S));
        }
        match sim.ntp_exchange() {
            Reply::None => {}
            // Garbage echoes the nonce (:453-459 pass: missed_replies 0, the timeout dropped),
            // then fails the epoch, leap/stratum, version or mode test: manager_connect.
            Reply::Garbage => {
                self.missed = 0;
                self.connect(sim);
            }
            Reply::Time { offset_s, delay_s, .. } => self.receive(sim, offset_s, delay_s),
        }
    }

    /// manager_receive_response (:405-625) for a valid reply: offset server minus client.
    fn receive(&mut self, sim: &mut Sim, offset_s: f64, delay_s: f64) {
        self.missed = 0;
        self.timeout_ns = None;
        self.pending = false;
        self.retry_s = 0.0;
        let spike = self.spike(offset_s, delay_s);
        self.adjust_poll(offset_s, spike);
        if !spike {
            self.adjust_clock(sim, offset_s);
        }
        sim.note(
            SOURCE,
            format!(
                "interval/delta/delay/jitter {}s/{:+.3}s/{:.3}s/{:.3}s{}",
                self.poll_s,
                offset_s,
                delay_s,
                self.jitter_s,
                if spike { " (ignored)" } else { "" }
            ),
        );
        if !self.talking {
            self.talking = true;
            sim.note(
                SOURCE,
                format!("Contacted time server {0}:123 ({0}).", crate::ntp_server::NTP_SERVER_ADDR),
            );
        }
        if !spike && !self.synchronized {
            self.synchronized = true;
            sim.note(SOURCE, "Initial clock synchronization".to_owned());
        }
        self.next_send_ns = Some(sim.now_ns() + secs_to_ns(self.poll_s));
    }

    /// manager_sample_spike_detection (:309-358).
    fn spike(&mut self, offset_s: f64, delay_s: f64) -> bool {
        self.packet_count += 1;
        if self.packet_count == 1 {
            return false;
        }
        let idx_cur = self.idx;
        let idx_new = (idx_cur + 1) % SAMPLES;
        self.idx = idx_new;
        self.samples[idx_new] = (offset_s, delay_s);
        let mut idx_min = idx_cur;
        for i in 0..SAMPLES {
            if self.samples[i].1 > 0.0 && self.samples[i].1 < self.samples[idx_min].1 {
                idx_min = i;
            }
        }
        let j: f64 = self.samples.iter().map(|s| (s.0 - self.samples[idx_min].0).powi(2)).sum();
        self.jitter_s = (j / (SAMPLES - 1) as f64).sqrt();
        if self.poll_resync || offset_s.abs() > delay_s || self.packet_count < 4 {
            return false;
        }
        if offset_s.abs() > self.samples[idx_min].1 {
            return true;
        }
        (offset_s - self.samples[idx_cur].0).abs() > 3.0 * self.jitter_s
    }

    /// manager_adjust_poll (:360-388).
    fn adjust_poll(&mut self, offset_s: f64, spike: bool) {
        let (min, max) = (self.cfg.poll_min_s, self.cfg.poll_max_s);
        if self.poll_resync {
            self.poll_s = min;
            self.poll_resync = false;
        } else if !spike && offset_s.abs() > ACCURACY_S {
            self.poll_s = min;
        } else if offset_s.abs() < ACCURACY_S * 0.25 {
            if self.poll_s < max {
                self.poll_s *= 2.0;
            }
        } else if (spike || offset_s.abs() > ACCURACY_S * 0.75) && self.poll_s > min {
            self.poll_s /= 2.0;
        }
    }

    /// manager_adjust_clock (:238-307): under 0.4 s the kernel's PLL takes the offset (time
    /// constant log2(poll) - 4, ADJ_NANO), else ADJ_SETOFFSET jumps it.
    fn adjust_clock(&mut self, sim: &mut Sim, offset_s: f64) {
        if offset_s.abs() < MAX_ADJUST_S {
            self.kernel.time_constant = ((self.poll_s.log2().floor() as i32) - 4).clamp(0, MAXTC);
            let realtime_s = sim.mono_s() + sim.realtime_minus_mono_s();
            self.kernel.update_offset(offset_s, realtime_s);
            sim.set_freq(SOURCE, self.kernel.freq);
        } else {
            // A jump drops what the kernel had still to slew (ntp_clear), and its status 0 turns
            // STA_PLL off: the next slew turns it on again with a fresh reference time.
            self.kernel.offset_s = 0.0;
            self.kernel.reftime_s = None;
            sim.slew(0.0, 0.0);
            sim.note(SOURCE, format!("adjust (jump): {offset_s:+.3} sec"));
            sim.step(SOURCE, offset_s);
        }
    }

    /// Someone else set the clock: the timerfd's cancel-on-set fires (:204-236) and timesyncd
    /// resyncs: a request at once, answered a round trip later (`RESYNC_NS`); its own jumps it
    /// skips.
    pub(crate) fn on_external_step(&mut self, sim: &mut Sim) {
        sim.note(SOURCE, "System time changed. Resyncing.".to_owned());
        self.poll_resync = true;
        if self.reconnect_ns.is_none() {
            self.next_send_ns = Some(sim.now_ns() + RESYNC_NS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timesyncd {
        Timesyncd::new(TimesyncdConfig::default(), 0)
    }

    /// :360-388: over 0.2 s back to the minimum; under 0.05 s doubled to the maximum; over
    /// 0.15 s (or a spike) halved; between, unchanged.
    #[test]
    fn the_poll_interval_follows_the_offset() {
        let mut s = t();
        for _ in 0..10 {
            s.adjust_poll(0.001, false);
        }
        assert_eq!(s.poll_s, 2048.0);
        s.adjust_poll(0.1, false);
        assert_eq!(s.poll_s, 2048.0);
        s.adjust_poll(0.18, false);
        assert_eq!(s.poll_s, 1024.0);
        s.adjust_poll(0.001, true);
        assert_eq!(s.poll_s, 2048.0, "a small spike still doubles");
        s.adjust_poll(0.3, false);
        assert_eq!(s.poll_s, 32.0);
    }

    /// :309-358: the first packet is never a spike, nor one before the fourth, nor one farther
    /// off than its round trip; later, an offset above the best sample's delay is.
    #[test]
    fn spikes_are_judged_against_the_best_delay_and_the_jitter() {
        let mut s = t();
        assert!(!s.spike(0.0001, 0.001));
        assert!(!s.spike(0.0001, 0.0005));
        assert!(!s.spike(0.0002, 0.001));
        assert!(!s.spike(0.0001, 0.001));
        assert!(s.spike(0.0008, 0.001), "above the best sample's delay (0.5 ms)");
        assert!(!s.spike(30.0, 0.001), "farther off than the round trip: taken");
    }

    use proptest::prelude::*;

    /// An offset of 0.4 s or more that is no spike is jumped, at once, by the offset measured;
    /// the poll goes back to its minimum.
    #[test]
    fn a_large_offset_is_jumped_and_the_poll_starts_again() {
        let mut w = crate::World::for_ntp_tests();
        let sim = w.sim_mut();
        sim.set_ntp_server(2.5, 0.0001);
        let mut s = t();
        s.send(sim);
        assert!((sim.guest_offset_s() - 2.5).abs() < 1e-3, "{}", sim.guest_offset_s());
        assert_eq!(s.poll_s, 32.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the server does, the poll interval is the minimum times a power of two within
        /// the bounds, and a request is always due.
        #[test]
        fn the_poll_interval_stays_a_power_of_two_within_its_bounds(
            answers in proptest::collection::vec((0u8..3, -5.0f64..5.0), 1..80),
        ) {
            let mut w = crate::World::for_ntp_tests();
            let mut s = t();
            for (kind, offset) in answers {
                let sim = w.sim_mut();
                match kind {
                    0 => sim.set_ntp_answer(crate::NtpAnswer::Silent),
                    1 => sim.set_ntp_answer(crate::NtpAnswer::Garbage),
                    _ => {
                        sim.set_ntp_answer(crate::NtpAnswer::Time);
                        sim.set_ntp_server(offset, 0.0002);
                    }
                }
                if s.reconnect_ns.is_some() {
                    s.connect(sim);
                } else {
                    s.send(sim);
                }
                let ratio = s.poll_s / 32.0;
                prop_assert!((32.0..=2048.0).contains(&s.poll_s), "{}", s.poll_s);
                prop_assert_eq!(ratio, 2f64.powi(ratio.log2().round() as i32));
                prop_assert!(s.next_due_ns().is_some());
            }
        }
    }
}
