//! ptp_kvm on any machine: KVM nested inside a TCG guest. QEMU's TCG emulates AMD SVM with nested
//! paging, so a TCG guest (L1, `-cpu max`) loads `kvm_amd` and runs a KVM guest (L2) whose
//! `ptp_kvm` reads L1's clock by hypercall, exactly as on a KVM host. L1 is the "host": its
//! CLOCK_REALTIME is what ptp_kvm reads. L2 is the harness's usual guest image (agent, chronyd,
//! ptp_kvm); L1's image holds Debian's QEMU with its shared libraries and firmware, L2's kernel
//! and initramfs, and an init that starts L2's QEMU, relays L2's agent and QMP sockets to two
//! virtio-serial ports of its own (`phc-harness relay`), and serves L1's own agent.
//!
//! Both images come from the one image builder (`image::build`); L1's gets a second cpio archive
//! appended (the kernel unpacks concatenated archives in order, later files replacing earlier
//! ones) with the L2 files and L1's own init.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::AgentClient;
use crate::cpio::Writer;
use crate::image::{self, ImageSpec};
use crate::launcher::{DEFAULT_CMDLINE, DEFAULT_QEMU};
use crate::qmp::Qmp;
use crate::tmp::{self, TempDir};
use crate::{Error, GuestBuilder};

/// L1's modules, in load order: `kvm_amd` needs `kvm` (and `ccp`), `kvm` needs `irqbypass`.
pub const L1_MODULES: &[&str] = &["irqbypass", "ccp", "kvm", "kvm-amd"];

/// L1's extra kernel words: ptp_kvm's hypercall (KVM_HC_CLOCK_PAIRING) answers only while the
/// host's clocksource is the TSC; under TCG the kernel would not trust it otherwise (with
/// `clocksource=hpet` on L1, L2's ptp_kvm fails to load with EOPNOTSUPP).
pub const L1_CMDLINE_EXTRA: &str = "tsc=reliable clocksource=tsc";

/// L1's CPU under TCG: AuthenticAMD with `svm` and `npt` (without `npt` L2 dies silently; TCG has
/// no VMX).
pub const L1_CPU: &str = "max";

/// L1's memory: its initramfs (about 85 MB, unpacked in RAM) and L2's memory.
pub const L1_MEMORY_MIB: u32 = 2048;

/// L2's memory.
pub const L2_MEMORY_MIB: u32 = 512;

/// The L1 virtio-serial port that carries L2's agent channel.
pub const L2_AGENT_PORT: &str = "phc.l2agent";

/// The L1 virtio-serial port that carries L2's QMP.
pub const L2_QMP_PORT: &str = "phc.l2qmp";

/// Firmware and option ROMs L2's QEMU opens (seen with strace and QEMU's own errors):
/// qboot as `-bios`, `linuxboot_dma.bin` to boot a bzImage, `pvh.bin` for a PVH vmlinux,
/// `kvmvapic.bin` which QEMU loads for every x86 machine.
pub const FIRMWARE: &[&str] = &["qboot.rom", "linuxboot_dma.bin", "pvh.bin", "kvmvapic.bin"];

/// Where Debian's qemu-system-data installs firmware (QEMU's compiled-in data directory).
pub const FIRMWARE_DIR: &str = "/usr/share/qemu";

/// How long L2's QMP greeting is waited for on one relayed connection (`Nested::connect_qmp`).
const GREETING_WAIT: Duration = Duration::from_secs(5);

/// How long the host stays away after hanging up a relayed connection: more than the relay's
/// poll (200 ms, `phc-harness relay`).
const RELAY_NOTICES: Duration = Duration::from_millis(500);

/// Where L2's files and sockets live inside L1.
const L2_DIR: &str = "/l2";

/// What L1 prints on its console just before L2's QEMU starts.
pub const L2_STARTING_LINE: &str = "phc-init: L1 starting L2";

