//! The PHC drivers the guest may have, as the kernel implements them: where each gets its time,
//! which ioctls it answers and with which errno, and when hyperv's clock goes stale.

use phc::{Error as PhcError, ReadRequest, SysClock};

use crate::noise::{self, Oscillator};
use crate::PhcConfig;

/// The last time sample the host sent (hv_util.c's `host_ts`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostSample {
    /// Host time minus ideal time when the sample was taken.
    pub(crate) host_err_s: f64,
    /// The guest reference counter then.
    pub(crate) refcnt_s: f64,
    /// Reference time then.
    pub(crate) t_s: f64,
}

#[derive(Debug, Clone)]
pub(crate) enum PhcState {
    Hyperv { interval_s: f64, stale_after_s: f64, last: Option<HostSample> },
    Kvm,
    Vmclock,
    Nic { osc: Box<Oscillator>, err_s: f64, fed: bool },
}

/// How a read is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    /// `PTP_SYS_OFFSET`: n (sys, phc, sys) triples, consecutive ones sharing a sys timestamp.
    Basic,
    /// `PTP_SYS_OFFSET_EXTENDED` paired with the given system clock.
    Extended(SysClock),
    /// `PTP_SYS_OFFSET_PRECISE`: a cross timestamp with no window.
    Precise,
    /// `clock_gettime` on the dynamic clock, bracketed by two CLOCK_REALTIME reads.
    Gettime,
}

impl PhcState {
    pub(crate) fn new(cfg: &PhcConfig, seed: u64) -> Self {
        match cfg {
            PhcConfig::Hyperv { sample_interval_s, stale_after_s, .. } => {
                Self::Hyperv { interval_s: *sample_interval_s, stale_after_s: *stale_after_s, last: None }
            }
            PhcConfig::Kvm { .. } => Self::Kvm,
            PhcConfig::Vmclock { .. } => Self::Vmclock,
            PhcConfig::Nic { oscillator, fed_by_host, .. } => Self::Nic {
                osc: Box::new(Oscillator::new(oscillator, noise::rng(seed, noise::STREAM_NIC))),
                err_s: 0.0,
                fed: *fed_by_host,
            },
        }
    }

    /// The driver this state imitates.
    fn driver(&self) -> phc::Driver {
        match self {
            Self::Hyperv { .. } => phc::Driver::Hyperv,
            Self::Kvm => phc::Driver::Kvm,
            Self::Vmclock => phc::Driver::Vmclock,
            Self::Nic { .. } => phc::Driver::Nic,
        }
    }

    /// The kernel's checks of a read of `n` samples, in its order, from the one table
    /// (`phc::Driver::implements`) that `probe` judges real devices by and the answerer uses.
    pub(crate) fn check_read(&self, method: ReadMethod, n: usize) -> Result<(), PhcError> {
        let req = match method {
            ReadMethod::Basic => ReadRequest::Basic { n_samples: n },
            ReadMethod::Extended(_) => ReadRequest::Extended { n_samples: n, clock_ok: true, rsv_zero: true },
            ReadMethod::Precise => ReadRequest::Precise,
            ReadMethod::Gettime => ReadRequest::Gettime,
        };
        self.driver().implements().check_read(req)
    }

    /// PHC time minus ideal time at reference time `t_s`, or ESTALE.
    pub(crate) fn err_s(&self, t_s: f64, refcnt_s: f64, host_err_s: f64) -> Result<f64, PhcError> {
        match self {
            Self::Hyperv { stale_after_s, last, .. } => {
                let s = last.ok_or(PhcError::Stale)?;
                let age_s = refcnt_s - s.refcnt_s;
                if age_s > *stale_after_s {
                    return Err(PhcError::Stale);
                }
                // Last sample plus elapsed reference counter; the counter stands still in a pause.
                Ok(s.host_err_s + age_s - (t_s - s.t_s))
            }
            Self::Kvm | Self::Vmclock => Ok(host_err_s),
            Self::Nic { err_s, .. } => Ok(*err_s),
        }
    }

    /// Rate of the PHC against reference time (for instants inside one read batch).
    pub(crate) fn rate(&self, running: bool) -> f64 {
        match self {
            Self::Hyperv { .. } if !running => 0.0,
            Self::Nic { .. } if !running => 0.0,
            Self::Nic { osc, .. } => 1.0 + osc.freq(),
            _ => 1.0,
        }
    }

    pub(crate) fn advance(&mut self, dt_s: f64, running: bool) {
        if let Self::Nic { osc, err_s, .. } = self {
            if running {
                *err_s += osc.freq() * dt_s;
            } else {
                *err_s -= dt_s;
            }
        }
    }

    pub(crate) fn tick(&mut self, dt_s: f64) {
        if let Self::Nic { osc, .. } = self {
            osc.tick(dt_s);
        }
    }

    /// Called on the host's sample tick: stores a hyperv sample, feeds a host-fed NIC.
    pub(crate) fn host_sample(&mut self, sample: HostSample) {
        match self {
            Self::Hyperv { last, .. } => *last = Some(sample),
            Self::Nic { err_s, fed: true, .. } => *err_s = sample.host_err_s,
            _ => {}
        }
    }

    /// A reboot: hv_utils starts without a sample.
    pub(crate) fn reboot(&mut self) {
        if let Self::Hyperv { last, .. } = self {
            *last = None;
        }
    }

    pub(crate) fn host_sends_samples(&self) -> bool {
        matches!(self, Self::Hyperv { .. } | Self::Nic { fed: true, .. })
    }

    pub(crate) fn is_hyperv(&self) -> bool {
        matches!(self, Self::Hyperv { .. })
    }

    pub(crate) fn sample_interval_s(&self) -> f64 {
        match self {
            Self::Hyperv { interval_s, .. } => *interval_s,
            _ => 5.0,
        }
    }
}
