//! The `phc-harness` command line. Exit codes: 0 success, 1 a check failed (deviation, failed
//! verdict), 2 usage or access error (bad argument, missing device, no permission).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use phc_harness::{agent, device, runcmd};

/// Test harness for PTP hardware clocks in virtual machines.
#[derive(Parser)]
#[command(name = "phc-harness", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every PHC on this machine with its driver and capabilities.
    List(device::ListArgs),
    /// Check one PHC against what its kernel driver should do.
    Probe(device::ProbeArgs),
    /// Measure the latency of every way to read a PHC, as distributions.
    Latency(device::LatencyArgs),
    /// Run scenarios and write reports (text, Markdown, JSON, SVG).
    Run(runcmd::RunArgs),
    /// List the built-in scenarios (or those of a folder).
    Scenarios(runcmd::ScenariosArgs),
    /// Serve the host inside a QEMU guest (started by the guest's init).
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    /// Print which acceleration a QEMU guest gets here (kvm, or tcg with the reason), and how
    /// that was decided; `--refresh` runs the trial guest again.
    #[command(hide = true)]
    Accel(phc_harness::guestcmd::AccelCheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List(a) => device::list(a),
        Cmd::Probe(a) => device::probe(a),
        Cmd::Latency(a) => device::latency(a),
        Cmd::Run(a) => runcmd::run(a),
        Cmd::Scenarios(a) => runcmd::list(a),
        Cmd::Agent(a) => agent::run(a),
        Cmd::Accel(a) => phc_harness::guestcmd::accel_check(a),
    }
}
