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
    /// The guest is saved (snapshot, or migration to a file) and restored `gap_s` later: like a
    /// pause for its clocks, which resume `gap_s` behind, with no hyperv SYNC sample; a vmclock
    /// device bumps its disruption marker on the restore (QEMU's backend measures it; the sim has
    /// no marker to bump).
    SnapshotRestore {
        /// Seconds between saving and restoring, the host running on.
        gap_s: f64,
    },
    /// The guest oscillator's frequency changes (live migration to another host).
    FrequencyJump {
        /// Change of the frequency error.
        delta_ppm: f64,
    },
    /// The NTP server changes how it answers, or its own error (`[world.ntp_server]` needed).
    NtpServer {
        /// How it answers from now on; unchanged when left out.
        #[serde(default)]
        answer: Option<crate::NtpAnswer>,
        /// Its own error from now on; unchanged when left out.
        #[serde(default)]
        offset_s: Option<f64>,
    },
}

fn yes() -> bool {
    true
}
fn default_downtime_s() -> f64 {
    5.0
}

impl Disturbance {
    /// Checks the disturbance's own numbers; `key` names it in errors (`timeline.events[1]`).
    /// Bounds across a whole timeline (total of steps, frequency after every jump) are the
    /// caller's, which sees them all.
    pub fn validate(&self, key: &str) -> Result<(), crate::Error> {
        use crate::time::{check_positive, MAX_FREQ_ERROR_PPM, MAX_SCENARIO_S, MAX_STEP_S};
        match *self {
            Self::Pause { duration_s, .. } => {
                check_positive(&format!("{key}.duration_s"), duration_s, MAX_SCENARIO_S)
            }
            Self::SnapshotRestore { gap_s } => check_positive(&format!("{key}.gap_s"), gap_s, MAX_SCENARIO_S),
            // A reboot takes time: at least the guest's boot, at most an hour here.
            Self::Reboot { downtime_s } => check_positive(&format!("{key}.downtime_s"), downtime_s, 3600.0),
            Self::HostStep { delta_s } | Self::GuestStep { delta_s } => {
                if delta_s.is_finite() && delta_s != 0.0 && delta_s.abs() <= MAX_STEP_S {
                    Ok(())
                } else {
                    Err(crate::Error::invalid(
                        format!("{key}.delta_s"),
                        format!("must be nonzero and within +-{MAX_STEP_S}, got {delta_s}"),
                    ))
                }
            }
            Self::FrequencyJump { delta_ppm } => {
                if delta_ppm.is_finite() && delta_ppm != 0.0 && delta_ppm.abs() <= MAX_FREQ_ERROR_PPM {
                    Ok(())
                } else {
                    Err(crate::Error::invalid(
                        format!("{key}.delta_ppm"),
                        format!("must be nonzero and within +-{MAX_FREQ_ERROR_PPM}, got {delta_ppm}"),
                    ))
                }
            }
            Self::SamplesStop | Self::SamplesResume => Ok(()),
            Self::NtpServer { answer, offset_s } => {
                if answer.is_none() && offset_s.is_none() {
                    return Err(crate::Error::invalid(
                        key,
                        "ntp_server changes nothing: give answer or offset_s",
                    ));
                }
                match offset_s {
                    Some(o) => crate::time::check_range(
                        &format!("{key}.offset_s"),
                        o,
                        -crate::time::MAX_ABS_S,
                        crate::time::MAX_ABS_S,
                    ),
                    None => Ok(()),
                }
            }
        }
    }

    /// The step of host or guest time, seconds, for the timeline's total.
    pub fn step_s(&self) -> f64 {
        match *self {
            Self::HostStep { delta_s } | Self::GuestStep { delta_s } => delta_s,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_would_wrap_or_run_backwards() {
        let bad = [
            Disturbance::Pause { duration_s: 1e12, sync_on_resume: true },
            Disturbance::Pause { duration_s: f64::INFINITY, sync_on_resume: true },
            Disturbance::Pause { duration_s: -5.0, sync_on_resume: true },
            Disturbance::Pause { duration_s: f64::NAN, sync_on_resume: true },
            Disturbance::Reboot { downtime_s: -1.0 },
            Disturbance::Reboot { downtime_s: 0.0 },
            Disturbance::HostStep { delta_s: f64::NAN },
            Disturbance::GuestStep { delta_s: 1e12 },
            Disturbance::FrequencyJump { delta_ppm: -2e6 },
            Disturbance::SnapshotRestore { gap_s: 0.0 },
            Disturbance::SnapshotRestore { gap_s: f64::NAN },
        ];
        for d in bad {
            let e = d.validate("timeline.events[0]").unwrap_err().to_string();
            assert!(e.contains("timeline.events[0]."), "{d:?}: {e}");
        }
        Disturbance::Pause { duration_s: 30.0, sync_on_resume: false }.validate("e").unwrap();
        Disturbance::GuestStep { delta_s: -2.0 * 365.0 * 86_400.0 }.validate("e").unwrap();
    }
}
