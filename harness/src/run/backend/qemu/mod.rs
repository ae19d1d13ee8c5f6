//! The QEMU backend: a real Linux guest with the real chronyd, in virtual time (`virt`) or wall-clock
//! time (`real`, `nested` over `wall`), every clock on one core (`guest`). This module holds what
//! all share: options, boot, what the guest cannot run, chronyd's configuration and log.

pub mod calibrate;
pub mod guest;
pub mod nested;
pub mod ntpclients;
pub mod phc2sys;
pub mod real;
pub mod restore;
pub mod virt;
pub mod wall;
pub mod wander;

pub use nested::NestedBackend;
pub use real::QemuBackend;
pub use virt::VirtualBackend;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mock_phc::{DisciplineConfig, Disturbance, Event, EventKind};
use phc_qemu::agent::{ExecResult, FrequencySet, Op, PhcOffsetRead, PhcStepped, RealtimeStepped};
use phc_qemu::image::ImageSpec;
use phc_qemu::session::{BootOptions, Session};
use phc_qemu::{signals, tmp, Accel, Error, GuestClock};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::chronylog::{self, Line};
use super::provider::Provider;
use crate::model::observation::Observation;
use crate::model::scenario::Scenario;
use crate::run::engine::Backend;

/// The guest's PHC: the igb NIC clock.
pub const GUEST_PHC: &str = "/dev/ptp0";
const CHRONY_LOG: &str = "/tmp/chronyd.log";
/// A regular sample re-sets the PHC only when it is off by more than this: QEMU's igb clock
/// keeps host time between pauses, and re-setting it every 5 s would only add transfer noise.
const RESET_THRESHOLD_NS: i64 = 1_000_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the guest.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The static harness binary to install as the guest agent.
    pub agent_bin: PathBuf,
    /// Acceleration; `None` takes this machine's decision (phc_qemu::accel: cached, or found by
    /// a trial guest).
    pub accel: Option<Accel>,
    /// Longest wait for boot to agent-ready.
    pub boot_timeout: Duration,
    /// The PHC the daemon reads; `None` takes the scenario's personality (hyperv: the kernel's
    /// own hv_utils on the VMBus shim, anything else: igb).
    pub phc: Option<GuestPhc>,
    /// Virtual or real time for scenarios (device commands always run in real time).
    pub clock: ClockMode,
    /// The guest kernel (`--kernel-line`): its cache folder, modules and devices.
    pub kernel_line: phc_qemu::KernelLine,
    /// The kernel to boot, in the image builder's layout (`crate::run::kernel`); `None` boots the
    /// cached Debian kernel.
    pub kernel_dir: Option<PathBuf>,
    /// The TimeSync versions the harness, as the Hyper-V host, offers the real hv_utils.
    pub hyperv: HypervOptions,
    /// Virtual time and nested ptp_kvm: start from the boot snapshot cache (`phc_qemu::bootsnap`)
    /// rather than a boot (`--no-snapshot` turns it off).
    pub snapshot: bool,
    /// Virtual time: the clock the guest keeps host time on (`--host-clock`).
    pub host_clock: HostClock,
}

/// The clock host time is kept on in a virtual-time guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostClock {
    /// igb where the kernel has it, else the agent's.
    #[default]
    Auto,
    /// QEMU's igb NIC clock ([`GUEST_PHC`]): a PHC whose time under icount is QEMU's virtual
    /// clock.
    Igb,
    /// The agent's own clock on the guest's CLOCK_MONOTONIC_RAW
    /// ([`phc_qemu::agent::AGENT_CLOCK`]), which under icount follows the same virtual clock:
    /// for kernels built without igb (Debian's cloud flavour).
    Agent,
}

/// Why a kernel without igb matters, for the refusals that need it.
pub const NO_IGB: &str = "the kernel has no igb driver (Debian's cloud flavour is built without it)";

