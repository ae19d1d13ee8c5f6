//! The CUSE server against a stand-in kernel: a `socketpair(AF_UNIX, SOCK_SEQPACKET)` keeps message
//! boundaries as /dev/cuse does, and this side plays fs/fuse: INIT, OPEN, the unrestricted-ioctl
//! RETRY dance with a simulated caller's memory, hostile requests. No CUSE needed (the host
//! kernels here lack it); the guest test (qemu/tests/vm_cuse.rs) runs the real thing.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use mock_phc::cuse::proto::{self, InHeader, IoctlIn, Iovec, Request};
use mock_phc::cuse::{Channel, ServeError, Server};
use mock_phc::live::{self, Clocks, HostSample, HypervPhc};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use phc::uapi;

#[derive(Debug, Default)]
struct Manual {
    raw: AtomicI64,
    real: AtomicI64,
}

impl Clocks for Manual {
    fn monotonic_raw_ns(&self) -> i64 {
        self.raw.load(Relaxed)
    }
    fn realtime_ns(&self) -> i64 {
        self.real.load(Relaxed)
    }
}

type TestServer = Server<HypervPhc<Manual>>;

/// The kernel's end of the channel.
struct Kernel {
    sock: File,
    unique: u64,
    server: Arc<TestServer>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

/// The in and out iovecs one RETRY asked for.
type Retry = (Vec<Iovec>, Vec<Iovec>);

const ARG: u64 = 0x7ffc_0000_1000;

fn code(c: nix::sys::ioctl::ioctl_num_type) -> u32 {
    c as u32
}

impl Kernel {
    fn start() -> Self {
        Self::start_with(|f| Box::new(f))
    }

    fn start_with(wrap: impl FnOnce(File) -> Box<dyn Channel + Send>) -> Self {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .expect("socketpair");
        let server = Arc::new(Server::new("ptp_test", live::hyperv(Manual::default())).unwrap());
        let s = Arc::clone(&server);
        let ch = wrap(File::from(b));
        let thread = std::thread::spawn(move || s.serve(&*ch));
        Self { sock: File::from(a), unique: 0, server, thread: Some(thread) }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send");
    }

    fn recv(&mut self) -> proto::DecodedReply {
        let mut buf = vec![0u8; 70_000];
        let n = self.sock.read(&mut buf).expect("recv");
        proto::decode_reply(&buf[..n]).unwrap_or_else(|| panic!("malformed reply {:?}", &buf[..n]))
    }

    fn call(&mut self, req: &Request<'_>) -> proto::DecodedReply {
        self.unique += 2;
        let h = InHeader { unique: self.unique, pid: 1234, ..Default::default() };
        self.send_raw(&proto::encode_request(&h, req));
        let r = self.recv();
        assert_eq!(r.header.unique, self.unique, "reply to another request");
        r
    }

