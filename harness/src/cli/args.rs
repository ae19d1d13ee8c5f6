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
    /// No device: mock-phc's personality of `--driver` answers in this process, from the same
    /// driver table `probe` judges real devices by.
    Sim,
}

/// Options shared by the device commands for running in a guest.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Run here (`local`), inside a QEMU guest (`qemu`; DEVICE is then a guest path, /dev/ptp0), or
    /// against a simulated personality (`sim`, needs `--driver`, no DEVICE).
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
    /// a TCG guest where KVM does not run guests here; DEVICE is then /dev/ptp0); `hyperv`
    /// starts mock-phc's CUSE device (DEVICE /dev/ptp_hyperv; also implied by that path).
    #[arg(long, value_enum)]
    pub phc: Option<crate::run::backend::qemu::GuestPhc>,
    /// QEMU backend: the guest kernel line, `6.12` or `7.2` (with QEMU's vmclock device, so
    /// /dev/vmclock0 can be probed).
    #[arg(long, default_value_t = phc_qemu::KernelLine::V6_12)]
    pub kernel_line: phc_qemu::KernelLine,
    /// QEMU backend: the guest kernel.
    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// The guest kernel of the QEMU backend: the user's own instead of the cached Debian one.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KernelArgs {
    /// QEMU backend: boot this kernel image (bzImage/vmlinuz) instead of the cached Debian one;
    /// needs --modules.
    #[arg(long, requires = "modules", conflicts_with = "kernel_deb")]
    pub kernel: Option<PathBuf>,
    /// QEMU backend: the modules of --kernel, the folder `lib/modules/<release>` (its name is the
    /// release; modules.dep is made when missing).
    #[arg(long, requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// QEMU backend: boot the kernel of this Debian linux-image package (unpacked and indexed
    /// with dpkg-deb and depmod).
    #[arg(long)]
    pub kernel_deb: Option<PathBuf>,
}

impl KernelArgs {
    /// The kernel folder to boot, or `None` for the cached one. Keep the value alive while the
    /// guest runs: a prepared folder is temporary.
    pub fn prepare(&self) -> Result<Option<crate::run::kernel::KernelDir>, crate::run::kernel::KernelError> {
        match (&self.kernel, &self.modules, &self.kernel_deb) {
            (Some(k), Some(m), None) => crate::run::kernel::from_parts(k, m).map(Some),
            (None, None, Some(d)) => crate::run::kernel::from_deb(d).map(Some),
            _ => Ok(None),
        }
    }
}

/// Refuses a value given twice in a comma-separated flag: `--backend sim,sim` would run and
/// report everything twice under one name.
pub fn no_repeats<T: clap::ValueEnum + PartialEq>(flag: &str, values: &[T]) -> Result<(), String> {
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            let name = v.to_possible_value().map_or_else(String::new, |p| p.get_name().to_owned());
            return Err(format!("{flag}: {name} is given twice"));
        }
    }
    Ok(())
}

/// A duration flag in seconds: a finite number, above 0 (or at least 0 where `zero_ok`) and at
/// most `max`. NaN, infinities, negatives and absurd values are a usage error (clap, exit 2).
fn seconds(s: &str, zero_ok: bool, max: f64) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if !v.is_finite() || !low_ok || v > max {
        let low = if zero_ok { "0 <=" } else { "0 <" };
        return Err(format!("{s:?} s: must be a finite number of seconds, {low} s <= {max}"));
    }
    Ok(v)
}

/// `--boot-timeout-s`: above 0, at most an hour.
pub fn boot_timeout_s(s: &str) -> Result<f64, String> {
    seconds(s, false, 3600.0)
}

/// `--warmup-s`: 0 or more, at most a scenario's longest (7 days).
pub fn warmup_s(s: &str) -> Result<f64, String> {
    seconds(s, true, mock_phc::time::MAX_SCENARIO_S)
}

/// `--observe-s`: above 0, at most a scenario's longest (7 days).
pub fn observe_s(s: &str) -> Result<f64, String> {
    seconds(s, false, mock_phc::time::MAX_SCENARIO_S)
}