/// Whether the kernel `opts` boots has igb; a kernel folder that is not there yet counts as one
/// that has (the boot says what is missing, with the set-up command).
pub fn kernel_has_igb(opts: &QemuOptions) -> bool {
    let dir = kernel_dir(opts);
    phc_qemu::image::release(&dir).is_err() || phc_qemu::image::has_driver(&dir, "igb")
}

/// Why the QEMU backend with `opts` cannot run `s` (its clock, PHC and host clock), or `None`:
/// [`unsupported`], then what the kernel's lack of igb (or `--host-clock agent`) rules out.
pub fn unsupported_with(s: &Scenario, opts: &QemuOptions) -> Option<String> {
    let phc = GuestPhc::for_scenario(opts.phc, s);
    if let Some(why) = unsupported(s, opts.clock, phc) {
        return Some(why);
    }
    if phc == GuestPhc::PtpKvm {
        return None;
    }
    if opts.clock == ClockMode::Real {
        if opts.host_clock == HostClock::Agent {
            return Some(
                "--host-clock agent is virtual time's host clock; real time feeds host time to igb".into(),
            );
        }
        if !kernel_has_igb(opts) {
            return Some(format!(
                "real time feeds host time to igb's PHC, and {NO_IGB} (use --clock virtual)"
            ));
        }
        return None;
    }
    let host = match host_clock_device(opts) {
        Ok(h) => h,
        Err(e) => return Some(e.to_string()),
    };
    let phc2sys = s.world.disciplines.iter().any(|d| matches!(d, DisciplineConfig::Phc2sys(_)));
    if host != GUEST_PHC && (Feed::for_phc(phc) == Feed::None || phc2sys) {
        let why = if opts.host_clock == HostClock::Agent { "--host-clock agent" } else { NO_IGB };
        return Some(format!(
            "its daemon reads igb's PHC, and host time is on the agent's clock here ({why}): run a hyperv \
             clock (--phc hyperv or hyperv-mock) with chronyd"
        ));
    }
    None
}

/// The `device` virtual time keeps host time on for `opts`: igb's PHC, or the agent's clock
/// where the kernel has no igb (or `--host-clock agent`); `--host-clock igb` on a kernel
/// without igb is refused.
pub fn host_clock_device(opts: &QemuOptions) -> Result<&'static str, Error> {
    let igb = kernel_has_igb(opts);
    match (opts.host_clock, igb) {
        (HostClock::Igb, false) => {
            Err(Error::Unsupported { what: "--host-clock igb".into(), why: NO_IGB.into() })
        }
        (HostClock::Igb | HostClock::Auto, true) => Ok(GUEST_PHC),
        (HostClock::Agent, _) | (HostClock::Auto, false) => Ok(phc_qemu::agent::AGENT_CLOCK),
    }
}

impl QemuOptions {
    /// The defaults with `agent_bin`: this machine's acceleration, 120 s to boot, the scenario's
    /// PHC, virtual time, the default kernel line.
    pub fn new(agent_bin: PathBuf) -> Self {
        Self {
            agent_bin,
            accel: None,
            boot_timeout: Duration::from_secs(120),
            phc: None,
            clock: ClockMode::Virtual,
            kernel_line: Default::default(),
            kernel_dir: None,
            hyperv: HypervOptions::default(),
            snapshot: true,
            host_clock: HostClock::Auto,
        }
    }
}

/// The PHC the guest's daemon reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestPhc {
    /// QEMU's igb NIC clock (/dev/ptp0): a real kernel PHC driver.
    Igb,
    /// The kernel's own hv_utils.ko (Azure's clock, `/dev/ptp_hyperv`) on the VMBus shim, the
    /// harness playing the Hyper-V host: TimeSync negotiation, a SAMPLE every 5 s, a SYNC at
    /// start and after a resume.
    Hyperv,
    /// mock-phc's CUSE device with the hyperv personality (/dev/ptp_hyperv), fed host samples
    /// the same way: a model of hv_utils, for kernels without the shim.
    HypervMock,
    /// KVM's ptp_kvm, reading host time by hypercall (needs KVM).
    PtpKvm,
}

