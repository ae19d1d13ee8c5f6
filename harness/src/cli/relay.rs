//! The hidden `relay` command (`phc-harness relay --port /dev/vportNpM --socket PATH`): runs in a
//! nested run's L1 guest (phc_qemu::nested) and joins one of L1's virtio-serial ports to a Unix
//! socket of L2's QEMU (L2's agent channel, L2's QMP), so the host reaches L2 through L1.
//!
//! The port stays open for the relay's whole life (what the host sends to a closed port is
//! dropped). While no host is connected the port polls POLLHUP; once one is, the relay connects
//! to the socket (QMP greets each new connection, and the host is then there to read it) and
//! copies both ways until either side ends, then waits for the next host.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::format::exit::Exit;

/// Arguments of `relay`.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// The virtio-serial port (inside L1).
    #[arg(long)]
    pub port: PathBuf,
    /// The Unix socket to join it to (L2's QEMU's, inside L1).
    #[arg(long)]
    pub socket: PathBuf,
}

/// How long one poll waits before looking again.
const POLL_MS: i32 = 200;

/// `poll` on one or two fds: their `revents`, or an error other than EINTR.
fn poll(fds: &[(RawFd, i16)], timeout_ms: i32) -> std::io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    // SAFETY: `p` is a valid array of `p.len()` pollfds for the duration of the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
        return Ok(vec![0; p.len()]);
    }
    Ok(p.iter().map(|x| x.revents).collect())
}

/// Writes all of `buf` to the non-blocking port, waiting for room; `false` when the host left
/// meanwhile (the rest is dropped, as the port would drop it).
fn write_port(port: &mut std::fs::File, mut buf: &[u8]) -> std::io::Result<bool> {
    while !buf.is_empty() {
        match port.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let r = poll(&[(port.as_raw_fd(), libc::POLLOUT)], POLL_MS)?;
                if r[0] & libc::POLLHUP != 0 {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Copies between the port and one connection until either ends.
fn pump(port: &mut std::fs::File, conn: &mut UnixStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = poll(&[(port.as_raw_fd(), libc::POLLIN), (conn.as_raw_fd(), libc::POLLIN)], POLL_MS)?;
        if r[0] & libc::POLLHUP != 0 {
            return Ok(());
        }
        if r[0] & libc::POLLIN != 0 {
            match port.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => conn.write_all(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if r[1] & (libc::POLLIN | libc::POLLHUP) != 0 {
            match conn.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if !write_port(port, &buf[..n])? {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Relays until killed (L1 powering off ends it).
pub fn run(args: RelayArgs) -> Exit {
    let mut port = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&args.port)
    {
        Ok(f) => f,
        Err(e) => {
            say!("phc-harness: relay: {}: {e}", args.port.display());
            return Exit::Usage;
        }
    };
    loop {
        let r = match poll(&[(port.as_raw_fd(), libc::POLLIN)], POLL_MS) {
            Ok(r) => r,
            Err(e) => {
                say!("phc-harness: relay: {}: {e}", args.port.display());
                return Exit::CheckFailed;
            }
        };
        if r[0] & libc::POLLHUP != 0 {
            // No host yet (or any more).
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let mut conn = match UnixStream::connect(&args.socket) {
            Ok(c) => c,
            Err(_) => {
                // L2's QEMU has not made its socket yet.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Err(e) = pump(&mut port, &mut conn) {
            say!("phc-harness: relay: {} <-> {}: {e}", args.port.display(), args.socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixListener;

    /// A socket pair stands in for the virtio port: its far end is the host, and closing it hangs
    /// up the near end as a departing host does.
    #[test]
    fn relays_both_ways_through_a_full_port_until_the_host_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("l2.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (mut host, port_end) = UnixStream::pair().unwrap();
        port_end.set_nonblocking(true).unwrap();
        let mut port = File::from(OwnedFd::from(port_end));
        let mut conn = UnixStream::connect(&sock).unwrap();
        let (mut l2, _) = listener.accept().unwrap();
        let relay = std::thread::spawn(move || pump(&mut port, &mut conn));

        host.write_all(b"{\"op\":\"hello\"}\n").unwrap();
        let mut got = [0u8; 15];
        l2.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"{\"op\":\"hello\"}\n");

        // More than the socket buffers hold: the relay must wait for room on the port.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = std::thread::spawn(move || l2.write_all(&sent).map(|()| l2));
        let mut back = vec![0u8; big.len()];
        host.read_exact(&mut back).unwrap();
        assert!(back == big, "the relay reordered or lost bytes");
        let _l2 = writer.join().unwrap().unwrap();

        drop(host);
        relay.join().unwrap().unwrap();
    }
}
