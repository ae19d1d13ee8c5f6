//! `probe` and `list` on a vmclock device (`/dev/vmclockN`, Linux 6.13+ `ptp_vmclock`): the
//! shared page read by its seqcount protocol (`phc::vmclock`), with whether the kernel also made
//! a PHC of it (only when the page carries time: a known counter).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use phc::vmclock::{self, Snapshot, Vmclock};
use serde::Serialize;

use super::{emit, to_json, DeviceError, Exit, Format};

/// What `probe /dev/vmclockN` reports (JSON keys in JSON.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `"vmclock"`: tells this document from a PHC probe's.
    pub kind: &'static str,
    /// The path probed.
    pub device: String,
    /// The page.
    pub page: Snapshot,
    /// `magic` as text ("VCLK" on a real page).
    pub magic_text: String,
    /// `counter_id` by name.
    pub counter: &'static str,
    /// `clock_status` by name.
    pub clock_status: &'static str,
    /// Whether `vm_generation_counter` is maintained (flag `VM_GEN_COUNTER_PRESENT`).
    pub generation_counter_present: bool,
    /// Reads the seqcount protocol took (1 when no update got in the way).
    pub read_attempts: u32,
    /// Whether the hypervisor notifies updates (flag `NOTIFICATION_PRESENT`, Linux 6.19+ ABI).
    pub notification_present: bool,
    /// What `poll()` on the device answers at once: `hangup` (no notifications: a guest learns
    /// of a disruption only by reading the page), `waits`, `readable`, or `not_supported` (a
    /// driver or file without poll).
    pub poll: phc::vmclock::PollAnswer,
    /// The PHC the kernel registered for this page (`/dev/ptpN` whose clock_name is
    /// `vmclockN`), or null: it registers one only when the page carries time.
    pub ptp_device: Option<String>,
    /// Findings: what the page does not provide.
    pub notes: Vec<String>,
    /// Magic or version wrong: 1, else 0 (the exit status follows it).
    pub deviations: u32,
}

/// The PHC whose sysfs clock_name is `name`, under `sys_class_ptp`.
fn ptp_named(sys_class_ptp: &Path, name: &str) -> Option<String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(sys_class_ptp).ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.into_iter().find_map(|d| {
        let n = std::fs::read_to_string(d.join("clock_name")).ok()?;
        let dev = d.file_name()?.to_string_lossy().into_owned();
        (n.trim() == name).then(|| format!("/dev/{dev}"))
    })
}

/// Reads the page of the vmclock device at `path` into a report; `sys_class_ptp` is where to look
/// for its PHC. Anything but the misc device `vmclockN` is refused before it is opened.
pub fn report(path: &Path, sys_class_ptp: &Path) -> Result<Report, phc::Error> {
    report_of(&Vmclock::open(path)?, path, sys_class_ptp)
}

/// The report of a page already opened (a device, or a test's page file read into memory).
pub fn report_of(v: &Vmclock, path: &Path, sys_class_ptp: &Path) -> Result<Report, phc::Error> {
    let r = v.read()?;
    let poll = v.poll_now()?;
    let s = r.snapshot;
    let name = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut notes = Vec::new();
    let mut deviations = 0;
    if !s.valid() {
        deviations += 1;
        notes.push(format!("magic {:#010x} version {}: not a vmclock ABI v1 page", s.magic, s.version));
    }
    if !s.has_time() {
        notes.push(format!(
            "counter_id {} ({}): the page carries no time, so the kernel registers no PHC for it; \
             only {} a restore or migration",
            s.counter_id,
            s.counter_name(),
            if s.has_generation_counter() {
                "the disruption marker and the generation counter tell"
            } else {
                "the disruption marker tells"
            }
        ));
    }
    if !s.has_notifications() {
        notes.push(format!(
            "NOTIFICATION_PRESENT is clear (poll answers {poll:?}): nothing tells the guest of a \
             disruption; it learns of one only when it reads the page"
        ));
    }
    if !s.has_generation_counter() {
        notes.push("VM_GEN_COUNTER_PRESENT is clear: vm_generation_counter is not maintained".into());
    }
    Ok(Report {
        kind: "vmclock",
        device: path.display().to_string(),
        magic_text: String::from_utf8_lossy(&s.magic.to_le_bytes()).into_owned(),
        counter: s.counter_name(),
        clock_status: s.status_name(),
        generation_counter_present: s.has_generation_counter(),
        read_attempts: r.attempts,
        notification_present: s.has_notifications(),
        poll,
        ptp_device: ptp_named(sys_class_ptp, &name),
        page: s,
        notes,
        deviations,
    })
}

