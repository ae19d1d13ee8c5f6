//! chronyd 4.3 (Debian bookworm's 4.3-2+deb12u3, what the guest image runs) with `refclock PHC`:
//! a PHC reading every 2^dpoll s (refclock_phc.c phc_poll) into the median filter (samplefilt.c),
//! one filtered sample per 2^poll s into sourcestats' regression, source selection (maxdistance,
//! maxjitter), and reference.c's REF_SetReference: makestep on the raw offset or a slew limited
//! by maxslewrate, with the stored history re-expressed after every change of the clock.
//! Line numbers in comments are chrony-4.3's; mock-phc/CALIBRATION.md lists them all.

use phc::estimate;
use serde::{Deserialize, Serialize};

use super::chrony_ntp::NtpSource;
use super::chrony_stats::{MedianFilter, Sample, SourceStats};
use super::sample_noise;
use crate::discipline::secs_to_ns;
use crate::time::{check_positive, check_range, MAX_ABS_S};
use crate::world::{ReadMethod, Sim};
use crate::Error;

pub(crate) const SOURCE: &str = "chrony";

/// Readings per PHC sample: `PHC_READINGS` in chrony 4.3's refclock_phc.c:142 (4.2 and earlier
/// read 10 in sys_linux.c).
pub const PHC_READINGS: usize = 25;

/// reference.c starts with a skew meaning "know nothing" (1.0 = 1e6 ppm).
const INITIAL_SKEW: f64 = 1.0;
/// sys_generic.c keeps a slew between these durations.
const MIN_SLEW_DURATION_S: f64 = 1.0;
const MAX_SLEW_DURATION_S: f64 = 10_000.0;
/// sched.c treats a REALTIME jump larger than this as an external step.
const JUMP_DETECT_THRESHOLD_S: f64 = 10.0;
/// chrony's `maxdrift` default (500000 ppm).
const MAX_FREQ: f64 = 0.5;

/// chronyd's settings relevant to a `refclock PHC` source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChronyConfig {
    /// log2 of the seconds between filtered samples.
    pub poll: i8,
    /// log2 of the seconds between PHC readings.
    pub dpoll: i8,
    /// Added to the PHC's offset (`offset`).
    pub offset_s: f64,
    /// Median filter length (`filter`); chrony caps it at 2^(poll-dpoll).
    pub filter: u32,
    /// `makestep` threshold; None: never step (chrony's compiled-in default).
    pub makestep_threshold_s: Option<f64>,
    /// `makestep` limit: how many updates may step; -1 any.
    pub makestep_limit: i32,
    /// `maxslewrate`.
    pub maxslewrate_ppm: f64,
    /// `maxdistance`: a source with a larger root distance is not selectable.
    pub maxdistance_s: f64,
    /// `maxjitter`: a source with a larger standard deviation is not selectable.
    pub maxjitter_s: f64,
    /// `maxupdateskew`: frequency estimates with a larger skew are not used.
    pub maxupdateskew_ppm: f64,
    /// `corrtimeratio`.
    pub corrtimeratio: f64,
    /// The system clock's precision chrony measures at start.
    pub precision_s: f64,
    /// From the daemon's start to its first PHC reading. Measured: the real chronyd in the
    /// QEMU guest read the PHC first 1.02 s after the harness started it (its refclocks log).
    pub start_delay_s: f64,
    /// What one PHC poll takes before refclock.c:808 re-arms the 2^dpoll timer from its end
    /// (SCH_AddTimeoutByDelay), so readings come every 2^dpoll s plus this. Measured in the
    /// QEMU guest under TCG: readings every 0.250314 s at dpoll -2.
    pub poll_overhead_s: f64,
    /// `minsamples`: the fewest samples the regression keeps (chrony's default 6, conf.c:169;
    /// the refclock option sets it per source).
    pub min_samples: u32,
    /// Whether chronyd reads the PHC (`refclock PHC`); false: the NTP server alone.
    pub refclock: bool,
    /// An NTP source (`server ADDR iburst`), the world's NTP server; None: the refclock alone.
    pub server: Option<ChronyServerConfig>,
    /// Which source is marked `prefer`, if either.
    pub prefer: Option<ChronyPrefer>,
    /// The refclock's `nocrossts`: never PTP_SYS_OFFSET_PRECISE, even where the PHC has cross
    /// timestamps (refclock_phc.c, sys_linux.c:936), so that readings carry a window.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nocrossts: bool,
}

