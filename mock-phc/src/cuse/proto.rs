//! The FUSE/CUSE wire format as `include/uapi/linux/fuse.h` lays it out: request headers and the
//! few request bodies a CUSE PHC meets, decoded from bytes; replies encoded to bytes. Pure: no
//! I/O, no unsafe, and no input makes it panic (every length is checked against the buffer).
//! Both directions of both kinds are here so that tests can play the kernel's side.

use nix::errno::Errno;

pub use super::kernel::{
    decode_ioctl_reply, decode_reply, encode_request, DecodedIoctl, DecodedReply, OutHeader,
};

/// `FUSE_KERNEL_VERSION`: the major version CUSE requires in the INIT reply (cuse.c).
pub const FUSE_MAJOR: u32 = 7;
/// The minor version this server implements: Linux 6.12's `FUSE_KERNEL_MINOR_VERSION`. cuse.c
/// accepts any reply minor >= 11; >= 16 makes the kernel read retry iovecs as
/// `struct fuse_ioctl_iovec` (fs/fuse/ioctl.c `fuse_copy_ioctl_iovec`).
pub const FUSE_MINOR: u32 = 41;
/// The oldest minor cuse.c accepts in the INIT reply.
pub const CUSE_MIN_MINOR: u32 = 11;

/// `FUSE_OPEN`.
pub const FUSE_OPEN: u32 = 14;
/// `FUSE_READ`.
pub const FUSE_READ: u32 = 15;
/// `FUSE_WRITE`.
pub const FUSE_WRITE: u32 = 16;
/// `FUSE_RELEASE`.
pub const FUSE_RELEASE: u32 = 18;
/// `FUSE_FLUSH`.
pub const FUSE_FLUSH: u32 = 25;
/// `FUSE_INTERRUPT`: never answered.
pub const FUSE_INTERRUPT: u32 = 36;
/// `FUSE_IOCTL`.
pub const FUSE_IOCTL: u32 = 39;
/// `FUSE_POLL`.
pub const FUSE_POLL: u32 = 40;
/// `CUSE_INIT`.
pub const CUSE_INIT: u32 = 4096;

/// `CUSE_UNRESTRICTED_IOCTL`: ioctls arrive without data and the server asks for it (RETRY).
pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;
/// `FUSE_IOCTL_COMPAT`: the caller is a 32-bit process.
pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
/// `FUSE_IOCTL_UNRESTRICTED`.
pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
/// `FUSE_IOCTL_RETRY`: the reply carries iovecs, the kernel copies them in/out and asks again.
pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
/// `FUSE_IOCTL_MAX_IOV`: the most iovecs one retry may name.
pub const FUSE_IOCTL_MAX_IOV: usize = 256;
/// `CUSE_INIT_INFO_MAX`: the longest device-info string.
pub const CUSE_INIT_INFO_MAX: usize = 4096;

/// `sizeof(struct fuse_in_header)`.
pub const IN_HEADER_LEN: usize = 40;
/// `sizeof(struct fuse_out_header)`.
pub const OUT_HEADER_LEN: usize = 16;
/// `sizeof(struct cuse_init_in)`.
pub const CUSE_INIT_IN_LEN: usize = 16;
/// `sizeof(struct cuse_init_out)`.
pub const CUSE_INIT_OUT_LEN: usize = 72;
/// `sizeof(struct fuse_open_in)`.
pub const OPEN_IN_LEN: usize = 8;
/// `sizeof(struct fuse_open_out)`.
pub const OPEN_OUT_LEN: usize = 16;
/// `sizeof(struct fuse_release_in)` (and of `fuse_flush_in`).
pub const RELEASE_IN_LEN: usize = 24;
/// `sizeof(struct fuse_interrupt_in)`.
pub const INTERRUPT_IN_LEN: usize = 8;
/// `sizeof(struct fuse_ioctl_in)`.
pub const IOCTL_IN_LEN: usize = 32;
/// `sizeof(struct fuse_ioctl_out)`.
pub const IOCTL_OUT_LEN: usize = 16;
/// `sizeof(struct fuse_ioctl_iovec)`.
pub const IOVEC_LEN: usize = 16;

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InHeader {
    /// Total length of the request, header included.
    pub len: u32,
    /// Operation.
    pub opcode: u32,
    /// Request id; the reply names it.
    pub unique: u64,
    /// Node id (0 for CUSE).
    pub nodeid: u64,
    /// Caller's uid.
    pub uid: u32,
    /// Caller's gid.
    pub gid: u32,
    /// Caller's pid.
    pub pid: u32,
    /// Length of extensions in 8-byte units.
    pub total_extlen: u16,
}

