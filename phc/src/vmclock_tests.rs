//! The vmclock reader: field offsets against the C layout, and the seqcount protocol against a
//! writer that tears (a simulated interleaving that proptest schedules, and a real thread).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// `struct vmclock_abi` byte offsets, from include/uapi/linux/vmclock-abi.h.
const OFF_MAGIC: usize = 0;
const OFF_SIZE: usize = 4;
const OFF_VERSION: usize = 8;
const OFF_COUNTER_ID: usize = 10;
const OFF_TIME_TYPE: usize = 11;
const OFF_SEQ: usize = 12;
const OFF_MARKER: usize = 16;
const OFF_FLAGS: usize = 24;
const OFF_STATUS: usize = 34;
const OFF_SMEAR: usize = 35;
const OFF_TAI: usize = 36;
const OFF_LEAP: usize = 38;
const OFF_SHIFT: usize = 39;
const OFF_COUNTER: usize = 40;
const OFF_PERIOD: usize = 48;
const OFF_TIME_SEC: usize = 72;
const OFF_TIME_FRAC: usize = 80;
const OFF_ESTERR: usize = 88;
const OFF_MAXERR: usize = 96;
const OFF_GEN: usize = 104;

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

fn words_of(b: &[u8]) -> [u64; WORDS] {
    let mut w = [0u64; WORDS];
    for (i, slot) in w.iter_mut().enumerate() {
        *slot = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    }
    w
}

/// What QEMU 10's `-device vmclock` writes at realize (hw/acpi/vmclock.c), with the marker and
/// the seq after one update, and distinct values elsewhere to catch a wrong offset.
fn sample_page() -> Vec<u8> {
    let mut b = vec![0u8; PAGE_LEN];
    put(&mut b, OFF_MAGIC, &MAGIC.to_le_bytes());
    put(&mut b, OFF_SIZE, &4096u32.to_le_bytes());
    put(&mut b, OFF_VERSION, &1u16.to_le_bytes());
    b[OFF_COUNTER_ID] = COUNTER_INVALID;
    b[OFF_TIME_TYPE] = 2;
    put(&mut b, OFF_SEQ, &2u32.to_le_bytes());
    put(&mut b, OFF_MARKER, &1u64.to_le_bytes());
    put(&mut b, OFF_FLAGS, &FLAG_VM_GEN_COUNTER_PRESENT.to_le_bytes());
    b[OFF_STATUS] = 3;
    b[OFF_SMEAR] = 1;
    put(&mut b, OFF_TAI, &(-37i16).to_le_bytes());
    b[OFF_LEAP] = 4;
    b[OFF_SHIFT] = 5;
    put(&mut b, OFF_COUNTER, &0x1111u64.to_le_bytes());
    put(&mut b, OFF_PERIOD, &0x2222u64.to_le_bytes());
    put(&mut b, OFF_TIME_SEC, &0x3333u64.to_le_bytes());
    put(&mut b, OFF_TIME_FRAC, &0x4444u64.to_le_bytes());
    put(&mut b, OFF_ESTERR, &0x5555u64.to_le_bytes());
    put(&mut b, OFF_MAXERR, &0x6666u64.to_le_bytes());
    put(&mut b, OFF_GEN, &7u64.to_le_bytes());
    b
}

#[test]
fn decodes_every_field_at_its_abi_offset() {
    let s = Snapshot::decode(&words_of(&sample_page()));
    assert_eq!(s.magic, MAGIC);
    assert_eq!(&s.magic.to_le_bytes(), b"VCLK");
    assert_eq!(s.size, 4096);
    assert_eq!(s.version, 1);
    assert_eq!((s.counter_id, s.counter_name()), (COUNTER_INVALID, "invalid"));
    assert_eq!(s.time_type, 2);
    assert_eq!(s.seq_count, 2);
    assert_eq!(s.disruption_marker, 1);
    assert!(s.has_generation_counter());
    assert_eq!((s.clock_status, s.status_name()), (3, "freerunning"));
    assert_eq!((s.smearing_hint, s.tai_offset_s, s.leap_indicator), (1, -37, 4));
    assert_eq!(s.counter_period_shift, 5);
    assert_eq!((s.counter_value, s.counter_period_frac_s), (0x1111, 0x2222));
    assert_eq!((s.time_s, s.time_frac_s), (0x3333, 0x4444));
    assert_eq!((s.time_esterror_ns, s.time_maxerror_ns), (0x5555, 0x6666));
    assert_eq!(s.vm_generation_counter, 7);
    assert!(s.valid() && !s.has_time());
}

