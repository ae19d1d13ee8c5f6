//! The uncompressed kernel for PVH boot. QEMU starts an ELF `vmlinux` that carries a PVH entry
//! note directly at its 32-bit entry point, which skips the bzImage decompressor: under TCG that
//! decompression of Debian's zstd kernel costs about 1.5 s of every boot.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{tmp, Error};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note QEMU looks for to boot an ELF kernel the PVH way.
const PHYS32_ENTRY: u32 = 18;

/// Compressed payloads a bzImage may carry, by magic, with the tool that decompresses them.
const PAYLOADS: &[(&[u8], &str)] =
    &[(b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")];

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether `elf` is a 64-bit little-endian ELF with a Xen PVH entry note in a PT_NOTE segment.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    has_pvh_note_inner(elf).unwrap_or(false)
}

fn has_pvh_note_inner(elf: &[u8]) -> Option<bool> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return Some(false);
    }
    let (phoff, phentsize, phnum) =
        (u64_at(elf, 0x20)? as usize, u16_at(elf, 0x36)? as usize, u16_at(elf, 0x38)?);
    for i in 0..phnum as usize {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? != 4 {
            continue; // not PT_NOTE
        }
        let (off, size) = (u64_at(elf, ph + 8)? as usize, u64_at(elf, ph + 32)? as usize);
        let mut at = off;
        while at + 12 <= off + size {
            let (namesz, descsz, kind) =
                (u32_at(elf, at)? as usize, u32_at(elf, at + 4)? as usize, u32_at(elf, at + 8)?);
            let name = elf.get(at + 12..at + 12 + namesz)?;
            if name == b"Xen\0" && kind == PHYS32_ENTRY {
                return Some(true);
            }
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    Some(false)
}

/// Largest bzImage read (Debian's is about 10 MB).
pub const MAX_BZIMAGE_BYTES: u64 = 128 << 20;
/// Largest kernel a payload may decompress to (Debian's vmlinux is about 57 MB): the decompressor
/// is killed past it, so a bomb costs this much memory at most.
pub const MAX_VMLINUX_BYTES: u64 = 512 << 20;

/// Runs `tool -dcq -- file` and keeps at most `cap` bytes of its output, streamed, so a bomb
/// costs `cap` of memory at most: `None` (the tool killed) when it would give more or its
/// output cannot be read, else the output and whether the tool succeeded.
pub(crate) fn decompress_capped(tool: &str, file: &Path, cap: u64) -> Result<Option<(Vec<u8>, bool)>, Error> {
    use std::io::Read;
    let mut child = Command::new(tool)
        .arg("-dcq")
        .arg("--")
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn { program: tool.into(), source })?;
    let mut out = Vec::new();
    let read = child.stdout.take().map(|so| so.take(cap + 1).read_to_end(&mut out));
    if read.is_none() || out.len() as u64 > cap {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    }
    let ok = child.wait().is_ok_and(|st| st.success());
    Ok(Some((out, ok)))
}

/// [`decompress_capped`] at [`MAX_VMLINUX_BYTES`] for a bzImage's payload: the decompressors
/// complain about the image's trailing bytes, so their status is not looked at.
fn decompress(tool: &str, payload: &Path) -> Result<Option<Vec<u8>>, Error> {
    Ok(decompress_capped(tool, payload, MAX_VMLINUX_BYTES)?.map(|(out, _)| out))
}

/// Decompresses the kernel inside a bzImage. The decompressors stop at the end of the stream
/// and complain about the trailing bytes of the image; the output is checked instead. The image
/// is read by `phc::input` (a regular file of at most [`MAX_BZIMAGE_BYTES`]) and the output is
/// capped at [`MAX_VMLINUX_BYTES`].
fn extract(bzimage: &Path) -> Result<Vec<u8>, Error> {
    let img = phc::input::read_bytes(bzimage, MAX_BZIMAGE_BYTES, phc::input::Links::Follow)
        .map_err(|source| Error::Io { op: "read", path: bzimage.to_owned(), source })?;
    for (magic, tool) in PAYLOADS {
        let Some(start) = img.windows(magic.len()).position(|w| w == *magic) else { continue };
        let payload = tmp::file("payload", "", "")?;
        fs::write(&payload, &img[start..]).map_err(|source| Error::Io {
            op: "write",
            path: payload.to_path_buf(),
            source,
        })?;
        if let Some(elf) = decompress(tool, &payload)? {
            if has_pvh_note(&elf) {
                return Ok(elf);
            }
        }
    }
    Err(Error::NoPvhKernel { path: bzimage.to_owned() })
}

