//! The things that happen to a VM: pauses, reboots, steps of either clock, stale host samples,
//! migration to a host with another oscillator. Applied to a world at its current time.

use serde::{Deserialize, Serialize};

/// One disturbance, applied at the world's current time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Disturbance {
    /// The guest stands still (its clocks too) while the host runs on.
    Pause {
        /// How long.
        duration_s: f64,
        /// Whether a hyperv host sends a SYNC-flagged sample on resume.
        #[serde(default = "yes")]
        sync_on_resume: bool,
    },
    /// The guest reboots: REALTIME restarts from the RTC (whole seconds of host time, plus the half
    /// second the kernel's rtc_hctosys adds), MONOTONIC restarts, every daemon restarts afresh.
    Reboot {
        /// How long the guest is down.
        #[serde(default = "default_downtime_s")]
        downtime_s: f64,
    },
    /// The host's (reference) time steps; PHCs fed by the host follow.
    HostStep {
        /// Size of the step.
        delta_s: f64,
    },
    /// The guest's CLOCK_REALTIME is stepped (`date -s`).
    GuestStep {
        /// Size of the step.
        delta_s: f64,
    },
    /// The host stops sending time samples.
    SamplesStop,
    /// The host sends time samples again.
    SamplesResume,
    /// The guest oscillator's frequency changes (live migration to another host).
    FrequencyJump {
        /// Change of the frequency error.
        delta_ppm: f64,
    },
}

fn yes() -> bool {
    true
}
fn default_downtime_s() -> f64 {
    5.0
}
