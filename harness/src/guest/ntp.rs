//! The scenario's NTP server, run inside the QEMU guest in a network namespace of its own (so the
//! client daemons reach it through the guest kernel's real UDP/IP stack and a veth pair, and no
//! packet leaves the guest). It time-stamps from host time as the guest sees it, the igb PHC,
//! never from the host's wall clock, so it follows the scenario's host in virtual time too.
//!
//! What it does is scripted by a control file the host rewrites during a run ([`ServerState`]):
//! the one-way network delay and its jitter (each packet held that long on the way in and on the
//! way out, so the client measures the delay and sees the asymmetry of the two draws as an
//! offset), an offset of its own (a falseticker), and whether it answers at all (`silent`) or
//! answers garbage (the client's own origin timestamp echoed, every other byte random).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Seconds from the NTP era (1900-01-01) to the Unix epoch.
pub const NTP_UNIX_OFFSET_S: i64 = 2_208_988_800;
/// An NTP packet without extension fields or MAC.
pub const PACKET_LEN: usize = 48;
/// The precision the server claims: 2^-20 s (about 1 us), what reading the igb PHC costs.
const PRECISION_LOG2: i8 = -20;
/// The root dispersion a stratum-1 server claims (NTP short format: 16/65536 s = 244 us).
const ROOT_DISPERSION_SHORT: u32 = 16;
/// The reference identifier of a stratum-1 server on a PHC.
const REFID: [u8; 4] = *b"PHC\0";

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// With its time.
    #[default]
    Time,
    /// Not at all (the request is dropped).
    Silent,
    /// With garbage: the client's origin timestamp echoed, every other byte random.
    Garbage,
}

/// What the server does now: the control file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerState {
    /// How it answers.
    pub answer: Answer,
    /// Added to the time it serves: a server that is itself wrong (a falseticker).
    pub offset_s: f64,
    /// Fixed one-way network delay, each way.
    pub delay_s: f64,
    /// Mean of the exponential queueing delay added to each way on its own.
    pub jitter_s: f64,
    /// The stratum it claims (1-15).
    pub stratum: u8,
    /// Seed of the delay draws.
    pub seed: u64,
}

impl Default for ServerState {
    fn default() -> Self {
        Self { answer: Answer::Time, offset_s: 0.0, delay_s: 0.0, jitter_s: 0.0, stratum: 1, seed: 1 }
    }
}

/// Unix nanoseconds as an NTP timestamp (seconds since 1900 in the high 32 bits, the fraction in
/// the low); the era wraps in 2036 as the wire format does.
pub fn to_ntp(unix_ns: i64) -> u64 {
    let s = unix_ns.div_euclid(1_000_000_000) + NTP_UNIX_OFFSET_S;
    let ns = unix_ns.rem_euclid(1_000_000_000) as u64;
    ((s as u64 & 0xffff_ffff) << 32) | ((ns << 32) / 1_000_000_000)
}

/// An NTP timestamp as Unix nanoseconds, in the era 1968-2104 (era 0 before 2036, era 1 after).
pub fn from_ntp(ts: u64) -> i64 {
    let mut s = (ts >> 32) as i64;
    // Era 0 timestamps below 2^31 are taken as era 1 (after 2036-02-07), as RFC 4330 suggests.
    if s < 0x8000_0000 {
        s += 1 << 32;
    }
    let frac = ts & 0xffff_ffff;
    (s - NTP_UNIX_OFFSET_S) * 1_000_000_000 + ((frac * 1_000_000_000 + (1 << 31)) >> 32) as i64
}

/// A small, seeded generator for the delay draws and garbage (xorshift64*; no crate needed for
/// network noise).
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    /// Seeded; the seed 0 is moved off xorshift's fixed point.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// One way's delay: the fixed part plus an exponential draw of mean `jitter_s`.
    pub fn delay_s(&mut self, st: &ServerState) -> f64 {
        let q = if st.jitter_s > 0.0 { -st.jitter_s * self.unit().ln() } else { 0.0 };
        st.delay_s + q
    }
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than an NTP header.
    Short(usize),
    /// Not a client request (mode 3).
    NotClient(u8),
}

/// Checks a request: an NTP header whose mode is client. Gives its version and poll.
pub fn check_request(req: &[u8]) -> Result<(u8, i8), Refused> {
    if req.len() < PACKET_LEN {
        return Err(Refused::Short(req.len()));
    }
    let mode = req[0] & 7;
    if mode != 3 {
        return Err(Refused::NotClient(mode));
    }
    Ok(((req[0] >> 3) & 7, req[2] as i8))
}

