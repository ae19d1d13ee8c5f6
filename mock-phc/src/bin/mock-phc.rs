//! `mock-phc serve`: a PHC personality as a real character device through CUSE.
//!
//! Control on stdin, one line each: `sample HOST_NS [MONO_RAW_NS]`, `rate PPB` (the reference counter's rate against
//! CLOCK_MONOTONIC_RAW) (a host time sample, applied
//! at the given CLOCK_MONOTONIC_RAW, default now), `stop`. End of input, SIGTERM and SIGINT stop
//! too. A control line is at most 4096 bytes: a longer one, or one that is not UTF-8, is reported
//! on stderr and skipped. `--cuse` must be the CUSE channel (character device 10:203), checked
//! before it is opened. Prints `ready /dev/NAME` once the node exists. Exit codes: 0 stopped, 1
//! error, 2 usage.

use std::io::{BufRead, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
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

/// Longest control line kept; a longer one is discarded up to its newline, and reported.
const MAX_LINE_BYTES: usize = 4096;

/// The CUSE channel's numbers: misc (10), `CUSE_MINOR` (203).
const CUSE_DEV: (u64, u64) = (10, 203);

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
    /// A line that was not kept (too long, not UTF-8): what to report.
    BadLine(String),
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

/// One control line as read, bounded.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// A line of at most the cap, without its newline.
    Line(String),
    /// A line longer than the cap (this many bytes, newline excluded): discarded unread.
    TooLong(u64),
    /// A line within the cap that is not UTF-8.
    NotUtf8,
}

/// Reads the next line of at most `max` bytes from `r`, holding no more than `max` bytes however
/// long the line is (a longer one is skipped up to its newline). `None` at end of input; a last
/// line without a newline counts as a line.
fn next_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<Input>> {
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let (take, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        total = total.saturating_add(take as u64);
        if total <= max as u64 {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf = Vec::new();
        }
        r.consume(take + usize::from(newline));
        if newline {
            break;
        }
    }
    if total > max as u64 {
        return Ok(Some(Input::TooLong(total)));
    }
    Ok(Some(String::from_utf8(buf).map_or(Input::NotUtf8, Input::Line)))
}

/// What an unkept line is reported as (one stderr line).
fn bad_line(input: &Input) -> Option<String> {
    match input {
        Input::Line(_) => None,
        Input::TooLong(n) => {
            Some(format!("a control line of {n} bytes (at most {MAX_LINE_BYTES}), discarded"))
        }
        Input::NotUtf8 => Some("a control line that is not UTF-8, skipped".to_owned()),
    }
}

/// Checks, before it is opened, that `--cuse` names the CUSE channel: a character device with
/// the numbers of `/dev/cuse` (misc 10:203). Else the one line saying what it is instead.
fn check_cuse(meta: &std::fs::Metadata) -> Result<(), String> {
    let t = meta.file_type();
    let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
    if !t.is_char_device() {
        let kind = if t.is_file() {
            "a regular file".to_owned()
        } else if t.is_dir() {
            "a directory".to_owned()
        } else if t.is_fifo() {
            "a FIFO".to_owned()
        } else if t.is_socket() {
            "a socket".to_owned()
        } else if t.is_block_device() {
            format!("block device {major}:{minor}")
        } else {
            "not a device".to_owned()
        };
        return Err(format!("not a character device ({kind}); the CUSE channel is /dev/cuse, misc 10:203"));
    }
    if (major, minor) != CUSE_DEV {
        return Err(format!(
            "character device {major}:{minor}, not the CUSE channel (/dev/cuse is misc 10:203)"
        ));
    }
    Ok(())
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
    match std::fs::metadata(&cuse) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format_args!(
                "{}: no such device: load the CUSE module (modprobe cuse)",
                cuse.display()
            ))
        }
        Err(e) => return fail(format_args!("{}: {e}", cuse.display())),
        Ok(meta) => {
            if let Err(why) = check_cuse(&meta) {
                eprintln!("mock-phc: {}: {why}", cuse.display());
                return ExitCode::from(2);
            }
        }
    }
    serve(&name, &cuse, usize::from(threads), timings)
}

