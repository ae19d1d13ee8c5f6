//! A fuzz run of the CUSE request path without nightly or cargo-fuzz: valid requests of every kind
//! the kernel sends (INIT, OPEN, RELEASE, FLUSH, INTERRUPT, first and retried FUSE_IOCTLs of every
//! PTP code, unknown opcodes), mutated at random (bit flips, byte stores, cuts, growth, splices,
//! interesting values in the length and size fields), fed to `Server::handle`. Any panic, or a
//! reply the kernel would refuse, fails the run with the input in hex.
//!
//! Usage: cargo run --release -p mock-phc --example fuzz_decode -- [SECONDS] [SEED]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mock_phc::cuse::proto::{self, InHeader, IoctlIn, Request};
use mock_phc::cuse::{ptp, Server};
use mock_phc::live::{self, HostSample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INTERESTING: [u32; 12] = [0, 1, 15, 16, 39, 40, 80, 831, 832, 1216, 0x7fff_ffff, u32::MAX];

fn corpus() -> Vec<Vec<u8>> {
    let h = InHeader { unique: 0x0102_0304_0506_0708, pid: 42, ..Default::default() };
    let mut c = vec![
        proto::encode_request(&h, &Request::CuseInit { major: 7, minor: 41, flags: 1 }),
        proto::encode_request(&h, &Request::Open { flags: 2 }),
        proto::encode_request(&h, &Request::Release { fh: 1 }),
        proto::encode_request(&h, &Request::Flush { fh: 1 }),
        proto::encode_request(&h, &Request::Interrupt { unique: 3 }),
        proto::encode_request(&h, &Request::Other { opcode: proto::FUSE_READ }),
    ];
    let data = vec![0u8; 1216];
    for (_, code) in phc::uapi::ALL_CODES {
        let cmd = *code as u32;
        let io = IoctlIn {
            fh: 1,
            flags: proto::FUSE_IOCTL_UNRESTRICTED,
            cmd,
            arg: 0x1000,
            in_size: 0,
            out_size: 0,
        };
        c.push(proto::encode_request(&h, &Request::Ioctl { ioctl: io, data: &[] }));
        if let Some(s) = ptp::Served::from_cmd(cmd) {
            let (i, o) = s.io_sizes();
            let mut d = data[..i].to_vec();
            if let Some(n) = d.get_mut(0) {
                *n = 5; // n_samples / a small first word
            }
            let io = IoctlIn { in_size: i as u32, out_size: o as u32, ..io };
            c.push(proto::encode_request(&h, &Request::Ioctl { ioctl: io, data: &d }));
        }
    }
    c
}

fn mutate(rng: &mut ChaCha8Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut m = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..5) {
        match rng.random_range(0..7) {
            0 if !m.is_empty() => {
                let i = rng.random_range(0..m.len());
                m[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !m.is_empty() => {
                let i = rng.random_range(0..m.len());
                m[i] = rng.random();
            }
            2 => m.truncate(rng.random_range(0..=m.len())),
            3 => m.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            4 => {
                // A size field (len, in_size, out_size) set to an interesting value.
                let at = [0usize, 40 + 24, 40 + 28][rng.random_range(0..3)];
                if m.len() >= at + 4 {
                    let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                    m[at..at + 4].copy_from_slice(&v.to_ne_bytes());
                }
            }
            5 => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let cut = rng.random_range(0..=m.len().min(other.len()));
                m[..cut].copy_from_slice(&other[..cut]);
            }
            _ => {
                // Keep the header's length honest half the time, so bodies get exercised.
                let len = u32::try_from(m.len()).unwrap_or(u32::MAX);
                if m.len() >= 4 {
                    m[0..4].copy_from_slice(&len.to_ne_bytes());
                }
            }
        }
    }
    m
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let server = Server::new("ptp_fuzz", live::hyperv(live::SystemClocks)).expect("name");
    server.clock().apply(HostSample { host_ns: 1_700_000_000_000_000_000, monotonic_raw_ns: 0 });
    let corpus = corpus();
    let deadline = Instant::now() + Duration::from_secs_f64(secs.clamp(0.1, 3600.0));
    let (mut runs, mut replies, mut errors) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        for _ in 0..256 {
            let input = mutate(&mut rng, &corpus);
            let r = catch_unwind(AssertUnwindSafe(|| server.handle(&input, &mut out)));
            runs += 1;
            let replied = match r {
                Ok(v) => v,
                Err(_) => {
                    eprintln!("fuzz_decode: PANIC on input {}", hex(&input));
                    std::process::exit(1);
                }
            };
            if !replied {
                continue;
            }
            replies += 1;
            let ok = proto::decode_reply(&out).is_some_and(|d| {
                let errno_ok = d.header.error <= 0 && d.header.error > -512;
                if d.header.error != 0 {
                    errors += 1;
                }
                errno_ok
                    && (d.header.error == 0 || d.body.is_empty())
                    && input.get(8..16) == Some(&d.header.unique.to_ne_bytes()[..])
            });
            if !ok {
                eprintln!("fuzz_decode: bad reply {} to input {}", hex(&out), hex(&input));
                std::process::exit(1);
            }
        }
    }
    println!("fuzz_decode: {runs} inputs in {secs} s (seed {seed}): {replies} replies ({errors} errors), no panic, every reply well-formed");
}
