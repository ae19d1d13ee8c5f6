//! Arguments several commands share: where a device command runs, and the QEMU acceleration.

use std::path::PathBuf;

use std::time::Duration;

use phc_qemu::Accel;

use crate::run::backend::local;
use crate::run::backend::qemu::{find_agent_bin, ClockMode, GuestPhc, HostClock, HypervOptions, QemuOptions};
use crate::run::batch::Backend;
use crate::run::kernel::KernelDir;

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
    /// The QEMU backend's options.
    #[command(flatten)]
    pub qemu: QemuArgs,
}

/// The QEMU backend's options: one set for `run`, `suite`, `probe` and `latency` (the scenario
/// commands add `--clock`; device commands run in real time).
#[derive(Debug, Clone, clap::Args)]
pub struct QemuArgs {
    /// QEMU backend: the static harness binary for the guest (default: PHC_AGENT_BIN, or what
    /// ci/build-agent.sh builds).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// QEMU backend: acceleration.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// QEMU backend: the guest's PHC, the one the daemon reads (default: `hyperv` for a scenario
    /// whose `world.phc.personality` is hyperv, else `igb`). `hyperv` is the kernel's own
    /// hv_utils.ko on the VMBus shim with the harness as the Hyper-V host (DEVICE
    /// /dev/ptp_hyperv; also implied by that path); `hyperv-mock` is mock-phc's CUSE device fed
    /// host samples like hv_utils; `ptp-kvm` reads host time itself (KVM, nested inside a TCG
    /// guest where KVM does not run guests here; DEVICE /dev/ptp0).
    #[arg(long, value_enum)]
    pub phc: Option<GuestPhc>,
    /// QEMU backend, `--phc hyperv`: the TimeSync versions the harness as the Hyper-V host
    /// offers hv_utils: `4` (4.0, 3.0, 1.0: samples carry the host's reference time) or `3`
    /// (3.0, 1.0: an older host).
    #[arg(long, value_enum, default_value_t = HypervOptions::V4)]
    pub timesync_version: HypervOptions,
    /// QEMU backend: the guest kernel line (ci/setup-vm.sh caches both): `6.12` (Debian
    /// bookworm) or `7.2` (trixie-backports, with QEMU's vmclock device and ptp_vmclock, so
    /// /dev/vmclock0 can be probed).
    #[arg(long, default_value_t = phc_qemu::KernelLine::V6_12)]
    pub kernel_line: phc_qemu::KernelLine,
    /// QEMU backend, virtual time or nested ptp_kvm: boot the guest rather than restore it from
    /// the boot snapshot cache (a guest booted to agent-ready once per QEMU, kernel, image and
    /// machine options, kept in PHC_CACHE/boot-snapshots; the report's `boot_snapshot` says which
    /// happened).
    #[arg(long)]
    pub no_snapshot: bool,
    /// QEMU backend, virtual time: the clock the guest keeps host time on. `igb` is QEMU's igb
    /// NIC clock, a kernel PHC whose time under icount is QEMU's virtual clock; `agent` is the
    /// guest agent's own clock on CLOCK_MONOTONIC_RAW, which under icount follows the same
    /// virtual clock (for kernels built without igb, such as Debian's cloud flavour: the daemon
    /// then reads a hyperv clock); `auto` takes igb where the kernel has it.
    #[arg(long, value_enum, default_value_t = HostClock::Auto)]
    pub host_clock: HostClock,
    /// QEMU backend: longest wait from starting QEMU to the guest agent's first answer.
    #[arg(long, default_value_t = 120.0, value_parser = boot_timeout_s)]
    pub boot_timeout_s: f64,
    /// QEMU backend: the guest kernel.
    #[command(flatten)]
    pub kernel: KernelArgs,
}

impl QemuArgs {
    /// The QEMU backend's options for a guest in `clock`, and the user's kernel unpacked for it
    /// (keep it alive while the guest runs). Every error is one line for the user.
    pub fn options(&self, clock: ClockMode) -> Result<(QemuOptions, Option<KernelDir>), String> {
        let kernel = self.kernel.prepare().map_err(|e| e.to_string())?;
        let agent_bin = find_agent_bin(self.agent_bin.clone()).map_err(|e| e.to_string())?;
        let opts = QemuOptions {
            agent_bin,
            accel: self.accel.choice(),
            boot_timeout: Duration::from_secs_f64(self.boot_timeout_s),
            phc: self.phc,
            clock,
            kernel_line: self.kernel_line,
            kernel_dir: kernel.as_ref().map(|k| k.path.clone()),
            hyperv: self.timesync_version,
            snapshot: !self.no_snapshot,
            host_clock: self.host_clock,
        };
        Ok((opts, kernel))
    }
}

