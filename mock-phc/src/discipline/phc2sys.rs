//! linuxptp 3.1.1's phc2sys (Debian bookworm's 3.1.1-4, what the guest image runs) from the PHC
//! to CLOCK_REALTIME: reads with the shortest-window rule and feeds the PI servo of pi.c,
//! stepping only on the first update (or above step_threshold). Line numbers in comments are
//! linuxptp-3.1.1's; mock-phc/CALIBRATION.md lists them all.

use phc::estimate;
use serde::{Deserialize, Serialize};

use crate::discipline::secs_to_ns;
use crate::time::{check_range, MAX_ABS_S};
use crate::world::{ReadMethod, Sim};
use crate::Error;

pub(crate) const SOURCE: &str = "phc2sys";

/// clockadj_max_freq for CLOCK_REALTIME (clockadj.c:118-139): with USER_HZ 100 and a nominal
/// tick of 10000 us, nominal_tick / 10 * 1000 * hz = 10% (the real phc2sys in the guest printed
/// `freq -100000000` while slewing 30 s away).
const MAX_FREQ_PPB: f64 = 100_000_000.0;
/// pi.c:33-34: with constants given (phc2sys always gives them) kp <= 1/interval and
/// ki <= 2/interval.
const KP_NORM_MAX: f64 = 1.0;
const KI_NORM_MAX: f64 = 2.0;
/// pi.c:36 FREQ_EST_MARGIN: the second sample must be this much more than 0.016/ki s after the
/// first before the frequency is estimated (pi.c:92-100).
const FREQ_EST_MARGIN: f64 = 0.001;

/// phc2sys settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Phc2sysConfig {
    /// Updates per second (`-R`).
    pub rate_hz: f64,
    /// Readings per update (`-N`).
    pub readings: u32,
    /// Step on the first update above this (`-F`).
    pub first_step_threshold_s: f64,
    /// Step above this after the first update; 0 never (`-S`).
    pub step_threshold_s: f64,
    /// Proportional constant (`-P`, pi_proportional_const; phc2sys.c:60 KP = 0.7). phc2sys sets
    /// the constant, not the scale, so it does not change with `-R` (pi.c:210-219).
    pub kp: f64,
    /// Integral constant (`-I`, pi_integral_const; phc2sys.c:61 KI = 0.3).
    pub ki: f64,
}

impl Default for Phc2sysConfig {
    fn default() -> Self {
        Self {
            rate_hz: 1.0,
            readings: 5,
            first_step_threshold_s: 0.00002,
            step_threshold_s: 0.0,
            kp: 0.7,
            ki: 0.3,
        }
    }
}

impl Phc2sysConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        if !(self.rate_hz.is_finite() && (0.001..=1000.0).contains(&self.rate_hz)) {
            return Err(Error::invalid(format!("{key}.rate_hz"), "must be within 0.001..=1000"));
        }
        if !(1..=25).contains(&self.readings) {
            return Err(Error::invalid(format!("{key}.readings"), "must be within 1..=25"));
        }
        for (name, v, hi) in [
            ("first_step_threshold_s", self.first_step_threshold_s, MAX_ABS_S),
            ("step_threshold_s", self.step_threshold_s, MAX_ABS_S),
            ("kp", self.kp, 1e3),
            ("ki", self.ki, 1e3),
        ] {
            check_range(&format!("{key}.{name}"), v, 0.0, hi)?;
        }
        Ok(())
    }
}

/// What pi.c's `pi_sample` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServoState {
    Unlocked,
    Jump,
    Locked,
}

/// pi.c's servo, offsets in ns, output in ppb.
#[derive(Debug, Clone)]
struct Pi {
    kp: f64,
    ki: f64,
    drift_ppb: f64,
    /// pi.c's last_freq: what an unlocked sample returns.
    last_freq_ppb: f64,
    count: u8,
    first: (f64, f64),
    first_update: bool,
    first_step_threshold_ns: f64,
    step_threshold_ns: f64,
}