/// chronyd's `server` line for the world's NTP server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChronyServerConfig {
    /// `minpoll` (chrony's default 6: 64 s).
    pub minpoll: i8,
    /// `maxpoll` (chrony's default 10: 1024 s).
    pub maxpoll: i8,
    /// `iburst`: four requests two seconds apart at the start.
    pub iburst: bool,
}

impl Default for ChronyServerConfig {
    fn default() -> Self {
        Self { minpoll: 6, maxpoll: 10, iburst: true }
    }
}

/// The source marked `prefer` in chrony.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChronyPrefer {
    /// The PHC refclock.
    Refclock,
    /// The NTP server.
    Server,
}

impl Default for ChronyConfig {
    fn default() -> Self {
        Self {
            poll: 3,
            dpoll: -2,
            offset_s: 0.0,
            filter: 64,
            makestep_threshold_s: None,
            makestep_limit: -1,
            maxslewrate_ppm: 83_333.333,
            maxdistance_s: 3.0,
            maxjitter_s: 1.0,
            maxupdateskew_ppm: 1000.0,
            corrtimeratio: 3.0,
            precision_s: 2e-8,
            start_delay_s: 1.02,
            poll_overhead_s: 0.000_314,
            min_samples: super::chrony_stats::MIN_SAMPLES as u32,
            refclock: true,
            server: None,
            prefer: None,
            nocrossts: false,
        }
    }
}

impl ChronyConfig {
    /// The chrony.conf lines this config means, for the real chronyd in a guest reading the PHC
    /// `device` and asking the NTP server at `server_addr`.
    pub fn chrony_conf(&self, device: &str, server_addr: &str) -> String {
        let mut out = String::new();
        if self.refclock {
            out.push_str(&format!(
                "refclock PHC {device} poll {} dpoll {} offset {} stratum 2",
                self.poll, self.dpoll, self.offset_s
            ));
            if self.filter != 64 {
                out.push_str(&format!(" filter {}", self.filter));
            }
            if self.min_samples as usize != super::chrony_stats::MIN_SAMPLES {
                out.push_str(&format!(" minsamples {}", self.min_samples));
            }
            if self.prefer == Some(ChronyPrefer::Refclock) {
                out.push_str(" prefer");
            }
            if self.nocrossts {
                out.push_str(" nocrossts");
            }
            out.push('\n');
        }
        if let Some(s) = &self.server {
            out.push_str(&format!("server {server_addr} minpoll {} maxpoll {}", s.minpoll, s.maxpoll));
            if s.iburst {
                out.push_str(" iburst");
            }
            if self.prefer == Some(ChronyPrefer::Server) {
                out.push_str(" prefer");
            }
            out.push('\n');
        }
        if let Some(t) = self.makestep_threshold_s {
            out.push_str(&format!("makestep {t} {}\n", self.makestep_limit));
        }
        out.push_str(&format!("maxslewrate {}\n", self.maxslewrate_ppm));
        out.push_str(&format!("maxdistance {}\n", self.maxdistance_s));
        out.push_str(&format!("maxjitter {}\n", self.maxjitter_s));
        out.push_str(&format!("maxupdateskew {}\n", self.maxupdateskew_ppm));
        out.push_str(&format!("corrtimeratio {}\n", self.corrtimeratio));
        out
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        if !(-6..=24).contains(&self.poll) {
            return Err(Error::invalid(format!("{key}.poll"), "must be within -6..=24"));
        }
        if !(-6..=self.poll).contains(&self.dpoll) {
            return Err(Error::invalid(format!("{key}.dpoll"), "must be within -6..=poll"));
        }
        // sourcestats.c keeps at most 64 samples; the regression needs 3.
        if !(3..=64).contains(&self.min_samples) {
            return Err(Error::invalid(format!("{key}.min_samples"), "must be within 3..=64"));
        }
        if !(1..=256).contains(&self.filter) {
            return Err(Error::invalid(format!("{key}.filter"), "must be within 1..=256"));
        }
        if !self.refclock && self.server.is_none() {
            return Err(Error::invalid(key, "has no source: set refclock = true or a [server]"));
        }
        if let Some(s) = &self.server {
            // conf.c/ntp_core.c take poll exponents -6..=24 for NTP sources.
            if !(-6..=24).contains(&s.minpoll) || !(s.minpoll..=24).contains(&s.maxpoll) {
                return Err(Error::invalid(format!("{key}.server"), "needs -6 <= minpoll <= maxpoll <= 24"));
            }
        }
        match self.prefer {
            Some(ChronyPrefer::Refclock) if !self.refclock => {
                return Err(Error::invalid(format!("{key}.prefer"), "prefers the refclock, which is off"))
            }
            Some(ChronyPrefer::Server) if self.server.is_none() => {
                return Err(Error::invalid(format!("{key}.prefer"), "prefers the server, and there is none"))
            }
            _ => {}
        }
        if self.makestep_limit < -1 {
            return Err(Error::invalid(format!("{key}.makestep_limit"), "must be -1 or >= 0"));
        }
        if let Some(t) = self.makestep_threshold_s {
            check_range(&format!("{key}.makestep_threshold_s"), t, 0.0, MAX_ABS_S)?;
        }
        // Upper bounds: chrony's own limits where it has them (maxslewrate 83333.333 ppm is its
        // compiled-in default; beyond 10% a slewed clock could run backwards), generous elsewhere.
        for (name, v, hi) in [
            ("maxslewrate_ppm", self.maxslewrate_ppm, crate::time::MAX_FREQ_ERROR_PPM),
            ("maxdistance_s", self.maxdistance_s, 1e6),
            ("maxjitter_s", self.maxjitter_s, 1e6),
            ("maxupdateskew_ppm", self.maxupdateskew_ppm, 1e6),
            ("corrtimeratio", self.corrtimeratio, 1e6),
            ("precision_s", self.precision_s, 1.0),
        ] {
            check_positive(&format!("{key}.{name}"), v, hi)?;
        }
        check_range(&format!("{key}.offset_s"), self.offset_s, -1e3, 1e3)?;
        check_range(&format!("{key}.start_delay_s"), self.start_delay_s, 0.0, 3600.0)?;
        check_range(&format!("{key}.poll_overhead_s"), self.poll_overhead_s, 0.0, 1.0)?;
        Ok(())
    }
}