impl GuestPhc {
    /// The PHC for a scenario: as asked, else the real hv_utils for a hyperv personality, else
    /// igb.
    pub fn for_scenario(asked: Option<GuestPhc>, s: &Scenario) -> GuestPhc {
        asked.unwrap_or(match s.world.phc {
            mock_phc::PhcConfig::Hyperv { .. } => GuestPhc::Hyperv,
            _ => GuestPhc::Igb,
        })
    }

    /// Whether the daemon reads a hyperv clock the harness feeds host samples (driver or mock).
    pub fn is_hyperv(self) -> bool {
        matches!(self, Self::Hyperv | Self::HypervMock)
    }
}

/// The host time service a hyperv clock gets its samples through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// None: the daemon reads igb (or ptp_kvm).
    None,
    /// mock-phc's CUSE server.
    Mock,
    /// The kernel's hv_utils through the VMBus shim.
    Driver,
}

impl Feed {
    /// The service for a PHC.
    pub fn for_phc(phc: GuestPhc) -> Self {
        match phc {
            GuestPhc::Hyperv => Self::Driver,
            GuestPhc::HypervMock => Self::Mock,
            GuestPhc::Igb | GuestPhc::PtpKvm => Self::None,
        }
    }

    /// Starts it in the guest (after boot and every reboot); the report's facts about it.
    pub fn start(self, g: &mut guest::GuestRun, hyperv: &HypervOptions, implicit: bool) -> Result<(), Error> {
        match self {
            Self::None => Ok(()),
            Self::Mock => {
                let op = Op::StartMock { personality: "hyperv".into(), name: MOCK_NAME.into() };
                g.call_within::<Value>(op, CALL_TIMEOUT + CALL_TIMEOUT)?;
                g.info.insert("guest_phc".into(), json!("mock-phc hyperv (CUSE)"));
                Ok(())
            }
            Self::Driver => {
                let op = Op::StartHyperv {
                    implicit,
                    ts_versions: hyperv.offer().to_vec(),
                    name: MOCK_NAME.into(),
                };
                let started: phc_qemu::agent::HypervStarted = g.call_within(op, CALL_TIMEOUT * 3)?;
                // What the daemon read, for the same-set-up rule of `compare`: the exact build.
                g.info.insert("guest_phc".into(), json!(started.driver));
                let mut info = hv_utils_info(&started);
                info["timesync_implicit"] = json!(implicit);
                info["kernel_log"] = json!(started.kernel_log);
                g.info.insert("hv_utils".into(), info);
                Ok(())
            }
        }
    }
}

/// What a report says of the kernel's hv_utils as it ran (`backend_info.hv_utils`).
pub fn hv_utils_info(started: &phc_qemu::agent::HypervStarted) -> Value {
    json!({
        "driver": started.driver,
        "shim": started.shim,
        "timesync_version": started.ts_version,
        "framework_version": started.fw_version,
        "ptp": started.ptp,
        "transport": HV_TRANSPORT,
    })
}

/// What the VMBus shim does not exercise, for every report of the real hv_utils.
pub const HV_TRANSPORT: &str = "VMBus emulated by the vmbus-shim module: messages handed to \
    hv_utils' channel callback directly (bottom halves off, as from the bus tasklet); VMBus ring \
    buffers, SynIC interrupts, channel offers and the Hyper-V TSC page are not exercised; the \
    reference counter runs on the guest's CLOCK_MONOTONIC_RAW at the host's rate";

/// The Hyper-V host's side of the TimeSync negotiation (`--timesync-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HypervOptions {
    /// Offer 4.0, 3.0 and 1.0 (a current host): hv_utils takes 4.0, whose samples carry the
    /// host's reference time.
    #[default]
    V4,
    /// Offer 3.0 and 1.0 (an older host): hv_utils takes 3.0 and reads the counter itself.
    V3,
}

impl HypervOptions {
    /// The versions offered, preferred first.
    pub fn offer(self) -> &'static [[u16; 2]] {
        match self {
            Self::V4 => &[[4, 0], [3, 0], [1, 0]],
            Self::V3 => &[[3, 0], [1, 0]],
        }
    }
}

