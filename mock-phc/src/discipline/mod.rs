//! Models of the daemons that discipline the guest clock: their configuration (as scenario files
//! write it) and a dispatch over the running models. Each model sees the world only through
//! `Sim`: it reads the PHC, steps or slews the clock, and logs what the real daemon would log.

mod chrony;
mod chrony_hwclock;
mod chrony_ntp;
mod chrony_stats;
mod hv_utils;
mod kernel_pll;
mod ntpd;
mod ntpd_filter;
mod phc2sys;
pub mod sample_noise;
mod timesyncd;

use serde::{Deserialize, Serialize};

pub use chrony::{ChronyConfig, ChronyPrefer, ChronyServerConfig};
pub use hv_utils::HvUtilsConfig;
pub use ntpd::NtpdConfig;
pub use phc2sys::Phc2sysConfig;
pub use timesyncd::TimesyncdConfig;

use crate::world::Sim;
use crate::Error;

/// One daemon acting on the guest clock.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DisciplineConfig {
    /// chronyd with `refclock PHC`, an NTP server, or both.
    Chrony(ChronyConfig),
    /// ntpd (NTPsec) against the world's NTP server.
    Ntpd(NtpdConfig),
    /// systemd-timesyncd against the world's NTP server.
    Timesyncd(TimesyncdConfig),
    /// linuxptp's phc2sys from the PHC to CLOCK_REALTIME.
    Phc2sys(Phc2sysConfig),
    /// The hv_utils kernel module's time sync (steps on SYNC samples).
    HvUtils(HvUtilsConfig),
    /// Nothing disciplines the clock.
    None,
}

impl DisciplineConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        match self {
            Self::Chrony(c) => c.validate(key),
            Self::Ntpd(c) => c.validate(key),
            Self::Timesyncd(c) => c.validate(key),
            Self::Phc2sys(c) => c.validate(key),
            Self::HvUtils(_) | Self::None => Ok(()),
        }
    }

    /// Whether the daemon asks the world's NTP server.
    pub fn needs_ntp_server(&self) -> bool {
        match self {
            Self::Chrony(c) => c.server.is_some(),
            Self::Ntpd(_) | Self::Timesyncd(_) => true,
            Self::Phc2sys(_) | Self::HvUtils(_) | Self::None => false,
        }
    }

    /// How often the daemon wakes on its own, per second of guest time: what a run of it costs.
    /// chronyd's regression at each poll (up to 64 samples) counts as ten wake-ups, which is
    /// what it costs beside a filter reading (measured: dpoll -6 with poll -6 ran 10x longer
    /// than with poll 0).
    pub fn wakeups_per_s(&self) -> f64 {
        match self {
            Self::Chrony(c) => 2f64.powi(-i32::from(c.dpoll)) + 10.0 * 2f64.powi(-i32::from(c.poll)),
            // Both hand slews to the kernel, whose PLL the model runs once a second.
            Self::Ntpd(c) => 1.0 + 1.0 / c.poll_s,
            Self::Timesyncd(c) => 1.0 + 1.0 / c.poll_min_s,
            Self::Phc2sys(c) => c.rate_hz,
            Self::HvUtils(_) | Self::None => 0.0,
        }
    }
}

/// A running daemon.
#[derive(Debug, Clone)]
pub(crate) enum Discipline {
    Chrony(Box<chrony::Chrony>),
    Ntpd(Box<ntpd::Ntpd>),
    Timesyncd(Box<timesyncd::Timesyncd>),
    Phc2sys(phc2sys::Phc2sys),
    HvUtils(hv_utils::HvUtils),
    None,
}

impl Discipline {
    /// Starts the daemon at reference time `t_ns` (boot, or a reboot's end).
    pub(crate) fn start(cfg: &DisciplineConfig, t_ns: i64) -> Self {
        match cfg {
            DisciplineConfig::Chrony(c) => Self::Chrony(Box::new(chrony::Chrony::new(c.clone(), t_ns))),
            DisciplineConfig::Ntpd(c) => Self::Ntpd(Box::new(ntpd::Ntpd::new(c.clone(), t_ns))),
            DisciplineConfig::Timesyncd(c) => {
                Self::Timesyncd(Box::new(timesyncd::Timesyncd::new(c.clone(), t_ns)))
            }
            DisciplineConfig::Phc2sys(c) => Self::Phc2sys(phc2sys::Phc2sys::new(c.clone(), t_ns)),
            DisciplineConfig::HvUtils(c) => Self::HvUtils(hv_utils::HvUtils::new(c.clone())),
            DisciplineConfig::None => Self::None,
        }
    }

    /// The next time the daemon wakes up on its own.
    pub(crate) fn next_due_ns(&self) -> Option<i64> {
        match self {
            Self::Chrony(d) => Some(d.next_due_ns()),
            Self::Ntpd(d) => d.next_due_ns(),
            Self::Timesyncd(d) => d.next_due_ns(),
            Self::Phc2sys(d) => Some(d.next_due_ns),
            Self::HvUtils(_) | Self::None => None,
        }
    }

    /// Moves the daemon's timers `delta_ns` later (the guest stood still that long).
    pub(crate) fn delay_timers(&mut self, delta_ns: i64) {
        match self {
            Self::Chrony(d) => d.delay_timers(delta_ns),
            Self::Ntpd(d) => d.delay_timers(delta_ns),
            Self::Timesyncd(d) => d.delay_timers(delta_ns),
            Self::Phc2sys(d) => d.next_due_ns += delta_ns,
            Self::HvUtils(_) | Self::None => {}
        }
    }

    pub(crate) fn on_timer(&mut self, sim: &mut Sim) {
        match self {
            Self::Chrony(d) => d.on_timer(sim),
            Self::Ntpd(d) => d.on_timer(sim),
            Self::Timesyncd(d) => d.on_timer(sim),
            Self::Phc2sys(d) => d.on_timer(sim),
            Self::HvUtils(_) | Self::None => {}
        }
    }

    /// The host delivered a time sample (hyperv only); `sync` is ICTIMESYNCFLAG_SYNC.
    pub(crate) fn on_host_sample(&mut self, sim: &mut Sim, sync: bool) {
        if let Self::HvUtils(d) = self {
            d.on_host_sample(sim, sync);
        }
    }

    /// Someone else stepped the guest's REALTIME by `delta_s`.
    pub(crate) fn on_external_step(&mut self, sim: &mut Sim, delta_s: f64) {
        match self {
            Self::Chrony(d) => d.on_external_step(sim, delta_s),
            Self::Phc2sys(d) => d.on_external_step(),
            Self::Timesyncd(d) => d.on_external_step(sim),
            Self::Ntpd(_) | Self::HvUtils(_) | Self::None => {}
        }
    }

    /// chronyd's noise so far (`sample_noise`); None for the other daemons.
    pub(crate) fn chrony_noise(&self) -> Option<sample_noise::Noise> {
        match self {
            Self::Chrony(d) => Some(d.noise()),
            _ => None,
        }
    }

    pub(crate) fn source(&self) -> &'static str {
        match self {
            Self::Chrony(_) => chrony::SOURCE,
            Self::Ntpd(_) => ntpd::SOURCE,
            Self::Timesyncd(_) => timesyncd::SOURCE,
            Self::Phc2sys(_) => phc2sys::SOURCE,
            Self::HvUtils(_) => hv_utils::SOURCE,
            Self::None => "none",
        }
    }
}

pub(crate) use crate::time::secs_to_ns_in_range as secs_to_ns;
