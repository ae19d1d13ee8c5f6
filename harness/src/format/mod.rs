//! The bottom wing: how things are written, knowing nothing of what they say. Escaping per output
//! format, the KTAP and JUnit writers (suites and probes bring their own test lists), the
//! process's stdout, stderr and exit codes, and whole-or-nothing file writes.

#[macro_use]
pub mod output;
pub mod escape;
pub mod exit;
pub mod files;
pub mod junit;
pub mod ktap;