/// `struct fuse_ioctl_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoctlIn {
    /// File handle from the OPEN reply.
    pub fh: u64,
    /// `FUSE_IOCTL_*` flags.
    pub flags: u32,
    /// The ioctl request code.
    pub cmd: u32,
    /// The caller's argument (a user address for PTP ioctls).
    pub arg: u64,
    /// Bytes of input data that follow (copied from the in iovecs).
    pub in_size: u32,
    /// Bytes of output the kernel will copy back to the out iovecs at most.
    pub out_size: u32,
}

/// `struct fuse_ioctl_iovec`: a range of the caller's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Iovec {
    /// User address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `CUSE_INIT` (`struct cuse_init_in`).
    CuseInit {
        /// Kernel's major version.
        major: u32,
        /// Kernel's minor version.
        minor: u32,
        /// `CUSE_*` flags the kernel offers.
        flags: u32,
    },
    /// `FUSE_OPEN` (`struct fuse_open_in`).
    Open {
        /// The caller's open flags.
        flags: u32,
    },
    /// `FUSE_RELEASE`.
    Release {
        /// File handle.
        fh: u64,
    },
    /// `FUSE_FLUSH`.
    Flush {
        /// File handle.
        fh: u64,
    },
    /// `FUSE_INTERRUPT`.
    Interrupt {
        /// The request to interrupt.
        unique: u64,
    },
    /// `FUSE_IOCTL` with the input data the kernel copied in.
    Ioctl {
        /// The fixed part.
        ioctl: IoctlIn,
        /// Exactly `in_size` bytes.
        data: &'a [u8],
    },
    /// Any other opcode; answered ENOSYS.
    Other {
        /// The opcode.
        opcode: u32,
    },
}

/// A request with its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header.
    pub header: InHeader,
    /// The body.
    pub request: Request<'a>,
}

/// Why bytes are no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a request header.
    #[error("{got} bytes, shorter than a request header ({IN_HEADER_LEN})")]
    ShortHeader {
        /// Bytes received.
        got: usize,
    },
    /// The header's length disagrees with what arrived.
    #[error("header says {header} bytes, {got} arrived")]
    LengthMismatch {
        /// Request id, for an error reply.
        unique: u64,
        /// `len` in the header.
        header: u32,
        /// Bytes received.
        got: usize,
    },
    /// A known opcode whose body is too short.
    #[error("opcode {opcode}: body of {got} bytes, needs {need}")]
    ShortBody {
        /// Request id, for an error reply.
        unique: u64,
        /// Opcode.
        opcode: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
}

impl DecodeError {
    /// The request id, when the header was readable.
    pub fn unique(&self) -> Option<u64> {
        match *self {
            Self::ShortHeader { .. } => None,
            Self::LengthMismatch { unique, .. } | Self::ShortBody { unique, .. } => Some(unique),
        }
    }
}

/// Little cursor over a byte slice; every read is bounds-checked by the caller's length check.
pub(crate) struct Rd<'a>(pub(crate) &'a [u8]);