/// The text rendering.
pub fn render_text(r: &Report) -> String {
    let p = &r.page;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: vmclock page, magic {:?} version {} size {}",
        r.device, r.magic_text, p.version, p.size
    );
    let _ = writeln!(s, "  counter           {} ({})", r.counter, p.counter_id);
    let _ = writeln!(s, "  clock_status      {} ({})", r.clock_status, p.clock_status);
    let _ = writeln!(s, "  seq_count         {} (read in {} attempt(s))", p.seq_count, r.read_attempts);
    let _ = writeln!(s, "  disruption_marker {}", p.disruption_marker);
    let _ = writeln!(s, "  flags             {:#x}", p.flags);
    let gen = if r.generation_counter_present { "" } else { " (not maintained)" };
    let _ = writeln!(s, "  vm_generation     {}{gen}", p.vm_generation_counter);
    let _ = writeln!(s, "  PHC               {}", r.ptp_device.as_deref().unwrap_or("none registered"));
    let _ = writeln!(s, "  notifications     {} (poll: {:?})", r.notification_present, r.poll);
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    crate::format::escape::terminal(&s)
}

/// `phc-harness probe /dev/vmclockN`.
pub fn probe_cmd(path: &Path, format: Format) -> Exit {
    let r = match report(path, &phc::Roots::default().sys_class) {
        Ok(r) => r,
        Err(error) => return DeviceError { device: path.to_owned(), context: None, error }.report(),
    };
    match format {
        Format::Text => emit(&render_text(&r)),
        Format::Json => emit(&to_json(&r)),
    }
    if r.deviations == 0 {
        Exit::Ok
    } else {
        Exit::CheckFailed
    }
}

/// A `list` row for a vmclock device.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// Always `"vmclock"` (PHC rows have no `kind`).
    pub kind: &'static str,
    /// `vmclockN`.
    pub name: String,
    /// `/dev/vmclockN`.
    pub path: PathBuf,
    /// The probe, when the page could be read.
    pub vmclock: Option<Report>,
    /// Why not.
    pub error: Option<String>,
}

/// Rows for the vmclock devices sysfs lists under `sys_root` (`/sys`).
pub fn list_rows(sys_root: &Path, sys_class_ptp: &Path) -> Vec<ListRow> {
    vmclock::list(sys_root)
        .into_iter()
        .map(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match report(&path, sys_class_ptp) {
                Ok(r) => ListRow { kind: "vmclock", name, path, vmclock: Some(r), error: None },
                Err(e) => ListRow { kind: "vmclock", name, path, vmclock: None, error: Some(e.to_string()) },
            }
        })
        .collect()
}

