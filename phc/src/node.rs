//! What a path names, decided from `stat` and sysfs before any PTP ioctl goes to it: a PHC's
//! character device (sysfs class `ptp`), a CUSE mock the caller vouches for, or something else,
//! described for the error. Opening the wrong node is not harmless (a FIFO blocks, a tty can become
//! the controlling terminal, `/dev/watchdog` arms), so the check runs before `open`.

use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use nix::sys::stat::{major, minor};

use crate::error::{Error, Result};
use crate::sysfs::{read_small, Roots};

/// What the caller expects the node to be; decides which character devices may be opened.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A kernel PHC: a character device of sysfs class `ptp` under these roots.
    Ptp(Roots),
    /// A mock PHC served through CUSE, which the caller named as such (the CLI's `--driver`). A
    /// CUSE device's class is `cuse`, not `ptp`; a real PHC is accepted too. Devices of any other
    /// class (misc, mem, tty, ...) and nodes sysfs does not know (ptys) are still refused; where
    /// there is no sysfs to ask, the caller's word is taken.
    Cuse(Roots),
}

impl Expect {
    /// A kernel PHC, looked up in the real `/sys`.
    pub fn ptp() -> Self {
        Self::Ptp(Roots::default())
    }

    /// A CUSE mock, looked up in the real `/sys`.
    pub fn cuse() -> Self {
        Self::Cuse(Roots::default())
    }

    fn roots(&self) -> &Roots {
        match self {
            Self::Ptp(r) | Self::Cuse(r) => r,
        }
    }
}

/// What sysfs says a character device's class is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysfsClass {
    /// The class's name (`ptp`, `misc`, `mem`, `tty`, `cuse`).
    Named(String),
    /// sysfs is there but has no entry for the device numbers (a pty, or a node made by `mknod`
    /// for numbers no driver registered).
    NoEntry,
    /// There is no sysfs to ask (`/sys/dev/char` is absent, or the roots are a fake tree).
    Unknown,
}

/// What a path turned out to be when it is no PTP clock; the error message says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    RegularFile,
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
    },
    /// A character device of another class.
    CharDevice {
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
        /// Its sysfs class.
        class: SysfsClass,
    },
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RegularFile => write!(f, "a regular file"),
            Self::Directory => write!(f, "a directory"),
            Self::Fifo => write!(f, "a FIFO"),
            Self::Socket => write!(f, "a socket"),
            Self::BlockDevice { major, minor } => write!(f, "block device {major}:{minor}"),
            Self::CharDevice { major, minor, class } => {
                write!(f, "character device {major}:{minor}")?;
                match class {
                    SysfsClass::Named(c) => write!(f, ", class {c}"),
                    SysfsClass::NoEntry => write!(f, ", no sysfs entry"),
                    SysfsClass::Unknown => Ok(()),
                }
            }
        }
    }
}

/// The numbers of the character device `meta` describes, or what kind of node it is instead.
fn char_device(meta: &Metadata) -> std::result::Result<(u64, u64), NodeKind> {
    let t = meta.file_type();
    let (major, minor) = (major(meta.rdev()), minor(meta.rdev()));
    if t.is_dir() {
        Err(NodeKind::Directory)
    } else if t.is_fifo() {
        Err(NodeKind::Fifo)
    } else if t.is_socket() {
        Err(NodeKind::Socket)
    } else if t.is_block_device() {
        Err(NodeKind::BlockDevice { major, minor })
    } else if !t.is_char_device() {
        Err(NodeKind::RegularFile)
    } else {
        Ok((major, minor))
    }
}

