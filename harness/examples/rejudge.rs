//! Judges stored real runs against the sim as it is now: the `--repeat` distribution fidelity of
//! `run SCENARIO --backend sim,qemu --repeat N`, without running QEMU again. For work on the
//! sim's models, where the real runs are the slow half (snapshot-restore: 100 s of real time a
//! run).
//!
//! `cargo run --release -p phc-harness --example rejudge -- SCENARIO.toml RUN_FOLDER...`
//! (each RUN_FOLDER holds a QEMU run's report.json, e.g. `OUT/snapshot-restore-qemu-seed3`);
//! prints the distribution's Markdown.

use std::path::Path;

use phc_harness::judge::distribution::Distribution;
use phc_harness::judge::report::Report;
use phc_harness::model::scenario::Scenario;
use phc_harness::run::ensemble::calibrated_sims;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next() else {
        eprintln!("usage: rejudge SCENARIO.toml RUN_FOLDER...");
        std::process::exit(2);
    };
    let s = Scenario::load(Path::new(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let qemu: Vec<Report> = args
        .map(|d| Report::load(&Path::new(&d).join("report.json")).unwrap_or_else(|e| panic!("{d}: {e}")))
        .collect();
    if qemu.is_empty() {
        eprintln!("rejudge: no run folders given");
        std::process::exit(2);
    }
    let refs: Vec<&Report> = qemu.iter().collect();
    let (sims, calibration) = calibrated_sims(&s, &refs);
    // As `run --repeat N` has them: the scenario's own sim runs (seeds s..s+N-1) beside the real.
    let own: Vec<Report> = (0..qemu.len() as u64)
        .filter_map(|k| {
            let mut v = s.clone();
            v.world.seed = s.world.seed.wrapping_add(k);
            phc_harness::run::runner::run_sim(&v).ok()
        })
        .collect();
    let reports: Vec<Report> = own.into_iter().chain(qemu.iter().cloned()).collect();
    let d = Distribution::judged_against(&s.name, &reports, s.poll_interval_s(), Some((&sims, calibration)));
    print!("{}", d.to_markdown());
}
