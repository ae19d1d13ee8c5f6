//! `probe` and `latency` with `--backend qemu`: the same command runs inside a QEMU guest on its
//! igb PHC (the harness binary is the guest agent), and its report comes back as the guest wrote
//! it, with the backend's facts and linuxptp's `phc_ctl DEVICE cmp` from the same guest beside it.

use std::time::{Duration, Instant};

use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::session::Session;
use serde_json::{json, Value};

use super::args::GuestArgs;
use crate::backend::qemu::{self, find_agent_bin, BootInfo, QemuOptions};
use crate::exit::Exit;
use crate::output;

/// This process's arguments without the ones that pick the backend.
fn forwarded_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" | "--agent-bin" | "--accel" | "--phc" => {
                it.next();
            }
            s if s.starts_with("--backend=")
                || s.starts_with("--agent-bin=")
                || s.starts_with("--accel=")
                || s.starts_with("--phc=") => {}
            _ => out.push(a),
        }
    }
    out
}

fn boot(g: &GuestArgs) -> Result<(Session, BootInfo), phc_qemu::Error> {
    let opts = QemuOptions {
        agent_bin: find_agent_bin(g.agent_bin.clone())?,
        accel: g.accel.choice(),
        boot_timeout: Duration::from_secs(120),
        ptp_kvm: g.phc == super::run::GuestPhc::PtpKvm,
        clock: qemu::ClockMode::Real,
    };
    qemu::boot(&opts, "device", phc_qemu::GuestClock::Real)
}

/// Exit status for a guest command that failed: 128 + the signal when one interrupted it, else 2.
fn failed(e: &phc_qemu::Error) -> Exit {
    say!("phc-harness: qemu: {}", phc_qemu::chain(e));
    match e {
        phc_qemu::Error::Interrupted { signal } => Exit::Interrupted(*signal),
        _ => Exit::Usage,
    }
}

fn exec(s: &mut Session, argv: Vec<String>, timeout_s: f64) -> Result<ExecResult, phc_qemu::Error> {
    s.agent
        .call_value(Op::Exec { argv, timeout_s }, Instant::now() + Duration::from_secs_f64(timeout_s + 30.0))
}

/// Parses `phc_ctl`'s "offset from CLOCK_REALTIME is -123ns" (realtime minus PHC).
pub fn parse_phc_ctl_cmp(out: &str) -> Option<i64> {
    let rest = out.split("offset from CLOCK_REALTIME is").nth(1)?;
    let num: String = rest
        .trim_start()
        .trim_start_matches("approximately")
        .trim_start()
        .chars()
        .take_while(|c| *c == '-' || c.is_ascii_digit())
        .collect();
    num.parse().ok()
}

/// Runs the current device command in a guest. `device` is the guest path, for the cross-check.
pub fn run(g: &GuestArgs, device: &str, json_out: bool) -> Exit {
    say!("phc-harness: booting a QEMU guest ...");
    // From here on a Ctrl-C ends the guest command through the normal path (QEMU killed, temp
    // files removed); every wait below checks for it.
    qemu::prepare_process();
    let (mut s, info) = match boot(g) {
        Ok(v) => v,
        Err(e) => return failed(&e),
    };
    // A nested guest (ptp_kvm under KVM inside a TCG guest) says so wherever the accel shows.
    let accel = if info.nested { qemu::nested::ACCEL_NAME } else { info.accel.name() };
    let mut argv = vec!["/bin/phc-harness".to_owned()];
    argv.extend(forwarded_args());
    let r = match exec(&mut s, argv, 900.0) {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let cmp = exec(&mut s, vec!["phc_ctl".into(), device.into(), "cmp".into()], 30.0).ok();
    let cmp_text =
        cmp.as_ref().map(|c| format!("{}{}", c.stdout, c.stderr).trim().to_owned()).unwrap_or_default();
    let cmp_ns = parse_phc_ctl_cmp(&cmp_text);
    let backend = json!({
        "kind": "qemu",
        "accel": accel,
        "accel_reason": info.accel_reason,
        "nesting": info.nested.then_some(qemu::nested::NESTING),
        "boot_to_ready_s": (s.boot_to_ready.as_secs_f64() * 1000.0).round() / 1000.0,
        "phc_ctl_cmp": { "output": cmp_text, "realtime_minus_phc_ns": cmp_ns },
    });
    say!("{}", r.stderr.trim_end());
    if json_out {
        match serde_json::from_str::<Value>(&r.stdout) {
            Ok(mut v) if v.is_object() => {
                v["backend"] = backend;
                output::out(&format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()));
            }
            _ => output::out(&r.stdout),
        }
    } else {
        output::out(&r.stdout);
        output::out(&format!(
            "\nbackend: qemu ({accel}), boot to agent-ready {:.2} s\n",
            s.boot_to_ready.as_secs_f64()
        ));
        if info.nested {
            output::out(&format!("nesting: {}\n", qemu::nested::NESTING));
        }
        output::out(&format!("cross-check, linuxptp `phc_ctl {device} cmp` in the same guest: {cmp_text}\n"));
    }
    match r.code {
        0 => Exit::Ok,
        1 => Exit::CheckFailed,
        c if c > 0 => Exit::Usage,
        _ => {
            say!("phc-harness: qemu: the guest command was killed (timeout)");
            Exit::Usage
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phc_ctl_output_parses() {
        assert_eq!(
            parse_phc_ctl_cmp("phc_ctl[1.2]: offset from CLOCK_REALTIME is -37000000015ns\n"),
            Some(-37_000_000_015)
        );
        assert_eq!(parse_phc_ctl_cmp("offset from CLOCK_REALTIME is approximately 36911ns"), Some(36_911));
        assert_eq!(parse_phc_ctl_cmp("phc_ctl: failed"), None);
    }
}
