//! What can go wrong with a guest, as one enum whose variants carry typed sources and the facts
//! a caller may act on. Messages never repeat their source: `chain` prints the whole story, one
//! cause after another, where a user reads it.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// What a wait that ran past its deadline was waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// QEMU creating its QMP socket.
    QmpSocket,
    /// The answer to a QMP command.
    QmpAnswer,
    /// The guest agent's first answer after a boot or reset.
    Agent,
    /// The answer to one agent request.
    AgentAnswer,
    /// A line on the serial console.
    Console(String),
}

impl fmt::Display for Waited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QmpSocket => f.write_str("QEMU's QMP socket"),
            Self::QmpAnswer => f.write_str("a QMP answer"),
            Self::Agent => f.write_str("the guest agent (boot did not finish in time)"),
            Self::AgentAnswer => f.write_str("an answer from the guest agent"),
            Self::Console(needle) => write!(f, "console line {needle:?}"),
        }
    }
}

/// What can go wrong with a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be used.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done: `read`, `write`, `create`, ...
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A program (QEMU, a decompressor) could not be started.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A helper program ran and failed.
    #[error("{tool} failed on {} ({status}){}", path.display(), suffix(": ", stderr))]
    Tool {
        /// The program.
        tool: &'static str,
        /// The file it worked on.
        path: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// QEMU exited.
    #[error(
        "QEMU exited ({status}){}{}",
        suffix(": ", stderr_tail),
        suffix("; console tail: ", console_tail)
    )]
    QemuExited {
        /// How it ended.
        status: ExitStatus,
        /// The last lines of its stderr, joined by ` | `.
        stderr_tail: String,
        /// The last lines of the guest console, where they say why (empty when not looked at).
        console_tail: String,
    },
    /// A wait ran past its deadline.
    #[error("timed out waiting for {what}{}", suffix("; console tail: ", console_tail))]
    Timeout {
        /// What it waited for.
        what: Waited,
        /// The last lines of the guest console (empty when not looked at).
        console_tail: String,
    },
    /// SIGINT or SIGTERM arrived: the run ends through its normal path (see `signals`).
    #[error("interrupted by {signal}")]
    Interrupted {
        /// The signal.
        signal: Signal,
    },
    /// The QMP socket failed.
    #[error("QMP connection failed")]
    QmpIo(#[source] io::Error),
    /// QEMU closed the QMP socket.
    #[error("QEMU closed the QMP connection")]
    QmpClosed,
    /// A QMP line that is not JSON.
    #[error("malformed QMP message {line:?}")]
    QmpMalformed {
        /// The line, trimmed.
        line: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The first QMP message was not a greeting.
    #[error("unexpected QMP greeting {got}")]
    QmpGreeting {
        /// What came instead.
        got: serde_json::Value,
    },
    /// QEMU answered a command with an error.
    #[error("QMP {command} failed: {desc} ({class})")]
    QmpCommand {
        /// The command.
        command: String,
        /// QMP's error class (`GenericError`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// QEMU answered a command with neither `return` nor `error`.
    #[error("QMP {command}: unexpected answer {answer}")]
    QmpUnexpected {
        /// The command.
        command: String,
        /// The answer.
        answer: serde_json::Value,
    },
    /// The agent socket could not be connected before the deadline.
    #[error("cannot connect to the guest agent at {}", path.display())]
    AgentConnect {
        /// The socket.
        path: PathBuf,
        /// The last connection error.
        #[source]
        source: io::Error,
    },
    /// Sending to or receiving from the agent failed.
    #[error("the agent channel failed (QEMU exited or closed the socket)")]
    AgentIo(#[source] io::Error),
    /// The agent socket reached end of file.
    #[error("the agent channel closed (QEMU exited or closed the socket)")]
    AgentClosed,
    /// The agent's channel broke while QEMU ran on: the agent in the guest died or never opened
    /// its port. The console says why.
    #[error(
        "the guest agent stopped answering while QEMU ran on{}",
        suffix("; console tail: ", console_tail)
    )]
    AgentLost {
        /// The last lines of the guest console.
        console_tail: String,
    },
    /// A line from the agent that is not a response.
    #[error("garbage from the guest agent: {shown:?}")]
    AgentGarbage {
        /// The line's first 80 characters.
        shown: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The agent answered another request than the one waiting.
    #[error("the guest agent answered request {got} while request {want} was waiting")]
    AgentOutOfOrder {
        /// The id answered.
        got: u64,
        /// The id waiting.
        want: u64,
    },
    /// The agent's `ok` value does not have the shape the request implies.
    #[error("unexpected answer from the guest agent to {request}: {answer}")]
    AgentAnswer {
        /// The request's name (`Op::name`).
        request: &'static str,
        /// The answer, as JSON.
        answer: String,
        /// Why it does not fit, where serde said.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The agent ran the request and reports an error (the guest's own message).
    #[error("guest: {0}")]
    Guest(String),
    /// The guest has no PHC of that name.
    #[error("no PHC named {name:?} in the guest (have: {have})")]
    NoSuchPhc {
        /// The clock_name looked for.
        name: String,
        /// What the guest has, one `ptpN name` per entry.
        have: String,
    },
    /// The guest kernel is not where setup puts it.
    #[error("no guest kernel at {} (run ci/setup-vm.sh to fetch Debian's kernel)", path.display())]
    KernelMissing {
        /// The file looked for.
        path: PathBuf,
        /// Why it could not be read, when it exists.
        #[source]
        source: Option<io::Error>,
    },
    /// A kernel module named in the image spec is not in the kernel's tree.
    #[error("module {name} not found under {}{}", root.display(), module_hint(name))]
    ModuleMissing {
        /// The module.
        name: String,
        /// The modules tree searched.
        root: PathBuf,
    },
    /// A program for the image is not installed.
    #[error("{}: missing (run ci/setup-vm.sh)", path.display())]
    ProgramMissing {
        /// The program.
        path: PathBuf,
    },
    /// The bzImage carries no kernel that boots the PVH way.
    #[error("{} holds no compressed ELF kernel with a PVH note", path.display())]
    NoPvhKernel {
        /// The bzImage.
        path: PathBuf,
    },
    /// The static harness binary for the guest is nowhere to be found.
    #[error(
        "guest agent binary not found (looked at {}): build it with ci/build-agent.sh or pass --agent-bin",
        paths(looked_at)
    )]
    AgentBinMissing {
        /// Where it was looked for.
        looked_at: Vec<PathBuf>,
    },
    /// QEMU is not installed (not found in PATH).
    #[error("{} not found (run ci/setup-vm.sh)", program.display())]
    QemuMissing {
        /// The program looked for.
        program: PathBuf,
    },
    /// Saving or restoring the guest's state (QMP `migrate` to a file) did not complete.
    #[error("migration {status}: {detail}")]
    Migration {
        /// The last `query-migrate` status (`failed`, `cancelled`, ...).
        status: String,
        /// QEMU's `error-desc`, or what was waited for.
        detail: String,
    },
    /// A request this backend cannot honour.
    #[error("{what} cannot run on qemu: {why}")]
    Unsupported {
        /// What was asked.
        what: String,
        /// Why not.
        why: String,
    },
}

fn suffix(sep: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{sep}{text}")
    }
}

