//! A snapshot restore on the real-time QEMU backend: the running guest is saved to a file
//! (phc_qemu::snapshot), its QEMU ends, the host runs on for the gap, and a fresh QEMU loads the
//! file. On the 7.2 line the vmclock page is read just before the save and as the restored
//! guest's first request, so the report says whether and how soon the guest could know.

use std::time::{Duration, Instant};

use phc_qemu::agent::Op;
use phc_qemu::session::Session;
use phc_qemu::{snapshot, Error};
use serde_json::{json, Value};

/// The guest's vmclock device.
pub const VMCLOCK: &str = "/dev/vmclock0";
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// `disruption_marker` and `vm_generation_counter`, read by the guest's own
/// `phc-harness probe /dev/vmclock0` (phc::vmclock's seqcount reader).
fn vmclock_page(s: &mut Session) -> Result<(u64, u64), Error> {
    let argv = ["/bin/phc-harness", "probe", VMCLOCK, "--format", "json"].map(String::from).to_vec();
    let r: phc_qemu::agent::ExecResult =
        s.agent.call_value(Op::Exec { argv, timeout_s: 20.0 }, Instant::now() + Duration::from_secs(40))?;
    let v: Value = serde_json::from_str(&r.stdout)
        .map_err(|e| Error::Guest(format!("probe {VMCLOCK}: {e}: {}{}", r.stdout, r.stderr)))?;
    match (v["page"]["disruption_marker"].as_u64(), v["page"]["vm_generation_counter"].as_u64()) {
        (Some(m), Some(g)) => Ok((m, g)),
        _ => Err(Error::Guest(format!("probe {VMCLOCK}: {}", r.stderr.trim()))),
    }
}

/// Saves `session`'s guest, waits `gap`, restores it into `session` and returns the facts for
/// the report (`backend_info.snapshot_restore`, see JSON.md). `vmclock`: the guest has the page.
pub fn snapshot_restore(session: &mut Session, gap: Duration, vmclock: bool) -> Result<Value, Error> {
    let before = if vmclock { Some(vmclock_page(session)?) } else { None };
    let saving = Instant::now();
    let saved = snapshot::save(session, Instant::now() + RESTORE_TIMEOUT)?;
    let (save_s, bytes) = (saved.save_s, saved.bytes);
    // The saved QEMU stays paused after the migration; end it now, as a host would.
    let t = Instant::now();
    session.guest.shutdown();
    let shutdown_s = t.elapsed().as_secs_f64();
    std::thread::sleep(gap);
    let t0 = Instant::now();
    let restored = snapshot::restore(saved, Instant::now() + RESTORE_TIMEOUT)?;
    let to_agent_s = t0.elapsed().as_secs_f64();
    // The guest stands still from the end of the migration's stream (inside the save) to its
    // first instruction in the new QEMU (inside the restore): at most this long.
    let stood_max_s = saving.elapsed().as_secs_f64();
    drop(std::mem::replace(session, restored));
    let after = if vmclock { Some(vmclock_page(session)?) } else { None };
    let seen_s = t0.elapsed().as_secs_f64();
    let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(json!({
        "gap_s": gap.as_secs_f64(),
        "save_s": r3(save_s),
        "state_bytes": bytes,
        "restore_to_agent_s": r3(to_agent_s),
        "shutdown_s": r3(shutdown_s),
        "stood_max_s": r3(stood_max_s),
        "vmclock": before.zip(after).map(|((m0, g0), (m1, g1))| json!({
            "disruption_marker_before": m0,
            "disruption_marker_after": m1,
            "marker_changed": m0 != m1,
            "vm_generation_before": g0,
            "vm_generation_after": g1,
            "first_read_after_restore_s": r3(seen_s),
        })),
    }))
}
