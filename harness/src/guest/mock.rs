//! The guest agent's side of mock-phc's CUSE server: starts `mock-phc serve`, waits for its
//! device node, and hands it host time samples on its stdin (`sample HOST_NS RAW_NS`), as the
//! Hyper-V host's VMICTimeSync hands them to hv_utils.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