/// clap's `ValueEnum` for a plain enum of the library (which has no clap): its variants, and
/// for each its name, aliases and help.
macro_rules! value_enum {
    ($t:ty { $($v:expr => $name:literal $([$($alias:literal),*])? : $help:literal),* $(,)? }) => {
        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($v),*]
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                $(if *self == $v {
                    return Some(clap::builder::PossibleValue::new($name)$($(.alias($alias))*)?.help($help));
                })*
                None
            }
        }
    };
}
pub(crate) use value_enum;

value_enum!(GuestPhc {
    GuestPhc::Igb => "igb": "QEMU's igb NIC clock (/dev/ptp0): a real kernel PHC driver",
    GuestPhc::Hyperv => "hyperv": "the kernel's own hv_utils.ko (/dev/ptp_hyperv) on the VMBus shim, the harness as the Hyper-V host (needs ci/build-shim.sh for the kernel)",
    GuestPhc::HypervMock => "hyperv-mock": "mock-phc's CUSE device with the hyperv personality (/dev/ptp_hyperv), fed host samples the way hv_utils is",
    GuestPhc::PtpKvm => "ptp-kvm": "KVM's ptp_kvm, reading host time by hypercall (needs KVM)",
});
value_enum!(HypervOptions {
    HypervOptions::V4 => "4": "offer TimeSync 4.0, 3.0 and 1.0 (a current Hyper-V host)",
    HypervOptions::V3 => "3": "offer TimeSync 3.0 and 1.0 (an older host: no reference time in samples)",
});
value_enum!(HostClock {
    HostClock::Auto => "auto": "igb where the kernel has it, else the agent's clock",
    HostClock::Igb => "igb": "QEMU's igb NIC clock (/dev/ptp0), whose time under icount is QEMU's virtual clock",
    HostClock::Agent => "agent": "the guest agent's clock on CLOCK_MONOTONIC_RAW, which under icount follows QEMU's virtual clock (kernels without igb)",
});
value_enum!(ClockMode {
    ClockMode::Virtual => "virtual": "QEMU's virtual clock (TCG, icount, sleep=off): faster than real time, offsets measured in the guest against the igb PHC, which is the host clock",
    ClockMode::Real => "real": "Wall-clock time, host time fed to the guest by the harness's provider (the cross-check)",
});

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
    /// QEMU backend, with --kernel-deb or --kernel: that kernel's own Debian headers package
    /// (linux-headers-RELEASE_VERSION_amd64.deb; repeat the flag to add its -common,
    /// linux-kbuild and linux-source packages, else they come from Debian's archive). The VMBus
    /// shim is built against them (ci/build-shim.sh, as root), so that `--phc hyperv` tests this
    /// kernel's own hv_utils.ko; a kernel whose shim cannot be built is refused with the reason.
    #[arg(long, value_name = "FILE.deb")]
    pub kernel_headers: Vec<PathBuf>,
}

impl KernelArgs {
    /// The kernel folder to boot, or `None` for the cached one. Keep the value alive while the
    /// guest runs: a prepared folder is temporary.
    pub fn prepare(&self) -> Result<Option<crate::run::kernel::KernelDir>, crate::run::kernel::KernelError> {
        use crate::run::kernel;
        let dir = match (&self.kernel, &self.modules, &self.kernel_deb) {
            (Some(k), Some(m), None) => kernel::from_parts_for_shim(k, m, !self.kernel_headers.is_empty())?,
            (None, None, Some(d)) => kernel::from_deb(d)?,
            _ if !self.kernel_headers.is_empty() => {
                return Err(kernel::KernelError::Invalid {
                    path: self.kernel_headers[0].clone(),
                    message: "--kernel-headers needs the kernel it belongs to (--kernel-deb, or --kernel with --modules)"
                        .into(),
                })
            }
            _ => return Ok(None),
        };
        if !self.kernel_headers.is_empty() {
            kernel::build_shim(&dir, &self.kernel_headers)?;
        }
        Ok(Some(dir))
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

/// A backend named on the command line (`--backend sim,qemu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// mock-phc's world in virtual time.
    Sim,
    /// A real Linux guest under QEMU with the real daemons.
    Qemu,
    /// This machine's own PHC (/dev/ptp_hyperv, /dev/ptpN) and daemon, in wall-clock time.
    Local,
}

/// The local backend's options (`run` and `suite`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LocalArgs {
    /// Local backend: the PHC to observe (default /dev/ptp_hyperv, else the first in sysfs).
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// Local backend: let `guest_step` scenarios step this machine's clock (it is stepped back
    /// onto the PHC afterwards if the daemon has not done so).
    #[arg(long)]
    pub allow_clock_writes: bool,
}

