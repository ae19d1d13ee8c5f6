//! The guest's system clocks, computed analytically between events: CLOCK_REALTIME as an error
//! against ideal time, MONOTONIC and MONOTONIC_RAW since boot, and the kernel's frequency and
//! slew corrections that daemons set.

/// The kernel cannot run a clock more than about 10% off (tick adjustment range); clamping the
/// total keeps every clock strictly increasing whatever a daemon asks for.
const MAX_TOTAL_ADJ: f64 = 0.1;

#[derive(Debug, Clone, Default)]
pub(crate) struct GuestClock {
    /// CLOCK_REALTIME minus ideal time (start + reference time), seconds.
    pub(crate) err_s: f64,
    /// CLOCK_MONOTONIC since boot.
    pub(crate) mono_s: f64,
    /// CLOCK_MONOTONIC_RAW since boot.
    pub(crate) raw_s: f64,
    /// Frequency correction a daemon set (fraction; positive speeds the clock up).
    pub(crate) freq_adj: f64,
    /// Offset still to be slewed into REALTIME (positive: the clock will gain it).
    pub(crate) slew_left_s: f64,
    /// Rate of that slew (fraction, >= 0).
    pub(crate) slew_rate: f64,
}

impl GuestClock {
    /// Advances by `dt_s` of reference time with the oscillator at `osc` (fraction).
    pub(crate) fn advance(&mut self, dt_s: f64, osc: f64, running: bool) {
        if dt_s <= 0.0 {
            return;
        }
        if !running {
            // The guest stands still while reference time runs on.
            self.err_s -= dt_s;
            return;
        }
        let adj = self.freq_adj.clamp(-MAX_TOTAL_ADJ, MAX_TOTAL_ADJ);
        let rate = (1.0 + osc) * (1.0 + adj);
        let mut slewed = 0.0;
        if self.slew_left_s != 0.0 && self.slew_rate > 0.0 {
            let slew_rate = self.slew_rate.min(MAX_TOTAL_ADJ);
            let full = slew_rate * dt_s;
            slewed = if full >= self.slew_left_s.abs() {
                self.slew_left_s
            } else {
                full * self.slew_left_s.signum()
            };
            self.slew_left_s -= slewed;
            if self.slew_left_s.abs() < 1e-12 {
                self.slew_left_s = 0.0;
            }
        }
        self.err_s += (rate - 1.0) * dt_s + slewed;
        self.mono_s += rate * dt_s + slewed;
        self.raw_s += (1.0 + osc) * dt_s;
    }

    /// Rate of REALTIME against reference time now (for instants inside one read batch).
    pub(crate) fn rate(&self, osc: f64, running: bool) -> f64 {
        if !running {
            return 0.0;
        }
        let slew = if self.slew_left_s != 0.0 { self.slew_rate.min(MAX_TOTAL_ADJ) } else { 0.0 };
        (1.0 + osc) * (1.0 + self.freq_adj.clamp(-MAX_TOTAL_ADJ, MAX_TOTAL_ADJ))
            + slew * self.slew_left_s.signum()
    }

    /// Steps REALTIME only; monotonic clocks never move backwards.
    pub(crate) fn step(&mut self, delta_s: f64) {
        self.err_s += delta_s;
    }

    /// Starts (or replaces) a slew of `offset_s` at `rate` (fraction).
    pub(crate) fn set_slew(&mut self, offset_s: f64, rate: f64) {
        self.slew_left_s = offset_s;
        self.slew_rate = rate.abs();
    }

    /// A fresh boot: REALTIME from the RTC, monotonic clocks from zero, no corrections.
    pub(crate) fn reboot(&mut self, err_s: f64) {
        *self = Self { err_s, ..Self::default() };
    }
}