impl Rd<'_> {
    pub(crate) fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some((head, rest)) = self.0.split_first_chunk::<N>() {
            a = *head;
            self.0 = rest;
        }
        a
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.take())
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    pub(crate) fn i32(&mut self) -> i32 {
        i32::from_ne_bytes(self.take())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
}

fn need(unique: u64, opcode: u32, body: &[u8], need: usize) -> Result<(), DecodeError> {
    if body.len() < need {
        Err(DecodeError::ShortBody { unique, opcode, need, got: body.len() })
    } else {
        Ok(())
    }
}

/// Decodes one request as read from `/dev/cuse` (one read returns one whole request).
pub fn decode_request(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    if buf.len() < IN_HEADER_LEN {
        return Err(DecodeError::ShortHeader { got: buf.len() });
    }
    let mut r = Rd(buf);
    let header = InHeader {
        len: r.u32(),
        opcode: r.u32(),
        unique: r.u64(),
        nodeid: r.u64(),
        uid: r.u32(),
        gid: r.u32(),
        pid: r.u32(),
        total_extlen: r.u16(),
    };
    let unique = header.unique;
    if usize::try_from(header.len).ok() != Some(buf.len()) {
        return Err(DecodeError::LengthMismatch { unique, header: header.len, got: buf.len() });
    }
    let body = &buf[IN_HEADER_LEN..];
    let op = header.opcode;
    let mut b = Rd(body);
    let request = match op {
        CUSE_INIT => {
            need(unique, op, body, CUSE_INIT_IN_LEN)?;
            let (major, minor, _unused, flags) = (b.u32(), b.u32(), b.u32(), b.u32());
            Request::CuseInit { major, minor, flags }
        }
        FUSE_OPEN => {
            need(unique, op, body, OPEN_IN_LEN)?;
            Request::Open { flags: b.u32() }
        }
        FUSE_RELEASE => {
            need(unique, op, body, RELEASE_IN_LEN)?;
            Request::Release { fh: b.u64() }
        }
        FUSE_FLUSH => {
            need(unique, op, body, RELEASE_IN_LEN)?;
            Request::Flush { fh: b.u64() }
        }
        FUSE_INTERRUPT => {
            need(unique, op, body, INTERRUPT_IN_LEN)?;
            Request::Interrupt { unique: b.u64() }
        }
        FUSE_IOCTL => {
            need(unique, op, body, IOCTL_IN_LEN)?;
            let ioctl = IoctlIn {
                fh: b.u64(),
                flags: b.u32(),
                cmd: b.u32(),
                arg: b.u64(),
                in_size: b.u32(),
                out_size: b.u32(),
            };
            // in_size comes from the kernel's own iovec sum, but nothing here trusts it: the data
            // must be in the buffer.
            let want = usize::try_from(ioctl.in_size).unwrap_or(usize::MAX);
            let rest = &body[IOCTL_IN_LEN..];
            let Some(data) = rest.get(..want) else {
                return Err(DecodeError::ShortBody {
                    unique,
                    opcode: op,
                    need: IOCTL_IN_LEN.saturating_add(want),
                    got: body.len(),
                });
            };
            Request::Ioctl { ioctl, data }
        }
        opcode => Request::Other { opcode },
    };
    Ok(Message { header, request })
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An error: the header alone, `error = -errno` (fs/fuse/dev.c rejects a body with it).
    Error(Errno),
    /// Success with no body (RELEASE, FLUSH).
    Empty,
    /// `struct cuse_init_out` and the `KEY=value\0` device info.
    CuseInit {
        /// Minor version agreed.
        minor: u32,
        /// `CUSE_*` flags.
        flags: u32,
        /// Largest read the server takes.
        max_read: u32,
        /// Largest write the server takes.
        max_write: u32,
        /// Device major (0: allocate one).
        dev_major: u32,
        /// Device minor.
        dev_minor: u32,
        /// The packed info strings, each NUL-terminated (`DEVNAME=ptp_hyperv\0`).
        info: &'a [u8],
    },
    /// `struct fuse_open_out`.
    Open {
        /// File handle for later requests.
        fh: u64,
        /// `FOPEN_*` flags.
        open_flags: u32,
    },
    /// `struct fuse_ioctl_out` with `FUSE_IOCTL_RETRY` and the iovecs, in ones first.
    IoctlRetry {
        /// What the kernel must copy in from the caller.
        input: &'a [Iovec],
        /// Where the kernel must copy the answer out to.
        output: &'a [Iovec],
    },
    /// `struct fuse_ioctl_out` with the result and the output data.
    Ioctl {
        /// The ioctl's return value.
        result: i32,
        /// At most `out_size` bytes for the out iovecs.
        data: &'a [u8],
    },
}

