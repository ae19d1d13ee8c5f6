//! A booted guest with its agent connected: builds the image, starts QEMU, waits for the agent's
//! first answer and measures boot-to-ready. Everything is bounded by the caller's deadline, and a
//! failure on the way leaves no QEMU behind (the `Guest` drops).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::agent::Op;
use crate::client::AgentClient;
use crate::image::{self, ImageSpec};
use crate::launcher::{Accel, Guest, GuestBuilder};
use crate::Error;

/// A guest whose agent answers.
pub struct Session {
    /// The QEMU guest.
    pub guest: Guest,
    /// The agent connection.
    pub agent: AgentClient,
    /// From starting QEMU to the agent's first answer.
    pub boot_to_ready: Duration,
    /// The initramfs used (kept for reboots).
    pub initrd: PathBuf,
    builder: GuestBuilder,
}

/// Waits for the agent to answer `Hello`, retrying the connection while the guest boots.
fn wait_ready(guest: &mut Guest, deadline: Instant) -> Result<AgentClient, Error> {
    let mut agent = AgentClient::connect(&guest.agent_socket(), deadline)?;
    hello_until_answered(guest, &mut agent, deadline)?;
    Ok(agent)
}

fn hello_until_answered(guest: &mut Guest, agent: &mut AgentClient, deadline: Instant) -> Result<(), Error> {
    loop {
        if let Some(r) = guest.exit_reason() {
            return Err(Error::QemuExited(format!("{r}; console tail: {}", console_tail(guest))));
        }
        // Until the guest opens the port, requests vanish: ask again every half second.
        let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
        match agent.call(Op::Hello, step) {
            Ok(_) => return Ok(()),
            Err(Error::Timeout(_)) if Instant::now() < deadline => continue,
            Err(Error::Timeout(_)) => {
                return Err(Error::Timeout(format!(
                    "the guest agent (boot did not finish in time); console tail: {}",
                    console_tail(guest)
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The last lines of the console, for error messages.
pub fn console_tail(guest: &Guest) -> String {
    let c = guest.console();
    let lines: Vec<&str> = c.lines().filter(|l| !l.trim().is_empty()).rev().take(4).collect();
    if lines.is_empty() {
        // The default command line has `quiet`: nothing shows before init's first line.
        return "(empty: the kernel had not reached init)".into();
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

impl Session {
    /// Builds the image for `spec` into a fresh file and boots it.
    pub fn boot(spec: &ImageSpec, accel: Accel, deadline: Instant) -> Result<Self, Error> {
        // One file per session: two sessions of one process must not share (or delete) an image.
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let initrd = std::env::temp_dir().join(format!("phc-initrd-{}-{n}.cpio", std::process::id()));
        let built = if accel == Accel::Tcg && spec.modules.iter().any(|m| m == "ptp_kvm") {
            // ptp_kvm needs KVM's paravirtual clock: under TCG its insmod only fails, after
            // 0.2 s of boot time.
            let mut spec = spec.clone();
            spec.modules.retain(|m| m != "ptp_kvm");
            image::build(&spec, &initrd)
        } else {
            image::build(spec, &initrd)
        };
        let kernel = built.inspect_err(|_| {
            let _ = std::fs::remove_file(&initrd);
        })?;
        let builder = GuestBuilder::new(kernel, &initrd).accel(accel);
        Self::boot_with(builder, initrd, deadline)
    }

    /// Boots a prepared builder. The session owns `initrd` from here: it is removed when the
    /// session drops, or at once if the boot fails.
    pub fn boot_with(builder: GuestBuilder, initrd: PathBuf, deadline: Instant) -> Result<Self, Error> {
        let t0 = Instant::now();
        let booted = builder.start(deadline).and_then(|mut guest| {
            let agent = wait_ready(&mut guest, deadline)?;
            Ok((guest, agent))
        });
        match booted {
            Ok((guest, agent)) => Ok(Self { guest, agent, boot_to_ready: t0.elapsed(), initrd, builder }),
            Err(e) => {
                let _ = std::fs::remove_file(&initrd);
                Err(e)
            }
        }
    }

    /// After a `system_reset`: waits for the rebooted guest's agent on the same channel (QEMU
    /// keeps the host side of the socket across a reset).
    pub fn wait_agent_again(&mut self, deadline: Instant) -> Result<Duration, Error> {
        let t0 = Instant::now();
        hello_until_answered(&mut self.guest, &mut self.agent, deadline)?;
        Ok(t0.elapsed())
    }

    /// The builder this session was started with.
    pub fn builder(&self) -> &GuestBuilder {
        &self.builder
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.guest.shutdown();
        let _ = std::fs::remove_file(&self.initrd);
    }
}
