//! The hidden `agent` command (`phc-harness agent --port /dev/vportNpM`): runs inside the
//! harness's QEMU guest as a child of init and serves the host's requests (crate::guest::agent). It
//! refuses to run anywhere else: the port must be the virtio-serial port the harness's QEMU
//! names `phc.agent`, since the requests it serves run programs and write files.

use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::format::exit::Exit;

/// The name the harness's QEMU gives the agent's virtio-serial port.
pub const PORT_NAME: &str = "phc.agent";
/// How long the agent waits for a host that went away (or never came) before it ends, which
/// powers the guest off.
const HOST_ABSENT_LIMIT: Duration = Duration::from_secs(600);

/// Arguments of `agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The virtio-serial port to serve (inside the guest).
    #[arg(long)]
    pub port: PathBuf,
}

/// Whether `port` is the harness's agent port: a character device that sysfs lists under
/// `virtio-ports` with the name `phc.agent`.
fn check_port(sys_virtio_ports: &Path, port: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(port).map_err(|e| e.to_string())?;
    if !meta.file_type().is_char_device() {
        return Err("not a virtio-serial port".into());
    }
    let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
    let want = format!("{major}:{minor}");
    let entries =
        std::fs::read_dir(sys_virtio_ports).map_err(|_| "no virtio-serial ports here".to_owned())?;
    for e in entries.flatten() {
        let dev = std::fs::read_to_string(e.path().join("dev")).unwrap_or_default();
        if dev.trim() == want {
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            return if name.trim() == PORT_NAME {
                Ok(())
            } else {
                Err(format!("virtio-serial port named {:?}, not {PORT_NAME:?}", name.trim()))
            };
        }
    }
    Err("not a virtio-serial port".into())
}

/// Whether the kernel command line asks the agent to hold the guest between requests
/// (`phc_qemu::launcher::HOLD_CMDLINE`, virtual time).
fn holds() -> bool {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline.split_whitespace().any(|w| w == phc_qemu::launcher::HOLD_CMDLINE)
}

/// The hold's shared memory (`phc_qemu::agent::held`): BAR 2 of QEMU's ivshmem device, enabled
/// and mapped through sysfs.
fn hold_memory() -> Result<memmap2::MmapMut, String> {
    use phc_qemu::agent::held;
    let devices =
        std::fs::read_dir("/sys/bus/pci/devices").map_err(|e| format!("/sys/bus/pci/devices: {e}"))?;
    for d in devices.flatten() {
        let p = d.path();
        let id = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default().trim().to_owned();
        if (id("vendor").as_str(), id("device").as_str()) != held::PCI_ID {
            continue;
        }
        // No driver binds ivshmem: enable its memory decoding by hand.
        std::fs::write(p.join("enable"), "1").map_err(|e| format!("{}/enable: {e}", p.display()))?;
        let bar = p.join("resource2");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&bar)
            .map_err(|e| format!("{}: {e}", bar.display()))?;
        // SAFETY: device memory that only this agent, and the host while the guest stands,
        // touch; nothing in this process truncates or remaps the file.
        let map = unsafe { memmap2::MmapOptions::new().len(held::SIZE).map_mut(&f) }
            .map_err(|e| format!("{}: {e}", bar.display()))?;
        return Ok(map);
    }
    Err("no ivshmem device (the hold's memory) in this guest".into())
}

/// Serves requests through the hold, standing after each answer by pvpanic's event written to
/// its port through /dev/port.
fn run_held() -> Exit {
    use phc_qemu::agent::held;
    use std::os::unix::fs::FileExt;
    let mut mem = match hold_memory() {
        Ok(m) => m,
        Err(e) => {
            say!("phc-harness: agent: {e}");
            return Exit::Usage;
        }
    };
    let port = match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open("/dev/port") {
        Ok(f) => f,
        Err(e) => {
            say!("phc-harness: agent: /dev/port: {e}");
            return Exit::Usage;
        }
    };
    let pause = |_: &mut [u8]| port.write_at(&[held::PAUSE_EVENT], held::PAUSE_PORT).map(drop);
    match crate::guest::agent::serve_held(&mut mem[..], pause) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            say!("phc-harness: agent: the hold: {e}");
            Exit::CheckFailed
        }
    }
}

/// Serves requests until the host has been gone for `HOST_ABSENT_LIMIT`; or, in a guest that
/// holds, through the hold for as long as the guest runs.
pub fn run(args: AgentArgs) -> Exit {
    if let Err(why) = check_port(Path::new("/sys/class/virtio-ports"), &args.port) {
        say!(
            "phc-harness: agent: {}: {why}; the agent runs only inside the harness's QEMU guest",
            args.port.display()
        );
        return Exit::Usage;
    }
    let port = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&args.port)
    {
        Ok(f) => f,
        Err(e) => {
            say!("phc-harness: agent: {}: {e}", args.port.display());
            return Exit::Usage;
        }
    };
    if holds() {
        // The port stays open: the host has it connected either way.
        let _port = port;
        return run_held();
    }
    let out = match port.try_clone() {
        Ok(f) => f,
        Err(e) => {
            say!("phc-harness: agent: {e}");
            return Exit::Usage;
        }
    };
    // virtio-serial reads EOF while no host is connected (before it connects, after it leaves);
    // the port stays open meanwhile, since what the host sends to a closed port is dropped.
    let mut absent_since: Option<Instant> = None;
    let fd = port.as_raw_fd();
    let spin = |deadline: Instant| {
        // Busy: an idle guest under icount with sleep=off would leap to its next timer.
        while Instant::now() < deadline {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: `p` is one valid pollfd for the duration of the call; timeout 0 never blocks.
            if unsafe { libc::poll(&mut p, 1, 0) } > 0 && p.revents & libc::POLLIN != 0 {
                return;
            }
            std::hint::spin_loop();
        }
    };
    let r = crate::guest::agent::serve(
        BufReader::new(port),
        out,
        || {
            let since = *absent_since.get_or_insert_with(Instant::now);
            std::thread::sleep(Duration::from_millis(50));
            since.elapsed() < HOST_ABSENT_LIMIT
        },
        spin,
    );
    match r {
        Ok(()) => {
            say!("phc-harness: agent: no host for {} s; ending", HOST_ABSENT_LIMIT.as_secs());
            Exit::Ok
        }
        Err(e) => {
            say!("phc-harness: agent: {e}");
            Exit::CheckFailed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_virtio_port_is_served() {
        let sys = tempfile::tempdir().unwrap();
        // /dev/null is 1:3: a fake sysfs that files it as a virtio port, named or not.
        let p = sys.path().join("vport0p1");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("dev"), "1:3\n").unwrap();
        std::fs::write(p.join("name"), "org.qemu.guest_agent.0\n").unwrap();
        let e = check_port(sys.path(), Path::new("/dev/null")).unwrap_err();
        assert!(e.contains("not \"phc.agent\""), "{e}");
        std::fs::write(p.join("name"), "phc.agent\n").unwrap();
        check_port(sys.path(), Path::new("/dev/null")).unwrap();
        assert_eq!(check_port(sys.path(), Path::new("/dev/zero")).unwrap_err(), "not a virtio-serial port");
        let f = sys.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(check_port(sys.path(), &f).unwrap_err(), "not a virtio-serial port");
    }
}
