//! Builders shared by the integration tests.
#![allow(dead_code)]

use mock_phc::*;

/// One second in ns.
pub const S: i64 = 1_000_000_000;

/// chrony with the given makestep.
pub fn chrony(makestep: Option<f64>, limit: i32) -> DisciplineConfig {
    DisciplineConfig::Chrony(ChronyConfig {
        makestep_threshold_s: makestep,
        makestep_limit: limit,
        ..Default::default()
    })
}

/// A ptp_kvm PHC.
pub fn kvm() -> PhcConfig {
    PhcConfig::Kvm { read_latency: LatencyConfig::kvm() }
}

/// A world with defaults but these.
pub fn world(phc: PhcConfig, disciplines: Vec<DisciplineConfig>) -> World {
    World::new(&WorldConfig { phc, disciplines, ..Default::default() }).unwrap()
}

/// (time, size) of every Step event.
pub fn steps(events: &[Event]) -> Vec<(i64, i64)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Step { delta_ns } => Some((e.t_ns, delta_ns)),
            _ => None,
        })
        .collect()
}

/// Runs in 1 s increments until |offset| stays below `tol_s`; returns the first time it did.
pub fn settle_time_s(w: &mut World, from_ns: i64, limit_s: i64, tol_s: f64) -> Option<f64> {
    let mut since = None;
    for k in 1..=limit_s {
        w.run_until(from_ns + k * S);
        if (w.guest_offset_ns() as f64 * 1e-9).abs() < tol_s {
            since.get_or_insert(k);
        } else {
            since = None;
        }
    }
    since.map(|k| k as f64)
}