/// chronyd's two kinds of source here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Refclock = 0,
    Ntp = 1,
}

/// sources.c:170 SCORE_LIMIT: another source replaces the selected one once its score passes it.
const SCORE_LIMIT: f64 = 10.0;
/// conf.c: `stratumweight` 0.001 s per stratum, `reselectdist` 1e-4 s for NTP sources.
const STRATUM_WEIGHT_S: f64 = 0.001;
const RESELECT_DISTANCE_S: f64 = 1e-4;
/// The `stratum` of the harness's refclock line (`stratum 2`, as Azure's guide sets it).
const REFCLOCK_STRATUM: u8 = 2;

#[derive(Debug, Clone)]
pub(crate) struct Chrony {
    cfg: ChronyConfig,
    /// The refclock's next reading (never, with the refclock off).
    refclock_due_ns: i64,
    /// The NTP source, with a `server`.
    ntp: Option<NtpSource>,
    dpoll_ns: i64,
    polls_per_update: u32,
    polled: u32,
    filter: MedianFilter,
    /// hwclock.c's model of the PHC, which decides the polls whose readings missed the window.
    hwclock: super::chrony_hwclock::HwClock,
    /// PHC polls, and those that gave no sample (no reading, or hwclock.c dropped it).
    polls: u64,
    polls_dropped: u64,
    stats: SourceStats,
    methods: Vec<ReadMethod>,
    /// Reused for every reading batch.
    readings: Vec<phc::Sample>,
    read_failing: bool,
    /// The source the clock is synchronised to.
    selected: Option<Src>,
    /// New samples per source since the last reference update, and selection scores.
    updates: [u32; 2],
    scores: [f64; 2],
    our_skew: f64,
    last_update_s: Option<f64>,
    steps_left: i32,
    /// CLOCK_REALTIME minus MONOTONIC at the last reading, to notice external steps.
    last_rt_minus_mono_s: Option<f64>,
    /// The first `sample_noise::SAMPLES` raw offsets (PHC minus system), as the refclocks log.
    raw_offsets_s: Vec<f64>,
    /// The first `sample_noise::REGRESSIONS` regressions' standard deviations, as the statistics log.
    regression_sds_s: Vec<f64>,
}

