//! The guest agent's side of mock-phc's CUSE server: starts `mock-phc serve`, waits for its
//! device node, and hands it host time samples on its stdin (`sample HOST_NS RAW_NS`), as the
//! Hyper-V host's VMICTimeSync hands them to hv_utils.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use phc::Phc;

/// Where the server's stderr goes in the guest.
pub const MOCK_LOG: &str = "/tmp/mock-phc.log";
/// Longest wait for the server's `ready` line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `mock-phc serve`; killed (which removes its node) when dropped.
#[derive(Debug)]
pub struct MockServer {
    child: Child,
    stdin: ChildStdin,
    /// The node it serves.
    pub device: String,
}

impl MockServer {
    /// Starts the server and waits until it says its node exists.
    pub fn start(personality: &str, name: &str) -> Result<Self, String> {
        let log = std::fs::File::create(MOCK_LOG).map_err(|e| format!("{MOCK_LOG}: {e}"))?;
        let mut child = Command::new("mock-phc")
            .args(["serve", "--personality", personality, "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("mock-phc: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("mock-phc: no stdio pipes".into());
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let want = format!("ready /dev/{name}");
        let fail = |mut child: Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(MOCK_LOG).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_owned();
            Err(format!(
                "mock-phc serve: {why}{}",
                if last.is_empty() { String::new() } else { format!(" ({last})") }
            ))
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.trim() == want => {
                Ok(Self { child, stdin, device: format!("/dev/{name}") })
            }
            Ok(Some(Ok(line))) => fail(child, format!("said {line:?}, not {want:?}")),
            Ok(_) => fail(child, "exited before its node was ready".into()),
            Err(_) => fail(child, format!("no node after {} s", READY_TIMEOUT.as_secs())),
        }
    }

    /// Hands the server a host sample: host time `host_ns` at CLOCK_MONOTONIC_RAW `raw_ns`, the
    /// host's clock running `rate_ppb` faster than CLOCK_MONOTONIC_RAW.
    pub fn sample(&mut self, host_ns: i64, raw_ns: i64, rate_ppb: i64) -> Result<(), String> {
        writeln!(self.stdin, "rate {rate_ppb}\nsample {host_ns} {raw_ns}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("mock-phc: {e}"))
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host time from a PHC that reads it (virtual time's igb), and the CLOCK_MONOTONIC_RAW instant
/// it belongs to: the shortest of 5 EXTENDED windows (see [`phc_and_raw`]).
pub fn reference_sample(phc: &Phc) -> phc::Result<(i64, i64)> {
    phc_and_raw(phc)
}

/// A PHC reading and the CLOCK_MONOTONIC_RAW instant it was taken at, from the shortest of 5
/// EXTENDED windows against CLOCK_MONOTONIC_RAW. A kernel before 6.12 takes only CLOCK_REALTIME
/// there (Debian bookworm's 6.1): the windows are then CLOCK_REALTIME's, carried over to
/// CLOCK_MONOTONIC_RAW by a (raw, realtime, raw) read right after, a microsecond or so later (a
/// slew of even 83333 ppm moves that by well under a nanosecond).
pub fn phc_and_raw(phc: &Phc) -> phc::Result<(i64, i64)> {
    let best = |samples: Vec<phc::estimate::Sample>| {
        samples.into_iter().min_by_key(|s| s.delay_ns()).ok_or(phc::Error::InvalidArgument)
    };
    match phc.sys_offset_extended(5, phc::SysClock::MonotonicRaw) {
        Ok(samples) => {
            let b = best(samples)?;
            Ok((b.phc_ns, b.phc_ns + b.offset_ns()))
        }
        Err(phc::Error::ClockIdRejected(_)) => {
            let b = best(phc.sys_offset_extended(5, phc::SysClock::Realtime)?)?;
            let realtime_at = b.phc_ns + b.offset_ns();
            let now = |c| phc::device::clock_now_ns(c);
            let raw0 = now(libc::CLOCK_MONOTONIC_RAW)?;
            let rt = now(libc::CLOCK_REALTIME)?;
            let raw1 = now(libc::CLOCK_MONOTONIC_RAW)?;
            let realtime_less_raw = rt - (raw0 + (raw1 - raw0) / 2);
            Ok((b.phc_ns, realtime_at - realtime_less_raw))
        }
        Err(e) => Err(e),
    }
}
