//! `list`, `probe` and `latency`: on this machine through the device library, or inside a QEMU
//! guest (`--backend qemu`) through `guest`.

use super::args::DeviceBackend;
use super::guest;
use crate::device::{self, Format, LatencyArgs, ListArgs, ProbeArgs};
use crate::exit::Exit;

/// `phc-harness list`.
pub fn list(args: ListArgs) -> Exit {
    device::list::run(&phc::Roots::default(), args.format)
}

/// `phc-harness probe`.
pub fn probe(args: ProbeArgs) -> Exit {
    match args.guest.backend {
        DeviceBackend::Qemu => {
            guest::run(&args.guest, &args.device().display().to_string(), args.format == Format::Json)
        }
        DeviceBackend::Sim => device::probe_sim(&args),
        DeviceBackend::Local => device::probe_cmd(&args),
    }
}

/// `phc-harness latency`.
pub fn latency(args: LatencyArgs) -> Exit {
    match args.guest.backend {
        DeviceBackend::Qemu => {
            guest::run(&args.guest, &args.device().display().to_string(), args.format == Format::Json)
        }
        DeviceBackend::Sim => device::latency::run_sim(&args),
        DeviceBackend::Local => device::latency::run_cmd(&args),
    }
}