fn serve(name: &str, cuse: &Path, threads: usize, timings: bool) -> ExitCode {
    let node = Path::new("/dev").join(name);
    if node.exists() {
        return fail(format_args!("{} exists already (another server or a real device)", node.display()));
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(cuse);
    let file = match opened {
        // Checked again on the descriptor: a node swapped in since `main` looked is refused.
        Ok(f) => match f.metadata().map_err(|e| e.to_string()).and_then(|m| check_cuse(&m)) {
            Ok(()) => Arc::new(f),
            Err(why) => return fail(format_args!("{}: {why}", cuse.display())),
        },
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
        let mut stdin = std::io::stdin().lock();
        while let Ok(Some(input)) = next_line(&mut stdin, MAX_LINE_BYTES) {
            let ev = match bad_line(&input) {
                Some(msg) => Event::BadLine(msg),
                None => match input {
                    Input::Line(l) => Event::Line(l),
                    _ => continue,
                },
            };
            if stdin_tx.send(ev).is_err() {
                return;
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
            Event::BadLine(msg) => {
                eprintln!("mock-phc: ignored: {msg}");
                continue;
            }
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

    /// Every input `next_line` yields until the end.
    fn all(bytes: &[u8]) -> Vec<Input> {
        let mut r = std::io::BufReader::with_capacity(7, bytes);
        std::iter::from_fn(|| next_line(&mut r, 16).unwrap()).collect()
    }

    #[test]
    fn lines_are_bounded_and_bad_ones_are_skipped_not_fatal() {
        use Input::*;
        let line = |s: &str| Line(s.to_owned());
        assert_eq!(all(b""), vec![]);
        assert_eq!(all(b"stop"), vec![line("stop")]);
        assert_eq!(all(b"a\n\nb\n"), vec![line("a"), line(""), line("b")]);
        // 16 bytes is the cap here: kept; 17 is discarded up to its newline, and what follows read.
        let sixteen = "x".repeat(16);
        let long = format!("{sixteen}\n{sixteen}y\nsample 5\n");
        assert_eq!(all(long.as_bytes()), vec![line(&sixteen), TooLong(17), line("sample 5")]);
        // Invalid UTF-8 is one skipped line, not the end of input.
        assert_eq!(all(b"\xff\xfe\nstop\n"), vec![NotUtf8, line("stop")]);
        assert!(bad_line(&NotUtf8).unwrap().contains("not UTF-8"));
        assert!(bad_line(&TooLong(17)).unwrap().contains("17 bytes"));
        assert_eq!(bad_line(&line("x")), None);
    }

    /// Endless bytes without a newline, then one: counted as they stream by, never held.
    struct Flood {
        left: u64,
        tail: &'static [u8],
    }

    impl std::io::Read for Flood {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.left > 0 {
                let n = out.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                out[..n].fill(b'x');
                self.left -= n as u64;
                return Ok(n);
            }
            let n = out.len().min(self.tail.len());
            out[..n].copy_from_slice(&self.tail[..n]);
            self.tail = &self.tail[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_gigabyte_line_is_discarded_in_bounded_memory() {
        let flood = Flood { left: 1 << 30, tail: b"\nstop\n" };
        let mut r = std::io::BufReader::with_capacity(1 << 16, flood);
        assert_eq!(next_line(&mut r, MAX_LINE_BYTES).unwrap(), Some(Input::TooLong(1 << 30)));
        assert_eq!(next_line(&mut r, MAX_LINE_BYTES).unwrap(), Some(Input::Line("stop".into())));
        assert_eq!(next_line(&mut r, MAX_LINE_BYTES).unwrap(), None);
    }

    #[test]
    fn only_the_cuse_channel_passes_the_cuse_check() {
        let t = std::env::temp_dir();
        let m = |p: &str| std::fs::metadata(p).unwrap();
        let e = check_cuse(&m("/dev/zero")).unwrap_err();
        assert_eq!(e, "character device 1:5, not the CUSE channel (/dev/cuse is misc 10:203)");
        let e = check_cuse(&std::fs::metadata(&t).unwrap()).unwrap_err();
        assert!(e.starts_with("not a character device (a directory)"), "{e}");
        if let Ok(meta) = std::fs::metadata("/dev/cuse") {
            assert_eq!(check_cuse(&meta), Ok(()));
        }
    }
}
