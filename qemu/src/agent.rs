//! The guest-agent protocol: one JSON object per line over the virtio-serial port
//! `phc.agent`. The host sends `Request`s with an id; the agent (the harness binary, static, in
//! the guest) answers each with a `Response` carrying the same id.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// The shortest span `Op::HostSample`'s `rate_since` measures a rate over (5 s: one host sample
/// interval; in virtual time a reading is good to a few ns, so the rate to about 1 ppb).
pub const RATE_SPAN_MIN_NS: i64 = 4_000_000_000;

/// The `device` that names the agent's own host clock, kept on the guest's CLOCK_MONOTONIC_RAW
/// (which under icount follows QEMU's virtual clock): virtual time's host clock on a kernel
/// without igb. No path: nothing in /dev can be called that.
pub const AGENT_CLOCK: &str = "agent:clock";

/// The rate of `host` against `raw` since an earlier pair, ppb, once the span is at least
/// `RATE_SPAN_MIN_NS`.
pub fn measured_rate_ppb(since: [i64; 2], host_ns: i64, raw_ns: i64) -> Option<i64> {
    let span = raw_ns.checked_sub(since[1])?;
    if span < RATE_SPAN_MIN_NS {
        return None;
    }
    let gained = host_ns.checked_sub(since[0])?.checked_sub(span)?;
    let ppb = (gained as f64 / span as f64 * 1e9).round();
    // Beyond 10% it is no rate but a step nobody said about.
    (ppb.abs() <= 1e8).then_some(ppb as i64)
}

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
    /// Read a PHC against CLOCK_REALTIME: PHC minus realtime, from a cross timestamp
    /// (PTP_SYS_OFFSET_PRECISE, exact) where the driver has one, else the best of 25 basic readings.
    PhcOffset {
        /// Device path.
        device: String,
    },
    /// Set a PHC to the given host time (plus the raw time since `at_raw_ns`), as a time-sync
    /// provider does with a host sample.
    SetPhc {
        /// Device path.
        device: String,
        /// Host CLOCK_REALTIME when the sample was taken.
        host_ns: i64,
        /// The guest's CLOCK_MONOTONIC_RAW at which `host_ns` held, from an offset exchange: the
        /// agent adds the raw time since, so that the time this message spends in flight (a few
        /// ms on a busy host) is no error. None: `host_ns` holds when the agent reads it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_raw_ns: Option<i64>,
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
        /// The guest's CLOCK_MONOTONIC_RAW at which `host_ns` held, from an offset exchange: the
        /// agent adds the raw time since, so that the time this message spends in flight (a few
        /// ms on a busy host) is no error. None: `host_ns` holds when the agent reads it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_raw_ns: Option<i64>,
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
    /// Virtual time: wait until the PHC (the host clock) reads at least `until_ns`, then measure
    /// CLOCK_REALTIME against it with PTP_SYS_OFFSET_EXTENDED. With `spin_s` > 0 the agent then
    /// polls its port busily (for at most that many wall seconds) instead of idling, so that under
    /// icount with sleep=off the guest's virtual time does not leap to its next timer before the
    /// host's next move (a QMP `stop`). Answers `Observed`.
    Observe {
        /// Device path.
        device: String,
        /// PHC time to wait for.
        until_ns: i64,
        /// Wall seconds to spin for the next request after answering.
        #[serde(default)]
        spin_s: f64,
        /// A log file whose lines written since the last `Observe` come back with the answer
        /// (chronyd's), so they carry this observation's time.
        #[serde(default)]
        tail: Option<String>,
        /// A second PHC (the CUSE mock) read right after, with PTP_SYS_OFFSET, against the first.
        #[serde(default)]
        also: Option<String>,
    },
    /// Step a PHC by `delta_ns` (ADJ_SETOFFSET). Answers `{"phc_ns": ...}` after the step.
    StepPhc {
        /// Device path.
        device: String,
        /// Step.
        delta_ns: i64,
    },
    /// Set a PHC's frequency offset (adjfine), parts per billion, undoing the step QEMU's igb
    /// makes with it. Answers `{"undone_step_ns": ...}`.
    PhcFrequency {
        /// Device path.
        device: String,
        /// Frequency offset.
        ppb: f64,
    },
    /// Set CLOCK_REALTIME to the PHC's time (hv_utils on a SYNC sample, where the PHC is the
    /// host clock). Answers `{"stepped_ns": ...}`.
    RealtimeToPhc {
        /// Device path.
        device: String,
    },
    /// Start mock-phc's CUSE server (`/bin/mock-phc serve`) with a personality, creating
    /// `/dev/<name>`; answers once the node is there. A running one is stopped first.
    StartMock {
        /// Personality (`hyperv`).
        personality: String,
        /// Device name under /dev (`ptp_hyperv`).
        name: String,
    },
    /// Hand the guest's host time service a host time sample, as the Hyper-V host's VMICTimeSync
    /// does: the CUSE mock (`StartMock`) takes it on its stdin, the real hv_utils (`StartHyperv`)
    /// as a TimeSync IC message through the VMBus shim. Host time is either the one given (real
    /// time: the host's clock plus the transfer), or, with `reference`, the reference PHC's time
    /// read now (virtual time: the igb PHC is the host clock). Answers `HostSampled`.
    #[serde(alias = "mock_sample")]
    HostSample {
        /// Host CLOCK_REALTIME when the sample was taken.
        #[serde(default)]
        host_ns: Option<i64>,
        /// The guest's CLOCK_MONOTONIC_RAW at which `host_ns` held, from an offset exchange: the
        /// agent adds the raw time since, so that the time this message spends in flight (a few
        /// ms on a busy host) is no error. None: `host_ns` holds when the agent reads it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_raw_ns: Option<i64>,
        /// A PHC that reads host time.
        #[serde(default)]
        reference: Option<String>,
        /// How much faster the host's clock (Hyper-V's reference counter) runs than the guest's
        /// CLOCK_MONOTONIC_RAW, ppb (virtual time, where the guest's oscillator is made to err).
        #[serde(default)]
        rate_ppb: i64,
        /// An earlier sample of the same reference, `[host_ns, raw_ns]`, with the reference
        /// neither stepped nor re-tuned since: the rate is then measured over that span (once it
        /// is at least `RATE_SPAN_MIN_NS` long) instead of taken from `rate_ppb`. A PHC's
        /// frequency is quantised (igb's 82576 in steps of 2^-23, 119 ppb) and the guest's
        /// CLOCK_MONOTONIC_RAW carries its TSC calibration error: a nominal rate leaves the mock
        /// drifting off its reference between samples.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_since: Option<[i64; 2]>,
        /// A SYNC sample (the host's first after a start or resume: hv_utils steps the guest's
        /// clock to it) rather than a plain SAMPLE. The mock keeps either alike.
        #[serde(default)]
        sync: bool,
    },
    /// Load the VMBus shim and the kernel's own hv_utils.ko (`timesync_implicit` as given), play
    /// the Hyper-V host's TimeSync negotiation offering `ts_versions` (major, minor; the
    /// framework versions 3.0 and 1.0), and link `/dev/<name>` to the PHC hv_utils registers.
    /// Modules already loaded are unloaded first. Answers `HypervStarted`; a module that does
    /// not load, or a negotiation that fails, is an error carrying the kernel's log lines.
    StartHyperv {
        /// hv_utils' module parameter.
        implicit: bool,
        /// The TimeSync message versions the host offers, preferred first.
        ts_versions: Vec<[u16; 2]>,
        /// The link under /dev (`ptp_hyperv`, as Azure's udev rule names it).
        name: String,
    },
    /// Move the VMBus shim's reference counter (Hyper-V's partition reference time, which
    /// hv_utils measures a sample's age by) forward by `ticks` of 100 ns, as if that much host
    /// time had passed without a sample. Answers `{"reference": ...}`: the counter after.
    ShiftReference {
        /// 100 ns units.
        ticks: u64,
    },
    /// Wait for the RTC's next second boundary and read the PHC there; with `set`, set the PHC
    /// at that boundary to where the mapping says host time is. Answers `RtcTick`.
    RtcTick {
        /// Device path of the PHC.
        device: String,
        /// Host time at an earlier RTC second, to carry forward.
        set: Option<RtcMapping>,
    },
}

