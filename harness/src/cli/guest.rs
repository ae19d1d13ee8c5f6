//! `probe` and `latency` with `--backend qemu`: the same command runs inside a QEMU guest on its
//! igb PHC (the harness binary is the guest agent), and its report comes back as the guest wrote
//! it, with the backend's facts and linuxptp's `phc_ctl DEVICE cmp` from the same guest beside it.

use std::time::{Duration, Instant};

use phc_qemu::agent::{ExecResult, Op};
use phc_qemu::session::Session;
use serde_json::{json, Value};

use super::args::GuestArgs;
use crate::format::exit::Exit;
use crate::format::output;
use crate::run::backend::qemu;

/// The flags that pick and set up the backend (`GuestArgs`: `--backend` and every QEMU option),
/// each with whether it takes a value: read from their clap definition, so that a new option is
/// never forwarded to the guest by mistake.
fn host_flags() -> Vec<(String, bool)> {
    let cmd = <GuestArgs as clap::Args>::augment_args(clap::Command::new("guest"));
    cmd.get_arguments()
        .filter_map(|a| a.get_long().map(|l| (format!("--{l}"), a.get_action().takes_values())))
        .collect()
}

/// `args` without the flags that pick and set up the backend (and their values).
fn forward(args: impl IntoIterator<Item = String>, host: &[(String, bool)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, _)) if n.starts_with("--") => (n, true),
            _ => (a.as_str(), false),
        };
        match host.iter().find(|(f, _)| f == name) {
            Some((_, true)) if !inline => {
                it.next();
            }
            Some(_) => {}
            None => out.push(a),
        }
    }
    out
}

/// This process's arguments without the ones that pick and set up the backend.
fn forwarded_args() -> Vec<String> {
    forward(std::env::args().skip(1), &host_flags())
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

/// Starts the hyperv clock in the guest, the kernel's hv_utils on the VMBus shim (`driver`) or
/// mock-phc's hyperv CUSE device, and hands it one host sample (host CLOCK_REALTIME; a SYNC for
/// the driver, as a host sends first), so that it reads host time for the next 600 s. Answers
/// what the driver negotiated, for the report.
fn start_hyperv(s: &mut Session, driver: bool, offer: &[[u16; 2]]) -> Result<Option<Value>, phc_qemu::Error> {
    let deadline = || Instant::now() + Duration::from_secs(30);
    let started = if driver {
        say!("phc-harness: loading the VMBus shim and the kernel's hv_utils in the guest ...");
        let op = Op::StartHyperv { implicit: false, ts_versions: offer.to_vec(), name: "ptp_hyperv".into() };
        let st: phc_qemu::agent::HypervStarted = s.agent.call_value(op, deadline())?;
        say!("phc-harness: {} negotiated TimeSync {} ({})", st.driver, st.ts_version, st.shim);
        Some(qemu::hv_utils_info(&st))
    } else {
        say!("phc-harness: starting mock-phc serve --personality hyperv in the guest ...");
        s.agent
            .call(Op::StartMock { personality: "hyperv".into(), name: "ptp_hyperv".into() }, deadline())?;
        None
    };
    let host_ns = phc_qemu::client::host_realtime_ns();
    s.agent.call(Op::host_sample(host_ns, driver), deadline())?;
    Ok(started)
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

/// How the guest's report comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The guest's text, then the backend's facts and the cross-check as text.
    Text,
    /// The guest's JSON document with the backend's facts under `backend`.
    Json,
    /// The guest's KTAP, then the backend's facts and the cross-check as `# ` diagnostic lines
    /// (KTAP allows them anywhere), so that a KTAP reader still reads the document.
    Ktap,
    /// The guest's output and nothing after it (JUnit XML, which must end at its root element).
    AsIs,
}

/// The lines of `text` as KTAP diagnostics.
fn ktap_diagnostics(text: &str) -> String {
    // Split on '\n' only; escape::ktap then shows every other line break and control character,
    // so guest output cannot forge a test line.
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("# {}\n", crate::format::escape::ktap(l)))
        .collect()
}