fn paths(p: &[PathBuf]) -> String {
    p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// Whether the agent channel is gone (QEMU died or closed it), as opposed to a slow or
    /// confused agent.
    pub fn is_channel_lost(&self) -> bool {
        matches!(self, Self::AgentIo(_) | Self::AgentClosed | Self::AgentConnect { .. })
    }

    /// The guest console's last lines this error carries, when it looked at them.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Self::QemuExited { console_tail, .. }
            | Self::Timeout { console_tail, .. }
            | Self::AgentLost { console_tail } => Some(console_tail.as_str()).filter(|c| !c.is_empty()),
            _ => None,
        }
    }
}

/// An error and all its causes, `: `-separated, for a person to read: `cannot write /x: No space
/// left on device (os error 28)`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Why a missing module matters, where the image cannot do without it.
fn module_hint(name: &str) -> &'static str {
    match name {
        "igb" | "dca" => {
            " (the QEMU backend's guest PHC and, in virtual time, its host clock are the igb NIC's; \
             this kernel is built without igb, as Debian's cloud flavour is: boot the generic \
             flavour of the same release)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn json_error() -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>("not json").unwrap_err()
    }

    #[test]
    fn a_kernel_without_igb_is_told_why_it_matters() {
        let e = Error::ModuleMissing {
            name: "igb".into(),
            root: PathBuf::from("/k/lib/modules/6.1.0-57-cloud-amd64"),
        };
        let m = e.to_string();
        assert!(m.starts_with("module igb not found under /k/lib/modules/6.1.0-57-cloud-amd64 ("), "{m}");
        assert!(m.contains("built without igb, as Debian's cloud flavour is"), "{m}");
        let e = Error::ModuleMissing { name: "cuse".into(), root: PathBuf::from("/k") };
        assert_eq!(e.to_string(), "module cuse not found under /k");
    }

    #[test]
    fn messages_do_not_repeat_their_source_and_chain_adds_it_once() {
        let e = Error::Io {
            op: "write",
            path: "/tmp/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(e.to_string(), "cannot write /tmp/x");
        let c = chain(&e);
        assert_eq!(c.matches("No space left on device").count(), 1, "{c}");
        assert!(c.starts_with("cannot write /tmp/x: No space left"), "{c}");

        let e = Error::AgentGarbage { shown: "not json".into(), source: json_error() };
        assert_eq!(e.to_string(), "garbage from the guest agent: \"not json\"");
        assert!(chain(&e).contains("expected ident"), "{}", chain(&e));
        assert!(std::error::Error::source(&e).is_some());

        let e = Error::Spawn { program: "qemu-x".into(), source: io::ErrorKind::NotFound.into() };
        assert_eq!(chain(&e), "cannot start qemu-x: entity not found");
    }

    #[test]
    fn qemu_exit_and_timeouts_read_as_before() {
        let e = Error::QemuExited {
            status: ExitStatus::from_raw(libc::SIGKILL),
            stderr_tail: String::new(),
            console_tail: String::new(),
        };
        assert_eq!(e.to_string(), "QEMU exited (signal: 9 (SIGKILL))");
        let e = Error::QemuExited {
            status: ExitStatus::from_raw(1 << 8),
            stderr_tail: "qemu: bad option".into(),
            console_tail: "Kernel panic".into(),
        };
        assert_eq!(
            e.to_string(),
            "QEMU exited (exit status: 1): qemu: bad option; console tail: Kernel panic"
        );

        let e = Error::Timeout { what: Waited::Agent, console_tail: "phc-init: agent starting".into() };
        assert_eq!(
            e.to_string(),
            "timed out waiting for the guest agent (boot did not finish in time); console tail: \
             phc-init: agent starting"
        );
        let e = Error::Timeout { what: Waited::Console("login:".into()), console_tail: String::new() };
        assert_eq!(e.to_string(), "timed out waiting for console line \"login:\"");
        let e = Error::Interrupted { signal: Signal::SIGINT };
        assert_eq!(e.to_string(), "interrupted by SIGINT");
    }

    #[test]
    fn structured_variants_say_what_happened() {
        let e =
            Error::QmpCommand { command: "cont".into(), class: "GenericError".into(), desc: "nope".into() };
        assert_eq!(e.to_string(), "QMP cont failed: nope (GenericError)");
        let e = Error::AgentBinMissing { looked_at: vec!["a".into(), "b".into()] };
        assert!(e.to_string().starts_with("guest agent binary not found (looked at a, b)"), "{e}");
        let e =
            Error::KernelMissing { path: "/k/VERSION".into(), source: Some(io::ErrorKind::NotFound.into()) };
        assert_eq!(
            chain(&e),
            "no guest kernel at /k/VERSION (run ci/setup-vm.sh to fetch Debian's kernel): entity not found"
        );
        assert!(Error::AgentClosed.is_channel_lost());
        assert!(!Error::Guest("x".into()).is_channel_lost());
    }
}
