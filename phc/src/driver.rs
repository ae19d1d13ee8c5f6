//! Which kernel driver stands behind a PHC, guessed from its `clock_name`, and how that driver is
//! expected to answer each operation (REFERENCE.md's table), so probes can flag deviations.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

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

    /// How the driver should answer each operation.
    pub fn expected(self) -> Expected {
        use Support::{Either, No, Yes};
        match self {
            Self::Hyperv => Expected { extended: No, precise: No, gettime: Yes, adjust: No, settime: No },
            Self::Kvm => Expected { extended: No, precise: Yes, gettime: Yes, adjust: No, settime: No },
            Self::Vmclock => Expected { extended: Yes, precise: Yes, gettime: Yes, adjust: No, settime: No },
            Self::Mock => Expected { extended: No, precise: No, gettime: Yes, adjust: Yes, settime: Yes },
            // NICs differ: most have gettimex64 (EXTENDED), few have cross timestamps.
            Self::Nic => {
                Expected { extended: Either, precise: Either, gettime: Yes, adjust: Yes, settime: Yes }
            }
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