/// Appends the reply to `unique` to `out` (cleared first): header and payload, for one `write`.
pub fn encode_reply(unique: u64, reply: &Reply<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; OUT_HEADER_LEN]);
    let mut error = 0i32;
    match reply {
        Reply::Error(e) => error = -(*e as i32),
        Reply::Empty => {}
        Reply::CuseInit { minor, flags, max_read, max_write, dev_major, dev_minor, info } => {
            for v in [FUSE_MAJOR, *minor, 0, *flags, *max_read, *max_write, *dev_major, *dev_minor] {
                out.extend_from_slice(&v.to_ne_bytes());
            }
            out.extend_from_slice(&[0u8; 40]);
            out.extend_from_slice(info);
        }
        Reply::Open { fh, open_flags } => {
            out.extend_from_slice(&fh.to_ne_bytes());
            out.extend_from_slice(&open_flags.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
        }
        Reply::IoctlRetry { input, output } => {
            let n = |v: &[Iovec]| u32::try_from(v.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&0i32.to_ne_bytes());
            out.extend_from_slice(&FUSE_IOCTL_RETRY.to_ne_bytes());
            out.extend_from_slice(&n(input).to_ne_bytes());
            out.extend_from_slice(&n(output).to_ne_bytes());
            for v in input.iter().chain(output.iter()) {
                out.extend_from_slice(&v.base.to_ne_bytes());
                out.extend_from_slice(&v.len.to_ne_bytes());
            }
        }
        Reply::Ioctl { result, data } => {
            out.extend_from_slice(&result.to_ne_bytes());
            out.extend_from_slice(&[0u8; 12]);
            out.extend_from_slice(data);
        }
    }
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[0..4].copy_from_slice(&len.to_ne_bytes());
    out[4..8].copy_from_slice(&error.to_ne_bytes());
    out[8..16].copy_from_slice(&unique.to_ne_bytes());
}

/// Starts a successful FUSE_IOCTL reply in `out` (cleared): room for the header and
/// `fuse_ioctl_out`, to which the caller appends the output data before [`finish_ioctl_data`].
pub fn begin_ioctl_data(out: &mut Vec<u8>) {
    out.clear();
    out.resize(OUT_HEADER_LEN + IOCTL_OUT_LEN, 0);
}

