//! The hidden `accel` command: which acceleration a QEMU guest gets on this machine, decided
//! once per machine and cached (`--refresh` decides again).

use phc_qemu::Accel;

use crate::format::exit::Exit;
use crate::format::output;
use crate::run::backend::qemu;

/// Arguments of the hidden `accel` command.
#[derive(Debug, clap::Args)]
pub struct AccelCheckArgs {
    /// Ignore the cached decision: run the trial guest again and cache its answer.
    #[arg(long)]
    pub refresh: bool,
}

/// `phc-harness accel`: prints `kvm`, or `tcg: <why KVM does not work here>` on stdout, and how
/// that was decided (cached, or probed by a trial guest) on stderr. CI uses it to decide whether
/// the KVM-only tests can run, and prints the reason when not.
pub fn run(a: AccelCheckArgs) -> Exit {
    qemu::prepare_process();
    match phc_qemu::accel::decide_here(a.refresh) {
        Ok(d) => {
            match d.accel {
                Accel::Kvm => output::out("kvm\n"),
                Accel::Tcg => output::out(&format!("tcg: {}\n", d.why)),
            }
            say!("phc-harness: accel: {}", d.how_text());
            Exit::Ok
        }
        Err(e) => {
            say!("phc-harness: accel: {}", phc_qemu::chain(&e));
            match e {
                phc_qemu::Error::Interrupted { signal } => Exit::Interrupted(signal),
                _ => Exit::Usage,
            }
        }
    }
}
