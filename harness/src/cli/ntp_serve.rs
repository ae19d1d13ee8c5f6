//! The hidden `ntp-serve` command (`phc-harness ntp-serve --clock /dev/ptp0 --control FILE`):
//! the scenario's NTP server inside the QEMU guest (crate::guest::ntp), started by the harness in
//! a network namespace of its own. It serves the PHC's time (host time as the guest sees it),
//! scripted by the control file, and logs a line per datagram to stdout.

use std::net::UdpSocket;
use std::path::PathBuf;

use crate::format::exit::Exit;
use crate::guest::ntp::{self, TimeSource};

/// Arguments of `ntp-serve`.
#[derive(Debug, clap::Args)]
pub struct NtpServeArgs {
    /// The PHC whose time it serves (host time as the guest sees it).
    #[arg(long)]
    pub clock: PathBuf,
    /// The control file (JSON, `guest::ntp::ServerState`), read at each request.
    #[arg(long)]
    pub control: PathBuf,
    /// Where it listens.
    #[arg(long, default_value = "0.0.0.0:123")]
    pub listen: String,
}

struct PhcTime(phc::Phc);

impl TimeSource for PhcTime {
    fn now_ns(&self) -> std::io::Result<i64> {
        self.0.gettime().map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Runs the server until it fails; exit 2 when it cannot start.
pub fn run(a: NtpServeArgs) -> Exit {
    let clock = match phc::Phc::open(&a.clock, phc::Access::ReadOnly) {
        Ok(p) => PhcTime(p),
        Err(e) => {
            eprintln!("error: {}: {e}", a.clock.display());
            return Exit::Usage;
        }
    };
    let sock = match UdpSocket::bind(&a.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", a.listen);
            return Exit::Usage;
        }
    };
    println!("ntp-server: serving {} on {}", a.clock.display(), a.listen);
    let mut out = std::io::stdout();
    match ntp::serve(&sock, &clock, &a.control, &mut out, None) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: ntp-serve: {e}");
            Exit::CheckFailed
        }
    }
}
