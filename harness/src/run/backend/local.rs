//! The local backend: a scenario observed on the machine itself (an Azure or KVM VM), against
//! its real PHC (`/dev/ptp_hyperv`, `/dev/ptp0`) in wall-clock time, with the daemon it runs.
//! The only disturbance a guest can cause itself is a step of its own clock (`guest_step`, as
//! `date` set back), and only with `--allow-clock-writes`; the clock is stepped back to the PHC
//! afterwards if the daemon has not done so. Everything else is refused with the reason.
//!
//! The machine's daemons are not the harness's, so their logs are not read: a step of the clock
//! (chronyd's makestep, hv_utils' SYNC) is seen as a change of CLOCK_REALTIME less
//! CLOCK_MONOTONIC between two observations, which a slew never makes, and reported as a step by
//! `clock` (whoever set it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mock_phc::{Disturbance, Event};
use phc::{Access, Phc, SysClock};

use crate::model::observation::Observation;
use crate::model::scenario::Scenario;
use crate::run::engine::Backend;

/// Why the local backend could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No PHC to observe.
    #[error(
        "no PTP clock on this machine (/sys/class/ptp has none); --backend local needs one, or --device PATH"
    )]
    NoDevice,
    /// The device could not be opened or read.
    #[error("{}: {source}", path.display())]
    Device {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: phc::Error,
    },
    /// Stepping the clock failed.
    #[error("stepping CLOCK_REALTIME: {0}")]
    Step(#[source] phc::Error),
    /// SIGINT or SIGTERM.
    #[error("interrupted by {0}")]
    Interrupted(nix::sys::signal::Signal),
}

/// The PHC a local run observes: `device`, else `/dev/ptp_hyperv`, else the first in sysfs.
pub fn find_device(device: Option<&Path>) -> Result<PathBuf, LocalError> {
    if let Some(d) = device {
        return Ok(d.to_owned());
    }
    let hv = Path::new("/dev/ptp_hyperv");
    if hv.exists() {
        return Ok(hv.to_owned());
    }
    let found = phc::sysfs::discover(&phc::Roots::default()).unwrap_or_default();
    found.into_iter().map(|i| i.path).next().ok_or(LocalError::NoDevice)
}

/// Why a scenario cannot run locally, or `None` when it can.
pub fn unsupported(s: &Scenario, allow_clock_writes: bool) -> Option<String> {
    for e in &s.timeline.events {
        let why = match e.disturbance {
            Disturbance::GuestStep { .. } if allow_clock_writes => continue,
            Disturbance::GuestStep { .. } => {
                "guest_step sets this machine's clock: needs --allow-clock-writes"
            }
            Disturbance::Pause { .. } | Disturbance::Reboot { .. } => {
                "pause/reboot: a guest cannot pause or reboot itself and observe it"
            }
            Disturbance::HostStep { .. } | Disturbance::SamplesStop | Disturbance::SamplesResume => {
                "host_step/samples: only the host (hypervisor) can do that"
            }
            Disturbance::FrequencyJump { .. } => "frequency_jump: the oscillator is the hardware's",
            Disturbance::SnapshotRestore { .. } => {
                "snapshot_restore: only the host can save and restore a VM"
            }
            Disturbance::NtpServer { .. } => {
                "ntp_server: the scenario's NTP server runs in the sim or the QEMU guest"
            }
        };
        return Some(why.to_owned());
    }
    None
}

/// A scenario on this machine's PHC.
pub struct LocalBackend {
    phc: Phc,
    path: PathBuf,
    start: Instant,
    stepped_ns: i64,
    allow_clock_writes: bool,
    /// CLOCK_REALTIME less CLOCK_MONOTONIC at the last look: it moves only when the clock is set.
    wall_less_mono_ns: i64,
    events: Vec<Event>,
}

/// A change of CLOCK_REALTIME less CLOCK_MONOTONIC above this is a step (the two reads sit within
/// a microsecond of each other; a slew moves both clocks alike).
const STEP_SEEN_NS: i64 = 10_000;

/// CLOCK_REALTIME less CLOCK_MONOTONIC (0 where a clock cannot be read).
fn wall_less_mono_ns() -> i64 {
    phc::device::clock_difference_ns(libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC).unwrap_or(0)
}