/// Host time at an RTC second boundary, and how fast host time runs against the RTC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RtcMapping {
    /// The RTC's time at the boundary, seconds since the epoch.
    pub rtc_s: i64,
    /// Host time at that boundary.
    pub host_ns: i64,
    /// Host time's rate against the RTC, parts per billion.
    pub ppb: f64,
}

impl RtcMapping {
    /// Host time at a later RTC second.
    pub fn host_at(&self, rtc_s: i64) -> i64 {
        let elapsed_ns = (rtc_s - self.rtc_s).saturating_mul(1_000_000_000);
        // |ppb| <= 1e8 and elapsed within days: the product stays far inside f64's exact range.
        let scaled = (elapsed_ns as f64 * self.ppb * 1e-9).round() as i64;
        self.host_ns.saturating_add(elapsed_ns).saturating_add(scaled)
    }
}

impl Op {
    /// A plain host sample (no reference PHC, the nominal rate): host time `host_ns` as it holds
    /// when the agent reads the request, a SYNC with `sync`.
    pub fn host_sample(host_ns: i64, sync: bool) -> Self {
        Self::HostSample {
            host_ns: Some(host_ns),
            at_raw_ns: None,
            reference: None,
            rate_ppb: 0,
            rate_since: None,
            sync,
        }
    }

