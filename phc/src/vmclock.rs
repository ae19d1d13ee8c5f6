//! The vmclock page (`/dev/vmclock0`, Linux 6.13+ `ptp_vmclock`): the hypervisor's shared
//! `struct vmclock_abi` (include/uapi/linux/vmclock-abi.h), mapped read-only and read by its
//! seqcount protocol, so that a snapshot is never torn by a concurrent hypervisor update.
//!
//! The page is read as 14 little-endian 64-bit words (the struct is 112 bytes, every field lies
//! inside one word): each word is one atomic load, and `seq_count` (the high half of word 1)
//! brackets them. A reader loads the seq (acquire), the words (relaxed), fences (acquire) and
//! loads the seq again; an odd seq (update in progress) or a changed one means retry.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use serde::Serialize;

use crate::error::{Context, Error, Result};
use crate::input::{self, Links};
use crate::node;
use crate::sysfs::Roots;

/// `VMCLOCK_MAGIC`: "VCLK" read as a little-endian u32.
pub const MAGIC: u32 = 0x4b4c_4356;
/// Bytes of `struct vmclock_abi` as of ABI version 1, up to `vm_generation_counter`.
pub const ABI_LEN: usize = 112;
/// 64-bit words the reader loads.
pub const WORDS: usize = ABI_LEN / 8;
/// The one mapping the kernel allows: a page, at offset 0, read-only.
pub const PAGE_LEN: usize = 4096;
/// Reads attempted before giving up on a page that never holds still.
pub const MAX_ATTEMPTS: u32 = 10_000;

/// `counter_id` values (`VMCLOCK_COUNTER_*`).
pub const COUNTER_ARM_VCNT: u8 = 0;
/// The x86 TSC.
pub const COUNTER_X86_TSC: u8 = 1;
/// No counter: the page carries no time, only the disruption signals.
pub const COUNTER_INVALID: u8 = 0xff;

/// `flags` bit: the hypervisor bumps `vm_generation_counter` on every snapshot restore.
pub const FLAG_VM_GEN_COUNTER_PRESENT: u64 = 1 << 8;

/// `flags` bit (Linux 6.19+ ABI): the hypervisor sends an ACPI notification on every update, and
/// `poll()` on the device waits for one; without it the driver answers `poll()` with POLLHUP.
pub const FLAG_NOTIFICATION_PRESENT: u64 = 1 << 9;

/// Word holding `seq_count` (bytes 12..16: the high half of word 1).
const SEQ_WORD: usize = 1;

/// One consistent reading of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// `magic`; [`MAGIC`] on a real page.
    pub magic: u32,
    /// `size`: bytes of the region holding the structure (a page, 4096, from QEMU).
    pub size: u32,
    /// `version`: 1.
    pub version: u16,
    /// `counter_id`: [`COUNTER_X86_TSC`], [`COUNTER_ARM_VCNT`] or [`COUNTER_INVALID`].
    pub counter_id: u8,
    /// `time_type`: 0 UTC, 1 TAI, 2 monotonic.
    pub time_type: u8,
    /// `seq_count` the snapshot was read under (even).
    pub seq_count: u32,
    /// `disruption_marker`: changes whenever the counter was disrupted (migration, restore).
    pub disruption_marker: u64,
    /// `flags` (`VMCLOCK_FLAG_*`).
    pub flags: u64,
    /// `clock_status`: 0 unknown, 1 initializing, 2 synchronized, 3 free-running, 4 unreliable.
    pub clock_status: u8,
    /// `leap_second_smearing_hint`.
    pub smearing_hint: u8,
    /// `tai_offset_sec` (two's complement).
    pub tai_offset_s: i16,
    /// `leap_indicator`.
    pub leap_indicator: u8,
    /// `counter_period_shift`.
    pub counter_period_shift: u8,
    /// `counter_value`: the counter reading paired with `time_*`.
    pub counter_value: u64,
    /// `counter_period_frac_sec`, in 2^-(64 + shift) s.
    pub counter_period_frac_s: u64,
    /// `time_sec`.
    pub time_s: u64,
    /// `time_frac_sec`, in 2^-64 s.
    pub time_frac_s: u64,
    /// `time_esterror_nanosec`.
    pub time_esterror_ns: u64,
    /// `time_maxerror_nanosec`.
    pub time_maxerror_ns: u64,
    /// `vm_generation_counter`: changes on snapshot restore where the flag says so.
    pub vm_generation_counter: u64,
}

fn byte(w: u64, at: u32) -> u8 {
    (w >> (8 * at)) as u8
}

impl Snapshot {
    /// Decodes the 14 words of a page (little-endian, as the ABI is).
    pub fn decode(w: &[u64; WORDS]) -> Self {
        Self {
            magic: w[0] as u32,
            size: (w[0] >> 32) as u32,
            version: w[1] as u16,
            counter_id: byte(w[1], 2),
            time_type: byte(w[1], 3),
            seq_count: (w[1] >> 32) as u32,
            disruption_marker: w[2],
            flags: w[3],
            clock_status: byte(w[4], 2),
            smearing_hint: byte(w[4], 3),
            tai_offset_s: (w[4] >> 32) as u16 as i16,
            leap_indicator: byte(w[4], 6),
            counter_period_shift: byte(w[4], 7),
            counter_value: w[5],
            counter_period_frac_s: w[6],
            time_s: w[9],
            time_frac_s: w[10],
            time_esterror_ns: w[11],
            time_maxerror_ns: w[12],
            vm_generation_counter: w[13],
        }
    }

