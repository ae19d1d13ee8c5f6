//! The regression workflow: suites of scenarios and their summary, the index files, baselines,
//! `compare` (against baselines, or two runs side by side) and `merge` of sharded suites.

pub mod baseline;
pub mod compare;
pub mod compare_pair;
pub mod merge;
pub mod render;
pub mod results;
pub mod suite;
pub mod summary;

use std::path::PathBuf;

use crate::model::scenario::ScenarioError;
use suite::LOCK_FILE;

/// A suite that could not run, be read or be written.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A scenario did not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The runs stopped: the simulator refused a world, or a report was not written.
    #[error(transparent)]
    Run(#[from] crate::run::batch::BatchError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A suite file is not what it should be.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Shard folders that do not make one suite.
    #[error("cannot merge: {0}")]
    Merge(String),
    /// Another suite or merge holds the output folder.
    #[error("{}: another suite or merge is writing into this folder (it holds {LOCK_FILE})", path.display())]
    Busy {
        /// The output folder.
        path: PathBuf,
    },
}
