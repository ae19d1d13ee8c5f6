//! `list`, `probe` and `latency`: on this machine through the device library, or inside a QEMU
//! guest (`--backend qemu`) through `guest`.

use std::path::{Path, PathBuf};

use phc::Driver;

use super::args::{value_enum, DeviceBackend, GuestArgs};
use super::guest;
use crate::device::latency::{ClockArg, MethodArg};
use crate::device::{self, Format, LatencyOptions, ProbeFormat, ProbeOptions};
use crate::format::exit::Exit;

value_enum!(Format {
    Format::Text => "text": "Human-readable tables",
    Format::Json => "json": "One JSON document on stdout (keys in harness/JSON.md)",
});
value_enum!(ProbeFormat {
    ProbeFormat::Text => "text": "Human-readable table",
    ProbeFormat::Json => "json": "One JSON document on stdout (keys in harness/JSON.md)",
    ProbeFormat::Ktap => "ktap": "KTAP v1 as kselftest prints it: one test per check",
    ProbeFormat::Junit => "junit": "JUnit XML: one testcase per check",
});
value_enum!(MethodArg {
    MethodArg::Basic => "basic": "PTP_SYS_OFFSET",
    MethodArg::Extended => "extended": "PTP_SYS_OFFSET_EXTENDED, once per --clock",
    MethodArg::Precise => "precise": "PTP_SYS_OFFSET_PRECISE",
    MethodArg::Gettime => "gettime": "clock_gettime on the dynamic POSIX clock",
    MethodArg::All => "all": "Every method",
});
value_enum!(ClockArg {
    ClockArg::Realtime => "realtime": "CLOCK_REALTIME",
    ClockArg::Monotonic => "monotonic": "CLOCK_MONOTONIC",
    ClockArg::MonotonicRaw => "monotonic_raw" ["monotonic-raw"]: "CLOCK_MONOTONIC_RAW",
    ClockArg::All => "all": "All three",
});

fn parse_driver(s: &str) -> Result<Driver, String> {
    s.parse()
}

/// `phc-harness list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `phc-harness probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The PHC to probe (/dev/ptpN, a udev symlink such as /dev/ptp_hyperv, or a CUSE device).
    /// Not needed with `--backend sim`, which probes the simulated `--driver` personality.
    pub device: Option<PathBuf>,
    /// Also issue the write methods (settime to the current time, adjfine to the current
    /// frequency, a 0 ns step). Opens the device read-write.
    #[arg(long)]
    pub allow_clock_writes: bool,
    /// Judge against this driver's row instead of the one sysfs `clock_name` names. Needed for a
    /// CUSE mock, which has no ptp sysfs entry: passing it lets a character device of class cuse
    /// be opened.
    #[arg(long, value_parser = parse_driver)]
    pub driver: Option<Driver>,
    /// Output format: `ktap` and `junit` give one test per check, for CI and test labs.
    #[arg(long, value_enum, default_value_t = ProbeFormat::Text)]
    pub format: ProbeFormat,
    /// Where to run.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// `phc-harness latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// The PHC to measure. Not needed with `--backend sim`, which times the simulated `--driver`
    /// personality.
    pub device: Option<PathBuf>,
    /// Samples per method (and for the baseline), at most 1000000. A method's samples are held
    /// while it runs, 24 bytes each (round trip, window, a sorted copy): at most 24 MB.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(device::latency::MAX_SAMPLES)))]
    pub samples: u32,
    /// Which read method to time.
    #[arg(long, value_enum, default_value_t = device::latency::MethodArg::All)]
    pub method: device::latency::MethodArg,
    /// The system clock EXTENDED pairs the PHC with; `all` times EXTENDED once per clock.
    #[arg(long, value_enum, default_value_t = device::latency::ClockArg::All)]
    pub clock: device::latency::ClockArg,
    /// Readings per SYS_OFFSET / EXTENDED call (1..=25).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=25))]
    pub n_per_call: u32,
    /// The driver of a CUSE mock, which has no ptp sysfs entry: passing it lets a character device
    /// of class cuse be opened, and names the driver in the report.
    #[arg(long, value_parser = parse_driver)]
    pub driver: Option<Driver>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Where to run.
    #[command(flatten)]
    pub guest: GuestArgs,
}

impl ProbeArgs {
    /// The device as given, or `sim` for the simulated backend.
    pub fn device(&self) -> &Path {
        self.device.as_deref().unwrap_or(Path::new("sim"))
    }

    fn options(&self) -> ProbeOptions {
        ProbeOptions {
            device: self.device.clone(),
            allow_clock_writes: self.allow_clock_writes,
            driver: self.driver,
            format: self.format,
        }
    }
}

impl LatencyArgs {
    /// The device as given, or `sim` for the simulated backend.
    pub fn device(&self) -> &Path {
        self.device.as_deref().unwrap_or(Path::new("sim"))
    }

    fn options(&self) -> LatencyOptions {
        LatencyOptions {
            device: self.device.clone(),
            samples: self.samples,
            method: self.method,
            clock: self.clock,
            n_per_call: self.n_per_call,
            driver: self.driver,
            format: self.format,
        }
    }
}

/// `phc-harness list`.
pub fn list(args: ListArgs) -> Exit {
    device::list::run(&phc::Roots::default(), args.format)
}

/// `phc-harness probe`.
pub fn probe(args: ProbeArgs) -> Exit {
    match args.guest.backend {
        DeviceBackend::Qemu => {
            let out = match args.format {
                ProbeFormat::Text => guest::Output::Text,
                ProbeFormat::Json => guest::Output::Json,
                ProbeFormat::Ktap => guest::Output::Ktap,
                ProbeFormat::Junit => guest::Output::AsIs,
            };
            guest::run(&args.guest, &args.device().display().to_string(), out)
        }
        DeviceBackend::Sim => device::probe_sim(&args.options()),
        DeviceBackend::Local => device::probe_cmd(&args.options()),
    }
}

/// `phc-harness latency`.
pub fn latency(args: LatencyArgs) -> Exit {
    match args.guest.backend {
        DeviceBackend::Qemu => {
            let out = if args.format == Format::Json { guest::Output::Json } else { guest::Output::Text };
            guest::run(&args.guest, &args.device().display().to_string(), out)
        }
        DeviceBackend::Sim => device::latency::run_sim(&args.options()),
        DeviceBackend::Local => device::latency::run_cmd(&args.options()),
    }
}
