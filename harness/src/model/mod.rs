//! The bottom wing of the scenario side: plain data and its validation. Scenarios as loaded from
//! their files, what a run observed, and the statistics every layer above computes with. It
//! imports nothing else of the crate.

pub mod observation;
pub mod scenario;
pub mod stats;
pub mod tolerance;