    /// The request's name on the wire (`phc_offset`), for errors about its answer.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Clocks => "clocks",
            Self::PhcOffset { .. } => "phc_offset",
            Self::SetPhc { .. } => "set_phc",
            Self::StepRealtime { .. } => "step_realtime",
            Self::SetRealtime { .. } => "set_realtime",
            Self::Exec { .. } => "exec",
            Self::Spawn { .. } => "spawn",
            Self::Kill { .. } => "kill",
            Self::WriteFile { .. } => "write_file",
            Self::ReadFile { .. } => "read_file",
            Self::Observe { .. } => "observe",
            Self::StepPhc { .. } => "step_phc",
            Self::PhcFrequency { .. } => "phc_frequency",
            Self::RealtimeToPhc { .. } => "realtime_to_phc",
            Self::StartMock { .. } => "start_mock",
            Self::HostSample { .. } => "host_sample",
            Self::StartHyperv { .. } => "start_hyperv",
            Self::ShiftReference { .. } => "shift_reference",
            Self::RtcTick { .. } => "rtc_tick",
        }
    }
}

/// The hold (virtual time, `launcher::GuestBuilder::holds`): the guest stands between
/// requests, so that how long the host takes never reaches the guest's virtual time. The agent
/// takes each request from memory the host shares with the guest (QEMU's ivshmem-plain device,
/// BAR 2, backed by a file the host writes while the guest stands), answers into the same
/// memory, and pauses the whole guest itself by writing pvpanic's event to its port (QEMU runs
/// with `-action panic=pause`): at the same guest instruction every time, with no interrupt on
/// the way. The host then reads the answer, writes the next request and resumes the guest (QMP
/// `cont`). virtio-serial cannot carry this: QEMU stops reading its socket while the guest stands.
pub mod held {
    /// The I/O port of QEMU's ISA pvpanic device (its default `ioport`).
    pub const PAUSE_PORT: u64 = 0x505;
    /// pvpanic's "guest panicked" event: under `-action panic=pause` QEMU stops the guest at
    /// once (run state `guest-panicked`, from which `cont` resumes it).
    pub const PAUSE_EVENT: u8 = 1;
    /// ivshmem's PCI vendor and device ids, as sysfs writes them.
    pub const PCI_ID: (&str, &str) = ("0x1af4", "0x1110");
    /// Bytes of shared memory (a power of two, as ivshmem wants).
    pub const SIZE: usize = 1 << 20;
    /// Where the request is, and the answer.
    pub const REQUEST_AT: usize = 0;
    /// Where the answer is.
    pub const ANSWER_AT: usize = 256 << 10;
    /// Each area: the sequence number (u64, little-endian), the length (u32), the bytes.
    pub const HEADER_LEN: usize = 12;
    const HEADER: usize = HEADER_LEN;

    /// The area at `at`: up to the next area, or the end.
    fn area(at: usize) -> std::ops::Range<usize> {
        if at == REQUEST_AT {
            REQUEST_AT..ANSWER_AT
        } else {
            ANSWER_AT..SIZE
        }
    }

