//! The guest-agent protocol: one JSON object per line over the virtio-serial port
//! `phc.agent`. The host sends `Request`s with an id; the agent (the harness binary, static, in
//! the guest) answers each with a `Response` carrying the same id.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Guest clocks read back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClocks {
    /// CLOCK_REALTIME.
    pub realtime_ns: i64,
    /// CLOCK_MONOTONIC_RAW.
    pub monotonic_raw_ns: i64,
}

/// What the host asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Liveness and version.
    Hello,
    /// Read the guest clocks.
    Clocks,
    /// Read a PHC against CLOCK_REALTIME: PHC minus realtime, best of `n` basic readings.
    PhcOffset {
        /// Device path.
        device: String,
    },
    /// Set a PHC to the given host time plus the time the message spent in flight (estimated by
    /// the host), as a time-sync provider does with a host sample.
    SetPhc {
        /// Device path.
        device: String,
        /// Host CLOCK_REALTIME when the sample was taken.
        host_ns: i64,
    },
    /// Step CLOCK_REALTIME by `delta_ns` (what hv_utils does on a SYNC sample).
    StepRealtime {
        /// Step.
        delta_ns: i64,
    },
    /// Set CLOCK_REALTIME to host time (hv_utils' do_settimeofday64 on SYNC).
    SetRealtime {
        /// Host CLOCK_REALTIME when the sample was taken.
        host_ns: i64,
    },
    /// Run a program and return its exit code and output (bounded).
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Seconds before it is killed.
        timeout_s: f64,
    },
    /// Start a background program (a daemon), output to `log`.
    Spawn {
        /// A name to stop it by.
        name: String,
        /// Program and arguments.
        argv: Vec<String>,
        /// File for stdout and stderr.
        log: String,
    },
    /// Stop a program started with `Spawn`.
    Kill {
        /// Its name.
        name: String,
    },
    /// Write a file.
    WriteFile {
        /// Path.
        path: String,
        /// Contents.
        contents: String,
    },
    /// Read a file (bounded).
    ReadFile {
        /// Path.
        path: String,
    },
}

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Matches the response.
    pub id: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// Result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<serde_json::Value>,
    /// Message on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    /// Guest clocks when the agent answered (every response carries them, so any exchange
    /// doubles as an offset measurement).
    pub clocks: GuestClocks,
}

/// Output of `Exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code (-1 when killed by a signal or the timeout).
    pub code: i32,
    /// Stdout, truncated.
    pub stdout: String,
    /// Stderr, truncated.
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_one_flat_object() {
        let r = Request { id: 7, op: Op::SetPhc { device: "/dev/ptp0".into(), host_ns: 5 } };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"id":7,"op":"set_phc","device":"/dev/ptp0","host_ns":5}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let h: Request = serde_json::from_str(r#"{"id":1,"op":"hello"}"#).unwrap();
        assert_eq!(h.op, Op::Hello);
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"format_disk"}"#).is_err());
    }
}
