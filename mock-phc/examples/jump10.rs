//! Prints chrony's reaction to a +10 s host step (calibration against the real chronyd).
use mock_phc::*;
fn main() {
    let cfg = WorldConfig {
        phc: PhcConfig::Kvm { read_latency: LatencyConfig::kvm() },
        disciplines: vec![DisciplineConfig::Chrony(ChronyConfig {
            makestep_threshold_s: Some(1.0),
            ..Default::default()
        })],
        ..Default::default()
    };
    let mut w = World::new(&cfg).unwrap();
    w.run_until(300_000_000_000);
    for e in w.drain_events() {
        println!("{:8.3} {} {:?}", e.t_ns as f64 * 1e-9, e.source, e.kind);
    }
    w.apply(&Disturbance::HostStep { delta_s: 10.0 });
    let t0 = w.now_ns();
    for k in 1..=150 {
        w.run_until(t0 + k * 1_000_000_000);
        for e in w.drain_events() {
            println!("{:8.3} {} {:?}", (e.t_ns - t0) as f64 * 1e-9, e.source, e.kind);
        }
        if k % 5 == 0 {
            println!("  t+{k:3}s offset {:.3}", w.guest_offset_ns() as f64 * 1e-9);
        }
    }
}
