//! The scenario engine: one loop for every backend. It reads time only from the backend, applies
//! the timeline's disturbances when they fall due and records offsets and events.
#![forbid(unsafe_code)]

use mock_phc::{Disturbance, Event};

use crate::model::observation::{Marker, Observation, Observations};

use crate::model::scenario::Scenario;

/// What the engine needs from a backend. Time is the backend's: virtual for the simulator, the
/// host's monotonic clock for a real guest.
pub trait Backend {
    /// Error type of the backend.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Short name for reports (`sim`, `qemu`, `local`).
    fn name(&self) -> &'static str;
    /// Lets time pass until scenario time `t_ns` (the simulator jumps; a real backend waits).
    fn advance_to(&mut self, t_ns: i64) -> Result<(), Self::Error>;
    /// Starts a disturbance now. A backend that knows when the guest was really back (a real
    /// reboot takes as long as it takes) returns that scenario time; `None` keeps the scripted end.
    fn disturb(&mut self, d: &Disturbance) -> Result<Option<f64>, Self::Error>;
    /// Reads the offsets now.
    fn observe(&mut self) -> Result<Observation, Self::Error>;
    /// Events since the last call.
    fn drain_events(&mut self) -> Result<Vec<Event>, Self::Error>;
    /// Observations the backend took by itself at instants that matter (a real guest's offset
    /// at the moment it resumed, before the host's SYNC sample corrected it).
    fn take_observations(&mut self) -> Vec<Observation> {
        Vec::new()
    }
}

/// Scenario seconds to nanoseconds. A loaded scenario keeps every time within a week
/// (scenario::validate), far inside i64; a value outside that would only be past the end.
fn s_to_ns(s: f64) -> i64 {
    mock_phc::time::secs_to_ns(s).unwrap_or(i64::MAX)
}

/// Runs a scenario on a backend. `progress` is called with (scenario seconds done, total).
/// A backend failure ends the run early: what was observed until then comes back with the error.
pub fn run<B: Backend>(
    scenario: &Scenario,
    backend: &mut B,
    progress: impl FnMut(f64, f64),
) -> (Observations, Result<(), B::Error>) {
    let mut obs = Observations::default();
    let r = run_into(scenario, backend, progress, &mut obs);
    obs.events.sort_by_key(|e| e.t_ns);
    obs.series.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    (obs, r)
}

fn run_into<B: Backend>(
    scenario: &Scenario,
    backend: &mut B,
    mut progress: impl FnMut(f64, f64),
    obs: &mut Observations,
) -> Result<(), B::Error> {
    let tl = &scenario.timeline;
    let total_ns = s_to_ns(scenario.duration_s());
    let interval_ns = s_to_ns(tl.interval_s).max(1);
    let mut due: Vec<(i64, &Disturbance)> =
        tl.events.iter().map(|e| (s_to_ns(tl.warmup_s + e.at_s), &e.disturbance)).collect();
    due.sort_by_key(|(t, _)| *t);
    let mut due = due.into_iter().peekable();

    let mut next_obs = 0i64;
    // Extra observations at the instant each disturbance ends: the offset the guest comes back with.
    let mut extra: Vec<i64> = Vec::new();
    loop {
        let next_dist = due.peek().map(|(t, _)| *t);
        let next_extra = extra.iter().copied().min();
        let t = [Some(next_obs), next_dist, next_extra].into_iter().flatten().min().expect("next_obs");
        if t > total_ns {
            break;
        }
        backend.advance_to(t)?;
        if next_dist == Some(t) {
            let (_, d) = due.next().expect("peeked");
            let actual_end_s = backend.disturb(d)?;
            let start_s = t as f64 / 1e9;
            let duration_s = crate::model::scenario::disturbance_duration_s(d);
            let end_s = actual_end_s.unwrap_or(start_s + duration_s);
            obs.markers.push(Marker { start_s, end_s, disturbance: d.clone() });
            let end = t + s_to_ns(duration_s);
            if end > t && end % interval_ns != 0 {
                extra.push(end);
            }
            continue;
        }
        if next_extra == Some(t) {
            extra.retain(|&e| e != t);
        } else {
            next_obs += interval_ns;
        }
        // The backend stamps the observation: a real guest may answer later than asked.
        obs.series.push(backend.observe()?);
        obs.series.extend(backend.take_observations());
        obs.events.extend(backend.drain_events()?);
        progress(t as f64 / 1e9, total_ns as f64 / 1e9);
    }
    obs.events.extend(backend.drain_events()?);
    Ok(())
}