/// The CUSE mock's node in the guest.
pub const MOCK_DEVICE: &str = "/dev/ptp_hyperv";
pub(crate) const MOCK_NAME: &str = "ptp_hyperv";

/// The time a scenario's guest runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// QEMU's virtual clock (TCG, icount, sleep=off): faster than real time, offsets measured in
    /// the guest against the igb PHC, which is the host clock.
    #[default]
    Virtual,
    /// Wall-clock time, host time fed to the guest by the harness's provider (the cross-check).
    Real,
}

impl ClockMode {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Virtual => "virtual",
            Self::Real => "real",
        }
    }
}

/// The guest agent binary: `--agent-bin`, else `PHC_AGENT_BIN`, else what ci/build-agent.sh builds
/// (under `CARGO_TARGET_DIR`, then `./target`), else the Debian package's copy
/// (`/usr/lib/phc-harness/phc-harness-guest`, with `mock-phc-guest` beside it).
pub fn find_agent_bin(explicit: Option<PathBuf>) -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = explicit
        .into_iter()
        .chain(std::env::var_os("PHC_AGENT_BIN").map(PathBuf::from))
        .chain(std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join(GUEST_REL)))
        .chain(std::iter::once(PathBuf::from("target").join(GUEST_REL)))
        .chain(std::iter::once(PathBuf::from(PACKAGED_AGENT)))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or(Error::AgentBinMissing { looked_at: candidates })
}

/// Where the Debian package (ci/build-deb.sh) installs the guest agent.
pub const PACKAGED_AGENT: &str = "/usr/lib/phc-harness/phc-harness-guest";

/// The stripped static copy ci/build-agent.sh leaves for guest images.
const GUEST_REL: &str = "x86_64-unknown-linux-gnu/release/phc-harness-guest";

/// Prepares this process for guests, once, before the first: SIGINT and SIGTERM end the run
/// through its normal path from now on (phc_qemu::signals: QEMU killed, temp files removed,
/// an aborted report), and what runs killed outright (SIGKILL, a crash: no destructors) left in
/// this user's private temp folder is removed, by the dead pid in its name, never a live run's
/// (and nothing outside that folder).
pub fn prepare_process() {
    if let Err(e) = signals::install() {
        eprintln!("phc-harness: cannot handle SIGINT/SIGTERM: {e}");
    }
    match tmp::sweep() {
        Ok(removed) => {
            for p in removed {
                eprintln!("phc-harness: removed {} (left by a run that died)", p.display());
            }
        }
        Err(e) => eprintln!("phc-harness: {}", phc_qemu::error::chain(&e)),
    }
}

/// Why a scenario can only run on QEMU in real time, or `None` when virtual time will do: a
/// snapshot restore starts a second QEMU, whose virtual clock the run cannot follow.
pub fn needs_real_time(s: &Scenario) -> Option<String> {
    s.timeline.events.iter().find_map(|e| match e.disturbance {
        Disturbance::SnapshotRestore { .. } => Some(
            "its snapshot_restore starts a second QEMU, whose virtual clock the run cannot follow".into(),
        ),
        _ => None,
    })
}