/// Checks that the node `meta` describes (from `stat`, which follows symlinks, or from `fstat` on
/// an open descriptor) is what `expect` allows. Reads sysfs only; sends nothing to the device.
pub fn check(meta: &Metadata, expect: &Expect) -> Result<()> {
    let not = |kind| Err(Error::NotPtpNode(kind));
    let (major, minor) = char_device(meta).map_err(Error::NotPtpNode)?;
    let roots = expect.roots();
    if registered_as_ptp(roots, major, minor) {
        return Ok(());
    }
    let class = char_class(roots, major, minor);
    let ok = match (&class, expect) {
        (SysfsClass::Named(c), _) if c == "ptp" => true,
        (SysfsClass::Named(c), Expect::Cuse(_)) => c == "cuse",
        (SysfsClass::Unknown, Expect::Cuse(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        not(NodeKind::CharDevice { major, minor, class })
    }
}

/// Checks that the node `meta` describes is a vmclock device: a character device that the kernel's
/// `ptp_vmclock` registered as the misc device `vmclockN` (`/sys/class/misc/vmclockN/dev` holds
/// its numbers, or `/sys/dev/char/MAJ:MIN` is of class `misc` and named `vmclockN`). Where sysfs
/// cannot tell, it is refused: the page is mapped, and a mapping of anything else (a file that
/// shrinks) can kill the reader. `roots` locate sysfs as for [`check`]. Reads sysfs only.
pub fn check_vmclock(meta: &Metadata, roots: &Roots) -> Result<()> {
    let not = |kind| Err(Error::NotVmclockNode(kind));
    let (major, minor) = char_device(meta).map_err(Error::NotVmclockNode)?;
    let want = format!("{major}:{minor}");
    if let Some(misc) = sysfs_root(roots).map(|s| s.join("class").join("misc")) {
        let registered = fs::read_dir(&misc).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_str().is_some_and(is_vmclock_name)
                && read_small(&e.path().join("dev")).is_ok_and(|d| d.trim() == want)
        });
        if registered {
            return Ok(());
        }
    }
    let class = char_class(roots, major, minor);
    if class == SysfsClass::Named("misc".into()) {
        let named = sys_dev_char(roots)
            .and_then(|d| fs::read_link(d.join(&want)).ok())
            .and_then(|target| target.file_name().and_then(|n| n.to_str()).map(is_vmclock_name));
        if named == Some(true) {
            return Ok(());
        }
    }
    not(NodeKind::CharDevice { major, minor, class })
}

