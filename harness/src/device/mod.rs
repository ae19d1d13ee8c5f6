//! The device commands (`list`, `probe`, `latency`) on any `/dev/ptpN` or CUSE PHC, as a library
//! the CLI calls: their plain options, exit codes and the one-line error every access failure
//! becomes.
//!
//! Exit codes: 0 success; 1 the check found deviations; 2 usage or access error (missing path,
//! not a PTP device, no permission, device gone mid-run), reported as one line on stderr:
//! `phc-harness: /dev/null: not a PTP device (character device 1:3, class mem)`.
//!
//! No ioctl goes to a node before `phc` has checked that sysfs files it under class `ptp`; with
//! `--driver` the user names it a CUSE mock, and class `cuse` is accepted too.

pub mod latency;
pub mod latency_report;
pub mod latency_text;
pub mod list;
pub mod probe;
pub mod probe_out;
pub mod sampler;
pub mod vmclock;

use std::fmt;
use std::path::{Path, PathBuf};

use phc::{Access, Driver, Expect, Phc};

/// Output format of a device command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable tables.
    #[default]
    Text,
    /// One JSON document on stdout (keys in harness/JSON.md).
    Json,
}

/// Output format of `probe`: the device formats, plus the CI ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeFormat {
    /// Human-readable table.
    #[default]
    Text,
    /// One JSON document on stdout (keys in harness/JSON.md).
    Json,
    /// KTAP v1 as kselftest prints it: one test per check.
    Ktap,
    /// JUnit XML: one testcase per check.
    Junit,
}

impl ProbeFormat {
    /// The device format this is, or `None` for a CI format.
    pub fn device(self) -> Option<Format> {
        match self {
            Self::Text => Some(Format::Text),
            Self::Json => Some(Format::Json),
            Self::Ktap | Self::Junit => None,
        }
    }
}

/// What `probe` is asked: the options of the command, without where it runs.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// The PHC to probe; `None` for the simulated personality of `driver`.
    pub device: Option<PathBuf>,
    /// Also issue the write methods (opens the device read-write).
    pub allow_clock_writes: bool,
    /// Judge against this driver's row instead of the one sysfs `clock_name` names (and accept a
    /// CUSE mock, which has no ptp sysfs entry).
    pub driver: Option<Driver>,
    /// Output format.
    pub format: ProbeFormat,
}

/// What `latency` is asked.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// The PHC to measure; `None` for the simulated personality of `driver`.
    pub device: Option<PathBuf>,
    /// Samples per method (and for the baseline), at most `latency::MAX_SAMPLES`.
    pub samples: u32,
    /// Which read method to time.
    pub method: latency::MethodArg,
    /// The system clock EXTENDED pairs the PHC with.
    pub clock: latency::ClockArg,
    /// Readings per SYS_OFFSET / EXTENDED call (1..=25).
    pub n_per_call: u32,
    /// The driver of a CUSE mock (names it in the report, and accepts class cuse).
    pub driver: Option<Driver>,
    /// Output format.
    pub format: Format,
}

impl ProbeOptions {
    /// The device as given, or `sim` for the simulated backend.
    pub fn device(&self) -> &Path {
        device_or_sim(self.device.as_deref())
    }
}

impl LatencyOptions {
    /// The device as given, or `sim` for the simulated backend.
    pub fn device(&self) -> &Path {
        device_or_sim(self.device.as_deref())
    }
}

fn device_or_sim(p: Option<&Path>) -> &Path {
    p.unwrap_or(Path::new("sim"))
}

pub use crate::format::exit::Exit;

/// An access error on a device: printed as the one line `phc-harness: DEVICE: CAUSE`.
#[derive(Debug)]
pub struct DeviceError {
    /// The path as given.
    pub device: PathBuf,
    /// What happened, with context where the cause alone is not enough.
    pub context: Option<String>,
    /// The cause.
    pub error: phc::Error,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phc-harness: {}: ", self.device.display())?;
        if let Some(c) = &self.context {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.error)
    }
}

impl DeviceError {
    /// Prints the line and gives exit 2.
    pub fn report(&self) -> Exit {
        say!("{self}");
        Exit::Usage
    }
}

/// What a command may open: a kernel PHC, or also a CUSE mock where the user named its driver.
pub fn expect(driver: Option<Driver>) -> Expect {
    if driver.is_some() {
        Expect::cuse()
    } else {
        Expect::ptp()
    }
}

