//! Runs scenarios on QEMU in virtual time (the observation window as written) and in real time
//! (the window shortened as given, which takes that long in wall time) and prints the fidelity
//! table between the two, as `run --backend sim,qemu` does with the sim: columns sim = virtual,
//! qemu = real, a shortened real run's slew extrapolated.
//!
//! `PHC_AGENT_BIN=... cargo run --release -p phc-harness --example clock_crosscheck -- \
//!     reboot:30:70 phc-jump-10s:60:150`   (NAME:WARMUP_S:OBSERVE_S ...)

use phc_harness::judge::{fidelity, report::Report};
use phc_harness::run::backend::qemu::{find_agent_bin, ClockMode, QemuOptions};
use phc_harness::run::runner::{builtin, run_qemu};

fn main() {
    let agent_bin = find_agent_bin(None).unwrap_or_else(|e| panic!("{e}"));
    phc_harness::run::backend::qemu::prepare_process();
    for arg in std::env::args().skip(1) {
        let parts: Vec<&str> = arg.split(':').collect();
        let mut s = builtin(parts[0]).expect("a built-in scenario").expect("valid");
        if let Some(w) = parts.get(1) {
            s.timeline.warmup_s = w.parse().expect("warm-up seconds");
        }
        let mut short = s.clone();
        if let Some(o) = parts.get(2) {
            short.timeline.observe_s = o.parse().expect("observation seconds");
        }
        let run = |s: &phc_harness::model::scenario::Scenario, clock| -> Report {
            let opts = QemuOptions { clock, ..QemuOptions::new(agent_bin.clone()) };
            let r = run_qemu(s, &opts, true).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            println!(
                "{} [{}]: verdict {:?}, wall {} s, speed-up {}",
                s.name,
                clock.name(),
                r.verdict,
                r.backend_info["wall_s"],
                r.backend_info["speedup"]
            );
            r
        };
        let virt = run(&s, ClockMode::Virtual);
        let real = run(&short, ClockMode::Real);
        let f = fidelity::compare(&virt, &real, s.poll_interval_s());
        println!("{} (sim = virtual time, qemu = real time)\n{}", s.name, f.to_markdown());
    }
}
