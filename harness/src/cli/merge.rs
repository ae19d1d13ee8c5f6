//! `merge`: one suite folder from the folders of its shards.

use std::path::PathBuf;

use crate::format::exit::Exit;
use crate::format::output;

fn usage(msg: impl std::fmt::Display) -> Exit {
    say!("phc-harness: {msg}");
    Exit::Usage
}

/// Arguments of `merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shard folders (each written by `suite --shard I/N`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged suite folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// `phc-harness merge`: one suite folder from its shards. Exit 0/1 as the merged suite's
/// verdict; 2 when the folders do not make one suite.
pub fn merge(args: MergeArgs) -> Exit {
    match crate::regress::merge::merge(&args.dirs, &args.out) {
        Ok(s) => {
            output::out(&crate::regress::results::ktap(&s));
            if s.failed() {
                Exit::CheckFailed
            } else {
                Exit::Ok
            }
        }
        Err(e) => usage(e),
    }
}