#[test]
fn reads_a_page_file_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vmclock0");
    std::fs::write(&p, sample_page()).unwrap();
    let v = Vmclock::from_page_file(&p).unwrap();
    // The file may change or shrink now: the page was copied, nothing is mapped.
    std::fs::write(&p, b"").unwrap();
    let r = v.read().unwrap();
    assert_eq!(r.attempts, 1);
    assert_eq!(r.snapshot, Snapshot::decode(&words_of(&sample_page())));
    assert_eq!(v.poll_now().unwrap(), PollAnswer::NotSupported);
    assert!(is_vmclock_path(&p));
    assert!(!is_vmclock_path(Path::new("/dev/ptp0")));
    assert!(!is_vmclock_path(Path::new("/dev/vmclock")));
}

#[test]
fn short_missing_and_hostile_page_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short");
    std::fs::write(&p, [0u8; 64]).unwrap();
    assert!(matches!(Vmclock::from_page_file(&p), Err(Error::VmclockShort { len: 64 })));
    assert!(matches!(Vmclock::from_page_file(dir.path().join("none")), Err(Error::NotFound)));
    let big = dir.path().join("big");
    std::fs::write(&big, vec![0u8; PAGE_LEN + 1]).unwrap();
    let e = Vmclock::from_page_file(&big).unwrap_err().to_string();
    assert!(e.contains("over the limit"), "{e}");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = Vmclock::from_page_file(&fifo).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
    let e = Vmclock::from_page_file("/dev/zero").unwrap_err().to_string();
    assert!(e.contains("character device"), "{e}");
}

/// A fake sysfs: `sys/class/ptp`, `sys/class/misc/NAME/dev`, `sys/dev/char/MAJ:MIN`.
fn fake_sys() -> (tempfile::TempDir, Roots) {
    let t = tempfile::tempdir().unwrap();
    for d in ["sys/class/ptp", "sys/class/misc", "sys/dev/char"] {
        std::fs::create_dir_all(t.path().join(d)).unwrap();
    }
    let roots = Roots { sys_class: t.path().join("sys/class/ptp"), dev: t.path().join("dev") };
    (t, roots)
}

#[test]
fn only_the_misc_device_vmclock_n_is_opened() {
    let (t, roots) = fake_sys();
    let not = |p: &Path, roots: &Roots| match Vmclock::open_expecting(p, roots) {
        Err(e @ Error::NotVmclockNode(_)) => e.to_string(),
        other => panic!("{}: {other:?}", p.display()),
    };
    // Regular files, whatever their name: never opened, never mapped.
    let file = t.path().join("vmclock0");
    std::fs::write(&file, sample_page()).unwrap();
    assert_eq!(not(&file, &roots), "not a vmclock device (a regular file)");
    assert_eq!(not(t.path(), &roots), "not a vmclock device (a directory)");
    let fifo = t.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(not(&fifo, &roots), "not a vmclock device (a FIFO)");
    let link = t.path().join("vmclock1");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert_eq!(not(&link, &roots), "not a vmclock device (a regular file)");
    // A character device sysfs does not list: refused, even named vmclock.
    assert_eq!(
        not(Path::new("/dev/zero"), &roots),
        "not a vmclock device (character device 1:5, no sysfs entry)"
    );
    // A misc device of another name (here /dev/zero's numbers, as /dev/fuse would be).
    let fuse = t.path().join("sys/dev/char/1:5");
    std::fs::create_dir_all(t.path().join("sys/devices/virtual/misc/fuse")).unwrap();
    std::fs::create_dir_all(t.path().join("sys/class")).unwrap();
    std::os::unix::fs::symlink("../../devices/virtual/misc/fuse", &fuse).unwrap();
    std::os::unix::fs::symlink(
        "../../../class/misc",
        t.path().join("sys/devices/virtual/misc/fuse/subsystem"),
    )
    .unwrap();
    assert_eq!(
        not(Path::new("/dev/zero"), &roots),
        "not a vmclock device (character device 1:5, class misc)"
    );
    // No sysfs at all: refused (a mapping needs sysfs's word).
    let bare = Roots { sys_class: t.path().join("none/class/ptp"), dev: t.path().into() };
    assert_eq!(not(Path::new("/dev/zero"), &bare), "not a vmclock device (character device 1:5)");
}

