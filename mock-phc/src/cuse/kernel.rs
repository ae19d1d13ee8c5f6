//! The kernel's side of the wire: requests encoded as fs/fuse sends them and replies read as
//! fs/fuse/dev.c and ioctl.c read them. For tests and the fuzz target that play the kernel.

use super::proto::{
    InHeader, Iovec, Rd, Request, CUSE_INIT, FUSE_FLUSH, FUSE_INTERRUPT, FUSE_IOCTL, FUSE_IOCTL_MAX_IOV,
    FUSE_IOCTL_RETRY, FUSE_OPEN, FUSE_RELEASE, IN_HEADER_LEN, IOCTL_OUT_LEN, IOVEC_LEN, OUT_HEADER_LEN,
};

/// Encodes a request as the kernel would send it (for tests playing the kernel's side).
pub fn encode_request(header: &InHeader, request: &Request<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    let opcode = match request {
        Request::CuseInit { major, minor, flags } => {
            for v in [*major, *minor, 0, *flags] {
                body.extend_from_slice(&v.to_ne_bytes());
            }
            CUSE_INIT
        }
        Request::Open { flags } => {
            body.extend_from_slice(&flags.to_ne_bytes());
            body.extend_from_slice(&0u32.to_ne_bytes());
            FUSE_OPEN
        }
        Request::Release { fh } | Request::Flush { fh } => {
            body.extend_from_slice(&fh.to_ne_bytes());
            body.extend_from_slice(&[0u8; 16]);
            if matches!(request, Request::Release { .. }) {
                FUSE_RELEASE
            } else {
                FUSE_FLUSH
            }
        }
        Request::Interrupt { unique } => {
            body.extend_from_slice(&unique.to_ne_bytes());
            FUSE_INTERRUPT
        }
        Request::Ioctl { ioctl, data } => {
            body.extend_from_slice(&ioctl.fh.to_ne_bytes());
            body.extend_from_slice(&ioctl.flags.to_ne_bytes());
            body.extend_from_slice(&ioctl.cmd.to_ne_bytes());
            body.extend_from_slice(&ioctl.arg.to_ne_bytes());
            body.extend_from_slice(&ioctl.in_size.to_ne_bytes());
            body.extend_from_slice(&ioctl.out_size.to_ne_bytes());
            body.extend_from_slice(data);
            FUSE_IOCTL
        }
        Request::Other { opcode } => *opcode,
    };
    let len = u32::try_from(IN_HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(IN_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&opcode.to_ne_bytes());
    out.extend_from_slice(&header.unique.to_ne_bytes());
    out.extend_from_slice(&header.nodeid.to_ne_bytes());
    out.extend_from_slice(&header.uid.to_ne_bytes());
    out.extend_from_slice(&header.gid.to_ne_bytes());
    out.extend_from_slice(&header.pid.to_ne_bytes());
    out.extend_from_slice(&header.total_extlen.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

/// `struct fuse_out_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutHeader {
    /// Total length.
    pub len: u32,
    /// `-errno` or 0.
    pub error: i32,
    /// The request answered.
    pub unique: u64,
}

/// A reply as the kernel reads it (for tests playing the kernel's side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedReply {
    /// The header.
    pub header: OutHeader,
    /// Everything after the header.
    pub body: Vec<u8>,
}

/// `struct fuse_ioctl_out` and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedIoctl {
    /// Return value.
    pub result: i32,
    /// Flags (`FUSE_IOCTL_RETRY`).
    pub flags: u32,
    /// In iovecs of a retry.
    pub input: Vec<Iovec>,
    /// Out iovecs of a retry.
    pub output: Vec<Iovec>,
    /// Output data of a final answer.
    pub data: Vec<u8>,
}

/// Splits a reply into header and body, checking the header's length as fs/fuse/dev.c does.
pub fn decode_reply(buf: &[u8]) -> Option<DecodedReply> {
    if buf.len() < OUT_HEADER_LEN {
        return None;
    }
    let mut r = Rd(buf);
    let header = OutHeader { len: r.u32(), error: r.i32(), unique: r.u64() };
    if usize::try_from(header.len).ok() != Some(buf.len()) {
        return None;
    }
    Some(DecodedReply { header, body: buf[OUT_HEADER_LEN..].to_vec() })
}

/// Reads a FUSE_IOCTL reply body as fs/fuse/ioctl.c does: with RETRY, exactly the iovecs.
pub fn decode_ioctl_reply(body: &[u8]) -> Option<DecodedIoctl> {
    if body.len() < IOCTL_OUT_LEN {
        return None;
    }
    let mut r = Rd(body);
    let (result, flags, n_in, n_out) = (r.i32(), r.u32(), r.u32(), r.u32());
    let rest = &body[IOCTL_OUT_LEN..];
    if flags & FUSE_IOCTL_RETRY == 0 {
        return Some(DecodedIoctl { result, flags, input: vec![], output: vec![], data: rest.to_vec() });
    }
    let (n_in, n_out) = (usize::try_from(n_in).ok()?, usize::try_from(n_out).ok()?);
    if n_in > FUSE_IOCTL_MAX_IOV || n_out > FUSE_IOCTL_MAX_IOV || n_in + n_out > FUSE_IOCTL_MAX_IOV {
        return None;
    }
    if rest.len() != (n_in + n_out) * IOVEC_LEN {
        return None;
    }
    let mut r = Rd(rest);
    let mut all: Vec<Iovec> = (0..n_in + n_out).map(|_| Iovec { base: r.u64(), len: r.u64() }).collect();
    let output = all.split_off(n_in);
    Some(DecodedIoctl { result, flags, input: all, output, data: vec![] })
}
