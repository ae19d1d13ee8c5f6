//! stdout and stderr for the commands. A reader that goes away (`| head`) ends output quietly and
//! the command goes on with its work (reports are still written to `--out`); any other write
//! error (a full disk, `> /dev/full`) is said once, in one line, and makes the exit status 2.
//! Nothing here panics, unlike `print!`, which does on both.
//!
//! Neither lets a terminal act on what it shows: on a terminal, stdout's control characters
//! but LF and tab, and every one in a stderr line, are written as visible `\u{..}` text
//! ([`crate::format::escape::terminal`]), so an escape sequence in a scenario name, a reason or a guest's
//! output cannot retitle, clear or rewrite the screen. Output to a file or pipe is as written
//! (every format the commands write escapes its own data).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::format::exit::Exit;

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;
static STDOUT: AtomicU8 = AtomicU8::new(OPEN);

/// Writes `s` to stdout, unless an earlier write found it closed or failing.
pub fn out(s: &str) {
    if STDOUT.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut o = std::io::stdout().lock();
    let s = if o.is_terminal() { Cow::Owned(crate::format::escape::terminal(s)) } else { Cow::Borrowed(s) };
    if let Err(e) = o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT.store(CLOSED, Ordering::Relaxed);
        } else {
            STDOUT.store(FAILED, Ordering::Relaxed);
            crate::say!("phc-harness: stdout: {e}");
        }
    }
}

/// The exit status stdout's fate calls for: `Usage` after a write error other than a closed pipe.
pub fn status() -> Exit {
    if STDOUT.load(Ordering::Relaxed) == FAILED {
        Exit::Usage
    } else {
        Exit::Ok
    }
}

/// Whether stdout still takes output (a command may skip building what nobody reads).
pub fn stdout_open() -> bool {
    STDOUT.load(Ordering::Relaxed) == OPEN
}

/// Writes one line to stderr, ignoring failure: a closed stderr is no reason to stop or panic.
/// Control characters from the message (all but LF and tab) are shown, never sent as they are.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{}", $crate::format::escape::terminal(&format!($($arg)*)));
    }};
}
