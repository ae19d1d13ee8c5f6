//! The hidden `accel` command: which acceleration a QEMU guest gets on this machine.

use std::path::PathBuf;

use phc_qemu::Accel;

use crate::backend::qemu::{self, find_agent_bin};
use crate::exit::Exit;
use crate::output;

/// Arguments of the hidden `accel` command.
#[derive(Debug, clap::Args)]
pub struct AccelCheckArgs {
    /// The static harness binary for the guest image.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
}

/// `phc-harness accel`: prints `kvm`, or `tcg: <why KVM does not work here>`, found by trying.
/// CI uses it to decide whether the KVM-only tests can run, and prints the reason when not.
pub fn run(a: AccelCheckArgs) -> Exit {
    let result = find_agent_bin(a.agent_bin).and_then(|agent| {
        let spec = phc_qemu::image::ImageSpec::with_agent(agent);
        let initrd = std::env::temp_dir().join(format!("phc-initrd-accel-{}.cpio", std::process::id()));
        let kernel = phc_qemu::image::build(&spec, &initrd)?;
        let r = qemu::detect_accel(&kernel, &initrd);
        let _ = std::fs::remove_file(&initrd);
        Ok(r)
    });
    match result {
        Ok((Accel::Kvm, _)) => output::out("kvm\n"),
        Ok((Accel::Tcg, why)) => output::out(&format!("tcg: {why}\n")),
        Err(e) => {
            say!("phc-harness: {e}");
            return Exit::Usage;
        }
    }
    Exit::Ok
}