    /// Whether the magic and version are those of ABI version 1.
    pub fn valid(&self) -> bool {
        self.magic == MAGIC && self.version == 1
    }

    /// Whether the page carries time (a known counter), i.e. whether the kernel makes a PHC of it.
    pub fn has_time(&self) -> bool {
        matches!(self.counter_id, COUNTER_ARM_VCNT | COUNTER_X86_TSC)
    }

    /// Whether the hypervisor notifies updates (`VMCLOCK_FLAG_NOTIFICATION_PRESENT`).
    pub fn has_notifications(&self) -> bool {
        self.flags & FLAG_NOTIFICATION_PRESENT != 0
    }

    /// Whether `vm_generation_counter` is maintained (`VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT`).
    pub fn has_generation_counter(&self) -> bool {
        self.flags & FLAG_VM_GEN_COUNTER_PRESENT != 0
    }

    /// `counter_id` by name.
    pub fn counter_name(&self) -> &'static str {
        match self.counter_id {
            COUNTER_ARM_VCNT => "arm_vcnt",
            COUNTER_X86_TSC => "x86_tsc",
            COUNTER_INVALID => "invalid",
            _ => "unknown",
        }
    }

    /// `clock_status` by name.
    pub fn status_name(&self) -> &'static str {
        match self.clock_status {
            0 => "unknown",
            1 => "initializing",
            2 => "synchronized",
            3 => "freerunning",
            4 => "unreliable",
            _ => "invalid",
        }
    }
}

/// Word-wise atomic access to a vmclock page: the mapped device, or a test's page.
pub trait Page {
    /// Loads word `i` (< [`WORDS`]) with `order`.
    fn load(&self, i: usize, order: Ordering) -> u64;
}

impl Page for [AtomicU64] {
    fn load(&self, i: usize, order: Ordering) -> u64 {
        self[i].load(order)
    }
}

/// A snapshot and how many reads it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// The consistent snapshot.
    pub snapshot: Snapshot,
    /// Reads tried, this one included (1 when no update got in the way).
    pub attempts: u32,
}

/// Reads a consistent snapshot by the seqcount protocol, trying at most `max_attempts` times.
pub fn read_consistent(page: &(impl Page + ?Sized), max_attempts: u32) -> Result<Reading> {
    for attempt in 1..=max_attempts.max(1) {
        let seq = page.load(SEQ_WORD, Ordering::Acquire) >> 32;
        if seq & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let mut w = [0u64; WORDS];
        for (i, slot) in w.iter_mut().enumerate() {
            *slot = page.load(i, Ordering::Relaxed);
        }
        // Orders the field loads before the second seq load (pairs with the writer's release
        // fence between its field stores and the seq store that makes it even again).
        fence(Ordering::Acquire);
        let again = page.load(SEQ_WORD, Ordering::Relaxed) >> 32;
        if again == seq && w[SEQ_WORD] >> 32 == seq {
            return Ok(Reading { snapshot: Snapshot::decode(&w), attempts: attempt });
        }
        std::hint::spin_loop();
    }
    Err(Error::VmclockUnsettled { attempts: max_attempts.max(1) })
}

/// The vmclock page of a device, mapped read-only, or a page file read into memory (a test's
/// fixture: a regular file is never mapped, so one that shrinks cannot raise SIGBUS).
#[derive(Debug)]
pub struct Vmclock {
    backing: Backing,
    path: PathBuf,
}

#[derive(Debug)]
enum Backing {
    /// The device's page, mapped; the descriptor answers `poll`.
    Device { map: memmap2::Mmap, file: File },
    /// A copy of a page file's first [`ABI_LEN`] bytes, as words.
    Memory(Box<[AtomicU64]>),
}

/// What `poll()` on the device answers at once (no waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PollAnswer {
    /// Nothing yet: the driver would wait for the hypervisor's notification.
    Waits,
    /// POLLIN: the page changed since this descriptor last read it.
    Readable,
    /// POLLHUP: the hypervisor sends no notifications (flag clear), so there is nothing to wait
    /// for: a guest learns of a disruption only by reading the page.
    Hangup,
    /// The driver has no poll method (Linux before the notification support): plain readable.
    NotSupported,
}

