//! Arguments several commands share: where a device command runs, and the QEMU acceleration.

use std::path::PathBuf;

use phc_qemu::Accel;

/// Acceleration choices for the QEMU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    /// KVM when a KVM guest really runs here, else TCG.
    Auto,
    /// Software emulation.
    Tcg,
    /// Hardware virtualization.
    Kvm,
}

impl AccelArg {
    /// The acceleration to use, or `None` to detect it.
    pub fn choice(self) -> Option<Accel> {
        match self {
            Self::Auto => None,
            Self::Tcg => Some(Accel::Tcg),
            Self::Kvm => Some(Accel::Kvm),
        }
    }
}

/// Where a device command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceBackend {
    /// On this machine.
    #[default]
    Local,
    /// Inside a QEMU guest, on the guest's PHC (igb: /dev/ptp0).
    Qemu,
}

/// Options shared by the device commands for running in a guest.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Run here (`local`) or inside a QEMU guest (`qemu`; DEVICE is then a guest path, /dev/ptp0).
    #[arg(long, value_enum, default_value_t = DeviceBackend::Local)]
    pub backend: DeviceBackend,
    /// QEMU backend: the static harness binary for the guest (default: PHC_AGENT_BIN, or what
    /// ci/build-agent.sh builds).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// QEMU backend: acceleration.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// QEMU backend: the guest's PHC. `ptp-kvm` boots a guest with KVM's ptp_kvm (nested inside
    /// a TCG guest where KVM does not run guests here; DEVICE is then /dev/ptp0).
    #[arg(long, value_enum, default_value_t = super::run::GuestPhc::Igb)]
    pub phc: super::run::GuestPhc,
}