/// The answer to a checked request: received at `rx_ns`, sent at `tx_ns` (server time, the
/// offset applied), as a stratum-`st.stratum` server would answer it.
pub fn reply(req: &[u8], st: &ServerState, rx_ns: i64, tx_ns: i64) -> [u8; PACKET_LEN] {
    let (version, poll) = check_request(req).unwrap_or((4, 6));
    let mut p = [0u8; PACKET_LEN];
    // LI 0 (no leap warning, synchronised), the client's version, mode 4 (server).
    p[0] = (version.clamp(1, 4) << 3) | 4;
    p[1] = st.stratum.clamp(1, 15);
    p[2] = poll as u8;
    p[3] = PRECISION_LOG2 as u8;
    // Root delay 0: the PHC is the reference.
    p[8..12].copy_from_slice(&ROOT_DISPERSION_SHORT.to_be_bytes());
    p[12..16].copy_from_slice(&REFID);
    // The reference time: the last whole second before the receive time.
    let reference = rx_ns.div_euclid(1_000_000_000) * 1_000_000_000;
    p[16..24].copy_from_slice(&to_ntp(reference).to_be_bytes());
    // Origin: the client's transmit timestamp, as it sent it.
    p[24..32].copy_from_slice(&req[40..48]);
    p[32..40].copy_from_slice(&to_ntp(rx_ns).to_be_bytes());
    p[40..48].copy_from_slice(&to_ntp(tx_ns).to_be_bytes());
    p
}

/// Garbage for a checked request: random bytes, but the client's origin echoed (so that the
/// client's own sanity tests, not its origin check, meet it).
pub fn garbage(req: &[u8], draws: &mut Draws) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    for chunk in p.chunks_mut(8) {
        chunk.copy_from_slice(&draws.next_u64().to_le_bytes()[..chunk.len()]);
    }
    p[24..32].copy_from_slice(&req[40..48]);
    p
}

/// The server's time source: host time as the guest sees it.
pub trait TimeSource {
    /// Unix nanoseconds now.
    fn now_ns(&self) -> io::Result<i64>;
}

/// Reads the control file; a missing one means the defaults, an unreadable one is an error.
pub fn read_state(path: &Path) -> io::Result<ServerState> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ServerState::default()),
        Err(e) => Err(e),
    }
}

/// One line per datagram, to `log`: what came and what was done with it.
pub fn serve(
    sock: &UdpSocket,
    clock: &dyn TimeSource,
    control: &Path,
    log: &mut dyn io::Write,
    mut limit: Option<usize>,
) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut state = read_state(control)?;
    let mut draws = Draws::new(state.seed);
    loop {
        if limit == Some(0) {
            return Ok(());
        }
        let (n, from) = sock.recv_from(&mut buf)?;
        limit = limit.map(|l| l - 1);
        // The state is read at each request, so a change applies to the next one.
        match read_state(control) {
            Ok(s) => {
                if s.seed != state.seed {
                    draws = Draws::new(s.seed);
                }
                state = s;
            }
            Err(e) => {
                writeln!(log, "ntp-server: control {}: {e}; keeping the last state", control.display())?
            }
        }
        let req = &buf[..n];
        if let Err(why) = check_request(req) {
            writeln!(log, "ntp-server: {from}: not answered: {why:?}")?;
            continue;
        }
        answer(sock, clock, req, from, &state, &mut draws, log)?;
    }
}

