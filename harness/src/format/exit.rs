//! The process exit codes of every command, in one type.
#![forbid(unsafe_code)]

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok,
    /// 1: a check failed: a deviation, a failed verdict, an aborted run, sim and QEMU disagreeing.
    CheckFailed,
    /// 2: usage or access error: bad arguments, a malformed scenario, a missing device, not a PTP
    /// device, no permission, an output that cannot be written.
    Usage,
    /// 128 + N: ended early by signal N (SIGINT, SIGTERM), after cleaning up.
    Interrupted(nix::sys::signal::Signal),
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::CheckFailed => 1,
            Self::Usage => 2,
            Self::Interrupted(sig) => u8::try_from(128 + sig as i32).unwrap_or(u8::MAX),
        }
    }

    /// The worse of two outcomes (interrupts over usage errors over failed checks over success).
    pub fn max(self, other: Self) -> Self {
        if other.code() > self.code() {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