impl Vmclock {
    /// Maps the vmclock device at `path` (`/dev/vmclock0`), after checking from `stat` and the
    /// real `/sys` that it is one: see [`Vmclock::open_expecting`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_expecting(path, &Roots::default())
    }

    /// Maps one page, read-only, of the vmclock device at `path` (the kernel allows exactly one
    /// page at offset 0, read-only). Before anything is opened, the node must be the misc device
    /// `vmclockN` that sysfs under `roots` lists ([`node::check_vmclock`]); anything else is
    /// `NotVmclockNode` saying what it is. The open never blocks or takes a controlling terminal,
    /// and the opened descriptor is checked again (same device numbers) before it is mapped.
    pub fn open_expecting(path: impl AsRef<Path>, roots: &Roots) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| io_error(&e))?;
        node::check_vmclock(&meta, roots)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io_error(&e))?;
        let opened = file.metadata().map_err(|e| io_error(&e))?;
        node::check_vmclock(&opened, roots)?;
        if opened.rdev() != meta.rdev() {
            return Err(Error::NotVmclockNode(node::NodeKind::CharDevice {
                major: nix::sys::stat::major(opened.rdev()),
                minor: nix::sys::stat::minor(opened.rdev()),
                class: node::SysfsClass::Unknown,
            }));
        }
        // SAFETY: a shared read-only mapping of a character device checked above to be the
        // vmclock misc device, whose mmap hands out its one page (no file behind it that could
        // shrink). The bytes change under us (the hypervisor updates the page): they are only
        // read through the atomic loads of `words()`, never through a `&[u8]` whose contents
        // are assumed to stay put.
        let map =
            unsafe { memmap2::MmapOptions::new().len(PAGE_LEN).map(&file) }.map_err(|e| io_error(&e))?;
        Ok(Self { backing: Backing::Device { map, file }, path: path.to_owned() })
    }

    /// Reads a page saved to a regular file (a test's fixture, a copy of a guest's page) into
    /// memory: at most [`PAGE_LEN`] bytes, by `phc::input` (never a FIFO or a device, never
    /// mapped). `poll_now` on it answers `NotSupported`, as a plain file would.
    pub fn from_page_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = input::read_bytes(path, PAGE_LEN as u64, Links::Follow).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound
            } else {
                Error::VmclockFile(e.to_string())
            }
        })?;
        if bytes.len() < ABI_LEN {
            return Err(Error::VmclockShort { len: bytes.len() });
        }
        let words: Box<[AtomicU64]> = bytes[..ABI_LEN]
            .chunks_exact(8)
            .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect();
        Ok(Self { backing: Backing::Memory(words), path: path.to_owned() })
    }

    /// The path it was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn words(&self) -> &[AtomicU64] {
        let map = match &self.backing {
            Backing::Device { map, .. } => map,
            Backing::Memory(words) => return words,
        };
        let ptr = map.as_ptr();
        debug_assert!(ptr.align_offset(8) == 0 && map.len() >= ABI_LEN);
        // SAFETY: the mapping is page-aligned (so 8-aligned, AtomicU64's alignment), a page
        // (PAGE_LEN >= ABI_LEN) long and lives as long as `self`. AtomicU64 has
        // u64's size and layout. Memory that another party changes concurrently may be read
        // through atomics; atomic *loads* of 8 bytes are permitted on read-only memory on
        // targets with native 64-bit atomics (std::sync::atomic, "Atomic accesses to read-only
        // memory"), and nothing here stores.
        unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), WORDS) }
    }

    /// `poll()` on the device with a zero timeout: whether a process could sleep until the
    /// hypervisor's next update.
    pub fn poll_now(&self) -> Result<PollAnswer> {
        use std::os::fd::AsRawFd;
        let Backing::Device { file, .. } = &self.backing else { return Ok(PollAnswer::NotSupported) };
        // POLLOUT too: the driver never answers it, a file without a poll method always does.
        let mut p = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN | libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd that outlives the call, count 1, zero timeout; the fd is open
        // for as long as `self`.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n < 0 {
            return Err(io_error(&std::io::Error::last_os_error()));
        }
        Ok(match p.revents {
            0 => PollAnswer::Waits,
            r if r & libc::POLLHUP != 0 => PollAnswer::Hangup,
            // A file without a poll method answers "readable and writable" at once.
            r if r & libc::POLLOUT != 0 => PollAnswer::NotSupported,
            _ => PollAnswer::Readable,
        })
    }

    /// One consistent snapshot (at most [`MAX_ATTEMPTS`] reads).
    pub fn read(&self) -> Result<Reading> {
        read_consistent(self.words(), MAX_ATTEMPTS)
    }
}

fn io_error(e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(raw) => Error::from_errno(nix::errno::Errno::from_raw(raw), Context::Open),
        None => Error::Other(nix::errno::Errno::EIO),
    }
}

/// Whether `path` (symlinks resolved) is named `vmclockN`: which report a command gives. Says
/// nothing about what the node is; [`Vmclock::open`] checks that before opening it.
pub fn is_vmclock_path(path: &Path) -> bool {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    resolved.file_name().and_then(|n| n.to_str()).is_some_and(node::is_vmclock_name)
}

/// The vmclock devices the kernel lists (`/sys/class/misc/vmclock*`), as `/dev` paths, sorted.
pub fn list(sys_root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(sys_root.join("class/misc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| is_vmclock_path(Path::new(n)))
        .map(|n| Path::new("/dev").join(n))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
#[path = "vmclock_tests.rs"]
mod tests;