/// The PVH-bootable `vmlinux` for `bzimage`, extracted once and cached next to it (or in the
/// private temp folder, `tmp::base`, when that is read-only). The cache is keyed by the bzImage's size and mtime, and written
/// by rename from a temp file beside it (removed on drop if the rename never happens), so
/// concurrent builders never see half a file.
pub fn vmlinux_for(bzimage: &Path) -> Result<PathBuf, Error> {
    let meta =
        fs::metadata(bzimage).map_err(|source| Error::Io { op: "read", path: bzimage.to_owned(), source })?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let name = format!("vmlinux-pvh-{}-{}", meta.len(), mtime.as_secs());
    let beside = bzimage.parent().map(|d| d.join(&name));
    let in_tmp = tmp::base()?.join(format!("phc-{name}"));
    for cached in beside.iter().chain([&in_tmp]) {
        if cached.is_file() {
            return Ok(cached.clone());
        }
    }
    let elf = extract(bzimage)?;
    let mut last = None;
    for dest in beside.iter().chain([&in_tmp]) {
        let folder = dest.parent().unwrap_or(Path::new("."));
        // Named like the temp dir's other files (tmp.rs), so a sweep finds it there if a kill
        // interrupts the write, and so that `remove_stale` never takes it for a finished kernel.
        let written = tempfile::Builder::new()
            .prefix(&tmp::prefix("pvh", ""))
            .tempfile_in(folder)
            .and_then(|mut f| f.write_all(&elf).map(|()| f))
            .and_then(|f| f.persist(dest).map_err(|e| e.error));
        match written {
            Ok(_) => {
                remove_stale(dest);
                return Ok(dest.clone());
            }
            Err(source) => last = Some(Error::Io { op: "write", path: dest.clone(), source }),
        }
    }
    Err(last.expect("the temp folder is always tried"))
}

/// Removes the extracted kernels of earlier bzImages beside `current` (57 MB each).
fn remove_stale(current: &Path) {
    let (Some(dir), Some(keep)) = (current.parent(), current.file_name()) else { return };
    let prefix = if keep.to_string_lossy().starts_with("phc-") { "phc-vmlinux-pvh-" } else { "vmlinux-pvh-" };
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        // Only finished files: `phc-pvh-*` (tmp.rs names) are writes in progress.
        if name != keep && n.starts_with(prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE segment holding one note.
    fn elf_with_note(name: &[u8], kind: u32) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 0x38];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let note_off = e.len() as u64;
        let mut note = Vec::new();
        note.extend((name.len() as u32).to_le_bytes());
        note.extend(4u32.to_le_bytes());
        note.extend(kind.to_le_bytes());
        note.extend(name);
        note.resize(12 + name.len().next_multiple_of(4), 0);
        note.extend([0u8; 4]);
        let ph = 0x40;
        e[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&note_off.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        e.extend(note);
        e
    }

    #[test]
    fn a_gzip_bomb_in_an_image_is_cut_off_not_held() {
        use std::io::Write as _;
        // 1 GiB of zeros, gzip'd (about 1 MB), behind an "MZ" header: refused with bounded memory.
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("bzImage");
        let mut f = fs::File::create(&img).unwrap();
        f.write_all(b"MZ").unwrap();
        f.write_all(&[0u8; 0x200]).unwrap();
        let mut gz =
            Command::new("gzip").arg("-c").stdin(std::process::Stdio::piped()).stdout(f).spawn().unwrap();
        let mut stdin = gz.stdin.take().unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_VMLINUX_BYTES >> 20) + 8 {
            stdin.write_all(&zeros).unwrap();
        }
        drop(stdin);
        assert!(gz.wait().unwrap().success());
        let e = extract(&img).unwrap_err();
        assert!(matches!(e, Error::NoPvhKernel { .. }), "{e:?}");
        // Oversize, FIFO and device images are refused before they are read.
        let big = t.path().join("big");
        fs::File::create(&big).unwrap().set_len(MAX_BZIMAGE_BYTES + 1).unwrap();
        assert!(matches!(extract(&big), Err(Error::Io { op: "read", .. })));
        assert!(matches!(extract(Path::new("/dev/zero")), Err(Error::Io { op: "read", .. })));
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(extract(&fifo), Err(Error::Io { op: "read", .. })));
    }

    #[test]
    fn finds_the_pvh_entry_note_only() {
        assert!(has_pvh_note(&elf_with_note(b"Xen\0", PHYS32_ENTRY)));
        assert!(!has_pvh_note(&elf_with_note(b"Xen\0", 17)));
        assert!(!has_pvh_note(&elf_with_note(b"GNU\0", PHYS32_ENTRY)));
        assert!(!has_pvh_note(b"\x7fELF\x02\x01"));
        assert!(!has_pvh_note(b"MZ not an elf"));
    }
}
