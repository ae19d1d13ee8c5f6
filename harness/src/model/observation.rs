//! What a run observed: the guest's offsets over time, the disturbances as they were applied,
//! and the daemons' and the world's events. Plain data, written by the engine and read by the
//! judge.
#![forbid(unsafe_code)]

use mock_phc::{Disturbance, Event};
use serde::{Deserialize, Serialize};

/// One observation of the guest against the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Scenario time, seconds since the start of the warm-up.
    pub t_s: f64,
    /// Guest CLOCK_REALTIME minus host time; `None` while the guest cannot be asked.
    pub guest_offset_ns: Option<i64>,
    /// PHC minus host time as a gettime client sees it; `None` while unreadable.
    pub phc_offset_ns: Option<i64>,
    /// The errno name when the PHC read failed.
    pub phc_error: Option<String>,
}

/// A disturbance as it was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// When it started, scenario seconds.
    pub start_s: f64,
    /// When the guest was back (equal to `start_s` for instant ones).
    pub end_s: f64,
    /// What it was.
    pub disturbance: Disturbance,
}

/// Everything a run saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observations {
    /// Offsets, in time order.
    pub series: Vec<Observation>,
    /// Disturbances applied.
    pub markers: Vec<Marker>,
    /// Discipline and world events (steps, daemon log lines, read errors), in time order.
    pub events: Vec<Event>,
}
