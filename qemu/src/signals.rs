//! SIGINT and SIGTERM end a run through its normal path. The handler only records the signal;
//! every bounded wait of this crate checks the record and returns `Error::Interrupted`, so the
//! caller's destructors kill QEMU and remove the temp files. A second signal gets the default
//! action (the handler is installed with SA_RESETHAND), for a run that does not come back.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::Error;

/// The signal received, 0 for none.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM in this process. Call it only where the waits
/// that follow are this crate's (or check `pending` themselves): elsewhere a first Ctrl-C would
/// go unnoticed.
pub fn install() -> nix::Result<()> {
    let act = SigAction::new(SigHandler::Handler(record), SaFlags::SA_RESETHAND, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `record` only stores to an atomic, which is async-signal-safe, and touches no
        // other state; the previous action is not needed back.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// The signal received since `install`, if any.
pub fn pending() -> Option<Signal> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The exit status a shell gives a process killed by `signal` (128 + its number), for a run that
/// ends early because of it.
pub fn exit_status(signal: Signal) -> u8 {
    u8::try_from(128 + signal as i32).unwrap_or(u8::MAX)
}

/// `Err(Interrupted)` once a signal has arrived.
pub fn check() -> Result<(), Error> {
    match pending() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}
