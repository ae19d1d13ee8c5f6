//! The scenario's NTP server: host time served over a network with delay and jitter, which may
//! itself be wrong (a falseticker), fall silent or answer garbage. The QEMU backend runs it in
//! the guest (phc-harness's `guest::ntp`, through the guest kernel's network stack); here it is
//! the exchange a client's request makes, drawn from the world's time.

use serde::{Deserialize, Serialize};

use crate::time::{check_range, MAX_ABS_S};
use crate::Error;

/// The server's address where it runs in the QEMU guest (its own network namespace; the
/// clients' side of the veth pair is 10.200.0.2), and the name chronyd's log gives its source.
pub const NTP_SERVER_ADDR: &str = "10.200.0.1";

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NtpAnswer {
    /// With its time.
    #[default]
    Time,
    /// Not at all.
    Silent,
    /// With garbage (the client's origin echoed, every other byte random).
    Garbage,
}

/// The server as the scenario sets it up (`[world.ntp_server]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NtpServerConfig {
    /// Fixed one-way network delay, each way.
    pub delay_s: f64,
    /// Mean of the exponential queueing delay added to each way on its own.
    pub jitter_s: f64,
    /// The server's own error: added to the time it serves.
    pub offset_s: f64,
    /// The stratum it claims (1-15).
    pub stratum: u8,
    /// How it answers at the start.
    pub answer: NtpAnswer,
}

impl Default for NtpServerConfig {
    /// A server on the local network: 250 us each way, 50 us of jitter.
    fn default() -> Self {
        Self { delay_s: 0.000_25, jitter_s: 0.000_05, offset_s: 0.0, stratum: 1, answer: NtpAnswer::Time }
    }
}

/// Longest one-way delay or jitter a scenario may set: what a satellite hop and worse would be.
pub const MAX_DELAY_S: f64 = 10.0;

impl NtpServerConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        check_range(&format!("{key}.delay_s"), self.delay_s, 0.0, MAX_DELAY_S)?;
        check_range(&format!("{key}.jitter_s"), self.jitter_s, 0.0, MAX_DELAY_S)?;
        check_range(&format!("{key}.offset_s"), self.offset_s, -MAX_ABS_S, MAX_ABS_S)?;
        if !(1..=15).contains(&self.stratum) {
            return Err(Error::invalid(format!("{key}.stratum"), "must be within 1..=15"));
        }
        Ok(())
    }
}

/// What a client's request got back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    /// No answer (the server is silent, or there is none).
    None,
    /// An answer no client accepts.
    Garbage,
    /// A good answer: the offset the client computes from its four timestamps (server minus
    /// client: ((T2 - T1) + (T3 - T4)) / 2) and the round-trip delay (T4 - T1) - (T3 - T2).
    Time {
        /// Server time minus the client's clock, as measured.
        offset_s: f64,
        /// Round trip.
        delay_s: f64,
        /// The stratum the server claims.
        stratum: u8,
    },
}