/// The text lines `list` prints for vmclock rows.
pub fn render_list_text(rows: &[ListRow]) -> String {
    let mut s = String::new();
    for row in rows {
        let _ = write!(s, "{}  {}  vmclock page", row.name, row.path.display());
        match (&row.vmclock, &row.error) {
            (Some(r), _) => {
                let _ = writeln!(
                    s,
                    ", counter {}, status {}, disruption_marker {}, PHC {}",
                    r.counter,
                    r.clock_status,
                    r.page.disruption_marker,
                    r.ptp_device.as_deref().unwrap_or("none")
                );
            }
            (None, e) => {
                let _ = writeln!(s, "\n      cannot read: {}", e.as_deref().unwrap_or("unknown error"));
            }
        }
    }
    crate::format::escape::terminal(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of a page file, read into memory as `report` would read the device.
    fn report_file(p: &Path, sys_class_ptp: &Path) -> Report {
        report_of(&Vmclock::from_page_file(p).unwrap(), p, sys_class_ptp).unwrap()
    }

    #[test]
    fn a_file_named_like_the_device_is_refused_before_it_is_opened() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("vmclock0");
        std::fs::write(&p, qemu_page()).unwrap();
        let e = report(&p, &t.path().join("no-ptp")).unwrap_err().to_string();
        assert_eq!(e, "not a vmclock device (a regular file)");
    }

    /// A page as QEMU 10's `-device vmclock` lays it out after one restore (hw/acpi/vmclock.c).
    fn qemu_page() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(b"VCLK");
        b[4..8].copy_from_slice(&4096u32.to_le_bytes());
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[10] = 0xff;
        b[12..16].copy_from_slice(&4u32.to_le_bytes());
        b[16..24].copy_from_slice(&2u64.to_le_bytes());
        b
    }

    #[test]
    fn a_qemu_page_reports_no_time_and_no_phc() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("vmclock0");
        std::fs::write(&p, qemu_page()).unwrap();
        let r = report_file(&p, &t.path().join("no-ptp"));
        assert_eq!((r.magic_text.as_str(), r.counter, r.clock_status), ("VCLK", "invalid", "unknown"));
        assert_eq!((r.page.disruption_marker, r.page.seq_count, r.deviations), (2, 4, 0));
        assert!(r.ptp_device.is_none() && !r.generation_counter_present);
        assert!(r.notes.iter().any(|n| n.contains("no PHC")), "{:?}", r.notes);
        let text = render_text(&r);
        assert!(text.contains("disruption_marker 2") && text.contains("none registered"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
        assert_eq!(json["kind"], "vmclock");
        assert_eq!(json["page"]["counter_id"], 255);
        assert_eq!(json["page"]["disruption_marker"], 2);
    }

    #[test]
    fn the_report_of_a_qemu_page_matches_its_snapshots() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("vmclock0");
        std::fs::write(&p, qemu_page()).unwrap();
        let mut r = report_file(&p, &t.path().join("no-ptp"));
        // The temp path varies; a file page answers poll as a plain file does.
        r.device = "/dev/vmclock0".into();
        insta::assert_snapshot!("vmclock_probe_text", render_text(&r));
        insta::assert_snapshot!("vmclock_probe_json", to_json(&r));
    }

    #[test]
    fn a_wrong_magic_is_a_deviation_and_its_phc_is_found_by_name() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("vmclock0");
        let mut b = qemu_page();
        b[0] = b'X';
        std::fs::write(&p, b).unwrap();
        std::fs::create_dir_all(t.path().join("ptp/ptp1")).unwrap();
        std::fs::write(t.path().join("ptp/ptp1/clock_name"), "vmclock0\n").unwrap();
        let r = report_file(&p, &t.path().join("ptp"));
        assert_eq!(r.deviations, 1);
        assert_eq!(r.ptp_device.as_deref(), Some("/dev/ptp1"));
    }

    #[test]
    fn list_rows_come_from_sysfs_misc() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("class/misc/vmclock0")).unwrap();
        let rows = list_rows(t.path(), &t.path().join("class/ptp"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path, Path::new("/dev/vmclock0"));
        // /dev/vmclock0 does not exist on this host: the row carries the reason.
        if !Path::new("/dev/vmclock0").exists() {
            assert!(rows[0].error.is_some());
            assert!(render_list_text(&rows).contains("cannot read"));
        }
    }
}