/// Why a scenario cannot run on QEMU with this PHC, or `None` when it can.
pub fn unsupported(s: &Scenario, clock: ClockMode, phc: GuestPhc) -> Option<String> {
    for d in &s.world.disciplines {
        match d {
            DisciplineConfig::Chrony(_) | DisciplineConfig::HvUtils(_) | DisciplineConfig::None => {}
            // The real phc2sys runs in virtual time (backend::qemu::phc2sys).
            DisciplineConfig::Phc2sys(_) if clock == ClockMode::Virtual => {}
            DisciplineConfig::Phc2sys(_) => {
                return Some("phc2sys: the real phc2sys runs with --clock virtual only".into())
            }
            DisciplineConfig::Ntpd(_) | DisciplineConfig::Timesyncd(_) => {
                let root = phc_qemu::image::cache_dir().join(phc_qemu::image::NTP_DAEMONS_DIR);
                if !root.join(phc_qemu::image::NTPD).is_file()
                    || !root.join(phc_qemu::image::TIMESYNCD).is_file()
                {
                    return Some(format!(
                        "ntpd and timesyncd for the guest are not unpacked in {} (run ci/setup-vm.sh)",
                        root.display()
                    ));
                }
            }
        }
        if d.needs_ntp_server() && clock != ClockMode::Virtual {
            return Some(
                "the scenario's NTP server runs with --clock virtual only (it serves the igb PHC as \
                 host time)"
                    .into(),
            );
        }
    }
    for e in &s.timeline.events {
        match e.disturbance {
            // In virtual time the PHC is the host clock: a frequency jump of the guest is one
            // of the PHC, the other way round, which adjfine makes.
            Disturbance::FrequencyJump { .. } if clock == ClockMode::Real => {
                return Some("frequency_jump: QEMU cannot change a running guest's oscillator in real time (use --clock virtual)".into())
            }
            Disturbance::SnapshotRestore { .. } if clock == ClockMode::Virtual => {
                return Some(
                    "snapshot_restore: the restore starts a second QEMU, whose virtual clock the run \
                     cannot follow (use --clock real)"
                        .into(),
                )
            }
            Disturbance::SamplesStop | Disturbance::SamplesResume if !phc.is_hyperv() => {
                return Some(
                    "samples_stop/resume: only a hyperv clock (--phc hyperv or hyperv-mock) goes stale \
                     without host samples"
                        .into(),
                )
            }
            _ => {}
        }
    }
    None
}

pub use phc_qemu::session::BootInfo;

/// Boots the guest for `opts` (phc_qemu's one boot path): `role` names it (`scenario`,
/// `device`); `clock` is QEMU's, with the RTC starting at `rtc_base_s` in virtual time.
pub fn boot(opts: &QemuOptions, role: &str, clock: GuestClock) -> Result<(Session, BootInfo), Error> {
    let mut spec = ImageSpec::for_line(&opts.agent_bin, opts.kernel_line);
    spec.kernel_dir = kernel_dir(opts);
    if !kernel_has_igb(opts) {
        // No igb PHC in this guest: host time lives on the agent's clock (virtual time), and
        // what needs igb says so before it boots.
        spec.modules.retain(|m| !phc_qemu::image::IGB_MODULES.contains(&m.as_str()));
    }
    if opts.phc == Some(GuestPhc::Hyperv) {
        shim_check(&spec.kernel_dir)?;
    }
    Session::start(&BootOptions {
        spec,
        accel: opts.accel,
        clock,
        role: role.into(),
        timeout: opts.boot_timeout,
        nested: opts.phc == Some(GuestPhc::PtpKvm),
        snapshot: opts.snapshot,
    })
}

/// The kernel folder a guest of `opts` boots.
pub fn kernel_dir(opts: &QemuOptions) -> PathBuf {
    opts.kernel_dir.clone().unwrap_or_else(|| opts.kernel_line.dir_in(&phc_qemu::image::cache_dir()))
}

/// That the kernel in `kernel_dir` has the VMBus shim the real hv_utils needs, or why not: for
/// the user's kernel (unpacked into the private temp folder) its headers are what is missing.
pub fn shim_check(kernel_dir: &std::path::Path) -> Result<(), Error> {
    if phc_qemu::image::vmbus_shim(kernel_dir).is_some() {
        return Ok(());
    }
    let release = phc_qemu::image::release(kernel_dir).unwrap_or_else(|_| "?".into());
    let users = phc_qemu::tmp::base().is_ok_and(|b| kernel_dir.starts_with(b));
    let why = if users {
        format!(
            "no VMBus shim is built for your kernel {release}: give its Debian headers with \
             --kernel-headers linux-headers-{release}_<version>_amd64.deb (the shim is built against \
             them, as root), or use --phc hyperv-mock, the CUSE model"
        )
    } else {
        format!(
            "no VMBus shim is built for the kernel {release} in {} (run `bash ci/build-shim.sh {}` as root, \
             or /usr/lib/phc-harness/build-shim.sh from the package: it builds the shim against the \
             kernel's Debian headers; or use --phc hyperv-mock, the CUSE model)",
            kernel_dir.display(),
            kernel_dir.display()
        )
    };
    Err(Error::Unsupported { what: "--phc hyperv (the kernel's own hv_utils)".into(), why })
}

