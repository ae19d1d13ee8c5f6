//! Measures simulation speed: 24 h of a hyperv + hv_utils + chrony world.
use mock_phc::*;
fn main() {
    let cfg = WorldConfig {
        guest: OscillatorConfig { freq_error_ppm: 20.0, wander_ppb_per_sqrt_s: 2.0, phase_noise_ns: 30.0 },
        disciplines: vec![
            DisciplineConfig::HvUtils(HvUtilsConfig::default()),
            DisciplineConfig::Chrony(ChronyConfig { makestep_threshold_s: Some(1.0), ..Default::default() }),
        ],
        ..Default::default()
    };
    let mut w = World::new(&cfg).unwrap();
    let start = std::time::Instant::now();
    w.run_until(86_400 * 1_000_000_000);
    let wall = start.elapsed().as_secs_f64();
    println!(
        "24 h simulated in {wall:.3} s wall: {:.0} simulated s per wall s; final offset {} ns",
        86_400.0 / wall,
        w.guest_offset_ns()
    );
}