impl Chrony {
    pub(crate) fn new(cfg: ChronyConfig, t_ns: i64) -> Self {
        let dpoll_s = 2f64.powi(cfg.dpoll.into()) + cfg.poll_overhead_s;
        let polls_per_update = 1u32 << (cfg.poll - cfg.dpoll);
        let filter_len = (cfg.filter as usize).min(polls_per_update as usize);
        let start_ns = t_ns + secs_to_ns(cfg.start_delay_s);
        Self {
            refclock_due_ns: if cfg.refclock { start_ns } else { i64::MAX },
            // main.c:192-194: the NTP sources start with the refclocks.
            ntp: cfg
                .server
                .clone()
                .map(|s| NtpSource::new(s, cfg.precision_s, cfg.min_samples as usize, start_ns)),
            dpoll_ns: secs_to_ns(dpoll_s),
            polls_per_update,
            polled: 0,
            filter: MedianFilter::new(filter_len, cfg.precision_s),
            hwclock: Default::default(),
            polls: 0,
            polls_dropped: 0,
            stats: SourceStats::new(cfg.precision_s, cfg.min_samples as usize),
            methods: [ReadMethod::Precise, ReadMethod::Extended(phc::SysClock::Realtime), ReadMethod::Basic]
                .into_iter()
                .skip(usize::from(cfg.nocrossts))
                .collect(),
            readings: Vec::with_capacity(phc::uapi::PTP_MAX_SAMPLES),
            read_failing: false,
            selected: None,
            updates: [0; 2],
            scores: [1.0; 2],
            our_skew: INITIAL_SKEW,
            last_update_s: None,
            steps_left: cfg.makestep_limit,
            last_rt_minus_mono_s: None,
            raw_offsets_s: Vec::new(),
            regression_sds_s: Vec::new(),
            cfg,
        }
    }

    /// When chronyd next wakes: the refclock's reading or the NTP source's request.
    pub(crate) fn next_due_ns(&self) -> i64 {
        self.ntp.as_ref().map_or(self.refclock_due_ns, |n| n.next_tx_ns.min(self.refclock_due_ns))
    }

    /// Every timer falls due `delta_ns` later (the guest stood still).
    pub(crate) fn delay_timers(&mut self, delta_ns: i64) {
        if self.cfg.refclock {
            self.refclock_due_ns += delta_ns;
        }
        if let Some(n) = &mut self.ntp {
            n.next_tx_ns += delta_ns;
        }
    }

    /// Someone else stepped the clock. Steps under sched.c's threshold go unnoticed: the
    /// samples simply show the new offset. Above it every source's history is dropped
    /// (sources.c slew_sources) and the NTP source polls again from minpoll (ntp_sources.c).
    pub(crate) fn on_external_step(&mut self, sim: &mut Sim, delta_s: f64) {
        if delta_s.abs() > JUMP_DETECT_THRESHOLD_S {
            let dir = if delta_s > 0.0 { "Forward" } else { "Backward" };
            sim.note(SOURCE, format!("{dir} time jump detected!"));
            self.filter.clear();
            self.stats.reset();
            // local.c LCL_NotifyExternalTimeStep: hwclock.c's handler follows the step.
            self.hwclock.adjust(sim.mono_s(), 0.0, delta_s);
            let now_ns = sim.now_ns();
            if let Some(n) = &mut self.ntp {
                n.reset(now_ns);
            }
        }
        self.last_rt_minus_mono_s = Some(sim.realtime_minus_mono_s());
    }

