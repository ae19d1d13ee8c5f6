//! Boot once, restore many: a guest booted to agent-ready is saved (QMP `migrate` to a file,
//! `snapshot`) into the cache, keyed by everything that made it (QEMU, the command line, the
//! kernel, the initramfs's bytes), and a later guest started with the same inputs is restored
//! from it instead of booting: the same guest at the same virtual instant, its agent waiting,
//! nothing else started. Virtual time uses it: there a restored guest is exactly the booted one
//! (every guest clock follows QEMU's virtual clock, which the stream carries). In real time a
//! restored guest wakes up as far behind the host as the file is old, so only the nested guest
//! (`Session::start_nested`) is restored there: its host clock is L1's CLOCK_REALTIME, which is
//! stepped to the host's after the restore, and L2 is set from ptp_kvm once, as after a boot.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::qmp::Qmp;
use crate::{Error, GuestBuilder};

/// Changes when what a saved file holds, or how it is keyed, changes: old files then miss.
const FORMAT: &str = "phc-harness boot snapshot 1";

/// Files kept in the cache; older ones (by last use) go when a new one is saved.
pub const KEEP: usize = 8;

/// How a guest came up with respect to the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct BootSnapshot {
    /// The cache key (16 hex digits).
    pub key: String,
    /// Whether the guest was restored (else it booted and was saved, or could not be).
    pub restored: bool,
    /// Wall seconds to restore to the agent's first answer, or to save after booting.
    pub seconds: f64,
    /// Bytes in the file.
    pub bytes: u64,
    /// Why a boot was not restored or not saved, where it matters (a failed restore, a failed
    /// save).
    pub note: Option<String>,
}

impl BootSnapshot {
    /// A guest booted without the cache, and why.
    pub fn skipped(why: &str) -> Self {
        Self { key: String::new(), restored: false, seconds: 0.0, bytes: 0, note: Some(why.into()) }
    }

    /// For the report (`backend_info.boot_snapshot`, see JSON.md).
    pub fn to_json(&self) -> serde_json::Value {
        if self.key.is_empty() {
            return json!({ "restored": false, "note": self.note });
        }
        json!({
            "key": self.key,
            "restored": self.restored,
            if self.restored { "restore_s" } else { "save_s" }: (self.seconds * 1000.0).round() / 1000.0,
            "bytes": self.bytes,
            "note": self.note,
        })
    }
}

/// The cache's folder.
pub fn dir() -> PathBuf {
    crate::image::cache_dir().join("boot-snapshots")
}

/// FNV-1a over 64-bit words (a cache key, not a MAC: collisions need not be hard to make, only
/// unlikely by chance), the tail padded with its length.
struct Hash(u64);

impl Hash {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        self.word(b.len() as u64);
    }
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        self.0 ^= self.0 >> 29;
    }
    fn file(&mut self, p: &Path) -> Result<(), Error> {
        let io = |source| Error::Io { op: "read", path: p.to_owned(), source };
        let mut f = fs::File::open(p).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            self.bytes(&buf[..n]);
        }
    }
    /// A file by name, size and modification time (the kernel: tens of MB, replaced, not edited).
    fn stamp(&mut self, p: &Path) {
        self.bytes(p.as_os_str().as_encoded_bytes());
        if let Ok(m) = fs::metadata(p) {
            self.word(m.len());
            let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            self.word(t.map_or(0, |d| d.as_nanos() as u64));
        }
    }
}

/// The cache key of a guest `builder` would start: QEMU's binary (path, size, time), its whole
/// command line but for the per-run folder, the initramfs path and the process's `-name`, the
/// kernel's stamp and the initramfs's bytes.
pub fn key(builder: &GuestBuilder) -> Result<String, Error> {
    key_with(builder, &[])
}

/// `key`, with each of `run_paths` (a folder made for this run, such as a nested guest's relayed
/// sockets) written as its name wherever an argument holds it.
pub fn key_with(builder: &GuestBuilder, run_paths: &[(&Path, &str)]) -> Result<String, Error> {
    let mut h = Hash::new();
    h.bytes(FORMAT.as_bytes());
    let qemu = builder.program();
    h.stamp(&crate::accel::find_program(qemu).unwrap_or_else(|| qemu.to_owned()));
    let initrd = builder.initrd_path().to_owned();
    let initrd_text = initrd.display().to_string();
    let mut after_name = false;
    for a in builder.args(Path::new("/run-folder")) {
        // `-name` names the process (its role: scenario, device, a test's), not the guest: one
        // file serves them all.
        if std::mem::replace(&mut after_name, a == "-name") {
            h.bytes(b"(name)");
            continue;
        }
        if a == initrd_text {
            h.bytes(b"(initramfs)");
            continue;
        }
        let a = run_paths.iter().fold(a, |a, (p, name)| a.replace(&*p.to_string_lossy(), name));
        h.bytes(a.as_bytes());
    }
    h.stamp(builder.kernel_path());
    h.file(&initrd)?;
    Ok(format!("{:016x}", h.0))
}