/// Every scenario backend's options, as `run` and `suite` take them.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Backends to run on, in order; `sim,qemu` runs both and compares them (fidelity).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sim")]
    pub backend: Vec<BackendArg>,
    /// QEMU backend: the guest's time. `virtual` (TCG, icount with sleep=off) runs faster than
    /// real time and measures offsets inside the guest against the igb PHC, which is the host
    /// clock; `real` runs in wall-clock time with the harness feeding host time (the cross-check,
    /// and the only choice with KVM or `--phc ptp-kvm`). Default: virtual, except real for
    /// `--phc ptp-kvm` and, with `run`, for a scenario that needs real time (a snapshot
    /// restore); the choice is said on stderr. Given, it is kept (and what it cannot run is not
    /// run).
    #[arg(long, value_enum)]
    pub clock: Option<ClockMode>,
    /// The QEMU backend's options.
    #[command(flatten)]
    pub qemu: QemuArgs,
    /// The local backend's options.
    #[command(flatten)]
    pub local: LocalArgs,
}

impl BackendArgs {
    /// The backends asked for, each with what it needs, checked now: a repeated backend, a
    /// missing agent binary, a kernel that is no kernel or a device that cannot be opened is
    /// one line before anything runs, not a batch of aborted runs. `observe_s` shortens the
    /// guest's window. Keep the returned kernel folder alive while the backends run.
    /// `per_scenario_clock` (`run`, where every scenario was asked for by name): without
    /// `--clock`, a scenario that needs real time gets it (`Backend::clock_for`).
    pub fn backends(
        &self,
        observe_s: Option<f64>,
        per_scenario_clock: bool,
    ) -> Result<(Vec<Backend>, Option<KernelDir>), String> {
        no_repeats("--backend", &self.backend)?;
        let mut kernel = None;
        let mut out = Vec::new();
        for b in &self.backend {
            out.push(match b {
                BackendArg::Sim => Backend::Sim,
                BackendArg::Qemu => {
                    let clock = self.clock_for_phc();
                    let (opts, k) = self.qemu.options(clock)?;
                    kernel = k;
                    // A Ctrl-C (or `timeout`'s SIGTERM) then ends a guest's run through the
                    // normal path: an aborted report, QEMU killed, temp files removed.
                    crate::run::backend::qemu::prepare_process();
                    Backend::Qemu { opts, observe_s, auto_clock: per_scenario_clock && self.clock.is_none() }
                }
                BackendArg::Local => {
                    if let Err(e) = phc_qemu::signals::install() {
                        say!("phc-harness: cannot handle SIGINT/SIGTERM: {e}");
                    }
                    let writes = self.local.allow_clock_writes;
                    let device = local::find_device(self.local.device.as_deref())
                        .and_then(|d| local::LocalBackend::open(&d, writes).map(|_| d))
                        .map_err(|e| format!("--backend local: {e}"))?;
                    Backend::Local { device, allow_clock_writes: writes }
                }
            });
        }
        Ok((out, kernel))
    }

    /// The QEMU backend's clock: `--clock` as given; without it real time for `--phc ptp-kvm`
    /// (which only runs there, and says so), else virtual time.
    fn clock_for_phc(&self) -> ClockMode {
        match self.clock {
            Some(c) => c,
            None if self.qemu.phc == Some(GuestPhc::PtpKvm) => {
                say!("phc-harness: note: --phc ptp-kvm runs in real time: using --clock real");
                ClockMode::Real
            }
            None => ClockMode::Virtual,
        }
    }
}
