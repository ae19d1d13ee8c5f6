//! `list`: every PHC the kernel registered, with its sysfs facts and the capabilities GETCAPS
//! reports; a PHC that cannot be opened still gets its row, with the reason.

use std::fmt::Write;
use std::path::PathBuf;

use phc::{Access, Caps, Expect, Phc, PhcInfo, Roots};
use serde::Serialize;

use super::{emit, to_json, Exit, Format};

/// One PHC in the `list` output (JSON keys in JSON.md).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// What sysfs says.
    #[serde(flatten)]
    pub info: PhcInfo,
    /// GETCAPS, when the device could be opened.
    pub caps: Option<Caps>,
    /// Why it could not be opened (`permission denied`, ...).
    pub error: Option<String>,
}

/// The rows for the PHCs under `roots`; a sysfs that cannot be read is the error.
pub fn entries(roots: &Roots) -> phc::Result<Vec<Entry>> {
    let expect = Expect::Ptp(roots.clone());
    let infos = phc::sysfs::discover(roots)?;
    Ok(infos
        .into_iter()
        // Only a node sysfs files under class ptp is opened: a /dev/ptpN that is a regular file, a
        // FIFO or a symlink to another device gets its row with the reason, untouched.
        .map(|info| match Phc::open_expecting(&info.path, Access::ReadOnly, &expect).and_then(|p| p.caps()) {
            Ok(caps) => Entry { info, caps: Some(caps), error: None },
            Err(e) => Entry { info, caps: None, error: Some(e.to_string()) },
        })
        .collect())
}

/// Lists the PHCs under `roots`.
pub fn run(roots: &Roots, format: Format) -> Exit {
    let entries = match entries(roots) {
        Ok(e) => e,
        Err(e) => {
            say!("phc-harness: {}: {e}", roots.sys_class.display());
            return Exit::Usage;
        }
    };
    // vmclock pages (/sys/class/misc/vmclockN) are listed after the PHCs: `/sys` is two levels
    // above the ptp class folder.
    let sys_root = roots.sys_class.parent().and_then(std::path::Path::parent);
    let vmclocks = sys_root.map(|r| super::vmclock::list_rows(r, &roots.sys_class)).unwrap_or_default();
    match format {
        Format::Json if vmclocks.is_empty() => emit(&to_json(&entries)),
        Format::Json => {
            let mut all: Vec<serde_json::Value> =
                entries.iter().filter_map(|e| serde_json::to_value(e).ok()).collect();
            all.extend(vmclocks.iter().filter_map(|r| serde_json::to_value(r).ok()));
            emit(&to_json(&all))
        }
        Format::Text => {
            let mut text = render_text(&entries, &roots.sys_class);
            text.push_str(&super::vmclock::render_list_text(&vmclocks));
            emit(&text)
        }
    }
    Exit::Ok
}

/// The text rendering.
pub fn render_text(entries: &[Entry], sys_class: &std::path::Path) -> String {
    let mut s = String::new();
    if entries.is_empty() {
        let why = if sys_class.is_dir() { "is empty" } else { "does not exist" };
        let _ = writeln!(s, "no PTP hardware clocks found ({} {why})", sys_class.display());
        return crate::format::escape::terminal(&s);
    }
    for e in entries {
        let i = &e.info;
        let links: Vec<String> = i.symlinks.iter().map(|p: &PathBuf| p.display().to_string()).collect();
        let also = if links.is_empty() { String::new() } else { format!(" (also {})", links.join(", ")) };
        let _ = writeln!(
            s,
            "{}  {}{also}  clock_name {:?}  driver {}",
            i.name,
            i.path.display(),
            i.clock_name,
            i.driver.name()
        );
        match (&e.caps, &e.error) {
            (Some(c), _) => {
                let _ = writeln!(s, "      {c}",);
            }
            (None, err) => {
                let _ = writeln!(s, "      cannot open: {}", err.as_deref().unwrap_or("unknown error"));
            }
        }
    }
    crate::format::escape::terminal(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn rows_for_unopenable_phcs_carry_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let class = t.path().join("class/ptp0");
        fs::create_dir_all(&class).unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        fs::write(class.join("clock_name"), "hyperv\n").unwrap();
        // A regular file where the node should be: opens, but is no PTP device.
        fs::write(t.path().join("dev/ptp0"), b"").unwrap();
        let roots = Roots { sys_class: t.path().join("class"), dev: t.path().join("dev") };
        let info = phc::sysfs::discover(&roots).unwrap().remove(0);
        let entry = Entry { info, caps: None, error: Some("not a PTP device".into()) };
        let text = render_text(std::slice::from_ref(&entry), &roots.sys_class);
        assert!(text.contains("ptp0") && text.contains("driver hyperv"), "{text}");
        assert!(text.contains("cannot open: not a PTP device"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&[entry])).unwrap();
        assert_eq!(json[0]["clock_name"], "hyperv");
        assert_eq!(json[0]["caps"], serde_json::Value::Null);
        assert_eq!(run(&roots, Format::Json), Exit::Ok);
    }

    #[test]
    fn odd_dev_nodes_get_rows_without_being_opened() {
        // Laid out as the real sysfs, so /sys/dev/char is looked for beside the class folder.
        let t = tempfile::tempdir().unwrap();
        let class = t.path().join("sys/class/ptp");
        let dev = t.path().join("dev");
        fs::create_dir_all(t.path().join("sys/dev/char/1:5")).unwrap();
        std::os::unix::fs::symlink("../../../class/mem", t.path().join("sys/dev/char/1:5/subsystem"))
            .unwrap();
        fs::create_dir_all(&dev).unwrap();
        for n in 0..4 {
            fs::create_dir_all(class.join(format!("ptp{n}"))).unwrap();
            fs::write(class.join(format!("ptp{n}/clock_name")), "kvm ptp\n").unwrap();
        }
        fs::write(dev.join("ptp0"), b"").unwrap();
        // A FIFO without a writer: opening it for reading would block.
        nix::unistd::mkfifo(&dev.join("ptp1"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dev.join("ptp2")).unwrap();
        // ptp3 has no node at all.
        let roots = Roots { sys_class: class, dev };
        let errors: Vec<String> = entries(&roots).unwrap().into_iter().map(|e| e.error.unwrap()).collect();
        assert_eq!(
            errors,
            [
                "not a PTP device (a regular file)",
                "not a PTP device (a FIFO)",
                "not a PTP device (character device 1:5, class mem)",
                "no such device",
            ]
        );
    }

    #[test]
    fn an_empty_or_missing_class_says_so() {
        let t = tempfile::tempdir().unwrap();
        assert!(render_text(&[], t.path()).contains("is empty"));
        assert!(render_text(&[], &t.path().join("nope")).contains("does not exist"));
    }
}
