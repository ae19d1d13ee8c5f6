//! Which kernel driver stands behind a PHC, guessed from its `clock_name`, and how that driver is
//! expected to answer each operation (REFERENCE.md's table), so probes can flag deviations.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::device::Caps;

/// The PHC drivers the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Hyper-V time sync (hv_utils), clock_name `hyperv`.
    Hyperv,
    /// KVM's `ptp_kvm`, clock_name `KVM virtual PTP`.
    Kvm,
    /// `ptp_vmclock`, clock_name `vmclock`.
    Vmclock,
    /// `ptp_mock` (netdevsim), clock_name `mock PHC` or similar.
    Mock,
    /// A NIC's clock (igb, e1000e, mlx5, ...): anything else.
    Nic,
}

impl Driver {
    /// Guesses the driver from sysfs `clock_name`.
    pub fn from_clock_name(name: &str) -> Self {
        let n = name.trim().to_ascii_lowercase();
        if n == "hyperv" {
            Self::Hyperv
        } else if n.contains("kvm") {
            Self::Kvm
        } else if n.contains("vmclock") {
            Self::Vmclock
        } else if n.contains("mock") {
            Self::Mock
        } else {
            Self::Nic
        }
    }

    /// The driver's name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hyperv => "hyperv",
            Self::Kvm => "kvm",
            Self::Vmclock => "vmclock",
            Self::Mock => "mock",
            Self::Nic => "nic",
        }
    }

    /// How the driver should answer each operation: what it implements ([`Driver::implements`]),
    /// except that NICs differ (most have gettimex64, few have cross timestamps), so a NIC may
    /// answer either way there.
    pub fn expected(self) -> Expected {
        use Support::{Either, No, Yes};
        let i = self.implements();
        let row = |works: bool| if works { Yes } else { No };
        let mut e = Expected {
            extended: row(i.gettimex),
            precise: row(i.crosststamp),
            gettime: Yes,
            adjust: row(i.adjust),
            settime: row(i.settime),
        };
        if self == Self::Nic {
            e.extended = Either;
            e.precise = Either;
        }
        e
    }
}

/// What a driver's `struct ptp_clock_info` provides, as its kernel source sets it up. This is
/// the one table: `probe` judges devices by the [`Expected`] row derived from it, and mock-phc's
/// personalities answer from it, so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Implements {
    /// The driver's `clock_name` (sysfs).
    pub clock_name: &'static str,
    /// What `PTP_CLOCK_GETCAPS` reports.
    pub caps: Caps,
    /// `gettimex64`: `PTP_SYS_OFFSET_EXTENDED` works.
    pub gettimex: bool,
    /// `getcrosststamp`: `PTP_SYS_OFFSET_PRECISE` works.
    pub crosststamp: bool,
    /// `adjfine`/`adjtime` work (frequency and offset steps).
    pub adjust: bool,
    /// `settime64` works.
    pub settime: bool,
}

/// A read request as ptp_chardev.c sees it before the driver does: what every personality
/// (the simulated world's PHC, the answerer behind `--backend sim` and the CUSE device) checks
/// through [`Implements::check_read`], so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRequest {
    /// `PTP_SYS_OFFSET` with `n_samples`.
    Basic {
        /// The requested count.
        n_samples: usize,
    },
    /// `PTP_SYS_OFFSET_EXTENDED` with `n_samples`.
    Extended {
        /// The requested count.
        n_samples: usize,
        /// The clock id is CLOCK_REALTIME, CLOCK_MONOTONIC or CLOCK_MONOTONIC_RAW.
        clock_ok: bool,
        /// The reserved words are zero.
        rsv_zero: bool,
    },
    /// `PTP_SYS_OFFSET_PRECISE`.
    Precise,
    /// `clock_gettime` on the dynamic POSIX clock.
    Gettime,
}

impl Implements {
    /// ptp_chardev.c's checks of a read, in its order: the driver must implement the method
    /// (`EOPNOTSUPP`, before user memory is touched), then the request must be well formed
    /// (`EINVAL`: more than `PTP_MAX_SAMPLES`, nonzero reserved words, another clock id). Only
    /// the upper bound of the count is checked: `n_samples` 0 is a valid request (a basic read
    /// then returns one system timestamp, an extended one nothing).
    pub fn check_read(&self, req: ReadRequest) -> Result<(), crate::Error> {
        use crate::uapi::PTP_MAX_SAMPLES;
        match req {
            ReadRequest::Basic { n_samples } if n_samples > PTP_MAX_SAMPLES => {
                Err(crate::Error::InvalidArgument)
            }
            ReadRequest::Extended { .. } if !self.gettimex => Err(crate::Error::NotSupported),
            ReadRequest::Extended { n_samples, clock_ok, rsv_zero }
                if n_samples > PTP_MAX_SAMPLES || !clock_ok || !rsv_zero =>
            {
                Err(crate::Error::InvalidArgument)
            }
            ReadRequest::Precise if !self.crosststamp => Err(crate::Error::NotSupported),
            _ => Ok(()),
        }
    }
}

fn caps(max_adj_ppb: i32, cross_timestamping: bool) -> Caps {
    Caps {
        max_adj_ppb,
        n_alarm: 0,
        n_ext_ts: 0,
        n_per_out: 0,
        pps: false,
        n_pins: 0,
        cross_timestamping,
        adjust_phase: false,
        max_phase_adj_ns: 0,
    }
}

