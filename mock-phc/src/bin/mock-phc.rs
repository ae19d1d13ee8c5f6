//! `mock-phc serve`: a PHC personality as a real character device through CUSE.
//!
//! Control on stdin, one line each: `sample HOST_NS [MONO_RAW_NS]`, `rate PPB` (the reference counter's rate against
//! CLOCK_MONOTONIC_RAW) (a host time sample, applied
//! at the given CLOCK_MONOTONIC_RAW, default now), `stop`. End of input, SIGTERM and SIGINT stop
//! too. Prints `ready /dev/NAME` once the node exists. Exit codes: 0 stopped, 1 error, 2 usage.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use mock_phc::cuse::timing::steps;
use mock_phc::cuse::{check_name, ServeError, Server};
use mock_phc::live::{self, Clocks, HostSample, SystemClocks};
use nix::sys::signal::{SigSet, Signal};

/// How long the kernel gets to create /dev/NAME after the INIT reply.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "mock-phc", version, about = "Mock PTP hardware clocks for unmodified clients")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a personality as /dev/NAME through CUSE (needs root and the `cuse` module).
    ///
    /// Only `hyperv` is served live now (host samples in, hv_utils' answers out); kvm, vmclock
    /// and nic exist in the simulator only. Control lines on stdin: `sample HOST_NS [MONO_RAW_NS]`,
    /// `stop`. The device is no POSIX clock: clients can use its ioctls, not clock_gettime.
    Serve {
        /// The driver to behave as.
        #[arg(long, value_enum)]
        personality: Personality,
        /// Device name: the node is /dev/NAME.
        #[arg(long)]
        name: String,
        /// The CUSE channel device.
        #[arg(long, default_value = "/dev/cuse")]
        cuse: PathBuf,
        /// Threads reading requests (1..=16).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
        threads: u8,
        /// Record when each request is read and answered (first 200000) and print the median of
        /// each step of an ioctl at the end; meaningful with one client and --threads 1.
        #[arg(long)]
        timings: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Personality {
    /// Hyper-V's hv_utils clock (served live).
    Hyperv,
    /// KVM's ptp_kvm (simulator only).
    Kvm,
    /// ptp_vmclock (simulator only).
    Vmclock,
    /// A NIC clock (simulator only).
    Nic,
}

enum Event {
    Line(String),
    Eof,
    Signal(Signal),
    WorkerEnded(Result<(), ServeError>),
}

#[derive(Debug)]
enum Control {
    Sample(HostSample),
    Rate(i64),
    Stop,
    Nothing,
}

fn parse_line(line: &str, now_raw: impl FnOnce() -> i64) -> Result<Control, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let int = |w: &str| w.parse::<i64>().map_err(|_| format!("{w:?} is no integer (ns)"));
    match words.as_slice() {
        [] => Ok(Control::Nothing),
        ["stop"] => Ok(Control::Stop),
        ["sample", host] => {
            Ok(Control::Sample(HostSample { host_ns: int(host)?, monotonic_raw_ns: now_raw() }))
        }
        ["sample", host, raw] => {
            Ok(Control::Sample(HostSample { host_ns: int(host)?, monotonic_raw_ns: int(raw)? }))
        }
        ["rate", ppb] => {
            Ok(Control::Rate(ppb.parse::<i64>().map_err(|_| format!("{ppb:?} is no integer (ppb)"))?))
        }
        _ => Err(format!("unknown control line {line:?} (sample HOST_NS [MONO_RAW_NS] | rate PPB | stop)")),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("mock-phc: {msg}");
    ExitCode::from(1)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cmd::Serve { personality, name, cuse, threads, timings } = cli.cmd;
    if personality != Personality::Hyperv {
        eprintln!(
            "mock-phc: only the hyperv personality is served live; kvm, vmclock and nic are simulator-only"
        );
        return ExitCode::from(2);
    }
    if let Err(e) = check_name(&name) {
        eprintln!("mock-phc: {e}");
        return ExitCode::from(2);
    }
    serve(&name, &cuse, usize::from(threads), timings)
}

fn serve(name: &str, cuse: &Path, threads: usize, timings: bool) -> ExitCode {
    let node = Path::new("/dev").join(name);
    if node.exists() {
        return fail(format_args!("{} exists already (another server or a real device)", node.display()));
    }
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(cuse) {
        Ok(f) => Arc::new(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format_args!(
                "{}: no such device: load the CUSE module (modprobe cuse)",
                cuse.display()
            ))
        }
        Err(e) => return fail(format_args!("{}: {e}", cuse.display())),
    };
    // Blocked before any thread starts, so every thread inherits the mask and only the waiter
    // below takes them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        return fail(format_args!("blocking signals: {e}"));
    }
    let server = match Server::new(name, live::hyperv(SystemClocks)) {
        Ok(s) if timings => Arc::new(s.with_timings(200_000)),
        Ok(s) => Arc::new(s),
        Err(e) => return fail(e),
    };
    let (tx, rx) = mpsc::channel();
    for _ in 0..threads {
        let (server, file, tx) = (Arc::clone(&server), Arc::clone(&file), tx.clone());
        std::thread::spawn(move || {
            let r = server.serve(&*file);
            let _ = tx.send(Event::WorkerEnded(r));
        });
    }
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if stdin_tx.send(Event::Line(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = stdin_tx.send(Event::Eof);
    });
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            let _ = tx.send(Event::Signal(sig));
        }
    });

    let started = Instant::now();
    let mut ready = false;
    loop {
        if !ready && node.exists() {
            ready = true;
            println!("ready {}", node.display());
            let _ = std::io::stdout().flush();
            let v = server.stats.kernel_version.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "mock-phc: serving {} (kernel FUSE {}.{}, {threads} threads)",
                node.display(),
                v >> 32,
                v & 0xffff_ffff
            );
        }
        if !ready && started.elapsed() > NODE_TIMEOUT {
            return fail(format_args!(
                "{} did not appear within {NODE_TIMEOUT:?} of opening {}: see dmesg",
                node.display(),
                cuse.display()
            ));
        }
        let ev = if ready {
            match rx.recv() {
                Ok(ev) => ev,
                Err(_) => return fail("all threads ended"),
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(ev) => ev,
                Err(_) => continue,
            }
        };
        let reason = match ev {
            Event::Line(l) => match parse_line(&l, || SystemClocks.monotonic_raw_ns()) {
                Ok(Control::Sample(s)) => {
                    server.clock().apply(s);
                    continue;
                }
                Ok(Control::Rate(ppb)) => {
                    server.clock().set_rate_ppb(ppb);
                    continue;
                }
                Ok(Control::Nothing) => continue,
                Ok(Control::Stop) => "stop".to_owned(),
                Err(msg) => {
                    eprintln!("mock-phc: ignored: {msg}");
                    continue;
                }
            },
            Event::Eof => "end of input".to_owned(),
            Event::Signal(s) => format!("{s}"),
            Event::WorkerEnded(Ok(())) => return fail("the kernel closed the CUSE connection"),
            Event::WorkerEnded(Err(e)) => return fail(chain(&e)),
        };
        let st = &server.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "mock-phc: stopping ({reason}): {} opens, {} ioctls ({} retries), {} malformed, {} replies to gone callers",
            get(&st.opens),
            get(&st.ioctls),
            get(&st.retries),
            get(&st.malformed),
            get(&st.dropped_replies)
        );
        if timings {
            let s = steps(&server.timings());
            eprintln!(
                "mock-phc: step medians over {} ioctls (ns): first call {} (own work {}), retry turnaround {}, retried call {} (own work {}), between calls {}",
                s.ioctls, s.first_call, s.first_call_work, s.retry_turnaround, s.retried_call, s.retried_call_work, s.between_calls
            );
        }
        // Exiting closes /dev/cuse (in whatever thread holds it in a read): the kernel then
        // unregisters the device and devtmpfs removes the node.
        return ExitCode::SUCCESS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        let now = || 77;
        assert!(matches!(parse_line("stop", now), Ok(Control::Stop)));
        assert!(matches!(parse_line("  ", now), Ok(Control::Nothing)));
        match parse_line("sample 123", now) {
            Ok(Control::Sample(s)) => assert_eq!((s.host_ns, s.monotonic_raw_ns), (123, 77)),
            _ => panic!("sample"),
        }
        match parse_line("sample -5 9", now) {
            Ok(Control::Sample(s)) => assert_eq!((s.host_ns, s.monotonic_raw_ns), (-5, 9)),
            _ => panic!("sample with raw"),
        }
        assert!(parse_line("sample x", now).unwrap_err().contains("no integer"));
        assert!(parse_line("sample 1 2 3", now).is_err());
        assert!(parse_line("go", now).unwrap_err().contains("unknown control line"));
        assert!(matches!(parse_line("rate -12000", now), Ok(Control::Rate(-12000))));
        assert!(parse_line("rate 1.5", now).is_err());
    }
}
