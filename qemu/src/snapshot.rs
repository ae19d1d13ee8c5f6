//! Saving a running guest to a file and restoring it in a fresh QEMU: QMP `migrate` to a
//! `file:` URI, then the same command line with `-incoming file:`. This is what a host does for
//! a snapshot restore (or a migration to another host with a gap between): the guest resumes
//! where it was saved, its clocks as far behind the host as the state spent on disk, and QEMU's
//! vmclock device bumps its disruption marker on the load (hw/acpi/vmclock.c `post_load`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::qmp::Qmp;
use crate::session::Session;
use crate::tmp::{self, TempPath};
use crate::{Error, Waited};

/// A guest's saved state, and what it takes to start it again.
pub struct Saved {
    /// The migration stream.
    pub file: TempPath,
    /// A copy of the initramfs the guest booted: QEMU loads `-kernel`/`-initrd` at start even
    /// when the RAM then comes from the stream, and the saved session's own copy goes with it.
    initrd: TempPath,
    builder: crate::GuestBuilder,
    /// Wall time from `migrate` to the stream's completion.
    pub save_s: f64,
    /// Bytes in the stream.
    pub bytes: u64,
}

fn copy(from: &Path, role: &str) -> Result<TempPath, Error> {
    let to = tmp::file("initrd", role, ".cpio")?;
    std::fs::copy(from, &to).map_err(|source| Error::Io { op: "copy", path: from.to_owned(), source })?;
    Ok(to)
}

/// Writes the running guest's whole state to a temp file (a live migration into the file: QEMU
/// stops the guest for the last pass). The session's QEMU stays paused (`postmigrate`); drop the
/// session to end it. The guest is not stopped first: QEMU carries the run state in the stream,
/// and a guest saved paused would come back paused.
pub fn save(s: &mut Session, deadline: Instant) -> Result<Saved, Error> {
    let t0 = Instant::now();
    let file = tmp::file("state", "snapshot", ".mig")?;
    migrate_to(s.guest.qmp(), &file, deadline)?;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let initrd = copy(&s.initrd, "restore")?;
    Ok(Saved { file, initrd, builder: s.builder().clone(), save_s: t0.elapsed().as_secs_f64(), bytes })
}

/// Migrates the running guest into `file` and waits for the stream to complete; QEMU then holds
/// the guest paused (`postmigrate`).
pub fn migrate_to(q: &mut Qmp, file: &Path, deadline: Instant) -> Result<(), Error> {
    q.execute("migrate", Some(json!({ "uri": format!("file:{}", file.display()) })), deadline)?;
    loop {
        let r = q.execute("query-migrate", None, deadline)?;
        let status = r["status"].as_str().unwrap_or("unknown").to_owned();
        match status.as_str() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let detail = r["error-desc"].as_str().unwrap_or("no error-desc").to_owned();
                return Err(Error::Migration { status, detail });
            }
            _ if Instant::now() >= deadline => {
                return Err(Error::Timeout { what: Waited::QmpAnswer, console_tail: status });
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Starts a fresh QEMU that loads `saved` and runs on (no `-S`: the guest continues as soon as
/// the stream is in), and reconnects to the agent the guest kept running.
pub fn restore(saved: Saved, deadline: Instant) -> Result<Session, Error> {
    let builder = saved
        .builder
        .initrd(saved.initrd.to_path_buf())
        .arg("-incoming")
        .arg(format!("file:{}", saved.file.display()));
    let s = Session::boot_with(builder, saved.initrd, deadline)?;
    // The stream is read by now (the agent answered a running guest); keep it until here.
    drop(saved.file);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restored_command_line_loads_the_stream_and_keeps_the_rest() {
        let b = crate::GuestBuilder::new("k", "i").arg("-device").arg("vmclock");
        let a = b.clone().arg("-incoming").arg("file:/s.mig").args(Path::new("/d"));
        let orig = b.args(Path::new("/d"));
        assert_eq!(&a[..orig.len()], &orig[..]);
        assert_eq!(&a[orig.len()..], ["-incoming", "file:/s.mig"]);
    }
}
