//! The latency sampler's own cost. Every variant times the same real syscall (`getppid`, which
//! glibc does not cache) BATCH times:
//!
//! - `bare_syscall`: the syscall alone, no timestamps: what the two clock reads cost on top.
//! - `bare_timed`: a hand-written loop with the same two CLOCK_MONOTONIC_RAW reads per sample and
//!   a store into a buffer allocated once outside the measurement: the floor for any sampler
//!   that reports per-sample round trips.
//! - `sampler`: `sample_measured` itself, storage allocation, pre-faulting and chunked progress
//!   callback included (a fresh run each iteration, as the CLI does per method).
//!
//! The sampler's own cost is `sampler` over `bare_timed`; the target is at most 2%. On a
//! noisy shared host criterion's separate runs drift by more than that, so a paired measurement
//! runs first: both loops alternate in short batches and the median of the per-pair ratios is
//! printed, which cancels drift that is slow compared with one pair.
//! Run: `cargo bench -p phc-harness --bench sampler` (about 30 s).

// criterion_group! generates an undocumented public fn.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use phc_harness::device::sampler::{monotonic_raw_ns, sample_measured, FnCall};

const BATCH: usize = 10_000;

fn syscall() -> Result<(), ()> {
    black_box(nix::unistd::getppid());
    Ok(())
}

fn overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("sampler_overhead");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));

    g.bench_function("bare_syscall", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = syscall();
            }
        })
    });

    let mut buf = vec![0i64; BATCH];
    g.bench_function("bare_timed", |b| b.iter(|| bare_timed(&mut buf)));

    g.bench_function("sampler", |b| {
        b.iter(|| black_box(sample_measured(BATCH, &mut FnCall(syscall), |done| _ = black_box(done))))
    });
    g.finish();
}

/// The hand-written reference loop: the syscall between two clock reads, stored per sample.
#[inline(always)]
fn bare_timed(buf: &mut [i64]) {
    for slot in buf.iter_mut() {
        let t0 = monotonic_raw_ns();
        let r = syscall();
        let t1 = monotonic_raw_ns();
        if r.is_err() {
            break;
        }
        *slot = t1 - t0;
    }
    black_box(&*buf);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates `bare_timed` and `sampler` batches (order swapped every pair) and prints the median
/// ns/sample of each and the median per-pair ratio.
fn paired() {
    const PAIRS: usize = 300;
    const N: usize = 2_000;
    let mut buf = vec![0i64; N];
    let bare = |buf: &mut [i64]| {
        let t = Instant::now();
        bare_timed(buf);
        t.elapsed().as_nanos() as f64 / N as f64
    };
    let sampler = || {
        let t = Instant::now();
        let _ = black_box(sample_measured(N, &mut FnCall(syscall), |done| _ = black_box(done)));
        t.elapsed().as_nanos() as f64 / N as f64
    };
    let (mut b, mut s, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let (x, y) = if i % 2 == 0 {
            let x = bare(&mut buf);
            (x, sampler())
        } else {
            let y = sampler();
            (bare(&mut buf), y)
        };
        b.push(x);
        s.push(y);
        ratio.push(y / x);
    }
    let (mb, ms, mr) = (median(&mut b), median(&mut s), median(&mut ratio));
    println!(
        "paired ({PAIRS} pairs of {N} getppid samples): bare_timed {mb:.1} ns/sample, \
         sampler {ms:.1} ns/sample, median ratio sampler/bare_timed {mr:.4} ({:+.2}%)",
        (mr - 1.0) * 100.0
    );
}

criterion_group!(benches, overhead);

fn main() {
    // `cargo test --benches` runs this binary with --test: keep that quick.
    if !std::env::args().any(|a| a == "--test") {
        paired();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
