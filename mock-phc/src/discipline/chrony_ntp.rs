//! chronyd 4.3's NTP client source (`server ADDR iburst`): when it sends (ntp_core.c: the
//! initial delay, iburst, the poll interval that `adjust_poll` moves by a score), what a reply
//! becomes (the sample's offset, delay and dispersion, ntp_core.c:1850-1953), and what a lost
//! or rejected reply does. The sample goes into the same sourcestats register and regression as
//! the refclock's (`chrony_stats::SourceStats`); selection between the two is chrony.rs's.
//! Line numbers are chrony-4.3's; mock-phc/CALIBRATION.md lists them.

use super::chrony_stats::{Sample, SourceStats};
use super::ChronyServerConfig;
use crate::discipline::secs_to_ns;
use crate::ntp_server::Reply;
use crate::world::Sim;

/// ntp_core.c:226 INITIAL_DELAY: the first request goes out this long after the source starts.
const INITIAL_DELAY_S: f64 = 0.2;
/// ntp_core.c:241-242 MAX_BURST_INTERVAL: burst requests are at most this far apart.
const MAX_BURST_INTERVAL_S: f64 = 2.0;
/// ntp_core.c:245-246: iburst ends after 4 good samples or 8 requests.
const IBURST_GOOD_SAMPLES: i32 = 4;
const IBURST_TOTAL_SAMPLES: i32 = 8;
/// srcparams.h: `polltarget` 8.
const POLL_TARGET: f64 = 8.0;
/// ntp_core.c:1386-1391: a missed reply moves the poll score up by this, less for the source
/// the clock is synchronised to.
const MISSED_ADJ: f64 = 0.25;
const MISSED_ADJ_SELECTED: f64 = 0.1;
/// ntp_core.c:1922: the server's precision, 2^-20 s as the scenario's server claims (added to
/// the local one).
const SERVER_PRECISION_S: f64 = 1.0 / 1_048_576.0;
/// The root dispersion the scenario's server claims (phc-harness's guest::ntp: 16/65536 s).
const SERVER_ROOT_DISPERSION_S: f64 = 16.0 / 65_536.0;
/// ntp_core.c:1964-1970 test A: `maxdelay` 3 s.
const MAX_DELAY_S: f64 = 3.0;
/// sourcestats.c:627-644: the skew used for a new source's dispersion is capped at 2000 ppm.
const MAX_DISPERSION_SKEW: f64 = 2000e-6;

/// One `server` source.
#[derive(Debug, Clone)]
pub(crate) struct NtpSource {
    cfg: ChronyServerConfig,
    pub(crate) stats: SourceStats,
    /// When the next request goes out.
    pub(crate) next_tx_ns: i64,
    local_poll: i32,
    poll_score: f64,
    /// iburst's good samples and requests still to go; None outside a burst.
    burst: Option<(i32, i32)>,
    /// Requests since the last valid reply (ntp_core.c tx_count).
    tx_count: u32,
    /// Reachability register: the last 8 polls, newest in bit 0.
    pub(crate) reach: u8,
    /// Whether the source has had a synchronised reply (else it is "unsynchronised" in
    /// selection, sources.c:845-849).
    pub(crate) synced: bool,
    /// The stratum the server claims.
    pub(crate) stratum: u8,
    precision_s: f64,
}

impl NtpSource {
    pub(crate) fn new(cfg: ChronyServerConfig, precision_s: f64, min_samples: usize, start_ns: i64) -> Self {
        let local_poll = i32::from(cfg.minpoll.max(0));
        Self {
            burst: cfg.iburst.then_some((IBURST_GOOD_SAMPLES, IBURST_TOTAL_SAMPLES)),
            cfg,
            stats: SourceStats::new(precision_s, min_samples),
            next_tx_ns: start_ns + secs_to_ns(INITIAL_DELAY_S),
            local_poll,
            poll_score: 0.0,
            tx_count: 0,
            reach: 0,
            synced: false,
            stratum: 0,
            precision_s: precision_s + SERVER_PRECISION_S,
        }
    }