    /// The most bytes a message in the area at `at` has.
    pub fn room(at: usize) -> usize {
        area(at).len() - HEADER
    }

    /// Message `seq` as the area at `at` holds it: header and bytes.
    pub fn frame(at: usize, seq: u64, text: &[u8]) -> Result<Vec<u8>, String> {
        if text.len() > room(at) {
            return Err(format!(
                "a message of {} bytes does not fit the {} bytes of the hold's area",
                text.len(),
                room(at)
            ));
        }
        let mut f = Vec::with_capacity(HEADER + text.len());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(&(text.len() as u32).to_le_bytes());
        f.extend_from_slice(text);
        Ok(f)
    }

    /// The sequence number and length in a header (the first `HEADER_LEN` bytes of an area).
    pub fn header(h: &[u8; HEADER_LEN]) -> (u64, usize) {
        let seq = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        (seq, u32::from_le_bytes(h[8..].try_into().expect("4 bytes")) as usize)
    }

    /// Writes `text` as message `seq` into the area at `at` of `mem` (the whole shared memory).
    pub fn put(mem: &mut [u8], at: usize, seq: u64, text: &[u8]) -> Result<(), String> {
        let f = frame(at, seq, text)?;
        let dst = mem
            .get_mut(area(at).start..area(at).start + f.len())
            .ok_or("the hold's memory is smaller than its layout")?;
        dst.copy_from_slice(&f);
        Ok(())
    }

    /// The message in the area at `at` of `mem`: its sequence number and bytes.
    pub fn take(mem: &[u8], at: usize) -> Result<(u64, Vec<u8>), String> {
        let r = area(at);
        if mem.len() < r.end {
            return Err("the hold's memory is smaller than its layout".into());
        }
        let (seq, len) = header(mem[r.start..r.start + HEADER].try_into().expect("12 bytes"));
        if len > room(at) {
            return Err(format!("the hold's area claims {len} bytes, more than it has"));
        }
        Ok((seq, mem[r.start + HEADER..r.start + HEADER + len].to_vec()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn what_is_put_is_taken(seq in any::<u64>(), text in proptest::collection::vec(any::<u8>(), 0..4096), answer in any::<bool>()) {
                let mut mem = vec![0u8; SIZE];
                let at = if answer { ANSWER_AT } else { REQUEST_AT };
                put(&mut mem, at, seq, &text).unwrap();
                prop_assert_eq!(take(&mem, at).unwrap(), (seq, text.clone()));
                let f = frame(at, seq, &text).unwrap();
                prop_assert_eq!(header(f[..HEADER_LEN].try_into().unwrap()), (seq, text.len()));
                prop_assert_eq!(&f[HEADER_LEN..], &text[..]);
            }
        }

        #[test]
        fn too_long_or_lying_messages_are_errors() {
            let mut mem = vec![0u8; SIZE];
            assert!(put(&mut mem, REQUEST_AT, 1, &vec![b'x'; ANSWER_AT]).is_err());
            mem[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(take(&mem, REQUEST_AT).unwrap_err().contains("claims"));
            assert!(take(&mem[..10], REQUEST_AT).is_err());
        }
    }
}

/// Answer of `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's version (the harness's).
    pub version: String,
}

/// Answer of `PhcOffset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhcOffsetRead {
    /// The PHC minus CLOCK_REALTIME.
    pub phc_minus_realtime_ns: i64,
    /// Half the reading's window (0 for a cross timestamp).
    pub uncertainty_ns: i64,
    /// `precise` for a cross timestamp, absent for the best of 25 basic readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// Answer of `StepPhc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhcStepped {
    /// The PHC's time right after the step.
    pub phc_ns: i64,
}

/// Answer of `PhcFrequency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrequencySet {
    /// The step QEMU's igb made with the frequency change, undone.
    pub undone_step_ns: i64,
}

/// Answer of `SetRealtime` and `RealtimeToPhc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealtimeStepped {
    /// How far CLOCK_REALTIME was stepped.
    pub stepped_ns: i64,
}

/// Answer of `Spawn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// The program's pid in the guest.
    pub pid: u32,
}