/// `vmclockN`: the name `ptp_vmclock` gives its misc device.
pub fn is_vmclock_name(name: &str) -> bool {
    name.strip_prefix("vmclock")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

/// The sysfs root (`/sys`) when the class folder is `SYSFS/class/ptp`.
fn sysfs_root(roots: &Roots) -> Option<PathBuf> {
    sys_dev_char(roots).and_then(|d| d.parent()?.parent().map(PathBuf::from))
}

/// Whether some `ptpN/dev` under the class folder holds these numbers.
fn registered_as_ptp(roots: &Roots, major: u64, minor: u64) -> bool {
    let want = format!("{major}:{minor}");
    let Ok(entries) = fs::read_dir(&roots.sys_class) else { return false };
    entries.filter_map(|e| e.ok()).any(|e| read_small(&e.path().join("dev")).is_ok_and(|d| d.trim() == want))
}

/// `/sys/dev/char`, beside the class folder when that is `SYSFS/class/ptp`.
fn sys_dev_char(roots: &Roots) -> Option<PathBuf> {
    let class_dir = roots.sys_class.parent()?;
    let sysfs = class_dir.parent()?;
    (roots.sys_class.file_name()? == "ptp" && class_dir.file_name()? == "class")
        .then(|| sysfs.join("dev").join("char"))
}

/// The class `/sys/dev/char/MAJ:MIN/subsystem` links to.
fn char_class(roots: &Roots, major: u64, minor: u64) -> SysfsClass {
    let Some(dir) = sys_dev_char(roots).filter(|d| d.is_dir()) else { return SysfsClass::Unknown };
    let node = dir.join(format!("{major}:{minor}"));
    if fs::symlink_metadata(&node).is_err() {
        return SysfsClass::NoEntry;
    }
    match fs::read_link(node.join("subsystem")) {
        Ok(target) => match target.file_name() {
            Some(name) => SysfsClass::Named(name.to_string_lossy().into_owned()),
            None => SysfsClass::NoEntry,
        },
        Err(_) => SysfsClass::NoEntry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Access, Phc};
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// A fake sysfs laid out as the real one: `sys/class/ptp/ptpN/dev` and
    /// `sys/dev/char/MAJ:MIN/subsystem -> ../../../class/CLASS`.
    struct FakeSys {
        dir: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("sys/class/ptp")).unwrap();
            fs::create_dir_all(dir.path().join("sys/dev/char")).unwrap();
            Self { dir }
        }

        fn roots(&self) -> Roots {
            Roots { sys_class: self.dir.path().join("sys/class/ptp"), dev: self.dir.path().join("dev") }
        }

        fn char_dev(&self, numbers: &str, class: &str) {
            let d = self.dir.path().join("sys/dev/char").join(numbers);
            fs::create_dir_all(&d).unwrap();
            symlink(format!("../../../class/{class}"), d.join("subsystem")).unwrap();
        }

        fn ptp(&self, name: &str, numbers: &str) {
            let d = self.dir.path().join("sys/class/ptp").join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("dev"), format!("{numbers}\n")).unwrap();
        }
    }

    fn meta(p: &str) -> Metadata {
        fs::metadata(p).unwrap()
    }

    fn kind(r: Result<()>) -> NodeKind {
        match r {
            Err(Error::NotPtpNode(k)) => k,
            other => panic!("expected NotPtpNode, got {other:?}"),
        }
    }

    #[test]
    fn a_char_device_passes_only_when_sysfs_calls_it_ptp() {
        let sys = FakeSys::new();
        // /dev/null (1:3) as the fake tree describes it: first as class mem, as on a real machine.
        sys.char_dev("1:3", "mem");
        let refused = kind(check(&meta("/dev/null"), &Expect::Ptp(sys.roots())));
        let want = NodeKind::CharDevice { major: 1, minor: 3, class: SysfsClass::Named("mem".into()) };
        assert_eq!(refused, want);
        assert_eq!(
            Error::NotPtpNode(refused).to_string(),
            "not a PTP device (character device 1:3, class mem)"
        );
        // A CUSE mock must still not be a mem device.
        assert!(check(&meta("/dev/null"), &Expect::Cuse(sys.roots())).is_err());
        // Registered as ptp0 in the class folder: accepted whatever /sys/dev/char says.
        sys.ptp("ptp0", "1:3");
        check(&meta("/dev/null"), &Expect::Ptp(sys.roots())).unwrap();
    }

    #[test]
    fn the_subsystem_link_alone_names_a_ptp_device() {
        let sys = FakeSys::new();
        sys.char_dev("1:5", "ptp");
        check(&meta("/dev/zero"), &Expect::Ptp(sys.roots())).unwrap();
        // Another PHC's numbers in the class folder do not make 1:3 one.
        sys.ptp("ptp0", "1:5");
        let k = kind(check(&meta("/dev/null"), &Expect::Ptp(sys.roots())));
        assert_eq!(k, NodeKind::CharDevice { major: 1, minor: 3, class: SysfsClass::NoEntry });
        assert_eq!(k.to_string(), "character device 1:3, no sysfs entry");
    }

    #[test]
    fn a_cuse_mock_is_accepted_by_class_cuse_or_where_sysfs_cannot_tell() {
        let sys = FakeSys::new();
        sys.char_dev("1:3", "cuse");
        assert!(check(&meta("/dev/null"), &Expect::Ptp(sys.roots())).is_err());
        check(&meta("/dev/null"), &Expect::Cuse(sys.roots())).unwrap();
        // Unknown to a sysfs that exists (a pty): refused even for a mock.
        let k = kind(check(&meta("/dev/zero"), &Expect::Cuse(sys.roots())));
        assert_eq!(k, NodeKind::CharDevice { major: 1, minor: 5, class: SysfsClass::NoEntry });
        // No sysfs at all: the caller's word stands for a mock, never for a kernel PHC.
        let t = tempfile::tempdir().unwrap();
        let bare = Roots { sys_class: t.path().join("sys/class/ptp"), dev: t.path().into() };
        check(&meta("/dev/zero"), &Expect::Cuse(bare.clone())).unwrap();
        let k = kind(check(&meta("/dev/zero"), &Expect::Ptp(bare)));
        assert_eq!(k, NodeKind::CharDevice { major: 1, minor: 5, class: SysfsClass::Unknown });
        assert_eq!(k.to_string(), "character device 1:5");
    }

    #[test]
    fn other_file_types_are_named_and_never_accepted() {
        let sys = FakeSys::new();
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("file");
        fs::write(&file, b"x").unwrap();
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let sock = t.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for expect in [Expect::Ptp(sys.roots()), Expect::Cuse(sys.roots())] {
            let k = |p: &Path| kind(check(&fs::metadata(p).unwrap(), &expect)).to_string();
            assert_eq!(k(&file), "a regular file");
            assert_eq!(k(t.path()), "a directory");
            assert_eq!(k(&fifo), "a FIFO");
            assert_eq!(k(&sock), "a socket");
        }
        if let Ok(m) = fs::metadata("/dev/loop0") {
            let k = kind(check(&m, &Expect::Cuse(sys.roots())));
            assert_eq!(k, NodeKind::BlockDevice { major: 7, minor: 0 });
        }
    }

    #[test]
    fn the_real_sysfs_path_is_found_beside_the_class_folder() {
        assert_eq!(sys_dev_char(&Roots::default()), Some(PathBuf::from("/sys/dev/char")));
        let odd = Roots { sys_class: "/tmp/class".into(), dev: "/dev".into() };
        assert_eq!(sys_dev_char(&odd), None);
    }

    #[test]
    fn opening_non_ptp_paths_gives_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let not = |p: &Path| match Phc::open(p, Access::ReadOnly) {
            Err(Error::NotPtpNode(k)) => k.to_string(),
            other => panic!("{}: {other:?}", p.display()),
        };
        assert_eq!(not(dir.path()), "a directory");
        assert!(matches!(Phc::open(dir.path().join("nope"), Access::ReadOnly), Err(Error::NotFound)));
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(not(&file), "a regular file");
        // A FIFO without a writer would block a plain open forever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(not(&fifo), "a FIFO");
        // /dev/null is a character device, but not of class ptp: refused before any ioctl.
        assert!(not(Path::new("/dev/null")).starts_with("character device 1:3"));
    }

    #[test]
    fn a_node_that_passes_the_check_must_still_answer_getcaps() {
        // A fake sysfs that registers /dev/null's numbers as ptp0: the check passes, and the
        // device's ENOTTY to GETCAPS is what stops the open.
        let t = tempfile::tempdir().unwrap();
        let ptp0 = t.path().join("class/ptp/ptp0");
        std::fs::create_dir_all(&ptp0).unwrap();
        std::fs::write(ptp0.join("dev"), "1:3\n").unwrap();
        let roots = Roots { sys_class: t.path().join("class/ptp"), dev: t.path().into() };
        let r = Phc::open_expecting("/dev/null", Access::ReadOnly, &Expect::Ptp(roots));
        assert!(matches!(r, Err(Error::NotPtpDevice)), "{r:?}");
        // With no sysfs to ask, a CUSE mock is taken on the caller's word; GETCAPS decides.
        let bare = Roots { sys_class: t.path().join("none/class/ptp"), dev: t.path().into() };
        let r = Phc::open_expecting("/dev/null", Access::ReadWrite, &Expect::Cuse(bare));
        assert!(matches!(r, Err(Error::NotPtpDevice)), "{r:?}");
    }
}