/// The guest's PHC whose sysfs clock_name is `name`, as a device path.
pub fn find_phc_by_name(session: &mut Session, name: &str) -> Result<String, Error> {
    let script = "for d in /sys/class/ptp/*; do echo \"$(basename $d) $(cat $d/clock_name)\"; done";
    let r: ExecResult = session
        .call(
            Op::Exec { argv: vec!["sh".into(), "-c".into(), script.into()], timeout_s: 10.0 },
            Instant::now() + CALL_TIMEOUT,
        )?
        .answer("exec")?;
    r.stdout
        .lines()
        .find_map(|l| {
            l.split_once(' ').filter(|(_, n)| n.trim() == name).map(|(dev, _)| format!("/dev/{dev}"))
        })
        .ok_or_else(|| Error::NoSuchPhc { name: name.to_owned(), have: r.stdout.trim().to_owned() })
}

fn personality(s: &Scenario) -> &'static str {
    match s.world.phc {
        mock_phc::PhcConfig::Hyperv { .. } => "hyperv",
        mock_phc::PhcConfig::Kvm { .. } => "kvm",
        mock_phc::PhcConfig::Vmclock { .. } => "vmclock",
        mock_phc::PhcConfig::Nic { .. } => "nic",
    }
}

/// The host time-sync provider's interval: the scenario's hyperv `sample_interval_s`, else 5 s.
fn sample_interval_ns(s: &Scenario) -> i64 {
    match s.world.phc {
        mock_phc::PhcConfig::Hyperv { sample_interval_s, .. } => {
            mock_phc::time::secs_to_ns(sample_interval_s).unwrap_or(DEFAULT_SAMPLE_INTERVAL_NS)
        }
        _ => DEFAULT_SAMPLE_INTERVAL_NS,
    }
}

/// Hyper-V's VMICTimeSync interval, for a PHC with no sample interval of its own.
const DEFAULT_SAMPLE_INTERVAL_NS: i64 = 5_000_000_000;

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// chronyd's own view at the end of a run, `chronyc -n tracking` and `sources`, for the report;
/// `exec` runs a command in the guest.
pub(crate) fn chronyc_views(
    mut exec: impl FnMut(Op) -> Result<ExecResult, Error>,
    info: &mut BTreeMap<String, Value>,
) {
    for (key, what) in [("chronyc_tracking", "tracking"), ("chronyc_sources", "sources")] {
        let op = Op::Exec { argv: vec!["chronyc".into(), "-n".into(), what.into()], timeout_s: 10.0 };
        if let Ok(r) = exec(op) {
            info.insert(key.into(), json!(format!("{}{}", r.stdout, r.stderr)));
        }
    }
}

/// chronyd's log as events: lines are stamped with the scenario time they were first seen at.
#[derive(Debug, Default)]
pub(crate) struct ChronyLog {
    /// Every line seen, for the report.
    pub text: String,
}

impl ChronyLog {
    /// Records `lines` seen at scenario time `t_ns`, turning steps and notable lines into events.
    pub fn take(&mut self, t_ns: i64, lines: &[&str], events: &mut Vec<Event>) {
        for l in lines {
            self.text.push_str(l);
            self.text.push('\n');
            match chronylog::parse(l) {
                Line::Stepped { delta_ns } => {
                    events.push(Event { t_ns, source: "chrony", kind: EventKind::Step { delta_ns } })
                }
                Line::Note(n) => events.push(Event { t_ns, source: "chrony", kind: EventKind::Note(n) }),
                Line::Other => {}
            }
        }
    }
}