impl Driver {
    /// What the driver implements (its `ptp_clock_info`). For [`Driver::Nic`] this is the NIC the
    /// harness meets under QEMU: igb's 82576 (drivers/net/ethernet/intel/igb/igb_ptp.c,
    /// `igb_ptp_init`: max_adj 999999881, gettimex64, no pins on the 82576, no cross timestamps).
    pub fn implements(self) -> Implements {
        match self {
            // drivers/hv/hv_util.c `ptp_hyperv_info`: gettime64 only; adjfine, adjtime, settime64
            // and enable answer EOPNOTSUPP; max_adj 0.
            Self::Hyperv => Implements {
                clock_name: "hyperv",
                caps: caps(0, false),
                gettimex: false,
                crosststamp: false,
                adjust: false,
                settime: false,
            },
            // drivers/ptp/ptp_kvm_common.c: gettime64 and getcrosststamp; the rest EOPNOTSUPP.
            Self::Kvm => Implements {
                clock_name: "KVM virtual PTP",
                caps: caps(0, true),
                gettimex: false,
                crosststamp: true,
                adjust: false,
                settime: false,
            },
            // drivers/ptp/ptp_vmclock.c: gettimex64 and getcrosststamp from the shared page.
            Self::Vmclock => Implements {
                clock_name: "vmclock",
                caps: caps(0, true),
                gettimex: true,
                crosststamp: true,
                adjust: false,
                settime: false,
            },
            // drivers/ptp/ptp_mock.c: adjfine, adjtime, gettime64, settime64; max_adj 32000000.
            Self::Mock => Implements {
                clock_name: "Mock-up PTP clock",
                caps: caps(32_000_000, false),
                gettimex: false,
                crosststamp: false,
                adjust: true,
                settime: true,
            },
            Self::Nic => Implements {
                clock_name: "igb",
                caps: caps(999_999_881, false),
                gettimex: true,
                crosststamp: false,
                adjust: true,
                settime: true,
            },
        }
    }
}

impl std::str::FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hyperv" => Ok(Self::Hyperv),
            "kvm" => Ok(Self::Kvm),
            "vmclock" => Ok(Self::Vmclock),
            "mock" => Ok(Self::Mock),
            "nic" => Ok(Self::Nic),
            _ => Err(format!("unknown driver {s:?} (hyperv, kvm, vmclock, mock, nic)")),
        }
    }
}

/// Whether an operation is expected to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Support {
    /// It must succeed.
    Yes,
    /// It must fail with EOPNOTSUPP.
    No,
    /// Either is a conforming answer.
    Either,
}

impl Support {
    /// Whether an observed outcome conforms.
    pub fn accepts(self, worked: bool) -> bool {
        match self {
            Self::Yes => worked,
            Self::No => !worked,
            Self::Either => true,
        }
    }
}

/// A driver's expected row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// `PTP_SYS_OFFSET_EXTENDED` (gettimex64).
    pub extended: Support,
    /// `PTP_SYS_OFFSET_PRECISE` (getcrosststamp).
    pub precise: Support,
    /// `clock_gettime` on the dynamic clock.
    pub gettime: Support,
    /// `clock_adjtime` frequency adjustment.
    pub adjust: Support,
    /// `clock_settime` and offset steps.
    pub settime: Support,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_names_of_real_drivers() {
        assert_eq!(Driver::from_clock_name("hyperv\n"), Driver::Hyperv);
        assert_eq!(Driver::from_clock_name("KVM virtual PTP"), Driver::Kvm);
        assert_eq!(Driver::from_clock_name("vmclock"), Driver::Vmclock);
        assert_eq!(Driver::from_clock_name("mock PHC"), Driver::Mock);
        assert_eq!(Driver::from_clock_name("igb"), Driver::Nic);
        assert_eq!(Driver::from_clock_name("e1000e"), Driver::Nic);
    }

    #[test]
    fn what_each_driver_implements_is_what_its_row_expects() {
        for d in [Driver::Hyperv, Driver::Kvm, Driver::Vmclock, Driver::Mock, Driver::Nic] {
            let (i, e) = (d.implements(), d.expected());
            assert!(e.extended.accepts(i.gettimex), "{d:?} extended");
            assert!(e.precise.accepts(i.crosststamp), "{d:?} precise");
            assert!(e.adjust.accepts(i.adjust), "{d:?} adjust");
            assert!(e.settime.accepts(i.settime), "{d:?} settime");
            assert_eq!(i.caps.cross_timestamping, i.crosststamp, "{d:?} caps");
            // Named drivers are recognised by their own clock_name.
            if d != Driver::Nic {
                assert_eq!(Driver::from_clock_name(i.clock_name), d);
            }
        }
    }

    #[test]
    fn rows_follow_the_reference_table() {
        assert_eq!(Driver::Hyperv.expected().precise, Support::No);
        assert_eq!(Driver::Kvm.expected().precise, Support::Yes);
        assert_eq!(Driver::Kvm.expected().extended, Support::No);
        assert_eq!(Driver::Vmclock.expected().extended, Support::Yes);
        assert_eq!(Driver::Mock.expected().adjust, Support::Yes);
        assert!(Support::Either.accepts(false) && Support::Either.accepts(true));
        assert!(!Support::No.accepts(true));
        for d in ["hyperv", "kvm", "vmclock", "mock", "nic"] {
            assert_eq!(d.parse::<Driver>().unwrap().name(), d);
        }
    }
}
