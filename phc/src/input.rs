//! Every file the tools take as input, read one way: a non-blocking open (a FIFO cannot hang the
//! reader), a regular file only (never a device such as `/dev/zero`), a size cap per kind of file
//! checked before and while reading, and, for paths that come from data rather than from the
//! user, no symlink anywhere it could lead out of its folder. Also the one rule for names that
//! become path components.
#![forbid(unsafe_code)]

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Whether the last path component may be a symlink: yes for a path the user typed, no for a
/// path built from a file's contents (a summary's `dir`, a baseline's scenario name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow a symlink in the last component (the user named the file).
    Follow,
    /// Refuse a symlink in the last component (`O_NOFOLLOW`).
    Refuse,
}

/// An error about the input itself (not a regular file, too large, not UTF-8, a bad name), as an
/// `io::Error` of kind `InvalidInput` or `InvalidData` whose message is one short phrase.
fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// What kind of file system object `meta` is, in words for an error message.
pub fn file_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a file"
    }
}

/// Opens a regular file for reading without blocking (a FIFO opens at once and is then refused),
/// checks its size against `max_bytes`, and returns it with its length.
pub fn open_regular(path: &Path, max_bytes: u64, links: Links) -> io::Result<(File, u64)> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let f = OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) && links == Links::Refuse {
            invalid("a symlink, which is not followed here".to_owned())
        } else {
            e
        }
    })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(invalid(format!("not a regular file ({})", file_kind(&meta))));
    }
    if meta.len() > max_bytes {
        return Err(invalid(format!("{} bytes, over the limit of {max_bytes}", meta.len())));
    }
    Ok((f, meta.len()))
}

/// Reads a whole regular file of at most `max_bytes` (see [`open_regular`]). The file may grow
/// while it is read: at most one byte past the cap is read, to notice.
pub fn read_bytes(path: &Path, max_bytes: u64, links: Links) -> io::Result<Vec<u8>> {
    let (f, len) = open_regular(path, max_bytes, links)?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(max_bytes.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max_bytes {
        return Err(invalid(format!("grew past the limit of {max_bytes} bytes while read")));
    }
    Ok(buf)
}

/// [`read_bytes`] for a UTF-8 text file.
pub fn read_text(path: &Path, max_bytes: u64, links: Links) -> io::Result<String> {
    String::from_utf8(read_bytes(path, max_bytes, links)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Longest name accepted as one path component (scenario, backend, report folder).
pub const MAX_NAME_BYTES: usize = 128;

/// Checks that `name` can be used as one path component as it is: 1 to [`MAX_NAME_BYTES`] bytes
/// of ASCII letters, digits, `.`, `_`, `+` and `-`, not starting with `.` or `-` (so never `.`,
/// `..`, a hidden file or something a command would read as an option). Returns the reason when
/// it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".to_owned());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("a name of {} bytes (at most {MAX_NAME_BYTES})", name.len()));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!("{name:?} starts with {:?}", &name[..1]));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Err(format!("{name:?} holds {c:?} (names use A-Z a-z 0-9 . _ + -)"));
    }
    Ok(())
}

/// Joins a relative path made of plain names (each passing [`check_name`]) under `base`, and
/// checks that nothing already on disk along it below `base` is a symlink, so the result stays
/// inside `base`. For paths read from data (a summary's report folder, `a/b`).
pub fn join_inside(base: &Path, rel: &str) -> io::Result<PathBuf> {
    let mut out = base.to_path_buf();
    let mut any = false;
    for comp in Path::new(rel).components() {
        match comp {
            Component::Normal(part) => {
                let s = part.to_str().ok_or_else(|| invalid(format!("{rel:?} is not UTF-8")))?;
                check_name(s).map_err(|why| invalid(format!("path {rel:?}: {why}")))?;
                out.push(s);
                any = true;
                match std::fs::symlink_metadata(&out) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(invalid(format!(
                            "{} is a symlink, which is not followed here",
                            out.display()
                        )))
                    }
                    _ => {}
                }
            }
            _ => return Err(invalid(format!("path {rel:?} is not relative and plain"))),
        }
    }
    if !any {
        return Err(invalid("an empty path".to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in ["reboot", "azure-pause-30s", "a.b", "x_y+z", "7.2", "qemu"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "-rf", "a/b", "a\\b", "a b", "a\0b", "é", "a\u{2028}"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever the string, an accepted name is one component that stays in its folder.
        #[test]
        fn an_accepted_name_is_one_plain_component(s in any::<String>()) {
            if check_name(&s).is_ok() {
                let comps: Vec<_> = Path::new(&s).components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], Component::Normal(_)));
                prop_assert!(!s.starts_with('-'));
            }
        }

        /// Whatever the string, join_inside yields a path under base or refuses.
        #[test]
        fn join_inside_stays_under_base(s in any::<String>()) {
            let base = Path::new("/nonexistent-phc-base");
            if let Ok(p) = join_inside(base, &s) {
                prop_assert!(p.starts_with(base));
                prop_assert!(p != base);
                prop_assert!(p.components().all(|c| !matches!(c, Component::ParentDir | Component::CurDir)));
            }
        }
    }

    #[test]
    fn join_inside_refuses_escapes_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["", "/etc", "../x", "a/../../x", "./a", "a//..", "a/.b"] {
            assert!(join_inside(d.path(), bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(join_inside(d.path(), "a/b").unwrap(), d.path().join("a/b"));
        std::os::unix::fs::symlink("/tmp", d.path().join("link")).unwrap();
        assert!(join_inside(d.path(), "link").is_err());
        assert!(join_inside(d.path(), "link/x").is_err());
    }

    #[test]
    fn readers_refuse_fifos_devices_symlinks_and_oversize() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t = std::time::Instant::now();
        let e = read_text(&fifo, 10, Links::Follow).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let e = read_bytes(Path::new("/dev/zero"), 10, Links::Follow).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let big = d.path().join("big");
        std::fs::write(&big, [b'x'; 11]).unwrap();
        assert!(read_bytes(&big, 10, Links::Follow).unwrap_err().to_string().contains("over the limit"));
        assert_eq!(read_bytes(&big, 11, Links::Follow).unwrap().len(), 11);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert_eq!(read_bytes(&link, 11, Links::Follow).unwrap().len(), 11);
        assert!(read_bytes(&link, 11, Links::Refuse).unwrap_err().to_string().contains("symlink"));
        std::fs::write(&big, [0xff, 0xfe]).unwrap();
        assert!(read_text(&big, 11, Links::Follow).is_err());
    }
}