/// Completes what [`begin_ioctl_data`] started: result 0, no flags, the data after it. The same
/// bytes as `encode_reply(unique, &Reply::Ioctl { result: 0, data }, out)`, without a copy.
pub fn finish_ioctl_data(unique: u64, out: &mut [u8]) {
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    if let Some(head) = out.get_mut(..OUT_HEADER_LEN + IOCTL_OUT_LEN) {
        head.fill(0);
        head[0..4].copy_from_slice(&len.to_ne_bytes());
        head[8..16].copy_from_slice(&unique.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_the_kernels() {
        let h = InHeader {
            len: 0,
            opcode: 0,
            unique: 0x1122_3344_5566_7788,
            nodeid: 9,
            uid: 1,
            gid: 2,
            pid: 3,
            total_extlen: 0,
        };
        let b = encode_request(&h, &Request::Open { flags: 2 });
        assert_eq!(b.len(), IN_HEADER_LEN + OPEN_IN_LEN);
        assert_eq!(&b[0..4], &48u32.to_ne_bytes());
        assert_eq!(&b[4..8], &FUSE_OPEN.to_ne_bytes());
        assert_eq!(&b[8..16], &h.unique.to_ne_bytes());
        assert_eq!(&b[32..36], &3u32.to_ne_bytes(), "pid at offset 32");
        let m = decode_request(&b).unwrap();
        assert_eq!(m.request, Request::Open { flags: 2 });
        assert_eq!(m.header.pid, 3);
    }

    #[test]
    fn init_reply_is_header_struct_and_info() {
        let mut out = Vec::new();
        let info = b"DEVNAME=ptp_hyperv\0";
        let r = Reply::CuseInit {
            minor: 41,
            flags: CUSE_UNRESTRICTED_IOCTL,
            max_read: 4096,
            max_write: 4096,
            dev_major: 0,
            dev_minor: 0,
            info,
        };
        encode_reply(7, &r, &mut out);
        assert_eq!(out.len(), OUT_HEADER_LEN + CUSE_INIT_OUT_LEN + info.len());
        let d = decode_reply(&out).unwrap();
        assert_eq!(d.header, OutHeader { len: out.len() as u32, error: 0, unique: 7 });
        assert_eq!(&d.body[0..4], &7u32.to_ne_bytes());
        assert_eq!(&d.body[4..8], &41u32.to_ne_bytes());
        assert_eq!(&d.body[12..16], &1u32.to_ne_bytes());
        assert_eq!(&d.body[CUSE_INIT_OUT_LEN..], info);
    }

    #[test]
    fn error_reply_is_the_header_alone() {
        let mut out = Vec::new();
        encode_reply(5, &Reply::Error(Errno::ENOTTY), &mut out);
        assert_eq!(out.len(), OUT_HEADER_LEN);
        let d = decode_reply(&out).unwrap();
        assert_eq!(d.header.error, -25);
        assert!(d.body.is_empty());
    }

    #[test]
    fn retry_reply_carries_in_then_out_iovecs() {
        let mut out = Vec::new();
        let i = [Iovec { base: 0x1000, len: 832 }];
        let o = [Iovec { base: 0x1000, len: 832 }];
        encode_reply(1, &Reply::IoctlRetry { input: &i, output: &o }, &mut out);
        assert_eq!(out.len(), OUT_HEADER_LEN + IOCTL_OUT_LEN + 2 * IOVEC_LEN);
        let d = decode_ioctl_reply(&decode_reply(&out).unwrap().body).unwrap();
        assert_eq!((d.flags, d.input, d.output), (FUSE_IOCTL_RETRY, i.to_vec(), o.to_vec()));
    }

    #[test]
    fn data_replies_built_in_place_match_encoded_ones() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_reply(9, &Reply::Ioctl { result: 0, data: &[1, 2, 3] }, &mut a);
        begin_ioctl_data(&mut b);
        b.extend_from_slice(&[1, 2, 3]);
        finish_ioctl_data(9, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn short_and_lying_requests_are_errors() {
        assert_eq!(decode_request(&[0; 39]), Err(DecodeError::ShortHeader { got: 39 }));
        let h = InHeader { unique: 4, ..Default::default() };
        let mut b = encode_request(&h, &Request::Open { flags: 0 });
        b.push(0);
        assert!(matches!(decode_request(&b), Err(DecodeError::LengthMismatch { unique: 4, .. })));
        let io = IoctlIn { in_size: u32::MAX, ..Default::default() };
        let b = encode_request(&h, &Request::Ioctl { ioctl: io, data: &[1, 2, 3] });
        let e = decode_request(&b).unwrap_err();
        assert!(matches!(e, DecodeError::ShortBody { opcode: FUSE_IOCTL, .. }), "{e:?}");
        assert_eq!(e.unique(), Some(4));
    }
}