    pub(crate) fn on_timer(&mut self, sim: &mut Sim) {
        if let Some(n) = &mut self.ntp {
            if n.next_tx_ns < self.refclock_due_ns {
                let selected = self.selected == Some(Src::Ntp);
                if n.poll_now(sim, selected).is_some() {
                    self.updates[Src::Ntp as usize] += 1;
                    self.select_and_update(sim, Src::Ntp);
                } else if selected && n.reach & 1 == 0 {
                    // sources.c:481-484: the selected source lost a reach bit.
                    self.select_and_update(sim, Src::Ntp);
                }
                return;
            }
        }
        self.refclock_due_ns += self.dpoll_ns;
        self.last_rt_minus_mono_s = Some(sim.realtime_minus_mono_s());
        self.polls += 1;
        match self.read_sample(sim) {
            Some(s) => self.filter.add(s),
            None => self.polls_dropped += 1,
        }
        self.polled += 1;
        if self.polled < self.polls_per_update {
            return;
        }
        self.polled = 0;
        let Some(filtered) = self.filter.take() else { return };
        self.stats.accumulate(filtered);
        self.stats.regress();
        if self.stats.regression_ok && self.regression_sds_s.len() < sample_noise::REGRESSIONS {
            self.regression_sds_s.push(self.stats.std_dev_s);
        }
        self.updates[Src::Refclock as usize] += 1;
        self.select_and_update(sim, Src::Refclock);
    }

    /// One refclock_phc poll: PRECISE, else EXTENDED, else basic, `PHC_READINGS` readings,
    /// combined as hwclock.c:163-236 HCL_ProcessReadings does: those whose delay lies between the
    /// first and second deciles of the delays seen (DELAY_QUANT_MIN_K/MAX_K/Q, hwclock.c:48-50,
    /// at least the precision apart), else the shortest, which hwclock.c keeps only where its
    /// model of the PHC does not predict it (`chrony_hwclock`); every sample kept goes into that
    /// model (refclock_phc.c:161).
    fn read_sample(&mut self, sim: &mut Sim) -> Option<Sample> {
        let precision_ns = secs_to_ns(self.cfg.precision_s);
        let (mut lo_ns, mut hi_ns);
        let in_window = loop {
            let &method = self.methods.first()?;
            (lo_ns, hi_ns) = if method == ReadMethod::Precise {
                // sys_linux.c get_precise_phc_readings: one reading, its delay 0 (both system
                // timestamps are the cross timestamp's), so every delay seen is 0.
                (0, precision_ns)
            } else {
                let lo_ns = sim.window_quantile_ns(0.1);
                (lo_ns, sim.window_quantile_ns(0.2).max(lo_ns.saturating_add(precision_ns)))
            };
            match sim.read_kept(method, PHC_READINGS, Some((lo_ns, hi_ns)), &mut self.readings) {
                Ok(in_window) => break in_window,
                Err(phc::Error::NotSupported) if self.methods.len() > 1 => {
                    self.methods.remove(0);
                }
                Err(e) => {
                    if !self.read_failing {
                        self.read_failing = true;
                        sim.read_error(SOURCE, &e);
                    }
                    return None;
                }
            }
        };
        self.read_failing = false;
        // Every reading kept is combined: their delays differ by at most hi - lo.
        let spread_ns = hi_ns.saturating_sub(lo_ns).saturating_add(1);
        let est = estimate::chrony(&self.readings, spread_ns).ok()?;
        // hwclock.c:226 err = max(mean delay / 2, precision); refclock.c:451 adds the precision.
        let n = self.readings.len().max(1) as f64;
        let mean_delay_s = self.readings.iter().map(|r| r.delay_ns() as f64).sum::<f64>() / n * 1e-9;
        let err_s = (mean_delay_s / 2.0).max(self.cfg.precision_s);
        // chrony works on "cooked" time: the offset (local minus PHC) once the slew in progress
        // is done.
        let (x_s, y_s) = (sim.mono_s(), est.offset_ns as f64 * 1e-9 + sim.slew_left_s());
        if !in_window && !self.hwclock.keeps_outside_window(x_s, y_s, err_s) {
            return None;
        }
        self.hwclock.accumulate(x_s, y_s, err_s);
        if self.raw_offsets_s.len() < sample_noise::SAMPLES {
            self.raw_offsets_s.push(est.offset_ns as f64 * 1e-9);
        }
        let offset_s = y_s - self.cfg.offset_s;
        let disp_s = self.cfg.precision_s + err_s;
        Some(Sample { time_s: sim.mono_s(), offset_s, disp_s })
    }