/// The saved guest for `key`, if the cache has one.
pub fn lookup(key: &str) -> Option<PathBuf> {
    let p = dir().join(format!("{key}.mig"));
    let m = fs::symlink_metadata(&p).ok()?;
    m.file_type().is_file().then_some(p)
}

/// Drops `key`'s file (one that failed to restore).
pub fn forget(key: &str) {
    let _ = fs::remove_file(dir().join(format!("{key}.mig")));
}

/// Marks `path` used now, so that pruning keeps it.
pub fn touch(path: &Path) {
    if let Ok(f) = fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Saves the guest behind `q` as `key` (into a temp name first, then renamed: a reader never
/// sees half a file), lets it run on (`cont`) where `resume` says so (a guest that holds stands
/// until its next request), and prunes the cache to `KEEP` files. Returns the seconds it took
/// and the file's size.
pub fn save(q: &mut Qmp, key: &str, resume: bool, deadline: Instant) -> Result<(f64, u64), Error> {
    let t0 = Instant::now();
    let d = dir();
    fs::create_dir_all(&d).map_err(|source| Error::Io { op: "create", path: d.clone(), source })?;
    let tmp = d.join(format!(".{key}.{}.part", std::process::id()));
    let done = d.join(format!("{key}.mig"));
    let r = crate::snapshot::migrate_to(q, &tmp, deadline).and_then(|()| {
        fs::rename(&tmp, &done).map_err(|source| Error::Io { op: "rename", path: tmp.clone(), source })
    });
    // The guest runs on whatever became of the file (one that stands is resumed by its next
    // request).
    let resumed = if resume { q.execute("cont", None, deadline).map(drop) } else { Ok(()) };
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r?;
    resumed?;
    let bytes = fs::metadata(&done).map(|m| m.len()).unwrap_or(0);
    prune(&d, KEEP);
    Ok((t0.elapsed().as_secs_f64(), bytes))
}

/// Keeps the `keep` most recently used files in `d` (and leftovers of saves that died go).
fn prune(d: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(d) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = e.metadata() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        let age = m.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        if name.ends_with(".part") && age > Duration::from_secs(3600) {
            let _ = fs::remove_file(&p);
        } else if name.ends_with(".mig") && m.is_file() {
            files.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), p));
        }
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, p) in files.into_iter().skip(keep) {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_initramfs_and_the_command_line_but_not_the_run_folder() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.cpio"), d.path().join("b.cpio"));
        fs::write(&a, b"same bytes").unwrap();
        fs::write(&b, b"same bytes").unwrap();
        let k = |i: &Path, extra: &str| {
            let mut g = GuestBuilder::new("/k", i);
            if !extra.is_empty() {
                g = g.arg(extra);
            }
            key(&g).unwrap()
        };
        // Two temp copies of one image: one key.
        assert_eq!(k(&a, ""), k(&b, ""));
        assert_ne!(k(&a, ""), k(&a, "-S"));
        fs::write(&b, b"other bytes").unwrap();
        assert_ne!(k(&a, ""), k(&b, ""));
        // A run's own folder named in an argument: one key whatever the folder.
        let sock = |d: &str| {
            let g = GuestBuilder::new("/k", &a).arg("-chardev").arg(format!("socket,id=x,path={d}/l2.sock"));
            key_with(&g, &[(Path::new(d), "(sockets)")]).unwrap()
        };
        assert_eq!(sock("/tmp/run-1"), sock("/tmp/run-2"));
        // The role names the process only.
        let role = |r: &str| key(&GuestBuilder::new("/k", &a).role(r.to_owned())).unwrap();
        assert_eq!(role("scenario"), role("device"));
        assert_ne!(sock("/tmp/run-1"), k(&a, ""));
        let v = GuestBuilder::new("/k", &a).clock(crate::GuestClock::Virtual { rtc_base_s: 0 });
        let w = GuestBuilder::new("/k", &a).clock(crate::GuestClock::Virtual { rtc_base_s: 1 });
        assert_ne!(key(&v).unwrap(), key(&w).unwrap());
    }

    #[test]
    fn hashing_sees_every_byte_and_the_length() {
        let h = |b: &[u8]| {
            let mut x = Hash::new();
            x.bytes(b);
            x.0
        };
        assert_ne!(h(b""), h(b"\0"));
        assert_ne!(h(b"abcdefgh"), h(b"abcdefgh\0"));
        assert_ne!(h(b"abcdefghi"), h(b"abcdefghj"));
    }

    #[test]
    fn pruning_keeps_the_newest_files() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5u64 {
            let p = d.path().join(format!("{i}.mig"));
            fs::write(&p, b"x").unwrap();
            let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 + i);
            fs::File::options().append(true).open(&p).unwrap().set_modified(t).unwrap();
        }
        prune(d.path(), 2);
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        left.sort();
        assert_eq!(left, ["3.mig", "4.mig"]);
    }
}
