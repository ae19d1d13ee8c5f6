//! ntpd against an NTP server on the host: steps offsets above the step threshold (128 ms), gives
//! up on offsets above the panic threshold (1000 s, where real ntpd exits), and otherwise slews
//! with the kernel's 500 ppm limit while a frequency loop absorbs the oscillator's error.

use serde::{Deserialize, Serialize};

use crate::discipline::secs_to_ns;
use crate::time::{check_positive, check_range, MAX_ABS_S};
use crate::world::Sim;
use crate::Error;

pub(crate) const SOURCE: &str = "ntpd";

/// Share of the measured drift folded into the frequency at each poll.
const FREQ_GAIN: f64 = 0.5;

/// ntpd's clock discipline settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NtpdConfig {
    /// Offsets above this are stepped (`tinker step`).
    pub step_threshold_s: f64,
    /// Offsets above this make ntpd give up (`tinker panic`).
    pub panic_threshold_s: f64,
    /// The kernel's slew limit.
    pub max_slew_ppm: f64,
    /// Poll interval.
    pub poll_s: f64,
}

impl Default for NtpdConfig {
    fn default() -> Self {
        Self { step_threshold_s: 0.128, panic_threshold_s: 1000.0, max_slew_ppm: 500.0, poll_s: 16.0 }
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
        // ntpd's poll exponent runs 0..=17 (1 s to 36 h); a poll that rounds to 0 ns would
        // make the model due again at the same instant for ever.
        check_range(&format!("{key}.poll_s"), self.poll_s, 1.0, 131_072.0)?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Ntpd {
    cfg: NtpdConfig,
    next_due_ns: Option<i64>,
    last_update_s: Option<f64>,
}

impl Ntpd {
    pub(crate) fn new(cfg: NtpdConfig, t_ns: i64) -> Self {
        Self { cfg, next_due_ns: Some(t_ns), last_update_s: None }
    }

    pub(crate) fn next_due_ns(&self) -> Option<i64> {
        self.next_due_ns
    }

    pub(crate) fn on_timer(&mut self, sim: &mut Sim) {
        self.next_due_ns = self.next_due_ns.map(|t| t + secs_to_ns(self.cfg.poll_s));
        let offset_s = sim.guest_offset_s() + sim.read_noise_s();
        let max_slew = self.cfg.max_slew_ppm * 1e-6;
        if offset_s.abs() > self.cfg.panic_threshold_s {
            sim.note(
                SOURCE,
                format!(
                    "time correction of {:.0} seconds exceeds sanity limit ({:.0}); set clock manually to the correct UTC time",
                    offset_s.abs(),
                    self.cfg.panic_threshold_s
                ),
            );
            // Real ntpd exits here.
            self.next_due_ns = None;
            return;
        }
        let now_s = sim.mono_s();
        if offset_s.abs() > self.cfg.step_threshold_s {
            sim.note(SOURCE, format!("time reset {:+.6} s", -offset_s));
            sim.slew(0.0, 0.0);
            sim.step(SOURCE, -offset_s);
            self.last_update_s = Some(now_s);
            return;
        }
        // What is left once the pending slew is done is frequency error since the last update.
        let cooked_s = offset_s + sim.slew_left_s();
        if let Some(last_s) = self.last_update_s {
            let dt_s = now_s - last_s;
            let drift = cooked_s / dt_s.max(1e-9);
            // A drift beyond what the kernel can slew is a step someone made, not frequency.
            if dt_s > 0.0 && drift.abs() <= max_slew {
                let freq = (sim.freq_adj() - FREQ_GAIN * drift).clamp(-max_slew, max_slew);
                sim.set_freq(SOURCE, freq);
            }
        }
        self.last_update_s = Some(now_s);
        let rate = (max_slew - sim.freq_adj().abs()).max(max_slew * 0.01);
        // The slew in progress is part of the measured offset; slew all of it.
        sim.slew(-offset_s, rate);
    }
}
