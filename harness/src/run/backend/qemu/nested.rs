//! `--phc ptp-kvm` where this machine runs TCG: the guest is L2 under KVM nested in a TCG guest
//! (L1, the host), in wall-clock time (`wall`). It owns `L2`: no provider (ptp_kvm reads L1's
//! CLOCK_REALTIME by hypercall), offsets read in L2 against ptp_kvm, host steps made in L1.

use phc_qemu::accel;

use super::guest::{Guest, GuestRun};
use super::wall::{checked_ns, since, Host, Wall};
use super::*;

/// A scenario's nested guest.
pub type NestedBackend = Guest<Wall<L2>>;

/// L2 reading host time (L1's CLOCK_REALTIME) itself through ptp_kvm.
pub struct L2 {
    /// ptp_kvm in L2.
    phc_device: String,
    /// Uncertainties of the offset measurements (0 for a cross timestamp, else half the best
    /// PTP_SYS_OFFSET window).
    uncertainty_ns: Vec<i64>,
}

/// The `accel` a nested run reports.
pub const ACCEL_NAME: &str = "tcg-nested";

/// Whether `--phc ptp-kvm` runs nested here: the acceleration asked for, or decided for this
/// machine (cached), is TCG.
pub fn wanted(opts: &QemuOptions) -> Result<bool, Error> {
    if opts.phc != Some(GuestPhc::PtpKvm) || opts.clock != ClockMode::Real {
        return Ok(false);
    }
    Ok(match opts.accel {
        Some(a) => a == Accel::Tcg,
        None => accel::decide_here(false)?.accel == Accel::Tcg,
    })
}

impl NestedBackend {
    /// Boots L1 and L2, aligns L2's clock with ptp_kvm (a KVM guest boots with its host's time),
    /// starts the scenario's daemon in L2; scenario time starts when this returns.
    pub fn start(s: &Scenario, opts: &QemuOptions) -> Result<Self, Error> {
        if let Some(why) = unsupported(s, ClockMode::Real, GuestPhc::PtpKvm) {
            return Err(Error::Unsupported { what: s.name.clone(), why });
        }
        let (mut session, bi) = boot(opts, "scenario", GuestClock::Real)?;
        if !bi.nested {
            return Err(Error::Unsupported {
                what: "a nested ptp_kvm run".into(),
                why: format!("the guest booted directly under {}", bi.accel.name()),
            });
        }
        let dev = find_phc_by_name(&mut session, "KVM virtual PTP")?;
        let mut g = GuestRun::new(session, &bi, ACCEL_NAME, None);
        g.info.insert("nesting".into(), json!(NESTING));
        g.info.insert(
            "phc".into(),
            json!(format!(
                "ptp_kvm ({dev}) in L2, reading L1's CLOCK_REALTIME by hypercall; no provider; standing in for the scenario's {} clock",
                personality(s)
            )),
        );
        if s.world.disciplines.iter().any(|d| matches!(d, DisciplineConfig::HvUtils(_))) {
            g.info.insert(
                "hv_utils".into(),
                json!("not run: Hyper-V's, and ptp_kvm has no host samples for it"),
            );
        }
        g.daemons(s, &dev);
        let mut l2 = L2 { phc_device: dev, uncertainty_ns: Vec::new() };
        // L2's clock starts 50-900 ms off (ticks lost early in boot): set it from ptp_kvm once,
        // as a KVM guest's clock starts at its host's time.
        let (phc_minus_rt, _) = l2.phc_minus_realtime(&mut g)?;
        g.call::<Value>(Op::StepRealtime { delta_ns: phc_minus_rt })?;
        g.info.insert("l2_boot_offset_ns".into(), json!(-phc_minus_rt));
        let mut clock = Wall::new(l2);
        clock.prepare(&mut g)?;
        Ok(Guest { run: g, clock })
    }
}

impl L2 {
    /// ptp_kvm minus L2's CLOCK_REALTIME, and its uncertainty.
    fn phc_minus_realtime(&mut self, g: &mut GuestRun) -> Result<(i64, i64), Error> {
        let r: PhcOffsetRead = g.call(Op::PhcOffset { device: self.phc_device.clone() })?;
        Ok((r.phc_minus_realtime_ns, r.uncertainty_ns))
    }
}

impl Host for L2 {
    const L2: bool = true;
    const REBOOT_WAIT: Duration = Duration::from_secs(180);

    /// As a rebooted KVM guest: its clock from the RTC, nothing for the host to do.
    fn prepare(&mut self, _g: &mut GuestRun, _origin: Instant) -> Result<(), Error> {
        Ok(())
    }

    fn apply(
        &mut self,
        g: &mut GuestRun,
        origin: Instant,
        _running: bool,
        d: &Disturbance,
    ) -> Result<Option<f64>, Error> {
        match d {
            Disturbance::HostStep { delta_s } => {
                let delta_ns = checked_ns(*delta_s)?;
                let Some(n) = g.session.nested.as_mut() else {
                    return Err(Error::Unsupported { what: "host_step".into(), why: "not nested".into() });
                };
                n.l1_agent.call(Op::StepRealtime { delta_ns }, Instant::now() + CALL_TIMEOUT)?;
                g.note(
                    since(origin),
                    "world",
                    format!("host (L1) CLOCK_REALTIME stepped {delta_s:+} s; ptp_kvm reads it"),
                );
                Ok(None)
            }
            other => Err(Error::Unsupported {
                what: format!("{other:?}"),
                why: "a nested ptp_kvm run has no provider to stop and no oscillator to change".into(),
            }),
        }
    }

    fn look(&mut self, g: &mut GuestRun, t_s: f64) -> Result<Observation, Error> {
        match self.phc_minus_realtime(g) {
            Ok((phc_minus_rt, u)) => {
                self.uncertainty_ns.push(u);
                // The PHC is the host clock here: there is no separate PHC error to show.
                Ok(Observation {
                    t_s,
                    guest_offset_ns: Some(-phc_minus_rt),
                    phc_offset_ns: None,
                    phc_error: None,
                })
            }
            Err(Error::Guest(m)) => {
                Ok(Observation { t_s, guest_offset_ns: None, phc_offset_ns: None, phc_error: Some(m) })
            }
            Err(e) => Err(e),
        }
    }

    /// The measurement spread.
    fn info(&self, info: &mut BTreeMap<String, Value>) {
        if !self.uncertainty_ns.is_empty() {
            let mut u = self.uncertainty_ns.clone();
            u.sort_unstable();
            info.insert(
                "offset_uncertainty_ns".into(),
                json!({ "median": u[u.len() / 2], "max": u[u.len() - 1], "n": u.len() }),
            );
        }
    }
}

/// How the run is nested, for the report.
pub const NESTING: &str = "L2 (the guest: chronyd, agent, ptp_kvm) runs under KVM inside L1, a TCG guest \
    (-cpu max: AMD SVM with nested paging; kvm_amd) whose CLOCK_REALTIME is host time; L2's agent \
    and QMP are relayed through L1's virtio-serial ports";