#[test]
fn the_misc_device_vmclock_n_passes_the_check() {
    let (t, roots) = fake_sys();
    let m = |p: &str| std::fs::metadata(p).unwrap();
    // Listed as /sys/class/misc/vmclock0 with /dev/zero's numbers.
    std::fs::create_dir_all(t.path().join("sys/class/misc/vmclock0")).unwrap();
    std::fs::write(t.path().join("sys/class/misc/vmclock0/dev"), "1:5\n").unwrap();
    node::check_vmclock(&m("/dev/zero"), &roots).unwrap();
    assert!(node::check_vmclock(&m("/dev/null"), &roots).is_err());
    // Or found by /sys/dev/char/1:3 -> .../misc/vmclock3 of class misc.
    let dev = t.path().join("sys/devices/platform/VMCLOCK:00/misc/vmclock3");
    std::fs::create_dir_all(&dev).unwrap();
    std::os::unix::fs::symlink("../../../../../class/misc", dev.join("subsystem")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/platform/VMCLOCK:00/misc/vmclock3",
        t.path().join("sys/dev/char/1:3"),
    )
    .unwrap();
    node::check_vmclock(&m("/dev/null"), &roots).unwrap();
    // /dev/null passes the check and is then mapped: its mmap fails (ENODEV), named, no crash.
    assert!(Vmclock::open_expecting("/dev/null", &roots).is_err());
}

#[test]
fn lists_misc_vmclock_nodes() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["vmclock0", "vmclock1", "rfkill", "vmclockx"] {
        std::fs::create_dir_all(dir.path().join("class/misc").join(n)).unwrap();
    }
    assert_eq!(list(dir.path()), vec![PathBuf::from("/dev/vmclock0"), PathBuf::from("/dev/vmclock1")]);
    assert!(list(&dir.path().join("nothing")).is_empty());
}

/// The value generation `g` writes into word `i`; word 0 and the low half of word 1 are constant.
fn field(g: u64, i: usize) -> u64 {
    (g << 8) | i as u64
}

fn seq_word(seq: u64) -> u64 {
    (seq << 32) | 1
}

/// Whether a snapshot holds one generation's fields throughout, and that generation's seq.
fn consistent(s: &Snapshot) -> bool {
    let g = u64::from(s.seq_count / 2);
    let w = [
        s.disruption_marker,
        s.flags,
        // Word 4 is rebuilt from its bytes; the others are whole.
        u64::from(s.clock_status) << 16
            | u64::from(s.smearing_hint) << 24
            | u64::from(s.tai_offset_s as u16) << 32
            | u64::from(s.leap_indicator) << 48
            | u64::from(s.counter_period_shift) << 56,
        s.counter_value,
        s.counter_period_frac_s,
    ];
    s.seq_count & 1 == 0
        && w.iter().enumerate().all(|(k, v)| *v == field(g, k + 2) & if k == 2 { !0xffff } else { !0 })
        && [s.time_s, s.time_frac_s, s.time_esterror_ns, s.time_maxerror_ns, s.vm_generation_counter]
            .iter()
            .enumerate()
            .all(|(k, v)| *v == field(g, k + 9))
}

/// A page whose writer advances between the reader's loads by a proptest-chosen schedule: the
/// interleavings a real race may produce, replayed deterministically. The writer follows
/// QEMU's order: seq odd, every field word, seq even.
struct ScriptedPage {
    mem: RefCell<[u64; WORDS]>,
    gen: Cell<u64>,
    /// Micro-steps of the update in progress still to do (0: none in progress).
    step: Cell<usize>,
    schedule: Vec<u8>,
    loads: Cell<usize>,
}

impl ScriptedPage {
    fn new(schedule: Vec<u8>) -> Self {
        let mut mem = [0u64; WORDS];
        mem[0] = u64::from(MAGIC) | 4096 << 32;
        mem[1] = seq_word(2);
        for (i, w) in mem.iter_mut().enumerate().skip(2) {
            *w = field(1, i);
        }
        Self { mem: RefCell::new(mem), gen: Cell::new(1), step: Cell::new(0), schedule, loads: Cell::new(0) }
    }

    /// One writer micro-step: 0 makes seq odd, 1..=12 write words 2..=13, 13 makes it even.
    fn write_one(&self) {
        let mut m = self.mem.borrow_mut();
        let s = self.step.get();
        let next = self.gen.get() + 1;
        match s {
            0 => m[1] = seq_word(2 * next - 1),
            1..=12 => m[s + 1] = field(next, s + 1),
            _ => {
                m[1] = seq_word(2 * next);
                self.gen.set(next);
            }
        }
        self.step.set(if s >= 13 { 0 } else { s + 1 });
    }
}

