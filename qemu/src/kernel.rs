//! Kernel lines: which Debian kernel a guest boots, where ci/setup-vm.sh caches each, and what
//! the line changes in the guest (modules loaded, QEMU devices added).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A Debian kernel line the harness can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum KernelLine {
    /// Debian bookworm's 6.12 (bookworm-security / bookworm-backports): no vmclock driver.
    #[default]
    #[serde(rename = "6.12")]
    V6_12,
    /// Debian trixie-backports' 7.2: adds `ptp_vmclock` (Linux 6.13+).
    #[serde(rename = "7.2")]
    V7_2,
}

impl KernelLine {
    /// Every line, oldest first.
    pub const ALL: [Self; 2] = [Self::V6_12, Self::V7_2];

    /// The name `--kernel-line` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::V6_12 => "6.12",
            Self::V7_2 => "7.2",
        }
    }

    /// Its folder in the cache: `kernel` (6.12, as before kernel lines existed) or `kernel-7.2`.
    pub fn cache_subdir(self) -> &'static str {
        match self {
            Self::V6_12 => "kernel",
            Self::V7_2 => "kernel-7.2",
        }
    }

    /// Its folder under `cache` (see `image::cache_dir`).
    pub fn dir_in(self, cache: &Path) -> PathBuf {
        cache.join(self.cache_subdir())
    }

    /// Whether the line has the vmclock driver: the guest then gets QEMU's `-device vmclock`
    /// and loads `ptp_vmclock`.
    pub fn has_vmclock(self) -> bool {
        self == Self::V7_2
    }

    /// Modules to load, in dependency order: `image::DEFAULT_MODULES`, plus `ptp_vmclock` where
    /// the line has it. (The two lines' modules.dep agree on igb's dependencies, dca and
    /// i2c-algo-bit, and on cuse, ptp_kvm and ptp_vmclock needing none outside the image:
    /// ptp, pps_core and fuse are built in on both.)
    pub fn modules(self) -> Vec<String> {
        let mut m: Vec<String> = crate::image::DEFAULT_MODULES.iter().map(|s| (*s).to_owned()).collect();
        if self.has_vmclock() {
            m.push("ptp_vmclock".into());
        }
        m
    }
}

impl fmt::Display for KernelLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelLine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|l| l.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|l| l.name()).collect();
            format!("unknown kernel line '{s}' (known: {})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for l in KernelLine::ALL {
            assert_eq!(l.name().parse::<KernelLine>().unwrap(), l);
            assert_eq!(serde_json::to_value(l).unwrap(), serde_json::json!(l.name()));
        }
        let e = "6.1".parse::<KernelLine>().unwrap_err();
        assert!(e.contains("6.12, 7.2"), "{e}");
    }

    #[test]
    fn the_612_cache_stays_where_it_was_and_72_adds_vmclock() {
        let c = Path::new("/c");
        assert_eq!(KernelLine::V6_12.dir_in(c), Path::new("/c/kernel"));
        assert_eq!(KernelLine::V7_2.dir_in(c), Path::new("/c/kernel-7.2"));
        assert!(!KernelLine::V6_12.modules().iter().any(|m| m == "ptp_vmclock"));
        assert_eq!(KernelLine::V7_2.modules().last().map(String::as_str), Some("ptp_vmclock"));
        assert!(KernelLine::V7_2.has_vmclock() && !KernelLine::V6_12.has_vmclock());
    }
}