    /// ntp_core.c:818-851 adjust_poll (the sub-second LAN rule never applies: minpoll >= 0 here
    /// unless the scenario asks for less, and then it keeps 1 s).
    fn adjust_poll(&mut self, adj: f64) {
        self.poll_score += adj;
        if self.poll_score >= 1.0 {
            let whole = self.poll_score.trunc();
            self.local_poll += whole as i32;
            self.poll_score -= whole;
        }
        if self.poll_score < 0.0 {
            let whole = (self.poll_score - 1.0).trunc();
            self.local_poll += whole as i32;
            self.poll_score -= whole;
        }
        let (minpoll, maxpoll) = (i32::from(self.cfg.minpoll), i32::from(self.cfg.maxpoll));
        if self.local_poll < minpoll {
            self.local_poll = minpoll;
            self.poll_score = 0.0;
        } else if self.local_poll > maxpoll {
            self.local_poll = maxpoll;
            self.poll_score = 1.0;
        }
        // MIN_NONLAN_POLL: no sub-second polling for a server this model does not place on a LAN.
        self.local_poll = self.local_poll.max(0);
    }

    /// ntp_core.c:855-880 get_poll_adj.
    fn poll_adj(&self, error_in_estimate_s: f64, peer_distance_s: f64) -> f64 {
        if error_in_estimate_s > peer_distance_s {
            -(error_in_estimate_s / peer_distance_s).log2()
        } else {
            let n = self.stats.len() as f64;
            let adj = (n / POLL_TARGET - 1.0) / POLL_TARGET;
            if n < POLL_TARGET {
                2.0 * adj
            } else {
                adj
            }
        }
    }

    /// The interval to the next request: 2^poll, or the burst's interval (ntp_core.c:920-963).
    fn interval_s(&self) -> f64 {
        let poll_s = 2f64.powi(self.local_poll);
        if self.burst.is_some() {
            MAX_BURST_INTERVAL_S.min(0.25 * poll_s)
        } else {
            poll_s
        }
    }

    /// The source's poll interval now (log2 s).
    #[cfg(test)]
    fn poll(&self) -> i32 {
        self.local_poll
    }

    /// A request goes out now; the reply (if any) comes back within milliseconds and is taken
    /// at once. Gives the good sample, already in the register and regressed, if there is one.
    /// `selected`: the clock is synchronised to this source.
    pub(crate) fn poll_now(&mut self, sim: &mut Sim, selected: bool) -> Option<Sample> {
        // ntp_core.c:1378-1391: the previous request got no valid reply.
        if self.tx_count >= 1 {
            self.adjust_poll(if selected { MISSED_ADJ_SELECTED } else { MISSED_ADJ });
            self.reach <<= 1;
        }
        self.tx_count += 1;
        if let Some((good, total)) = &mut self.burst {
            // ntp_core.c:1281-1285, 1402-1411: the last request of a burst ends it.
            *total -= 1;
            if *total <= 1 || *good <= 0 {
                self.burst = None;
            }
        }
        let sample = match sim.ntp_exchange() {
            // Garbage fails the origin, mode or zero-timestamp tests (ntp_core.c:1803-1841)
            // or the stratum/leap test: no sample, as a lost reply.
            Reply::None | Reply::Garbage => None,
            Reply::Time { offset_s, delay_s, stratum } => {
                self.tx_count = 0;
                self.reach = (self.reach << 1) | 1;
                self.synced = true;
                self.stratum = stratum;
                // ntp_core.c:1922-1952: delay at least the precision; dispersion the precision
                // plus the skew over the round trip; the root distance adds the server's.
                let peer_delay_s = delay_s.max(self.precision_s);
                let skew = self.stats.skew.min(MAX_DISPERSION_SKEW);
                let peer_disp_s = self.precision_s + skew * delay_s;
                if peer_delay_s - peer_disp_s > MAX_DELAY_S {
                    None
                } else {
                    // local - reference, on cooked time (as the refclock's samples).
                    let time_s = sim.mono_s();
                    let sample = Sample {
                        time_s,
                        offset_s: -offset_s + sim.slew_left_s(),
                        disp_s: SERVER_ROOT_DISPERSION_S + peer_disp_s + peer_delay_s / 2.0,
                    };
                    // ntp_core.c:1712-1726: the prediction is made before the sample is added.
                    let error_s = (sample.offset_s - self.stats.predict(time_s)).abs();
                    let adj = self.poll_adj(error_s, peer_disp_s + 0.5 * peer_delay_s);
                    self.stats.accumulate(sample);
                    self.stats.regress();
                    self.adjust_poll(adj);
                    if let Some((good, _)) = &mut self.burst {
                        *good -= 1;
                        if *good <= 0 {
                            self.burst = None;
                        }
                    }
                    Some(sample)
                }
            }
        };
        self.next_tx_ns += secs_to_ns(self.interval_s());
        sample
    }