    fn init(&mut self) {
        let r = self.call(&Request::CuseInit { major: 7, minor: 41, flags: proto::CUSE_UNRESTRICTED_IOCTL });
        assert_eq!(r.header.error, 0);
        let w = |i: usize| u32::from_ne_bytes(r.body[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!((w(0), w(1), w(3)), (7, 41, proto::CUSE_UNRESTRICTED_IOCTL), "major, minor, flags");
        assert!(w(4) >= 4096 && w(5) >= 4096, "max_read/max_write");
        assert_eq!((w(6), w(7)), (0, 0), "dynamic device number");
        assert_eq!(&r.body[proto::CUSE_INIT_OUT_LEN..], b"DEVNAME=ptp_test\0");
    }

    fn open(&mut self) -> u64 {
        let r = self.call(&Request::Open { flags: 2 });
        assert_eq!((r.header.error, r.body.len()), (0, proto::OPEN_OUT_LEN));
        u64::from_ne_bytes(r.body[..8].try_into().unwrap())
    }

    /// One ioctl as fs/fuse/ioctl.c runs it over the caller's `user` memory at `ARG`: returns
    /// the errno, or the iovecs of each retry in order. `user` gets the output.
    fn ioctl(&mut self, fh: u64, cmd: u32, user: &mut [u8]) -> Result<Vec<Retry>, i32> {
        let (mut input, mut output): (Vec<Iovec>, Vec<Iovec>) = (vec![], vec![]);
        let mut retries = Vec::new();
        for _ in 0..3 {
            let mut data = Vec::new();
            for v in &input {
                let (start, len) = ((v.base - ARG) as usize, v.len as usize);
                data.extend_from_slice(user.get(start..start + len).ok_or(libc::EFAULT)?);
            }
            let out_size: u64 = output.iter().map(|v| v.len).sum();
            let io = IoctlIn {
                fh,
                flags: proto::FUSE_IOCTL_UNRESTRICTED,
                cmd,
                arg: ARG,
                in_size: data.len() as u32,
                out_size: out_size as u32,
            };
            let r = self.call(&Request::Ioctl { ioctl: io, data: &data });
            if r.header.error != 0 {
                assert!(r.body.is_empty(), "an error reply has no body");
                return Err(-r.header.error);
            }
            let d = proto::decode_ioctl_reply(&r.body).expect("ioctl reply as the kernel reads it");
            if d.flags & proto::FUSE_IOCTL_RETRY != 0 {
                retries.push((d.input.clone(), d.output.clone()));
                (input, output) = (d.input, d.output);
                continue;
            }
            assert!(d.data.len() as u64 <= out_size, "more data than out_size");
            assert_eq!(d.result, 0);
            let mut at = 0;
            for v in &output {
                let (start, len) = ((v.base - ARG) as usize, (v.len as usize).min(d.data.len() - at));
                user.get_mut(start..start + len).ok_or(libc::EFAULT)?.copy_from_slice(&d.data[at..at + len]);
                at += len;
            }
            return Ok(retries);
        }
        panic!("the server asked for a third retry");
    }

    fn close(mut self) -> Result<(), ServeError> {
        drop(self.sock);
        self.thread.take().unwrap().join().expect("server thread panicked")
    }
}

fn iov(len: u64) -> Vec<Iovec> {
    vec![Iovec { base: ARG, len }]
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_time(b: &mut [u8], at: usize, ns: i64) {
    b[at..at + 8].copy_from_slice(&ns.div_euclid(1_000_000_000).to_ne_bytes());
    b[at + 8..at + 12].copy_from_slice(&(ns.rem_euclid(1_000_000_000) as u32).to_ne_bytes());
    b[at + 12..at + 16].copy_from_slice(&0u32.to_ne_bytes());
}

#[test]
fn init_open_two_clients_release_and_close() {
    let mut k = Kernel::start();
    k.init();
    let (a, b) = (k.open(), k.open());
    assert_ne!(a, b, "one handle per open");
    for fh in [a, b] {
        let r = k.call(&Request::Release { fh });
        assert_eq!((r.header.error, r.body.len()), (0, 0));
    }
    let r = k.call(&Request::Flush { fh: a });
    assert_eq!(r.header.error, 0);
    assert_eq!(k.server.stats.opens.load(Relaxed), 2);
    k.close().expect("a closed channel ends serving cleanly");
}

#[test]
fn sys_offset_both_forms_retry_then_answer_byte_exact() {
    let mut k = Kernel::start();
    k.init();
    let fh = k.open();
    let src = k.server.clock().clocks();
    src.real.store(1_800_000_000_123_456_789, Relaxed);
    k.server.clock().apply(HostSample { host_ns: 1_700_000_000_000_000_000, monotonic_raw_ns: 5_000 });
    src.raw.store(5_000 + 2_500_000_050, Relaxed);
    let phc = 1_700_000_000_000_000_000 + 2_500_000_000; // whole 100 ns ticks
    for cmd in [uapi::PTP_SYS_OFFSET, uapi::PTP_SYS_OFFSET2] {
        let mut user = vec![0u8; 832];
        put_u32(&mut user, 0, 3);
        put_u32(&mut user, 4, 0xdead_beef); // reserved words: ignored by 6.12 in both forms
        let retries = k.ioctl(fh, code(cmd), &mut user).expect("SYS_OFFSET");
        assert_eq!(retries, vec![(iov(832), iov(832))], "retry asks for the struct in and out");
        let mut want = vec![0u8; 832];
        put_u32(&mut want, 0, 3);
        put_u32(&mut want, 4, 0xdead_beef);
        for i in 0..7 {
            put_time(&mut want, 16 + 16 * i, if i % 2 == 0 { 1_800_000_000_123_456_789 } else { phc });
        }
        assert_eq!(user, want);
    }
    k.close().unwrap();
}

#[test]
fn caps_pins_extended_precise_and_unknown_codes() {
    let mut k = Kernel::start();
    k.init();
    let fh = k.open();
    for cmd in [uapi::PTP_CLOCK_GETCAPS, uapi::PTP_CLOCK_GETCAPS2] {
        let mut user = vec![0xaa; 80];
        let retries = k.ioctl(fh, code(cmd), &mut user).expect("GETCAPS");
        assert_eq!(retries, vec![(vec![], iov(80))], "caps are only written");
        assert_eq!(user, vec![0; 80], "hv_utils: every capability 0");
    }
    for cmd in [uapi::PTP_SYS_OFFSET_EXTENDED, uapi::PTP_SYS_OFFSET_EXTENDED2] {
        let mut user = vec![0u8; 1216];
        put_u32(&mut user, 0, 5);
        assert_eq!(k.ioctl(fh, code(cmd), &mut user), Err(libc::EOPNOTSUPP), "no retry: answered at once");
    }
    for cmd in [uapi::PTP_SYS_OFFSET_PRECISE, uapi::PTP_SYS_OFFSET_PRECISE2] {
        // Even a caller whose memory is unmapped gets EOPNOTSUPP, as from ptp_chardev.c.
        assert_eq!(k.ioctl(fh, code(cmd), &mut []), Err(libc::EOPNOTSUPP));
    }
    for cmd in [uapi::PTP_PIN_GETFUNC, uapi::PTP_PIN_GETFUNC2] {
        let mut user = vec![0u8; 96];
        assert_eq!(k.ioctl(fh, code(cmd), &mut user), Err(libc::EINVAL), "no pins");
    }
    let served = [
        uapi::PTP_CLOCK_GETCAPS,
        uapi::PTP_CLOCK_GETCAPS2,
        uapi::PTP_SYS_OFFSET,
        uapi::PTP_SYS_OFFSET2,
        uapi::PTP_SYS_OFFSET_EXTENDED,
        uapi::PTP_SYS_OFFSET_EXTENDED2,
        uapi::PTP_SYS_OFFSET_PRECISE,
        uapi::PTP_SYS_OFFSET_PRECISE2,
        uapi::PTP_PIN_GETFUNC,
        uapi::PTP_PIN_GETFUNC2,
    ];
    let others = uapi::ALL_CODES.iter().map(|(_, c)| *c).filter(|c| !served.contains(c));
    for cmd in others.map(code).chain([0x5401, 0, u32::MAX]) {
        let mut user = vec![0u8; 2048];
        assert_eq!(k.ioctl(fh, cmd, &mut user), Err(libc::ENOTTY), "{cmd:#x}");
    }
    k.close().unwrap();
}

#[test]
fn sample_counts_reserved_words_and_staleness_as_the_kernel_checks_them() {
    let mut k = Kernel::start();
    k.init();
    let fh = k.open();
    let mut user = vec![0u8; 832];
    put_u32(&mut user, 0, 1);
    // No sample yet: hv_utils' wrapped value within the first 600 s of uptime, ESTALE after.
    assert!(k.ioctl(fh, code(uapi::PTP_SYS_OFFSET), &mut user).is_ok(), "no sample yet, uptime 0");
    k.server.clock().clocks().raw.store(600_000_000_100, Relaxed);
    assert_eq!(k.ioctl(fh, code(uapi::PTP_SYS_OFFSET), &mut user), Err(libc::ESTALE), "no sample, 600 s up");
    k.server.clock().clocks().raw.store(0, Relaxed);
    put_u32(&mut user, 0, 0);
    k.server.clock().apply(HostSample { host_ns: 1_000_000_000, monotonic_raw_ns: 0 });
    k.server.clock().clocks().real.store(99, Relaxed);
    // n_samples 0 passes ptp_chardev.c's check (only > 25 fails) and yields one system time.
    assert!(k.ioctl(fh, code(uapi::PTP_SYS_OFFSET2), &mut user).is_ok());
    assert_eq!(&user[16..24], &0i64.to_ne_bytes());
    assert_eq!(&user[24..28], &99u32.to_ne_bytes());
    for n in [26, 1000, u32::MAX] {
        put_u32(&mut user, 0, n);
        assert_eq!(k.ioctl(fh, code(uapi::PTP_SYS_OFFSET2), &mut user), Err(libc::EINVAL), "n_samples {n}");
    }
    let mut pin = vec![0u8; 96];
    put_u32(&mut pin, 80, 1); // rsv[0]
    assert_eq!(k.ioctl(fh, code(uapi::PTP_PIN_GETFUNC2), &mut pin), Err(libc::EINVAL));
    // Past 600 s without a sample: ESTALE, as hv_utils.
    k.server.clock().clocks().raw.store(600_000_000_100, Relaxed);
    put_u32(&mut user, 0, 1);
    assert_eq!(k.ioctl(fh, code(uapi::PTP_SYS_OFFSET), &mut user), Err(libc::ESTALE));
    // A caller whose buffer is too short gets EFAULT from the kernel's copy, never a server crash.
    assert_eq!(k.ioctl(fh, code(uapi::PTP_SYS_OFFSET), &mut [0u8; 100]), Err(libc::EFAULT));
    k.close().unwrap();
}

fn ioctl_req(cmd: u32, in_size: u32, out_size: u32) -> IoctlIn {
    IoctlIn { fh: 1, flags: proto::FUSE_IOCTL_UNRESTRICTED, cmd, arg: ARG, in_size, out_size }
}

#[test]
fn hostile_requests_get_errors_and_the_server_keeps_serving() {
    let mut k = Kernel::start();
    k.init();
    let sys = code(uapi::PTP_SYS_OFFSET);
    // Retried calls whose sizes are not what the retry asked for: EIO, not a second retry.
    for (i, o, len) in [(10, 0, 10), (832, 0, 832), (0, 832, 0), (832, 10_000, 832), (4, 832, 4)] {
        let data = vec![0u8; len];
        let r = k.call(&Request::Ioctl { ioctl: ioctl_req(sys, i, o), data: &data });
        assert_eq!(r.header.error, -libc::EIO, "in {i} out {o}");
    }
    // A header that claims more data than arrived, huge sizes, or a length that lies.
    let r = k.call(&Request::Ioctl { ioctl: ioctl_req(sys, u32::MAX, u32::MAX), data: &[1, 2, 3] });
    assert_eq!(r.header.error, -libc::EIO);
    k.unique += 2;
    let mut bytes = proto::encode_request(
        &InHeader { unique: k.unique, ..Default::default() },
        &Request::Open { flags: 0 },
    );
    bytes[0..4].copy_from_slice(&1000u32.to_ne_bytes());
    k.send_raw(&bytes);
    assert_eq!(k.recv().header.error, -libc::EIO);
    // Shorter than a header: nothing to answer; an oversized message is cut by the read and fails
    // its length check.
    k.send_raw(&[1, 2, 3]);
    k.unique += 2;
    let mut huge = proto::encode_request(
        &InHeader { unique: k.unique, ..Default::default() },
        &Request::Ioctl { ioctl: ioctl_req(sys, 140_000, 0), data: &vec![7u8; 140_000] },
    );
    huge.truncate(140_000);
    huge[0..4].copy_from_slice(&140_000u32.to_ne_bytes());
    k.send_raw(&huge);
    let r = k.recv();
    assert_eq!((r.header.unique, r.header.error), (k.unique, -libc::EIO));
    // Unknown opcodes: ENOSYS. INTERRUPT: no reply at all (the next reply is the OPEN's).
    for opcode in [0, proto::FUSE_READ, proto::FUSE_WRITE, proto::FUSE_POLL, 9999, u32::MAX] {
        assert_eq!(k.call(&Request::Other { opcode }).header.error, -libc::ENOSYS, "opcode {opcode}");
    }
    k.unique += 2;
    k.send_raw(&proto::encode_request(
        &InHeader { unique: k.unique, ..Default::default() },
        &Request::Interrupt { unique: 3 },
    ));
    let fh = k.open();
    assert!(fh > 0);
    assert!(k.server.stats.malformed.load(Relaxed) >= 4);
    // A flood of opens holds nothing per handle.
    let fhs: Vec<u64> = (0..2000).map(|_| k.open()).collect();
    assert_eq!(fhs.iter().collect::<std::collections::BTreeSet<_>>().len(), 2000);
    k.close().unwrap();
}

/// Fails the n-th send with `errno`, as /dev/cuse does when a caller is gone (ENOENT) or the
/// connection is torn down (ENODEV).
struct FailingSend {
    inner: File,
    sends: AtomicUsize,
    fail_at: usize,
    errno: i32,
}

impl Channel for FailingSend {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf)
    }
    fn send(&self, msg: &[u8]) -> io::Result<usize> {
        if self.sends.fetch_add(1, Relaxed) == self.fail_at {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        self.inner.send(msg)
    }
}

fn failing(errno: i32) -> Kernel {
    Kernel::start_with(move |inner| {
        Box::new(FailingSend { inner, sends: AtomicUsize::new(0), fail_at: 1, errno })
    })
}

#[test]
fn a_reply_to_a_gone_caller_is_dropped_and_serving_goes_on() {
    let mut k = failing(libc::ENOENT);
    k.init();
    k.unique += 2;
    k.send_raw(&proto::encode_request(
        &InHeader { unique: k.unique, ..Default::default() },
        &Request::Open { flags: 0 },
    ));
    let fh = k.open(); // the first OPEN's reply was refused; this one arrives
    assert!(fh >= 2);
    assert_eq!(k.server.stats.dropped_replies.load(Relaxed), 1);
    k.close().unwrap();

    let mut k = failing(libc::ENODEV);
    k.init();
    k.send_raw(&proto::encode_request(
        &InHeader { unique: 9, ..Default::default() },
        &Request::Open { flags: 0 },
    ));
    assert!(k.thread.take().unwrap().join().unwrap().is_ok(), "ENODEV: the connection is gone, a clean end");

    let mut k = failing(libc::EINVAL);
    k.init();
    k.send_raw(&proto::encode_request(
        &InHeader { unique: 9, ..Default::default() },
        &Request::Open { flags: 0 },
    ));
    let e = k.thread.take().unwrap().join().unwrap().unwrap_err();
    assert!(matches!(e, ServeError::Write(_)), "{e:?}");
}

#[test]
fn an_old_or_foreign_kernel_is_refused_at_init() {
    for (major, minor) in [(7, 15), (8, 41), (0, 0)] {
        let mut k = Kernel::start();
        let r = k.call(&Request::CuseInit { major, minor, flags: 1 });
        assert_eq!(r.header.error, -libc::EPROTO, "{major}.{minor}");
        k.close().unwrap();
    }
    let mut k = Kernel::start();
    let r = k.call(&Request::CuseInit { major: 7, minor: 45, flags: 1 });
    assert_eq!(&r.body[4..8], &41u32.to_ne_bytes(), "a newer kernel gets the minor implemented here");
    k.close().unwrap();
}

#[test]
fn two_server_threads_and_interleaved_clients() {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
    let server = Arc::new(Server::new("ptp_test", live::hyperv(Manual::default())).unwrap());
    server.clock().apply(HostSample { host_ns: 10_000_000_000, monotonic_raw_ns: 0 });
    let ch = Arc::new(File::from(b));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (s, ch) = (Arc::clone(&server), Arc::clone(&ch));
            std::thread::spawn(move || s.serve(&*ch))
        })
        .collect();
    let mut k = Kernel { sock: File::from(a), unique: 0, server: Arc::clone(&server), thread: None };
    k.init();
    let (x, y) = (k.open(), k.open());
    // Two callers' first calls, then both retries: no state ties a retry to its first call.
    let sys = code(uapi::PTP_SYS_OFFSET);
    for fh in [x, y] {
        let r = k.call(&Request::Ioctl { ioctl: IoctlIn { fh, ..ioctl_req(sys, 0, 0) }, data: &[] });
        assert_eq!(r.header.error, 0);
    }
    let mut req = vec![0u8; 832];
    put_u32(&mut req, 0, 25);
    for fh in [x, y] {
        let r = k.call(&Request::Ioctl { ioctl: IoctlIn { fh, ..ioctl_req(sys, 832, 832) }, data: &req });
        let d = proto::decode_ioctl_reply(&r.body).unwrap();
        assert_eq!(d.data.len(), 832);
        assert_eq!(&d.data[32..40], &10i64.to_ne_bytes(), "ts[1] is the PHC: host time, 10 s");
    }
    drop(k.sock);
    for t in threads {
        t.join().unwrap().unwrap();
    }
}