impl LocalBackend {
    /// Opens the PHC (read-only: only CLOCK_REALTIME is ever written) and starts the clock.
    pub fn open(path: &Path, allow_clock_writes: bool) -> Result<Self, LocalError> {
        let phc = Phc::open_expecting(path, Access::ReadOnly, &phc::Expect::ptp())
            .map_err(|source| LocalError::Device { path: path.to_owned(), source })?;
        Ok(Self {
            phc,
            path: path.to_owned(),
            start: Instant::now(),
            stepped_ns: 0,
            allow_clock_writes,
            wall_less_mono_ns: wall_less_mono_ns(),
            events: Vec::new(),
        })
    }

    /// Guest minus PHC now (linuxptp's rule: the reading with the shortest window of 5).
    fn offset_ns(&self) -> Result<i64, phc::Error> {
        let samples =
            self.phc.sys_offset_extended(5, SysClock::Realtime).or_else(|_| self.phc.sys_offset(5))?;
        phc::estimate::linuxptp(&samples).map(|e| e.offset_ns).ok_or(phc::Error::InvalidArgument)
    }

    /// After the run: where the scenario stepped the clock and it is still more than 1 ms off
    /// the PHC, steps it back onto the PHC. Gives the step made, if any.
    pub fn restore(&mut self) -> Result<Option<i64>, LocalError> {
        if self.stepped_ns == 0 {
            return Ok(None);
        }
        let off =
            self.offset_ns().map_err(|source| LocalError::Device { path: self.path.clone(), source })?;
        if off.abs() <= 1_000_000 {
            return Ok(None);
        }
        phc::device::clock_step_ns(libc::CLOCK_REALTIME, -off).map_err(LocalError::Step)?;
        Ok(Some(-off))
    }
}

impl Backend for LocalBackend {
    type Error = LocalError;

    fn name(&self) -> &'static str {
        "local"
    }

    fn advance_to(&mut self, t_ns: i64) -> Result<(), LocalError> {
        let due = self.start + Duration::from_nanos(u64::try_from(t_ns).unwrap_or(0));
        loop {
            if let Some(sig) = phc_qemu::signals::pending() {
                return Err(LocalError::Interrupted(sig));
            }
            let now = Instant::now();
            if now >= due {
                return Ok(());
            }
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
        }
    }

    fn disturb(&mut self, d: &Disturbance) -> Result<Option<f64>, LocalError> {
        match d {
            Disturbance::GuestStep { delta_s } if self.allow_clock_writes => {
                // A loaded scenario keeps steps within 10 years: far inside i64 nanoseconds.
                let ns = mock_phc::time::secs_to_ns(*delta_s).unwrap_or(0);
                self.look_for_steps();
                phc::device::clock_step_ns(libc::CLOCK_REALTIME, ns).map_err(LocalError::Step)?;
                self.stepped_ns += ns;
                // The scenario's own step is the disturbance, not a correction.
                self.wall_less_mono_ns = wall_less_mono_ns();
                Ok(None)
            }
            // `unsupported` refused the scenario before it started.
            _ => Ok(None),
        }
    }

    fn observe(&mut self) -> Result<Observation, LocalError> {
        self.look_for_steps();
        let t_s = self.start.elapsed().as_secs_f64();
        Ok(match self.offset_ns() {
            Ok(v) => Observation { t_s, guest_offset_ns: Some(v), phc_offset_ns: None, phc_error: None },
            Err(e) => Observation {
                t_s,
                guest_offset_ns: None,
                phc_offset_ns: None,
                phc_error: Some(e.code().to_owned()),
            },
        })
    }

    fn drain_events(&mut self) -> Result<Vec<Event>, LocalError> {
        self.look_for_steps();
        Ok(std::mem::take(&mut self.events))
    }
}

impl LocalBackend {
    /// A step of the clock since the last look, by whoever made it, as an event now.
    fn look_for_steps(&mut self) {
        let now = wall_less_mono_ns();
        let delta_ns = now - self.wall_less_mono_ns;
        if delta_ns.abs() > STEP_SEEN_NS {
            let t_ns = i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX);
            self.events.push(Event { t_ns, source: "clock", kind: mock_phc::EventKind::Step { delta_ns } });
            self.wall_less_mono_ns = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_guest_step_runs_and_only_with_writes() {
        let s = crate::run::runner::builtin("date-back-2-years").unwrap().unwrap();
        assert!(unsupported(&s, false).unwrap().contains("--allow-clock-writes"));
        assert_eq!(unsupported(&s, true), None);
        let p = crate::run::runner::builtin("azure-pause-30s").unwrap().unwrap();
        assert!(unsupported(&p, true).unwrap().contains("cannot pause"));
    }
}
