//! PHC metadata from `/sys/class/ptp/ptpN` and discovery of every PHC on the machine, with the
//! `/dev` symlinks (such as Azure's `/dev/ptp_hyperv`) that point at each. The roots are
//! parameters so tests run on a fake tree.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::driver::Driver;
use crate::error::{Error, Result};

/// Where to look.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The sysfs class folder, normally `/sys/class/ptp`.
    pub sys_class: PathBuf,
    /// The device folder, normally `/dev`.
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self { sys_class: "/sys/class/ptp".into(), dev: "/dev".into() }
    }
}

/// What sysfs says about one PHC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhcInfo {
    /// Kernel name, `ptpN`.
    pub name: String,
    /// Device node, `/dev/ptpN`.
    pub path: PathBuf,
    /// Symlinks in the device folder that resolve to the node.
    pub symlinks: Vec<PathBuf>,
    /// `clock_name`.
    pub clock_name: String,
    /// The driver guessed from `clock_name`.
    pub driver: Driver,
    /// `max_adjustment`, ppb.
    pub max_adjustment_ppb: i64,
    /// `n_external_timestamps`.
    pub n_external_timestamps: i64,
    /// `n_periodic_outputs`.
    pub n_periodic_outputs: i64,
    /// `n_programmable_pins`.
    pub n_programmable_pins: i64,
    /// `pps_available`.
    pub pps_available: bool,
}

/// Reads a sysfs attribute: at most a page, and never blocking or opening a device, whatever the
/// path turns out to be (the roots may point at a fake or hostile tree).
pub(crate) fn read_small(path: &Path) -> std::io::Result<String> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut s = String::new();
    (&mut f).take(4096).read_to_string(&mut s)?;
    Ok(s)
}

fn attr(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    read_small(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::Sysfs { attr: p.display().to_string(), reason: e.to_string() })
}

fn num_attr(dir: &Path, name: &str) -> Result<i64> {
    let s = attr(dir, name)?;
    s.parse().map_err(|_| Error::Sysfs {
        attr: dir.join(name).display().to_string(),
        reason: format!("not a number: {s:?}"),
    })
}

/// Reads one PHC's sysfs folder; optional attributes (older kernels lack some) read as 0.
pub fn read_info(roots: &Roots, name: &str) -> Result<PhcInfo> {
    let dir = roots.sys_class.join(name);
    let clock_name = attr(&dir, "clock_name")?;
    let opt = |a: &str| num_attr(&dir, a).or_else(|e| if dir.join(a).exists() { Err(e) } else { Ok(0) });
    let path = roots.dev.join(name);
    Ok(PhcInfo {
        name: name.to_owned(),
        symlinks: symlinks_to(&roots.dev, &path),
        path,
        driver: Driver::from_clock_name(&clock_name),
        clock_name,
        max_adjustment_ppb: opt("max_adjustment")?,
        n_external_timestamps: opt("n_external_timestamps")?,
        n_periodic_outputs: opt("n_periodic_outputs")?,
        n_programmable_pins: opt("n_programmable_pins")?,
        pps_available: opt("pps_available")? != 0,
    })
}

/// Every PHC the kernel registered, sorted by index. A machine without PHCs gives an empty list.
pub fn discover(roots: &Roots) -> Result<Vec<PhcInfo>> {
    let entries = match fs::read_dir(&roots.sys_class) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Sysfs { attr: roots.sys_class.display().to_string(), reason: e.to_string() })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Digits only: `u32::from_str` would also take `ptp+1`, which no kernel names.
        .filter(|n| {
            n.strip_prefix("ptp").is_some_and(|i| {
                !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) && i.parse::<u32>().is_ok()
            })
        })
        .collect();
    names.sort_by_key(|n| n[3..].parse::<u32>().unwrap_or(u32::MAX));
    names.iter().map(|n| read_info(roots, n)).collect()
}

/// The sysfs entry behind a device path, following symlinks (`/dev/ptp_hyperv` -> `ptp0`).
/// `None` when the path is no registered PHC (a CUSE device, say).
pub fn info_for_path(roots: &Roots, path: &Path) -> Option<PhcInfo> {
    let real = fs::canonicalize(path).ok()?;
    let name = real.file_name()?.to_str()?.to_owned();
    let info = read_info(roots, &name).ok()?;
    (fs::canonicalize(&info.path).ok()? == real).then_some(info)
}

fn symlinks_to(dev: &Path, target: &Path) -> Vec<PathBuf> {
    let Ok(real) = fs::canonicalize(target) else { return Vec::new() };
    let mut links: Vec<PathBuf> = fs::read_dir(dev)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.path())
        .filter(|p| fs::canonicalize(p).is_ok_and(|r| r == real))
        .collect();
    links.sort();
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_phc(root: &Path, name: &str, clock_name: &str, max_adj: &str) {
        let d = root.join("class").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("clock_name"), format!("{clock_name}\n")).unwrap();
        fs::write(d.join("max_adjustment"), format!("{max_adj}\n")).unwrap();
        fs::write(d.join("pps_available"), "1\n").unwrap();
        fs::write(root.join("dev").join(name), b"").unwrap();
    }

    #[test]
    fn discovers_phcs_with_symlinks_and_driver_guess() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        fake_phc(t.path(), "ptp10", "igb", "62499999");
        fake_phc(t.path(), "ptp2", "hyperv", "0");
        symlink(t.path().join("dev/ptp2"), t.path().join("dev/ptp_hyperv")).unwrap();
        let roots = Roots { sys_class: t.path().join("class"), dev: t.path().join("dev") };
        let all = discover(&roots).unwrap();
        assert_eq!(all.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["ptp2", "ptp10"]);
        assert_eq!(all[0].driver, Driver::Hyperv);
        assert_eq!(all[0].symlinks, vec![t.path().join("dev/ptp_hyperv")]);
        assert_eq!(all[1].driver, Driver::Nic);
        assert_eq!(all[1].max_adjustment_ppb, 62_499_999);
        assert!(all[1].pps_available);
        assert_eq!(all[1].n_programmable_pins, 0);
        let via_link = info_for_path(&roots, &t.path().join("dev/ptp_hyperv")).unwrap();
        assert_eq!(via_link.name, "ptp2");
    }

    #[test]
    fn malformed_attributes_and_missing_class_are_reported() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        let roots = Roots { sys_class: t.path().join("class"), dev: t.path().join("dev") };
        assert_eq!(discover(&roots).unwrap(), vec![]);
        fake_phc(t.path(), "ptp0", "igb", "lots");
        let err = discover(&roots).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn odd_class_entries_are_skipped_and_attribute_reads_never_block() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        fake_phc(t.path(), "ptp1", "igb", "1");
        for odd in ["ptp+2", "ptp", "ptpx", "pps0"] {
            fs::create_dir_all(t.path().join("class").join(odd)).unwrap();
        }
        let roots = Roots { sys_class: t.path().join("class"), dev: t.path().join("dev") };
        let names: Vec<String> = discover(&roots).unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["ptp1"]);
        // A FIFO where an attribute should be fails at once instead of waiting for a writer.
        let fifo = t.path().join("class/ptp1/n_programmable_pins");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_small(&fifo).is_err());
        assert!(discover(&roots).is_err());
        fs::write(t.path().join("big"), vec![b'7'; 100_000]).unwrap();
        assert_eq!(read_small(&t.path().join("big")).unwrap().len(), 4096);
    }
}