/// Runs the current device command in a guest. `device` is the guest path, for the cross-check.
pub fn run(g: &GuestArgs, device: &str, out: Output) -> Exit {
    say!("phc-harness: booting a QEMU guest ...");
    // From here on a Ctrl-C ends the guest command through the normal path (QEMU killed, temp
    // files removed); every wait below checks for it.
    qemu::prepare_process();
    // Device commands run in real time: icount would distort every latency.
    let (opts, _kernel) = match g.qemu.options(qemu::ClockMode::Real) {
        Ok(v) => v,
        Err(e) => {
            say!("phc-harness: {e}");
            return Exit::Usage;
        }
    };
    let (mut s, info) = match qemu::boot(&opts, "device", phc_qemu::GuestClock::Real) {
        Ok(v) => v,
        Err(e) => return failed(&e),
    };
    // A nested guest (ptp_kvm under KVM inside a TCG guest) says so wherever the accel shows.
    let accel = if info.nested { qemu::nested::ACCEL_NAME } else { info.accel.name() };
    let mut hv_utils = None;
    if device == qemu::MOCK_DEVICE || g.qemu.phc.is_some_and(qemu::GuestPhc::is_hyperv) {
        let driver = g.qemu.phc != Some(qemu::GuestPhc::HypervMock);
        if driver {
            if let Err(e) = qemu::shim_check(&qemu::kernel_dir(&opts)) {
                return failed(&e);
            }
        }
        match start_hyperv(&mut s, driver, opts.hyperv.offer()) {
            Ok(v) => hv_utils = v,
            Err(e) => return failed(&e),
        }
    }
    let mut argv = vec!["/bin/phc-harness".to_owned()];
    argv.extend(forwarded_args());
    let r = match exec(&mut s, argv, 900.0) {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    // phc_ctl knows PHCs only: a vmclock page gets no cross-check.
    // phc_ctl takes /dev/ptpN only: the node behind the /dev/ptp_hyperv link.
    let cmp_device = hv_utils
        .as_ref()
        .filter(|_| device == qemu::MOCK_DEVICE)
        .and_then(|h| h["ptp"].as_str().map(str::to_owned))
        .unwrap_or_else(|| device.to_owned());
    let cmp = if phc::vmclock::is_vmclock_path(std::path::Path::new(device)) {
        None
    } else {
        exec(&mut s, vec!["phc_ctl".into(), cmp_device.clone(), "cmp".into()], 30.0).ok()
    };
    let cmp_text =
        cmp.as_ref().map(|c| format!("{}{}", c.stdout, c.stderr).trim().to_owned()).unwrap_or_default();
    let cmp_ns = parse_phc_ctl_cmp(&cmp_text);
    // The set-up latency depends on, read in the guest itself: `compare` refuses latency
    // across different ones.
    let mut guest_text = |argv: &[&str]| {
        exec(&mut s, argv.iter().map(|a| (*a).to_owned()).collect(), 10.0).ok().map(|r| r.stdout)
    };
    let kernel_release = guest_text(&["cat", "/proc/sys/kernel/osrelease"]).map(|t| t.trim().to_owned());
    let guest_cmdline = guest_text(&["cat", "/proc/cmdline"]).map(|t| t.trim().to_owned());
    let cpu_model = guest_text(&["cat", "/proc/cpuinfo"]).and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
    });
    let backend = json!({
        "kind": "qemu",
        "kernel_release": kernel_release,
        "guest_cmdline": guest_cmdline,
        "cpu_model": cpu_model,
        "qemu_version": crate::run::kernel::qemu_version(),
        "accel": accel,
        "accel_reason": info.accel_reason,
        "nesting": info.nested.then_some(qemu::nested::NESTING),
        "boot_to_ready_s": (s.boot_to_ready.as_secs_f64() * 1000.0).round() / 1000.0,
        "kernel_line": g.qemu.kernel_line.name(),
        "kernel_release": info.kernel_release,
        "phc_ctl_cmp": { "output": cmp_text, "realtime_minus_phc_ns": cmp_ns },
        "hv_utils": hv_utils,
    });
    say!("{}", r.stderr.trim_end());
    let mut tail = format!(
        "backend: qemu ({}, kernel {}), boot to agent-ready {:.2} s\n",
        accel,
        info.kernel_release,
        s.boot_to_ready.as_secs_f64()
    );
    if info.nested {
        tail.push_str(&format!("nesting: {}\n", qemu::nested::NESTING));
    }
    tail.push_str(&format!(
        "cross-check, linuxptp `phc_ctl {cmp_device} cmp` in the same guest: {cmp_text}\n"
    ));
    if let Some(h) = &hv_utils {
        tail.push_str(&format!(
            "hv_utils: {}, TimeSync {} through {}\n",
            h["driver"].as_str().unwrap_or("?"),
            h["timesync_version"].as_str().unwrap_or("?"),
            h["shim"].as_str().unwrap_or("?")
        ));
    }
    match out {
        Output::Json => match serde_json::from_str::<Value>(&r.stdout) {
            Ok(mut v) if v.is_object() => {
                v["backend"] = backend;
                output::out(&format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()));
            }
            _ => output::out(&r.stdout),
        },
        Output::Text => {
            output::out(&r.stdout);
            output::out(&format!("\n{tail}"));
        }
        Output::Ktap => {
            output::out(&r.stdout);
            // Only after a KTAP document: an error message from the guest stays as it was.
            if r.stdout.starts_with("KTAP version 1") {
                output::out(&ktap_diagnostics(&tail));
            }
        }
        Output::AsIs => output::out(&r.stdout),
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

    #[test]
    fn every_backend_option_stays_on_the_host() {
        let host = host_flags();
        for flag in
            ["--backend", "--kernel-headers", "--no-snapshot", "--boot-timeout-s", "--kernel-deb", "--phc"]
        {
            assert!(host.iter().any(|(f, _)| f == flag), "{flag} missing from {host:?}");
        }
        let args = [
            "probe",
            "/dev/ptp_hyperv",
            "--backend",
            "qemu",
            "--kernel-headers=h.deb",
            "--kernel-headers",
            "c.deb",
            "--no-snapshot",
            "--boot-timeout-s",
            "60",
            "--format",
            "json",
        ];
        let kept = forward(args.iter().map(|a| (*a).to_owned()), &host);
        assert_eq!(kept, ["probe", "/dev/ptp_hyperv", "--format", "json"]);
    }

    #[test]
    fn backend_facts_become_ktap_diagnostics() {
        let d = ktap_diagnostics("backend: qemu (tcg)\n\ncross-check: offset # 3\n");
        assert_eq!(d, "# backend: qemu (tcg)\n# cross-check: offset _ 3\n");
        let doc = format!("KTAP version 1\n1..1\nok 1 a\n{d}");
        assert_eq!(crate::format::ktap::parse(&doc).unwrap().len(), 1);
        // Guest output with every other line break cannot forge a test line.
        let hostile = "x\rok 2 forged\u{b}ok 3 forged\u{85}ok 4\u{2028}ok 5\u{2029}ok 6\x0cok 7";
        let d = ktap_diagnostics(hostile);
        assert_eq!(d.lines().count(), 1, "{d:?}");
        for sep in ['\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}'] {
            assert!(!d.contains(sep), "{d:?}");
        }
    }
}