/// Opens a device for a command, mapping every failure to its one-line error.
pub fn open(path: &Path, access: Access, expect: &Expect) -> Result<Phc, DeviceError> {
    Phc::open_expecting(path, access, expect).map_err(|error| DeviceError {
        device: path.to_owned(),
        context: None,
        error,
    })
}

/// Writes a report to stdout (see `crate::format::output`).
fn emit(s: &str) {
    crate::format::output::out(s);
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serialising plain data structs with string keys cannot fail.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// The DEVICE argument where the backend needs one: a one-line usage error when it is missing.
pub fn require_device(device: Option<&Path>) -> Result<&Path, Exit> {
    device.ok_or_else(|| {
        say!("phc-harness: DEVICE is required (or --backend sim --driver D for a simulated personality)");
        Exit::Usage
    })
}

/// The `--driver` that `--backend sim` needs, and no DEVICE.
pub fn sim_driver(driver: Option<Driver>, device: Option<&Path>) -> Result<Driver, Exit> {
    if let Some(d) = device {
        say!("phc-harness: {}: --backend sim takes no DEVICE (it simulates --driver)", d.display());
        return Err(Exit::Usage);
    }
    driver.ok_or_else(|| {
        say!("phc-harness: --backend sim needs --driver (hyperv, kvm, vmclock, mock, nic)");
        Exit::Usage
    })
}

/// `phc-harness probe --backend sim --driver D`: the probe against mock-phc's personality of D,
/// answering in this process.
pub fn probe_sim(args: &ProbeOptions) -> Exit {
    let driver = match sim_driver(args.driver, args.device.as_deref()) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let dev = mock_phc::answer::simulated(driver, args.allow_clock_writes);
    let read_only = mock_phc::answer::simulated(driver, false);
    let setup = probe::Setup {
        device: format!("sim:{}", driver.name()),
        driver,
        clock_name: Some(driver.implements().clock_name.to_owned()),
        allow_writes: args.allow_clock_writes,
    };
    finish_probe(probe::run(&dev, &read_only, &setup), args)
}

/// `phc-harness probe` on this machine.
pub fn probe_cmd(args: &ProbeOptions) -> Exit {
    if let Err(e) = require_device(args.device.as_deref()) {
        return e;
    }
    // A vmclock page is no PHC: it has its own report (device/vmclock.rs).
    if phc::vmclock::is_vmclock_path(args.device()) {
        let Some(format) = args.format.device() else {
            say!(
                "phc-harness: {}: a vmclock page has no conformance checks: --format text or json",
                args.device().display()
            );
            return Exit::Usage;
        };
        return vmclock::probe_cmd(args.device(), format);
    }
    let info = phc::sysfs::info_for_path(&phc::Roots::default(), args.device());
    let access = probe::access_for(args.allow_clock_writes);
    let expect = expect(args.driver);
    let dev = match open(args.device(), access, &expect) {
        Ok(d) => d,
        Err(e) => return e.report(),
    };
    let driver = match (args.driver, &info) {
        (Some(d), _) => d,
        (None, Some(i)) => i.driver,
        (None, None) => {
            say!(
                "phc-harness: {}: no sysfs entry to tell the driver from; pass --driver",
                args.device().display()
            );
            return Exit::Usage;
        }
    };
    let read_only = if access == Access::ReadOnly {
        None
    } else {
        match open(args.device(), Access::ReadOnly, &expect) {
            Ok(d) => Some(d),
            Err(e) => return e.report(),
        }
    };
    let setup = probe::Setup {
        device: args.device().display().to_string(),
        driver,
        clock_name: info.map(|i| i.clock_name),
        allow_writes: args.allow_clock_writes,
    };
    finish_probe(probe::run(&dev, read_only.as_ref().unwrap_or(&dev), &setup), args)
}

fn finish_probe(report: Result<probe::Report, phc::Error>, args: &ProbeOptions) -> Exit {
    let report = match report {
        Ok(r) => r,
        Err(error) => return DeviceError { device: args.device().to_owned(), context: None, error }.report(),
    };
    match args.format {
        ProbeFormat::Text => emit(&probe::render_text(&report)),
        ProbeFormat::Json => emit(&to_json(&report)),
        ProbeFormat::Ktap => emit(&crate::device::probe_out::ktap(&report)),
        ProbeFormat::Junit => emit(&crate::device::probe_out::junit(&report)),
    }
    if report.deviations == 0 {
        Exit::Ok
    } else {
        Exit::CheckFailed
    }
}
