//! The world's configuration: what scenario files embed. Every struct takes serde defaults so a
//! scenario names only what it changes, and `validate` says which key is wrong and why.

use serde::{Deserialize, Serialize};

use crate::discipline::DisciplineConfig;
use crate::time::{check_positive, check_range, MAX_START_REALTIME_NS};
use crate::Error;

/// 2026-01-01T00:00:00Z: a fixed start keeps runs byte-identical.
const DEFAULT_START_REALTIME_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// Everything that defines a simulated world.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Seed of every random draw; the same seed gives the same run.
    pub seed: u64,
    /// Host and guest CLOCK_REALTIME at t = 0.
    pub start_realtime_ns: i64,
    /// The guest's PHC and the driver behind it.
    pub phc: PhcConfig,
    /// The guest system clock's oscillator.
    pub guest: OscillatorConfig,
    /// Daemons acting on the guest clock, all at once (hv_utils + chrony on Azure).
    pub disciplines: Vec<DisciplineConfig>,
    /// The NTP server the guest's NTP clients ask (`[world.ntp_server]`); left out, a daemon
    /// that asks one gets the default (`NtpServerConfig::default`, a server on the local network).
    pub ntp_server: Option<crate::NtpServerConfig>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            start_realtime_ns: DEFAULT_START_REALTIME_NS,
            phc: PhcConfig::default(),
            guest: OscillatorConfig::default(),
            disciplines: Vec::new(),
            ntp_server: None,
        }
    }
}

impl WorldConfig {
    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), Error> {
        if !(0..=MAX_START_REALTIME_NS).contains(&self.start_realtime_ns) {
            return Err(Error::invalid(
                "start_realtime_ns",
                format!("must be within 0..={MAX_START_REALTIME_NS} (1970 to 2100)"),
            ));
        }
        self.phc.validate()?;
        self.guest.validate("guest")?;
        if self.disciplines.len() > MAX_DISCIPLINES {
            return Err(Error::invalid(
                "disciplines",
                format!(
                    "has {}; at most {MAX_DISCIPLINES} daemons may act on one clock",
                    self.disciplines.len()
                ),
            ));
        }
        for (i, d) in self.disciplines.iter().enumerate() {
            d.validate(&format!("disciplines[{i}]"))?;
        }
        if let Some(n) = &self.ntp_server {
            n.validate("ntp_server")?;
        }
        Ok(())
    }

    /// The NTP server the guest's clients ask: the scenario's, or the default.
    pub fn ntp_server(&self) -> crate::NtpServerConfig {
        self.ntp_server.clone().unwrap_or_default()
    }

    /// How often the world wakes on its own, per second: every daemon's timer and the host's
    /// time samples. A run's cost is this times its length.
    pub fn wakeups_per_s(&self) -> f64 {
        let host = match &self.phc {
            PhcConfig::Hyperv { sample_interval_s, .. } => 1.0 / sample_interval_s,
            _ => 0.0,
        };
        host + self.disciplines.iter().map(DisciplineConfig::wakeups_per_s).sum::<f64>()
    }
}

/// Most daemons in one world: a real guest runs one or two on a clock.
pub const MAX_DISCIPLINES: usize = 8;

/// A free-running oscillator: constant frequency error, random-walk wander, white phase noise.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OscillatorConfig {
    /// Constant frequency error (positive: runs fast).
    pub freq_error_ppm: f64,
    /// Random-walk frequency wander: standard deviation of the change over one second.
    pub wander_ppb_per_sqrt_s: f64,
    /// White noise on every reading of the clock (standard deviation).
    pub phase_noise_ns: f64,
}

impl OscillatorConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        // Beyond 10% no kernel could correct it; the bound also keeps clocks monotonic.
        if !self.freq_error_ppm.is_finite() || self.freq_error_ppm.abs() > 100_000.0 {
            return Err(Error::invalid(format!("{key}.freq_error_ppm"), "must be within +-100000"));
        }
        check_range(&format!("{key}.wander_ppb_per_sqrt_s"), self.wander_ppb_per_sqrt_s, 0.0, 1e6)?;
        check_range(&format!("{key}.phase_noise_ns"), self.phase_noise_ns, 0.0, 1e9)?;
        Ok(())
    }
}