    /// The noise of chronyd's samples and of its regression, ns (`sample_noise`).
    pub(crate) fn noise(&self) -> sample_noise::Noise {
        let dropped_share = (self.polls > 0).then(|| self.polls_dropped as f64 / self.polls as f64);
        sample_noise::Noise {
            dropped_share,
            ..sample_noise::Noise::new(&self.raw_offsets_s, &self.regression_sds_s)
        }
    }

    /// reference.c:542-550 is_step_limit_reached, on the raw offset.
    fn step_limit_reached(&mut self, raw_offset_s: f64) -> bool {
        match self.cfg.makestep_threshold_s {
            Some(threshold) if self.steps_left != 0 => {
                if self.steps_left > 0 {
                    self.steps_left -= 1;
                }
                raw_offset_s.abs() > threshold
            }
            _ => false,
        }
    }

    /// The register of a source.
    fn stats_of(&self, src: Src) -> Option<&SourceStats> {
        match src {
            Src::Refclock => self.cfg.refclock.then_some(&self.stats),
            Src::Ntp => self.ntp.as_ref().map(|n| &n.stats),
        }
    }

    fn name(src: Src) -> &'static str {
        match src {
            Src::Refclock => "PHC0",
            Src::Ntp => crate::ntp_server::NTP_SERVER_ADDR,
        }
    }

    fn stratum(&self, src: Src) -> u8 {
        match src {
            Src::Refclock => REFCLOCK_STRATUM,
            Src::Ntp => self.ntp.as_ref().map_or(0, |n| n.stratum),
        }
    }

    fn prefers(&self, src: Src) -> bool {
        matches!(
            (self.cfg.prefer, src),
            (Some(ChronyPrefer::Refclock), Src::Refclock) | (Some(ChronyPrefer::Server), Src::Ntp)
        )
    }

    /// sources.c SRC_SelectSource (788-1299) after `updated` had a new sample (or lost a reach
    /// bit): each source's status (unsynchronised, bad stats, distance, jitter), the
    /// intersection of their intervals (two that do not overlap are "no majority"), `prefer`,
    /// the scores that decide a switch; then, where the selected source has new samples,
    /// reference.c's REF_SetReference from its regression. Not modelled: combine_sources (a
    /// PHC's microseconds and a server's hundreds leave the other source DISTANT, sources.c
    /// 727-741), and `trust`/`require`, which the harness's configurations do not set.
    fn select_and_update(&mut self, sim: &mut Sim, updated: Src) {
        let now_s = sim.mono_s();
        // The refclock is reachable while it reads; the NTP source while one of its last 8
        // polls was answered.
        let reachable =
            |c: &Self, src: Src| src == Src::Refclock || c.ntp.as_ref().is_some_and(|n| n.reach != 0);
        let mut max_reach_sample_ago_s = 0.0f64;
        let mut fresh = Vec::with_capacity(2);
        for src in [Src::Refclock, Src::Ntp] {
            let Some(stats) = self.stats_of(src) else { continue };
            if src == Src::Ntp && !self.ntp.as_ref().is_some_and(|n| n.synced) {
                continue;
            }
            let Some(sel) = stats.selection(now_s) else { continue };
            if sel.select_ok
                && sel.std_dev_s <= self.cfg.maxjitter_s
                && sel.root_distance_s <= self.cfg.maxdistance_s
            {
                if reachable(self, src) {
                    max_reach_sample_ago_s = max_reach_sample_ago_s.max(sel.first_sample_ago_s);
                }
                fresh.push((src, sel));
            }
        }
        // (source, interval middle, root distance) of every selectable source: sources.c:906-916
        // leaves out an unreachable one whose newest sample is older than the oldest of the
        // reachable ones (stale).
        let mut ok: Vec<(Src, f64, f64)> = fresh
            .into_iter()
            .filter(|(src, sel)| reachable(self, *src) || sel.last_sample_ago_s <= max_reach_sample_ago_s)
            .map(|(src, sel)| (src, sel.offset_s, sel.root_distance_s))
            .collect();
        if ok.is_empty() {
            if self.selected.take().is_some() {
                sim.note(SOURCE, "Can't synchronise: no selectable sources".to_owned());
            }
            return;
        }
        // sources.c:1010-1092: with two sources, a majority needs their intervals to meet.
        if let [(_, o1, d1), (_, o2, d2)] = ok[..] {
            if (o1 - o2).abs() > d1 + d2 {
                if self.selected.take().is_some() {
                    sim.note(SOURCE, "Can't synchronise: no majority".to_owned());
                }
                return;
            }
        }
        // sources.c:1152-1171: prefer keeps only the preferred survivors.
        if ok.iter().any(|&(s, ..)| self.prefers(s)) {
            ok.retain(|&(s, ..)| self.prefers(s));
        }
        let min_stratum = ok.iter().map(|&(s, ..)| self.stratum(s)).min().unwrap_or(0);
        // The root distance weighted by stratum; a candidate's adds reselectdist for NTP.
        let weighted =
            |c: &Self, s: Src, rd: f64| rd + f64::from(c.stratum(s) - min_stratum) * STRATUM_WEIGHT_S;
        let distance = |c: &Self, s: Src, rd: f64| {
            weighted(c, s, rd) + if s == Src::Ntp { RESELECT_DISTANCE_S } else { 0.0 }
        };
        // sources.c:1186-1230: scores.
        let sel_distance = self
            .selected
            .and_then(|sel| ok.iter().find(|&&(s, ..)| s == sel).map(|&(s, _, rd)| weighted(self, s, rd)));
        let survivors: Vec<Src> = ok.iter().map(|&(s, ..)| s).collect();
        for s in [Src::Refclock, Src::Ntp] {
            if !survivors.contains(&s) {
                self.scores[s as usize] = 1.0;
            }
        }
        let mut best: Option<(Src, f64)> = None;
        for &(s, _, rd) in &ok {
            let d = distance(self, s, rd);
            let score = &mut self.scores[s as usize];
            match (self.selected, sel_distance) {
                (Some(sel), Some(sd)) => {
                    if s == updated || sel == updated {
                        *score = (*score * sd / d).max(1.0);
                    }
                }
                // No selected source (or it is no survivor: its distance still scales the
                // others' scores in chrony; here they start afresh).
                _ => *score = 1.0 / d,
            }
            if best.is_none_or(|(_, b)| *score > b) {
                best = Some((s, *score));
            }
        }
        let Some((best, best_score)) = best else { return };
        let keep = self.selected.is_some_and(|sel| survivors.contains(&sel))
            && !(Some(best) != self.selected && best_score > SCORE_LIMIT);
        if !keep {
            // sources.c:1236-1260: wait until the new source can update the reference.
            if self.updates[best as usize] == 0 {
                self.selected = None;
                return;
            }
            self.selected = Some(best);
            sim.note(SOURCE, format!("Selected source {}", Self::name(best)));
            self.scores = [1.0; 2];
        }
        let Some(sel) = self.selected else { return };
        // sources.c:1265-1277: the reference is updated only with new samples of the selected
        // source.
        if self.updates[sel as usize] == 0 {
            return;
        }
        self.updates = [0; 2];
        let stats = match sel {
            Src::Refclock => &self.stats,
            Src::Ntp => match &self.ntp {
                Some(n) => &n.stats,
                None => return,
            },
        };
        let (s_offset, s_time, s_freq, s_offset_sd, s_freq_sd, s_skew) =
            (stats.offset_s, stats.offset_time_s, stats.freq, stats.offset_sd_s, stats.freq_sd, stats.skew);
        let elapsed_s = now_s - s_time;
        let offset_s = s_offset + elapsed_s * s_freq;
        let offset_sd_s = s_offset_sd + elapsed_s * s_freq_sd;
        let update_interval_s = self.last_update_s.map_or(0.0, |t| (now_s - t).max(0.0));
        self.last_update_s = Some(now_s);

        // get_clock_estimates: trust the new frequency as far as its skew allows.
        let skew = s_skew;
        let gain = if skew.abs() > self.cfg.maxupdateskew_ppm * 1e-6 {
            0.0
        } else {
            (3.0 * self.our_skew.powi(2) / (3.0 * self.our_skew.powi(2) + skew.powi(2))).clamp(0.0, 1.0)
        };
        let freq = gain * s_freq;
        let extra_skew = ((freq).powi(2) * (1.0 - gain) + (s_freq - freq).powi(2) * gain).sqrt();
        self.our_skew = self.our_skew + gain * (skew - self.our_skew) + extra_skew;

        // reference.c:1067 is_step_limit_reached(offset, uncorrected_offset) compares the raw
        // offset (the cooked one less the correction still pending) with the threshold
        // (reference.c:549); on a step it cancels that correction and steps the raw offset
        // (reference.c:1068-1070). In the model's signs the raw offset is the cooked one less
        // the slew still to come.
        let raw_offset_s = offset_s - sim.slew_left_s();
        let step = self.step_limit_reached(raw_offset_s);
        // The local clock's frequency drops by what it gains on the source.
        let dfreq = -freq;
        let new_freq = (sim.freq_adj() + dfreq).clamp(-MAX_FREQ, MAX_FREQ);
        let dfreq = new_freq - sim.freq_adj();
        sim.set_freq(SOURCE, new_freq);
        if step {
            sim.note(SOURCE, format!("System clock wrong by {:.6} seconds", -raw_offset_s));
            sim.slew(0.0, 0.0);
            sim.step(SOURCE, -raw_offset_s);
        } else {
            // sys_generic.c:205-219 update_slew: duration = correction_rate / |register|,
            // clamped to [1, 10000] s, the rate to maxslewrate.
            let correction_rate = self.cfg.corrtimeratio * 0.5 * offset_sd_s * update_interval_s;
            let register_s = -raw_offset_s;
            let duration_s = if register_s != 0.0 && correction_rate > 0.0 {
                (correction_rate / register_s.abs()).clamp(MIN_SLEW_DURATION_S, MAX_SLEW_DURATION_S)
            } else {
                MIN_SLEW_DURATION_S
            };
            let rate = (register_s.abs() / duration_s).min(self.cfg.maxslewrate_ppm * 1e-6);
            sim.slew(register_s, rate);
        }
        // Re-express the history against the corrected clock (cooked time moved by -offset).
        self.stats.adjust(now_s, dfreq, -offset_s);
        self.filter.adjust(now_s, dfreq, -offset_s);
        self.hwclock.adjust(now_s, dfreq, -offset_s);
        if let Some(n) = &mut self.ntp {
            n.stats.adjust(now_s, dfreq, -offset_s);
        }
        self.last_rt_minus_mono_s = Some(sim.realtime_minus_mono_s());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PhcConfig, WorldConfig};

    fn chrony_with_makestep(limit: i32) -> Chrony {
        let cfg =
            ChronyConfig { makestep_threshold_s: Some(1.0), makestep_limit: limit, ..Default::default() };
        Chrony::new(cfg, 0)
    }

    /// reference.c:1067 decides on the offset less the correction still pending, and a step
    /// corrects exactly that, dropping the slew: the clock ends right whatever was pending. The
    /// old model decided on (and stepped) the cooked offset, leaving the pending slew as error.
    #[test]
    fn makestep_decides_on_and_steps_the_raw_offset() {
        let mut world = crate::World::new(&WorldConfig {
            phc: PhcConfig::Kvm { read_latency: crate::LatencyConfig::kvm() },
            disciplines: vec![],
            ..Default::default()
        })
        .unwrap();
        let sim = world.sim_mut();
        // The guest is 0.3 s behind with 1.5 s of slew still to come: cooked 1.2 s ahead, raw
        // 0.3 s behind. Under a 1 s threshold on the raw offset: no step.
        sim.step("test", -0.3);
        sim.slew(1.5, 0.0833);
        let raw = sim.guest_offset_s() + 0.0;
        let cooked = raw + sim.slew_left_s();
        assert!((cooked - 1.2).abs() < 1e-9);
        let mut c = chrony_with_makestep(-1);
        assert!(!c.step_limit_reached(cooked - sim.slew_left_s()));
        assert!(c.step_limit_reached(cooked), "the cooked offset alone would have stepped");
        // 2.5 s of slew pending against a raw 1.3 s: step the raw 1.3 s.
        let mut c = chrony_with_makestep(1);
        assert!(c.step_limit_reached(1.3));
        assert!(!c.step_limit_reached(1.3), "makestep limit 1: the second update may not step");
    }
}
