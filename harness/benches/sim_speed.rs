//! Simulation speed: simulated seconds per wall-clock second for azure-pause-30s extended to 24 h
//! of observation (criterion's throughput in "elements" is simulated seconds). Target: at least
//! 1,000,000x real time.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phc_harness::model::scenario::Scenario;
use phc_harness::run::runner::{run_sim, BUILTIN};

fn day_long_pause() -> Scenario {
    let text = BUILTIN.iter().find(|(n, _)| *n == "azure-pause-30s").expect("built in").1;
    let mut s = Scenario::parse(text, Path::new("azure-pause-30s.toml")).expect("valid");
    s.timeline.observe_s = 86_400.0;
    s
}

fn sim_speed(c: &mut Criterion) {
    let s = day_long_pause();
    let simulated_s = s.duration_s();
    // One timed run outside criterion, printed as the ratio the target is stated in.
    let t0 = Instant::now();
    let r = run_sim(&s).expect("runs");
    let wall = t0.elapsed().as_secs_f64();
    eprintln!(
        "sim_speed: {simulated_s:.0} simulated s in {wall:.3} s wall = {:.0}x real time ({} observations)",
        simulated_s / wall,
        r.series.len()
    );
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.throughput(Throughput::Elements(simulated_s as u64));
    g.bench_function("azure_pause_30s_24h", |b| b.iter(|| run_sim(&s).expect("runs")));
    g.finish();
}

fn suite(c: &mut Criterion) {
    let all: Vec<Scenario> = BUILTIN
        .iter()
        .map(|(n, t)| Scenario::parse(t, Path::new(&format!("{n}.toml"))).expect("valid"))
        .collect();
    let mut g = c.benchmark_group("suite");
    g.sample_size(10);
    g.bench_function("all_builtin_scenarios", |b| {
        b.iter(|| all.iter().map(|s| run_sim(s).expect("runs").series.len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, sim_speed, suite);
criterion_main!(benches);
