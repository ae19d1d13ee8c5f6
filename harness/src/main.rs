//! The `phc-harness` binary: the command line lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    phc_harness::cli::main()
}