/// The window (t2 - t1) a PTP read reports: a floor, a typical value and a long tail.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Shortest possible window.
    pub min_ns: i64,
    /// Median window.
    pub median_ns: i64,
    /// The 99th percentile.
    pub tail_ns: i64,
    /// The share of read batches (one PTP_SYS_OFFSET call's readings) that come out slow as a
    /// whole: every reading above the window a reader keeping the quickest ones keeps (chrony
    /// 4.3's hwclock.c:207-215, between the first and second deciles of the windows it has
    /// seen), so that it has none to combine. 0 by default. The fidelity ensemble sets it to the
    /// share of PHC polls the guest's chronyd dropped (`chrony_refclock_dropped_share`): none in
    /// virtual time, where a read's window is counted in instructions, 38% for igb's PHC read in
    /// real time under TCG, whose batches are slowed by the host.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_batch_share: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl LatencyConfig {
    /// Hyper-V: gettime is a few loads from memory the host updates.
    pub fn hyperv() -> Self {
        Self { min_ns: 150, median_ns: 250, tail_ns: 2_000, slow_batch_share: 0.0 }
    }
    /// ptp_kvm: each read is a hypercall (a VM exit).
    pub fn kvm() -> Self {
        Self { min_ns: 1_500, median_ns: 3_000, tail_ns: 20_000, slow_batch_share: 0.0 }
    }
    /// vmclock: reads of a shared page, no exit.
    pub fn vmclock() -> Self {
        Self { min_ns: 50, median_ns: 80, tail_ns: 500, slow_batch_share: 0.0 }
    }
    /// A NIC over PCIe: 0.5-6 us typical, pathological tails near 100 us (REFERENCE.md).
    pub fn nic() -> Self {
        Self { min_ns: 500, median_ns: 2_000, tail_ns: 80_000, slow_batch_share: 0.0 }
    }

    fn validate(&self, key: &str) -> Result<(), Error> {
        if !(0 <= self.min_ns && self.min_ns <= self.median_ns && self.median_ns <= self.tail_ns) {
            return Err(Error::invalid(key, "needs 0 <= min_ns <= median_ns <= tail_ns"));
        }
        if self.tail_ns > 1_000_000_000 {
            return Err(Error::invalid(format!("{key}.tail_ns"), "must be at most one second"));
        }
        if !(0.0..=1.0).contains(&self.slow_batch_share) {
            return Err(Error::invalid(format!("{key}.slow_batch_share"), "must be within 0..=1"));
        }
        Ok(())
    }
}

/// The PHC personality: which kernel driver the guest's `/dev/ptp0` belongs to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "personality", rename_all = "snake_case", deny_unknown_fields)]
pub enum PhcConfig {
    /// hv_utils' `hyperv` clock: the last host sample plus the elapsed reference counter.
    Hyperv {
        /// How often the host sends a time sample.
        #[serde(default = "default_sample_interval_s")]
        sample_interval_s: f64,
        /// Age (in reference-counter time) beyond which reads fail with ESTALE.
        #[serde(default = "default_stale_after_s")]
        stale_after_s: f64,
        /// Read window distribution.
        #[serde(default = "LatencyConfig::hyperv")]
        read_latency: LatencyConfig,
    },
    /// `ptp_kvm`: every read asks the host.
    Kvm {
        /// Read window distribution.
        #[serde(default = "LatencyConfig::kvm")]
        read_latency: LatencyConfig,
    },
    /// `ptp_vmclock`: host time from a shared page.
    Vmclock {
        /// Read window distribution.
        #[serde(default = "LatencyConfig::vmclock")]
        read_latency: LatencyConfig,
    },
    /// A NIC's own clock (QEMU's igb under TCG): its own oscillator, paused with the guest.
    Nic {
        /// Largest frequency adjustment the driver accepts.
        #[serde(default = "default_max_adj_ppb")]
        max_adj_ppb: i64,
        /// The NIC's oscillator.
        #[serde(default)]
        oscillator: OscillatorConfig,
        /// The host sets the clock to host time every sample interval and after resume (the
        /// harness's time-sync provider feeding QEMU's igb clock).
        #[serde(default)]
        fed_by_host: bool,
        /// Read window distribution.
        #[serde(default = "LatencyConfig::nic")]
        read_latency: LatencyConfig,
    },
}

fn default_sample_interval_s() -> f64 {
    5.0
}
fn default_stale_after_s() -> f64 {
    600.0
}
fn default_max_adj_ppb() -> i64 {
    62_499_999
}

impl Default for PhcConfig {
    fn default() -> Self {
        Self::Hyperv {
            sample_interval_s: default_sample_interval_s(),
            stale_after_s: default_stale_after_s(),
            read_latency: LatencyConfig::hyperv(),
        }
    }
}

impl PhcConfig {
    /// The driver this personality imitates.
    pub fn driver(&self) -> phc::Driver {
        match self {
            Self::Hyperv { .. } => phc::Driver::Hyperv,
            Self::Kvm { .. } => phc::Driver::Kvm,
            Self::Vmclock { .. } => phc::Driver::Vmclock,
            Self::Nic { .. } => phc::Driver::Nic,
        }
    }

    /// The read window distribution.
    pub fn read_latency(&self) -> LatencyConfig {
        match self {
            Self::Hyperv { read_latency, .. }
            | Self::Kvm { read_latency }
            | Self::Vmclock { read_latency }
            | Self::Nic { read_latency, .. } => *read_latency,
        }
    }

    /// The read window distribution, to change.
    pub fn read_latency_mut(&mut self) -> &mut LatencyConfig {
        match self {
            Self::Hyperv { read_latency, .. }
            | Self::Kvm { read_latency }
            | Self::Vmclock { read_latency }
            | Self::Nic { read_latency, .. } => read_latency,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        self.read_latency().validate("phc.read_latency")?;
        match self {
            Self::Hyperv { sample_interval_s, stale_after_s, .. } => {
                if !(sample_interval_s.is_finite() && (0.01..=3600.0).contains(sample_interval_s)) {
                    return Err(Error::invalid("phc.sample_interval_s", "must be within 0.01..=3600"));
                }
                check_positive("phc.stale_after_s", *stale_after_s, 1e7)?;
            }
            Self::Nic { max_adj_ppb, oscillator, .. } => {
                if !(1..=1_000_000_000).contains(max_adj_ppb) {
                    return Err(Error::invalid("phc.max_adj_ppb", "must be within 1..=1000000000"));
                }
                oscillator.validate("phc.oscillator")?;
            }
            Self::Kvm { .. } | Self::Vmclock { .. } => {}
        }
        Ok(())
    }
}