impl Pi {
    fn sample(&mut self, offset_ns: f64, local_ns: f64) -> (f64, ServoState) {
        match self.count {
            0 => {
                self.first = (offset_ns, local_ns);
                self.count = 1;
                (self.last_freq_ppb, ServoState::Unlocked)
            }
            1 => {
                let (off0, local0) = self.first;
                if local0 >= local_ns {
                    self.count = 0;
                    return (self.last_freq_ppb, ServoState::Unlocked);
                }
                // pi.c:92-100: wait until 0.016/ki s separate the two samples.
                let localdiff_s = (local_ns - local0) * 1e-9 * (1.0 + FREQ_EST_MARGIN);
                if localdiff_s < (0.016 / self.ki).min(1000.0) {
                    return (self.last_freq_ppb, ServoState::Unlocked);
                }
                // pi.c:103-104.
                self.drift_ppb += (1e9 - self.drift_ppb) * (offset_ns - off0) / (local_ns - local0);
                self.drift_ppb = self.drift_ppb.clamp(-MAX_FREQ_PPB, MAX_FREQ_PPB);
                let jump = (self.first_update
                    && self.first_step_threshold_ns > 0.0
                    && self.first_step_threshold_ns < offset_ns.abs())
                    || (self.step_threshold_ns > 0.0 && self.step_threshold_ns < offset_ns.abs());
                self.count = 2;
                self.last_freq_ppb = self.drift_ppb;
                (self.drift_ppb, if jump { ServoState::Jump } else { ServoState::Locked })
            }
            _ => {
                if self.step_threshold_ns > 0.0 && self.step_threshold_ns < offset_ns.abs() {
                    self.count = 0;
                    return (self.last_freq_ppb, ServoState::Unlocked);
                }
                let ki_term = self.ki * offset_ns;
                let ppb = self.kp * offset_ns + self.drift_ppb + ki_term;
                if ppb.abs() <= MAX_FREQ_PPB {
                    self.drift_ppb += ki_term;
                }
                self.last_freq_ppb = ppb.clamp(-MAX_FREQ_PPB, MAX_FREQ_PPB);
                (self.last_freq_ppb, ServoState::Locked)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Phc2sys {
    cfg: Phc2sysConfig,
    pub(crate) next_due_ns: i64,
    interval_ns: i64,
    servo: Pi,
    methods: Vec<ReadMethod>,
    failing: bool,
}

impl Phc2sys {
    pub(crate) fn new(cfg: Phc2sysConfig, t_ns: i64) -> Self {
        let interval_s = 1.0 / cfg.rate_hz;
        // phc2sys.c:1384-1385 sets pi_proportional_const/pi_integral_const, so pi.c:210-219 uses
        // them with exponent 0: kp = min(kp, 1/interval), ki = min(ki, 2/interval) (pi.c:161-167).
        let servo = Pi {
            kp: cfg.kp.min(KP_NORM_MAX / interval_s),
            ki: cfg.ki.min(KI_NORM_MAX / interval_s),
            drift_ppb: 0.0,
            last_freq_ppb: 0.0,
            count: 0,
            first: (0.0, 0.0),
            first_update: true,
            first_step_threshold_ns: cfg.first_step_threshold_s * 1e9,
            step_threshold_ns: cfg.step_threshold_s * 1e9,
        };
        let methods =
            vec![ReadMethod::Precise, ReadMethod::Extended(phc::SysClock::Realtime), ReadMethod::Basic];
        Self { interval_ns: secs_to_ns(interval_s), next_due_ns: t_ns, cfg, servo, methods, failing: false }
    }

    pub(crate) fn on_external_step(&mut self) {}

    pub(crate) fn on_timer(&mut self, sim: &mut Sim) {
        self.next_due_ns += self.interval_ns;
        let Some(est) = self.read(sim) else { return };
        let offset_ns = est.offset_ns as f64;
        let (ppb, state) = self.servo.sample(offset_ns, sim.mono_s() * 1e9);
        match state {
            ServoState::Unlocked => {}
            ServoState::Jump => {
                sim.step(SOURCE, -offset_ns * 1e-9);
                sim.set_freq(SOURCE, -ppb * 1e-9);
                sim.note(SOURCE, format!("CLOCK_REALTIME stepped by {:+.0} ns", -offset_ns));
            }
            ServoState::Locked => sim.set_freq(SOURCE, -ppb * 1e-9),
        }
        if state != ServoState::Unlocked {
            self.servo.first_update = false;
        }
    }

    fn read(&mut self, sim: &mut Sim) -> Option<estimate::Estimate> {
        while let Some(&method) = self.methods.first() {
            match sim.read(method, self.cfg.readings as usize) {
                Ok(samples) => {
                    if self.failing {
                        self.failing = false;
                        sim.note(SOURCE, "PHC readable again".to_owned());
                    }
                    return estimate::linuxptp(&samples);
                }
                // phc2sys probes the methods once and keeps the first that works.
                Err(phc::Error::NotSupported) if self.methods.len() > 1 => {
                    self.methods.remove(0);
                }
                Err(e) => {
                    if !self.failing {
                        self.failing = true;
                        sim.read_error(SOURCE, &e);
                    }
                    return None;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// phc2sys.c:1384-1385 gives pi.c constants, not scales: 0.7 and 0.3 at any -R, capped only
    /// at 1/interval and 2/interval (pi.c:161-167). The old model scaled them with the
    /// interval (kp 1.06, ki 0.17 at -R 4).
    #[test]
    fn pi_constants_do_not_scale_with_the_rate() {
        for (rate_hz, kp, ki) in
            [(1.0, 0.7, 0.3), (4.0, 0.7, 0.3), (16.0, 0.7, 0.3), (0.5, 0.5, 0.3), (0.1, 0.1, 0.2)]
        {
            let p = Phc2sys::new(Phc2sysConfig { rate_hz, ..Default::default() }, 0);
            assert!((p.servo.kp - kp).abs() < 1e-12, "-R {rate_hz}: kp {}", p.servo.kp);
            assert!((p.servo.ki - ki).abs() < 1e-12, "-R {rate_hz}: ki {}", p.servo.ki);
        }
    }

    /// pi.c:92-104: the first frequency estimate waits until 0.016/ki s separate the samples and
    /// scales the measured drift by (1e9 - drift)/1e9.
    #[test]
    fn first_frequency_estimate_follows_pi_c() {
        let mut pi = Phc2sys::new(Phc2sysConfig::default(), 0).servo;
        assert_eq!(pi.sample(0.0, 0.0).1, ServoState::Unlocked);
        // 0.05 s later is under 0.016/0.3 = 0.0533 s: still unlocked.
        assert_eq!(pi.sample(500.0, 0.05e9).1, ServoState::Unlocked);
        // 1000 ns gained in 1 s: a drift of 1000 ppb; 1 us is under the 20 us first step.
        let (ppb, state) = pi.sample(1000.0, 1e9);
        assert_eq!(state, ServoState::Locked);
        assert!((ppb - 1000.0).abs() < 1e-9, "{ppb}");
        // A 30 us offset on the first update is stepped.
        let mut pi = Phc2sys::new(Phc2sysConfig::default(), 0).servo;
        pi.sample(0.0, 0.0);
        assert_eq!(pi.sample(30_000.0, 1e9).1, ServoState::Jump);
    }
}
