//! `list`, `probe` and `latency`: on this machine through the device library, or inside a QEMU
//! guest (`--backend qemu`) through `guest`.

use super::args::DeviceBackend;
use super::guest;
use crate::device::{self, Format, LatencyArgs, ListArgs, ProbeArgs, ProbeFormat};
use crate::exit::Exit;

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
        DeviceBackend::Sim => device::probe_sim(&args),
        DeviceBackend::Local => device::probe_cmd(&args),
    }
}

/// `phc-harness latency`.
pub fn latency(args: LatencyArgs) -> Exit {
    match args.guest.backend {
        DeviceBackend::Qemu => {
            let out = if args.format == Format::Json { guest::Output::Json } else { guest::Output::Text };
            guest::run(&args.guest, &args.device().display().to_string(), out)
        }
        DeviceBackend::Sim => device::latency::run_sim(&args),
        DeviceBackend::Local => device::latency::run_cmd(&args),
    }
}