fn answer(
    sock: &UdpSocket,
    clock: &dyn TimeSource,
    req: &[u8],
    from: SocketAddr,
    st: &ServerState,
    draws: &mut Draws,
    log: &mut dyn io::Write,
) -> io::Result<()> {
    let offset_ns = (st.offset_s * 1e9).round() as i64;
    match st.answer {
        Answer::Silent => {
            let t = clock.now_ns()? + offset_ns;
            writeln!(log, "ntp-server: {from}: silent at {t}")
        }
        Answer::Garbage => {
            sock.send_to(&garbage(req, draws), from)?;
            writeln!(log, "ntp-server: {from}: garbage")
        }
        Answer::Time => {
            // The request reaches the server `d_in` after it arrived here, the answer leaves
            // `d_out` after it was stamped: the delays of a network between them.
            let (d_in, d_out) = (draws.delay_s(st), draws.delay_s(st));
            std::thread::sleep(Duration::from_secs_f64(d_in));
            let rx = clock.now_ns()? + offset_ns;
            let tx = clock.now_ns()? + offset_ns;
            let p = reply(req, st, rx, tx);
            std::thread::sleep(Duration::from_secs_f64(d_out));
            sock.send_to(&p, from)?;
            writeln!(log, "ntp-server: {from}: answered rx {rx} tx {tx} delay {:.6} {:.6}", d_in, d_out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Realtime;
    impl TimeSource for Realtime {
        fn now_ns(&self) -> io::Result<i64> {
            phc::device::clock_now_ns(libc::CLOCK_REALTIME).map_err(|e| io::Error::other(e.to_string()))
        }
    }

    fn request(tx: u64) -> [u8; PACKET_LEN] {
        let mut r = [0u8; PACKET_LEN];
        r[0] = (4 << 3) | 3;
        r[2] = 6;
        r[40..48].copy_from_slice(&tx.to_be_bytes());
        r
    }

    #[test]
    fn ntp_timestamps_round_trip_within_a_nanosecond_across_the_2036_era() {
        for ns in [
            0i64,
            1_767_225_600_123_456_789,
            2_085_978_495_999_999_999,
            2_085_978_496_000_000_001,
            4_000_000_000_000_000_000,
        ] {
            let back = from_ntp(to_ntp(ns));
            assert!((back - ns).abs() <= 1, "{ns} -> {back}");
        }
        // 1900-era seconds of 2026 and the fraction's half second.
        let t = to_ntp(1_767_225_600_500_000_000);
        assert_eq!(t >> 32, (1_767_225_600 + NTP_UNIX_OFFSET_S) as u64);
        assert_eq!(t & 0xffff_ffff, 1 << 31);
    }

    #[test]
    fn requests_must_be_client_mode_headers() {
        assert_eq!(check_request(&request(1)), Ok((4, 6)));
        assert_eq!(check_request(&[0u8; 20]), Err(Refused::Short(20)));
        let mut r = request(1);
        r[0] = (4 << 3) | 4;
        assert_eq!(check_request(&r), Err(Refused::NotClient(4)));
    }

    #[test]
    fn a_reply_echoes_the_origin_and_carries_both_timestamps() {
        let st = ServerState { stratum: 2, ..ServerState::default() };
        let req = request(0x1234_5678_9abc_def0);
        let p = reply(&req, &st, 1_767_225_600_000_000_000, 1_767_225_600_000_010_000);
        assert_eq!(p[0] & 7, 4, "mode server");
        assert_eq!(p[0] >> 6, 0, "no leap warning");
        assert_eq!((p[0] >> 3) & 7, 4, "the client's version");
        assert_eq!(p[1], 2);
        assert_eq!(&p[24..32], &req[40..48]);
        let rx = from_ntp(u64::from_be_bytes(p[32..40].try_into().unwrap()));
        let tx = from_ntp(u64::from_be_bytes(p[40..48].try_into().unwrap()));
        assert_eq!((rx, tx), (1_767_225_600_000_000_000, 1_767_225_600_000_010_000));
        let g = garbage(&req, &mut Draws::new(3));
        assert_eq!(&g[24..32], &req[40..48]);
        assert_ne!(&g[32..48], &p[32..48]);
    }

    #[test]
    fn delays_are_the_fixed_part_plus_exponential_jitter_of_the_given_mean() {
        let st = ServerState { delay_s: 0.001, jitter_s: 0.0005, ..ServerState::default() };
        let mut d = Draws::new(7);
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| d.delay_s(&st)).collect();
        assert!(draws.iter().all(|&x| x >= 0.001));
        let mean = draws.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.0015).abs() < 0.00002, "mean {mean}");
        let none = ServerState::default();
        assert_eq!(Draws::new(1).delay_s(&none), 0.0);
    }

    /// Over loopback: an answer with the server's offset, then silence, then garbage, as the
    /// control file says at each request.
    #[test]
    fn the_server_answers_as_its_control_file_says_at_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("state.json");
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let write = |st: &ServerState| std::fs::write(&control, serde_json::to_string(st).unwrap()).unwrap();
        write(&ServerState { offset_s: 5.0, ..ServerState::default() });
        let c2 = control.clone();
        let t = std::thread::spawn(move || {
            let mut log = Vec::new();
            serve(&server, &Realtime, &c2, &mut log, Some(4)).unwrap();
            String::from_utf8(log).unwrap()
        });
        let mut buf = [0u8; 128];
        let ask = |buf: &mut [u8]| {
            client.send_to(&request(42), addr).unwrap();
            client.recv_from(buf).map(|(n, _)| n)
        };
        let n = ask(&mut buf).unwrap();
        assert_eq!(n, PACKET_LEN);
        let rx = from_ntp(u64::from_be_bytes(buf[32..40].try_into().unwrap()));
        let now = Realtime.now_ns().unwrap();
        assert!((rx - now - 5_000_000_000).abs() < 200_000_000, "served {rx}, now {now}");
        write(&ServerState { answer: Answer::Silent, ..ServerState::default() });
        assert!(ask(&mut buf).is_err(), "a silent server answers nothing");
        write(&ServerState { answer: Answer::Garbage, ..ServerState::default() });
        assert_eq!(ask(&mut buf).unwrap(), PACKET_LEN);
        assert_eq!(u64::from_be_bytes(buf[24..32].try_into().unwrap()), 42);
        // Not a request: logged, not answered.
        client.send_to(&[0u8; 10], addr).unwrap();
        let log = t.join().unwrap();
        assert_eq!(log.lines().count(), 4, "{log}");
        assert!(log.contains("silent") && log.contains("garbage") && log.contains("Short(10)"), "{log}");
    }
}
