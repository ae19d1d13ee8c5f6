//! What the simulated daemons and the world report while running: the same things a real daemon
//! would log, so reports show a sim run and a real run side by side.

use serde::Serialize;

/// One thing that happened, stamped with reference time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Reference (host) time since the start of the world.
    pub t_ns: i64,
    /// Who did it: "chrony", "ntpd", "phc2sys", "hv_utils" or "world".
    pub source: &'static str,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of events.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The guest's CLOCK_REALTIME was stepped by this much (positive: moved forward).
    Step {
        /// Size of the step.
        delta_ns: i64,
    },
    /// The daemon set the guest clock's frequency correction.
    Frequency {
        /// The correction now in force.
        freq_ppb: f64,
    },
    /// A PHC read failed (first failure after a success only, as daemons log it).
    ReadError {
        /// The errno's symbolic name.
        code: &'static str,
    },
    /// A log line a real daemon or the hypervisor would print on a state change.
    Note(String),
}