/// The L1 image spec for an L2 image spec: the same kernel, busybox and agent (everything but
/// modules and programs as L2's); KVM's modules; Debian's QEMU with its libraries.
pub fn l1_spec(l2: &ImageSpec) -> ImageSpec {
    let qemu = find_in_path(DEFAULT_QEMU).unwrap_or_else(|| PathBuf::from("/usr/bin").join(DEFAULT_QEMU));
    ImageSpec {
        modules: L1_MODULES.iter().map(|s| (*s).to_owned()).collect(),
        programs: vec![qemu],
        ..l2.clone()
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    crate::accel::find_program(Path::new(name))
}

/// L2's QEMU command line inside L1, as shell words.
pub fn l2_qemu_args() -> Vec<String> {
    let d = L2_DIR;
    let mut a: Vec<String> =
        ["-nodefaults", "-name", "phc-l2", "-display", "none", "-accel", "kvm", "-cpu", "host", "-m"]
            .map(String::from)
            .to_vec();
    a.push(L2_MEMORY_MIB.to_string());
    a.extend(["-bios".into(), format!("{FIRMWARE_DIR}/qboot.rom")]);
    a.extend(["-kernel".into(), format!("{d}/vmlinuz"), "-initrd".into(), format!("{d}/initrd")]);
    a.extend(["-append".into(), format!("'{DEFAULT_CMDLINE}'")]);
    // L2's console goes to L1's: the host's console log shows both, L2's lines after L1's.
    a.extend(["-serial".into(), "file:/dev/ttyS0".into()]);
    a.extend(["-qmp".into(), format!("unix:{d}/qmp.sock,server=on,wait=off")]);
    a.extend([
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!("socket,id=agent,path={d}/agent.sock,server=on,wait=off"),
        "-device".into(),
        "virtserialport,chardev=agent,name=phc.agent".into(),
    ]);
    a
}

/// L1's init: mounts, loads KVM, starts L2's QEMU in the background, relays L2's agent and QMP
/// sockets to L1's ports, then serves L1's own agent (the host side steps L1's clock through it)
/// and powers off when it ends, which ends L2 with it.
pub fn l1_init_script() -> String {
    format!(
        r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /run /tmp; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
for m in {mods}; do insmod /lib/modules/$m.ko || echo "phc-init: L1 module $m not loaded"; done
ip link set lo up
port_named() {{ for d in /sys/class/virtio-ports/*; do [ "$(cat $d/name 2>/dev/null)" = "$1" ] && echo /dev/$(basename $d); done; }}
read up _ </proc/uptime
echo "{starting} at ${{up}} s: $(ls /dev/kvm 2>&1)"
qemu-system-x86_64 {qemu} </dev/null &
phc-harness relay --port "$(port_named {agent_port})" --socket {d}/agent.sock &
phc-harness relay --port "$(port_named {qmp_port})" --socket {d}/qmp.sock &
echo "{ready} (L1) on $(port_named phc.agent)"
/bin/phc-harness agent --port "$(port_named phc.agent)"
echo "phc-init: L1 agent exited with $?"
poweroff -f
"#,
        mods = L1_MODULES.join(" "),
        starting = L2_STARTING_LINE,
        qemu = l2_qemu_args().join(" "),
        agent_port = L2_AGENT_PORT,
        qmp_port = L2_QMP_PORT,
        d = L2_DIR,
        ready = image::READY_LINE,
    )
}

/// Writes L1's initramfs to `out` (L2's inside it) and returns L1's kernel image and whether the
/// image came from the cache (`cached`).
pub fn build(l2: &ImageSpec, out: &Path) -> Result<(PathBuf, bool), Error> {
    let key = cache_key(l2);
    let cached = cache_path(&key);
    if let Some(c) = &cached {
        // A hard link: the 85 MB image costs nothing to "copy", and removing `out` leaves it.
        let _ = fs::remove_file(out);
        if fs::hard_link(c, out).is_ok() {
            let vmlinuz = l2.vmlinuz();
            return Ok((crate::pvh::vmlinux_for(&vmlinuz).unwrap_or(vmlinuz), true));
        }
    }
    let l2_initrd = tmp::file("initrd", "l2", ".cpio")?;
    image::build(l2, &l2_initrd)?;
    let kernel = image::build(&l1_spec(l2), out)?;
    append_l2(l2, &l2_initrd, out)?;
    if let Some(c) = cached {
        save_to_cache(out, &c);
    }
    Ok((kernel, false))
}

/// How many L1 images the cache keeps (each about 85 MB); the oldest go first.
const CACHE_KEEP: usize = 3;

/// What an L1 image is made of: every input file's path, size and modification time, the module
/// lists and both init scripts. A change to any gives a new key (and a new image).
pub fn cache_key(l2: &ImageSpec) -> String {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let l1 = l1_spec(l2);
    let mut files: Vec<PathBuf> =
        vec![l2.vmlinuz(), l2.kernel_dir.join("VERSION"), l2.busybox.clone(), l2.agent.clone()];
    files.extend(l2.programs.iter().chain(&l1.programs).cloned());
    files.extend(FIRMWARE.iter().map(|f| Path::new(FIRMWARE_DIR).join(f)));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        f.hash(&mut h);
        if let Ok(m) = fs::metadata(f) {
            (m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
        }
    }
    (&l2.modules, &l1.modules, env!("CARGO_PKG_VERSION")).hash(&mut h);
    (image::init_script(&l2.modules), image::init_script(&l1.modules), l1_init_script()).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The cache file for `key` in `PHC_CACHE/nested` (the setup cache), when that folder can be
/// made.
fn cache_path(key: &str) -> Option<PathBuf> {
    let dir = image::cache_dir().join("nested");
    fs::create_dir_all(&dir).ok()?;
    Some(dir.join(format!("l1-{key}.cpio")))
}

/// Links a fresh image into the cache (by rename of a second link, so a reader never sees half
/// a file) and drops the oldest beyond `CACHE_KEEP`. Failures only cost the next run a build.
fn save_to_cache(image: &Path, to: &Path) {
    let Some(dir) = to.parent() else { return };
    let staging = dir.join(format!(".l1-{}.tmp", std::process::id()));
    let _ = fs::remove_file(&staging);
    if fs::hard_link(image, &staging).is_err() || fs::rename(&staging, to).is_err() {
        let _ = fs::remove_file(&staging);
        return;
    }
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("l1-")))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    old.sort();
    old.reverse();
    for (_, p) in old.into_iter().skip(CACHE_KEEP) {
        let _ = fs::remove_file(p);
    }
}

fn read(p: &Path) -> Result<Vec<u8>, Error> {
    fs::read(p).map_err(|source| Error::Io { op: "read", path: p.to_owned(), source })
}

/// Appends the second archive: L2's kernel (the bzImage: under KVM its decompression is quick, and
/// the PVH vmlinux is five times its size) and initramfs, the firmware, and L1's init.
fn append_l2(l2: &ImageSpec, l2_initrd: &Path, out: &Path) -> Result<(), Error> {
    let io = |source: std::io::Error| Error::Io { op: "write", path: out.to_owned(), source };
    let file = fs::OpenOptions::new().append(true).open(out).map_err(io)?;
    let mut w = Writer::new(std::io::BufWriter::new(file));
    for d in ["l2", "usr/share", "usr/share/qemu"] {
        w.dir(d, 0o755).map_err(io)?;
    }
    w.file("l2/vmlinuz", 0o644, &read(&l2.vmlinuz())?).map_err(io)?;
    w.file("l2/initrd", 0o644, &read(l2_initrd)?).map_err(io)?;
    for f in FIRMWARE {
        let p = Path::new(FIRMWARE_DIR).join(f);
        if !p.is_file() {
            return Err(Error::ProgramMissing { path: p });
        }
        w.file(&format!("usr/share/qemu/{f}"), 0o644, &read(&p)?).map_err(io)?;
    }
    w.file("init", 0o755, l1_init_script().as_bytes()).map_err(io)?;
    w.finish().map_err(io)?.flush().map_err(io)?;
    Ok(())
}

/// L1's QEMU: TCG with `-cpu max`, 2 GiB, TSC clocksource, no NIC, and two more virtio-serial
/// ports whose host sockets are in `dir`.
pub fn l1_builder(kernel: PathBuf, initrd: &Path, dir: &Path) -> GuestBuilder {
    let mut b = GuestBuilder::new(kernel, initrd)
        .append(format!("{DEFAULT_CMDLINE} {L1_CMDLINE_EXTRA}"))
        .memory_mib(L1_MEMORY_MIB)
        .igb(false)
        .arg("-cpu")
        .arg(L1_CPU);
    for (id, name, sock) in [("l2agent", L2_AGENT_PORT, "l2agent.sock"), ("l2qmp", L2_QMP_PORT, "l2qmp.sock")]
    {
        b = b
            .arg("-chardev")
            .arg(format!("socket,id={id},path={},server=on,wait=off", dir.join(sock).display()))
            .arg("-device")
            .arg(format!("virtserialport,chardev={id},name={name}"));
    }
    b
}

/// The host's end of a nested guest: L1's agent (to step the host clock, L1's CLOCK_REALTIME),
/// L2's QMP through L1's relay, and the folder of the relayed sockets.
pub struct Nested {
    /// L1's agent.
    pub l1_agent: AgentClient,
    /// L2's QMP (pause, reset), relayed by L1.
    pub qmp: Qmp,
    dir: TempDir,
}

impl Nested {
    /// A fresh folder for the relayed sockets.
    pub fn socket_dir() -> Result<TempDir, Error> {
        tmp::dir("nested", "sockets")
    }

    /// L2's QMP through L1's relay, whose host socket is in `dir`. QMP greets each connection
    /// once, when the relay makes it; a relay still on the connection of a host that came before
    /// (L1 restored from a file saved while the host was connected, where the relay missed the
    /// hang-up) never greets again, so a connection without a greeting in `GREETING_WAIT` is
    /// hung up, which ends the relay's, and made again.
    pub fn connect_qmp(dir: &Path, deadline: Instant) -> Result<Qmp, Error> {
        let path = dir.join("l2qmp.sock");
        loop {
            match Qmp::connect(&path, deadline.min(Instant::now() + GREETING_WAIT)) {
                Err(Error::Timeout { .. }) if Instant::now() + RELAY_NOTICES < deadline => {
                    // Long enough for the relay's poll to see the port hang up.
                    std::thread::sleep(RELAY_NOTICES);
                }
                r => return r,
            }
        }
    }

    /// The host's end, from its parts.
    pub fn new(l1_agent: AgentClient, qmp: Qmp, dir: TempDir) -> Self {
        Self { l1_agent, qmp, dir }
    }

    /// The host socket of L2's agent channel, relayed by L1.
    pub fn l2_agent_socket(dir: &Path) -> PathBuf {
        dir.join("l2agent.sock")
    }

    /// The folder of the relayed sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_init_loads_kvm_in_order_and_relays_both_l2_sockets() {
        let s = l1_init_script();
        assert!(s.contains("for m in irqbypass ccp kvm kvm-amd; do insmod"), "{s}");
        assert!(s.contains("relay --port \"$(port_named phc.l2agent)\" --socket /l2/agent.sock &"));
        assert!(s.contains("relay --port \"$(port_named phc.l2qmp)\" --socket /l2/qmp.sock &"));
        assert!(s.contains("-accel kvm -cpu host"));
        assert!(s.contains("/bin/phc-harness agent --port \"$(port_named phc.agent)\""));
        // No -no-reboot: a QMP system_reset of L2 must reboot it, not end its QEMU.
        assert!(!s.contains("-no-reboot"));
    }

    #[test]
    fn l1_runs_tcg_with_svm_and_a_tsc_clocksource() {
        let dir = Path::new("/tmp/x");
        let b = l1_builder("/k".into(), Path::new("/i"), dir);
        let a = b.args(dir).join(" ");
        assert!(a.contains("-accel tcg"), "{a}");
        assert!(a.contains("-cpu max"), "{a}");
        assert!(a.contains("tsc=reliable clocksource=tsc"), "{a}");
        assert!(a.contains("name=phc.l2agent") && a.contains("name=phc.l2qmp"), "{a}");
        assert!(!a.contains("igb"), "{a}");
    }
}
