//! The CUSE server: answers each request read from a channel (`/dev/cuse`, or a SEQPACKET socket
//! in tests) with one write of header and payload. State is a handle counter and statistics, all
//! atomic, so several threads may serve one channel at once.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use nix::errno::Errno;
use phc::PtpClock;

use super::proto::{self, Reply, Request, CUSE_UNRESTRICTED_IOCTL, FUSE_MAJOR, FUSE_MINOR};
use super::ptp::{self, IoctlAnswer};
use super::timing::Timing;

/// A read buffer that holds any request the kernel may send: fs/fuse/dev.c wants at least
/// `FUSE_MIN_READ_BUFFER` (8 KiB) and a FUSE_IOCTL may carry `max_pages` (32) pages of data.
pub const READ_BUF_LEN: usize = 33 * 4096;

/// `max_read` and `max_write` in the INIT reply (the least cuse.c allows; the PHC has no data path).
pub const MAX_RW: u32 = 4096;

/// Where requests come from and replies go: one message per call, boundaries kept.
pub trait Channel {
    /// Reads one request; 0 means the other side is gone.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one reply whole.
    fn send(&self, msg: &[u8]) -> io::Result<usize>;
}

impl Channel for std::fs::File {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn send(&self, msg: &[u8]) -> io::Result<usize> {
        (&*self).write(msg)
    }
}

/// Why serving stopped other than by the channel closing.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading a request failed.
    #[error("reading a request")]
    Read(#[source] io::Error),
    /// Writing a reply failed (not ENOENT, which only means the caller is gone).
    #[error("writing a reply")]
    Write(#[source] io::Error),
    /// The kernel took part of a reply.
    #[error("reply of {len} bytes written as {wrote}")]
    ShortWrite {
        /// Bytes written.
        wrote: usize,
        /// Bytes in the reply.
        len: usize,
    },
}

/// A device name the kernel and devtmpfs take as `/dev/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device name {0:?}: use 1-64 characters of A-Z a-z 0-9 _ . -, not starting with '.'")]
pub struct BadName(pub String);

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// OPEN requests answered.
    pub opens: AtomicU64,
    /// RELEASE requests answered.
    pub releases: AtomicU64,
    /// FUSE_IOCTL requests (first calls and retries).
    pub ioctls: AtomicU64,
    /// RETRY answers.
    pub retries: AtomicU64,
    /// Requests that could not be decoded.
    pub malformed: AtomicU64,
    /// Replies the kernel refused with ENOENT: the caller was gone.
    pub dropped_replies: AtomicU64,
    /// The kernel's version from CUSE_INIT, `major << 32 | minor` (0 before INIT).
    pub kernel_version: AtomicU64,
}

/// A CUSE device answering PTP ioctls from `clock`.
#[derive(Debug)]
pub struct Server<C> {
    clock: C,
    info: Vec<u8>,
    next_fh: AtomicU64,
    /// Counters.
    pub stats: Stats,
    timings: Option<Mutex<Vec<Timing>>>,
}

fn raw_now() -> i64 {
    phc::device::clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap_or(0)
}

/// Checks a device name.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BadName(name.to_owned()))
    }
}

impl<C: PtpClock> Server<C> {
    /// A server that will create `/dev/NAME`.
    pub fn new(name: &str, clock: C) -> Result<Self, BadName> {
        check_name(name)?;
        let info = format!("DEVNAME={name}\0").into_bytes();
        Ok(Self { clock, info, next_fh: AtomicU64::new(1), stats: Stats::default(), timings: None })
    }

    /// Records when each of the first `cap` requests was read and answered (see `timing`).
    pub fn with_timings(mut self, cap: usize) -> Self {
        self.timings = Some(Mutex::new(Vec::with_capacity(cap)));
        self
    }

    /// The records so far (empty without [`Server::with_timings`]).
    pub fn timings(&self) -> Vec<Timing> {
        self.timings.as_ref().map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }

    /// The clock behind the device.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Answers one request. Returns whether `out` now holds a reply to write (INTERRUPT gets none,
    /// nor does a request too short to name itself).
    pub fn handle(&self, msg: &[u8], out: &mut Vec<u8>) -> bool {
        let m = match proto::decode_request(msg) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Relaxed);
                return match e.unique() {
                    Some(unique) => {
                        proto::encode_reply(unique, &Reply::Error(Errno::EIO), out);
                        true
                    }
                    None => false,
                };
            }
        };
        let unique = m.header.unique;
        match m.request {
            Request::CuseInit { major, minor, .. } => {
                self.stats.kernel_version.store(u64::from(major) << 32 | u64::from(minor), Relaxed);
                // Minor 16 is where retry iovecs became `fuse_ioctl_iovec`, the layout used here.
                let reply = if major != FUSE_MAJOR || minor < 16 {
                    Reply::Error(Errno::EPROTO)
                } else {
                    Reply::CuseInit {
                        minor: minor.min(FUSE_MINOR),
                        flags: CUSE_UNRESTRICTED_IOCTL,
                        max_read: MAX_RW,
                        max_write: MAX_RW,
                        dev_major: 0,
                        dev_minor: 0,
                        info: &self.info,
                    }
                };
                proto::encode_reply(unique, &reply, out);
            }
            Request::Open { .. } => {
                self.stats.opens.fetch_add(1, Relaxed);
                let fh = self.next_fh.fetch_add(1, Relaxed);
                proto::encode_reply(unique, &Reply::Open { fh, open_flags: 0 }, out);
            }
            Request::Release { .. } => {
                self.stats.releases.fetch_add(1, Relaxed);
                proto::encode_reply(unique, &Reply::Empty, out);
            }
            Request::Flush { .. } => proto::encode_reply(unique, &Reply::Empty, out),
            // Requests are answered as they come; by the time an INTERRUPT is read its request
            // has its answer. The kernel expects no reply.
            Request::Interrupt { .. } => return false,
            Request::Ioctl { ioctl, data } => {
                self.stats.ioctls.fetch_add(1, Relaxed);
                proto::begin_ioctl_data(out);
                match ptp::answer(&self.clock, &ioctl, data, out) {
                    IoctlAnswer::Error(e) => proto::encode_reply(unique, &Reply::Error(e), out),
                    IoctlAnswer::Retry { input, output } => {
                        self.stats.retries.fetch_add(1, Relaxed);
                        let output = std::slice::from_ref(&output);
                        proto::encode_reply(
                            unique,
                            &Reply::IoctlRetry { input: input.as_slice(), output },
                            out,
                        );
                    }
                    IoctlAnswer::Data => proto::finish_ioctl_data(unique, out),
                }
            }
            Request::Other { .. } => proto::encode_reply(unique, &Reply::Error(Errno::ENOSYS), out),
        }
        true
    }

    /// Serves `ch` until it closes (0 from a read, or ENODEV: the CUSE connection was torn
    /// down). A reply the kernel refuses with ENOENT (its caller was killed) is counted, not fatal.
    pub fn serve<Ch: Channel + ?Sized>(&self, ch: &Ch) -> Result<(), ServeError> {
        let mut buf = vec![0u8; READ_BUF_LEN];
        let mut out = Vec::with_capacity(2048);
        loop {
            let n = match ch.recv(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
                Err(e) => return Err(ServeError::Read(e)),
            };
            let received_ns = self.timings.as_ref().map(|_| raw_now());
            let retries = self.stats.retries.load(Relaxed);
            if !self.handle(&buf[..n], &mut out) {
                continue;
            }
            let handled_ns = received_ns.map(|_| raw_now());
            let sent = ch.send(&out);
            if let (Some(t), Some(received_ns), Some(handled_ns)) = (&self.timings, received_ns, handled_ns) {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() < t.capacity() {
                    let retry = self.stats.retries.load(Relaxed) != retries;
                    t.push(Timing { received_ns, handled_ns, replied_ns: raw_now(), retry });
                }
            }
            match sent {
                Ok(w) if w == out.len() => {}
                Ok(wrote) => return Err(ServeError::ShortWrite { wrote, len: out.len() }),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.stats.dropped_replies.fetch_add(1, Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
                Err(e) => return Err(ServeError::Write(e)),
            }
        }
    }
}