impl Page for ScriptedPage {
    fn load(&self, i: usize, _order: Ordering) -> u64 {
        let n = self.loads.get();
        self.loads.set(n + 1);
        for _ in 0..self.schedule.get(n).copied().unwrap_or(0) {
            self.write_one();
        }
        self.mem.borrow()[i]
    }
}

/// Word-by-word copy with no seq check: what the reader would return without the protocol.
fn naive_read(p: &impl Page) -> Snapshot {
    let mut w = [0u64; WORDS];
    for (i, slot) in w.iter_mut().enumerate() {
        *slot = p.load(i, Ordering::Relaxed);
    }
    Snapshot::decode(&w)
}

#[test]
fn the_torn_writer_does_tear_a_naive_read() {
    // The writer starts an update (seq odd, word 2) at the second load and finishes it at the
    // fourth. Without the protocol that read mixes an odd seq with new fields; with it the same
    // schedule gives one generation whole, on a second try.
    let torn = naive_read(&ScriptedPage::new(vec![0, 2, 0, 12]));
    assert!(!consistent(&torn), "{torn:?}");
    let r = read_consistent(&ScriptedPage::new(vec![0, 2, 0, 12]), 100).unwrap();
    assert!(consistent(&r.snapshot) && r.attempts > 1, "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the interleaving, the reader returns one generation whole, or gives up after
    /// its attempts; it never returns a torn snapshot.
    #[test]
    fn scripted_interleavings_never_tear(schedule in prop::collection::vec(0u8..20, 0..400),
                                         attempts in 1u32..30) {
        let page = ScriptedPage::new(schedule);
        match read_consistent(&page, attempts) {
            Ok(r) => {
                prop_assert!(consistent(&r.snapshot), "torn: {:?}", r.snapshot);
                prop_assert!(r.attempts <= attempts);
            }
            Err(Error::VmclockUnsettled { attempts: a }) => prop_assert_eq!(a, attempts),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

/// A page shared with a writer thread that updates it as fast as it can, with release
/// ordering as QEMU's smp_wmb() gives.
fn race(updates_per_pause: u32, reads: u32) -> (u32, u32) {
    let page: Arc<Vec<AtomicU64>> = Arc::new((0..WORDS).map(|_| AtomicU64::new(0)).collect());
    page[0].store(u64::from(MAGIC) | 4096 << 32, Ordering::Relaxed);
    page[1].store(seq_word(2), Ordering::Relaxed);
    for i in 2..WORDS {
        page[i].store(field(1, i), Ordering::Relaxed);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    let writer = {
        let (page, stop, running) = (page.clone(), stop.clone(), running.clone());
        std::thread::spawn(move || {
            let mut g = 1u64;
            running.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..updates_per_pause {
                    g += 1;
                    page[1].store(seq_word(2 * g - 1), Ordering::Relaxed);
                    std::sync::atomic::fence(Ordering::Release);
                    for i in 2..WORDS {
                        page[i].store(field(g, i), Ordering::Relaxed);
                    }
                    page[1].store(seq_word(2 * g), Ordering::Release);
                }
                std::thread::yield_now();
            }
        })
    };
    // Read only once the writer runs: otherwise a short test may read an idle page throughout.
    while !running.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let (mut retried, mut gave_up) = (0, 0);
    for _ in 0..reads {
        match read_consistent(page.as_slice(), 1000) {
            Ok(r) => {
                assert!(consistent(&r.snapshot), "torn snapshot from a racing writer: {:?}", r.snapshot);
                retried += u32::from(r.attempts > 1);
            }
            Err(Error::VmclockUnsettled { .. }) => gave_up += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    (retried, gave_up)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A real writer thread racing the reader: every snapshot returned is whole. (How often the
    /// reader had to retry depends on the scheduler; the assertion is on every snapshot.)
    #[test]
    fn a_racing_writer_thread_never_tears_a_snapshot(updates in 1u32..200) {
        let (retried, gave_up) = race(updates, 20_000);
        println!("racing writer, {updates} updates a burst: {retried} of 20000 reads retried, {gave_up} gave up");
        prop_assert!(gave_up < 20_000, "never settled ({retried} retried)");
    }
}