    /// An unknown step of the clock (sched.c's jump detection): ntp_sources.c:1169-1175 resets
    /// the instance and its poll, and the next request goes out 2^minpoll later.
    pub(crate) fn reset(&mut self, now_ns: i64) {
        self.stats.reset();
        self.tx_count = 0;
        self.local_poll = i32::from(self.cfg.minpoll.max(0));
        self.poll_score = 0.0;
        self.next_tx_ns = now_ns + secs_to_ns(2f64.powi(self.local_poll));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> NtpSource {
        NtpSource::new(ChronyServerConfig::default(), 2e-8, 6, 0)
    }

    /// ntp_core.c:818-851: whole points of score move the poll, a negative score moves it down
    /// by at least one, and the clamps reset the score.
    #[test]
    fn adjust_poll_moves_by_whole_points_and_clamps() {
        let mut s = source();
        assert_eq!(s.poll(), 6);
        s.adjust_poll(0.6);
        assert_eq!(s.poll(), 6);
        s.adjust_poll(0.6);
        assert_eq!(s.poll(), 7);
        assert!((s.poll_score - 0.2).abs() < 1e-12);
        s.adjust_poll(-0.3);
        assert_eq!(s.poll(), 6, "a negative score moves down by one");
        assert!((s.poll_score - 0.9).abs() < 1e-12);
        s.adjust_poll(-10.0);
        assert_eq!((s.poll(), s.poll_score), (6, 0.0), "clamped at minpoll, the score reset");
        s.adjust_poll(20.0);
        assert_eq!((s.poll(), s.poll_score), (10, 1.0), "clamped at maxpoll");
    }

    /// get_poll_adj: a prediction off by more than the peer distance backs off by its log2; else
    /// the register's size against the target of 8, doubled below it.
    #[test]
    fn poll_adj_follows_the_prediction_error_and_the_register_size() {
        let s = source();
        assert!((s.poll_adj(4e-3, 1e-3) + 2.0).abs() < 1e-12);
        // An empty register: (0/8 - 1)/8, doubled.
        assert!((s.poll_adj(0.0, 1e-3) + 0.25).abs() < 1e-12);
    }

    /// iburst: requests 2 s apart at minpoll 6 until four good samples, then 2^6 s.
    #[test]
    fn iburst_sends_four_requests_two_seconds_apart_then_polls() {
        let mut w = crate::World::for_ntp_tests();
        let sim = w.sim_mut();
        let mut s = source();
        let mut times = vec![s.next_tx_ns];
        for _ in 0..5 {
            assert!(s.poll_now(sim, false).is_some());
            times.push(s.next_tx_ns);
        }
        let gaps: Vec<f64> = times.windows(2).map(|p| (p[1] - p[0]) as f64 * 1e-9).collect();
        assert_eq!(&gaps[..4], &[2.0, 2.0, 2.0, 64.0], "{gaps:?}");
        assert_eq!(s.reach, 0b11111);
        assert!(s.synced && s.stratum == 1);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the server does (answers with any offset and delay, falls silent, answers
        /// garbage), the poll stays within minpoll..=maxpoll and requests go out in order.
        #[test]
        fn the_poll_stays_in_its_bounds_whatever_the_server_does(
            answers in proptest::collection::vec((0u8..3, -100.0f64..100.0, 0.0f64..0.5), 1..60),
            minpoll in 0i8..8,
            span in 0i8..6,
        ) {
            let cfg = ChronyServerConfig { minpoll, maxpoll: minpoll + span, iburst: true };
            let mut w = crate::World::for_ntp_tests();
            let mut s = NtpSource::new(cfg, 2e-8, 6, 0);
            let mut last = s.next_tx_ns;
            for (kind, offset, delay) in answers {
                let sim = w.sim_mut();
                match kind {
                    0 => sim.set_ntp_answer(crate::NtpAnswer::Silent),
                    1 => sim.set_ntp_answer(crate::NtpAnswer::Garbage),
                    _ => {
                        sim.set_ntp_answer(crate::NtpAnswer::Time);
                        sim.set_ntp_server(offset, delay);
                    }
                }
                s.poll_now(sim, false);
                prop_assert!((i32::from(minpoll)..=i32::from(minpoll + span)).contains(&s.poll()));
                prop_assert!(s.next_tx_ns > last);
                last = s.next_tx_ns;
            }
        }
    }
}