/// Answer of `StartMock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStarted {
    /// The node it serves.
    pub device: String,
}

/// Answer of `Kill`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    /// How the program ended.
    pub status: String,
}

/// Answer of `Observe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// PHC time of the reading (the middle of the shortest window).
    pub phc_ns: i64,
    /// CLOCK_REALTIME minus the PHC.
    pub realtime_minus_phc_ns: i64,
    /// The shortest window the kernel reported.
    pub window_ns: i64,
    /// Whole lines added to the `tail` file since the last look (at most 64 KiB a time).
    #[serde(default)]
    pub lines: Vec<String>,
    /// The `also` PHC minus this one (the mock against host time), when it answered.
    #[serde(default)]
    pub also_minus_phc_ns: Option<i64>,
    /// The errno name when the `also` PHC failed (ESTALE from a stale hyperv clock).
    #[serde(default)]
    pub also_error: Option<String>,
}

/// Answer of a mock sample: the sample, the guest's CLOCK_MONOTONIC_RAW it applies at, and the
/// rate handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSampled {
    /// Host time of the sample.
    pub host_ns: i64,
    /// The guest's CLOCK_MONOTONIC_RAW it applies at.
    pub raw_ns: i64,
    /// The rate handed over, ppb.
    pub rate_ppb: i64,
    /// hv_utils' step of CLOCK_REALTIME this sample brought (SYNC, or an implicit sync), seen
    /// as the change of CLOCK_REALTIME less CLOCK_MONOTONIC; `None` where it set no clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepped_ns: Option<i64>,
}

/// Answer of `StartHyperv`: what runs and what it negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HypervStarted {
    /// The link to the PHC (`/dev/ptp_hyperv`).
    pub device: String,
    /// The PHC it links to (`/dev/ptp1`).
    pub ptp: String,
    /// The TimeSync message version hv_utils chose (`4.0`).
    pub ts_version: String,
    /// The IC framework version it chose (`3.0`).
    pub fw_version: String,
    /// hv_utils.ko as loaded: kernel release, its srcversion where it has one, SHA-256.
    pub driver: String,
    /// The shim that carries it (`vmbus_shim.ko, module` or `vmbus_shim_lp.ko, livepatch`).
    pub shim: String,
    /// The kernel's log lines of the two modules since they were loaded.
    pub kernel_log: Vec<String>,
}

/// Answer of `RtcTick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcTickResult {
    /// The RTC's new second, seconds since the epoch.
    pub rtc_s: i64,
    /// The PHC at the boundary, before any set.
    pub phc_ns: i64,
    /// What the PHC was set to at the boundary, with `set`.
    pub set_ns: Option<i64>,
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

    /// igb at -12000 ppb lands on 2^-23 steps: -11920.9 ppb. Over 5 s that is 0.4 us the
    /// nominal rate would leave between samples; measured, it is the true one.
    #[test]
    fn measured_rate_is_the_reference_s_own() {
        let raw0 = 1_000_000_000_000;
        let host0 = 5_000_000_000_000;
        let span = 5_000_000_000;
        let gained = -(span as f64 * 11_920.929e-9).round() as i64;
        assert_eq!(measured_rate_ppb([host0, raw0], host0 + span + gained, raw0 + span), Some(-11921));
        // Too short a span, a step (beyond 10%) or a reversed clock: no measurement.
        assert_eq!(measured_rate_ppb([host0, raw0], host0 + 1_000_000, raw0 + 1_000_000), None);
        assert_eq!(measured_rate_ppb([host0, raw0], host0 + 30 * span, raw0 + span), None);
        assert_eq!(measured_rate_ppb([host0, raw0], host0, raw0 - span), None);
    }

    #[test]
    fn wire_format_is_one_flat_object() {
        let r = Request { id: 7, op: Op::SetPhc { device: "/dev/ptp0".into(), host_ns: 5, at_raw_ns: None } };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"id":7,"op":"set_phc","device":"/dev/ptp0","host_ns":5}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let h: Request = serde_json::from_str(r#"{"id":1,"op":"hello"}"#).unwrap();
        assert_eq!(h.op, Op::Hello);
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"format_disk"}"#).is_err());
    }
}
