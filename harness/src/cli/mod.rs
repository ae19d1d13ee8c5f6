//! The `phc-harness` command line, on top of the library: one module per command, each calling
//! library modules and never another command; `args` holds the arguments several share. Exit
//! codes come from one type, `crate::format::exit::Exit`: 0 success, 1 a check failed (deviation, failed
//! verdict, aborted run, disagreement), 2 usage or access error.

pub mod accel;
pub mod agent;
pub mod args;
pub mod baseline;
pub mod compare;
pub mod device;
pub mod guest;
pub mod merge;
pub mod ntp_serve;
pub mod plot;
pub mod relay;
pub mod run;
pub mod suite;

use clap::{Parser, Subcommand};

/// Test harness for PTP hardware clocks in virtual machines.
#[derive(Parser)]
#[command(name = "phc-harness", version, about, long_about = None)]
pub struct Cli {
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
    Run(run::RunArgs),
    /// List the built-in scenarios (or those of a folder).
    Scenarios(run::ScenariosArgs),
    /// Run every scenario of a folder: reports, summary.json, index.md/html, junit.xml, results.ktap.
    Suite(suite::SuiteArgs),
    /// Compare a run with the baselines: a Markdown table of what moved; exit 1 on a regression.
    /// With `--against OTHER`: two runs side by side (two kernel lines), exit 0 unless
    /// `--fail-on-change`.
    Compare(compare::CompareArgs),
    /// Promote a run to the baselines.
    Baseline(baseline::BaselineArgs),
    /// Join the folders of suite shards (`suite --shard I/N`) into one suite folder.
    Merge(merge::MergeArgs),
    /// Plot a latency run (latency --format json): a histogram per method and the CDFs, as SVG.
    Plot(plot::PlotArgs),
    /// Serve the host inside the harness's QEMU guest (started by the guest's init).
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    /// Print which acceleration a QEMU guest gets here (kvm, or tcg with the reason), and how
    /// that was decided; `--refresh` runs the trial guest again.
    #[command(hide = true)]
    Accel(accel::AccelCheckArgs),
    /// Join a virtio-serial port to a Unix socket (inside a nested run's L1 guest).
    #[command(hide = true)]
    Relay(relay::RelayArgs),
    /// Serve a PHC's time over NTP, scripted by a control file (inside the QEMU guest).
    #[command(hide = true)]
    NtpServe(ntp_serve::NtpServeArgs),
}

/// Parses the command line, runs the command, and gives its exit status (worsened to 2 when
/// stdout could not be written).
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error is its one first line (`error: invalid value ...`) and exit 2; help and
        // --version print as clap prints them.
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: invalid command line"));
            return std::process::ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let exit = match cli.cmd {
        Cmd::List(a) => device::list(a),
        Cmd::Probe(a) => device::probe(a),
        Cmd::Latency(a) => device::latency(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Scenarios(a) => run::list(a),
        Cmd::Suite(a) => suite::suite(a),
        Cmd::Compare(a) => compare::compare(a),
        Cmd::Baseline(a) => baseline::promote(a),
        Cmd::Merge(a) => merge::merge(a),
        Cmd::Plot(a) => plot::plot(a),
        Cmd::Agent(a) => agent::run(a),
        Cmd::Accel(a) => accel::run(a),
        Cmd::Relay(a) => relay::run(a),
        Cmd::NtpServe(a) => ntp_serve::run(a),
    };
    exit.max(crate::format::output::status()).into()
}
