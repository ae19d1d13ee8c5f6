//! Linux's kernel PLL (kernel/time/ntp.c) as adjtimex drives it with STA_PLL and ADJ_OFFSET
//! (ADJ_NANO): ntp_update_offset's frequency step, second_overflow's share of the phase error
//! each second. ntpd's and timesyncd's slews both go through it.

/// kernel/time/ntp.c: SHIFT_PLL, MAXPHASE (0.5 s), MAXFREQ (500 ppm), MAXTC.
pub(crate) const SHIFT_PLL: i32 = 2;
pub(crate) const MAXPHASE_S: f64 = 0.5;
pub(crate) const MAXFREQ: f64 = 500e-6;
pub(crate) const MAXTC: i32 = 10;
/// second_overflow runs once a second.
pub(crate) const KERNEL_TICK_NS: i64 = 1_000_000_000;

/// The kernel's PLL (kernel/time/ntp.c), offsets as the guest gains them.
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelPll {
    /// time_offset: what is still to be slewed in.
    pub(crate) offset_s: f64,
    /// time_freq.
    pub(crate) freq: f64,
    pub(crate) time_constant: i32,
    /// time_reftime (guest REALTIME seconds), once set; None while STA_PLL is off (turning it
    /// on resets it to now: process_adj_status).
    pub(crate) reftime_s: Option<f64>,
}

impl KernelPll {
    /// A PLL with time constant `time_constant`, nothing to slew, no frequency.
    pub(crate) fn new(time_constant: i32) -> Self {
        Self { time_constant, ..Self::default() }
    }

    /// ntp_update_offset: a new phase error and the PLL's frequency step.
    pub(crate) fn update_offset(&mut self, offset_s: f64, now_s: f64) {
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
    pub(crate) fn chunk(&mut self) -> f64 {
        let c = self.offset_s * 2f64.powi(-(SHIFT_PLL + self.time_constant));
        self.offset_s -= c;
        c
    }
}
