//! The crate's one error type. Reads of the simulated PHC answer with `phc::Error`, exactly as the
//! real device would; this enum covers only what the simulation itself rejects.

/// Why a world could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid config {key}: {reason}")]
    InvalidConfig {
        /// The offending key, as the scenario file spells it (`phc.read_latency.min_ns`).
        key: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig { key: key.into(), reason: reason.into() }
    }
}
