//! A QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst): the greeting, capability
//! negotiation, and commands with their answers, skipping asynchronous events. Every read is
//! bounded by a deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{signals, Error, Waited};

/// The longest one blocking read lasts: between reads the waits check for SIGINT/SIGTERM.
pub(crate) const READ_SLICE: Duration = Duration::from_millis(200);

/// Whether a read error means only that the read timeout passed.
pub(crate) fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// A negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events received while waiting for answers, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects to a QMP socket, retrying until `deadline` while QEMU creates it, and negotiates.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, Error> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    signals::check()?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Past the deadline this is a slow start, not a QMP failure: say so.
                Err(_) => {
                    return Err(Error::Timeout { what: Waited::QmpSocket, console_tail: String::new() })
                }
            }
        };
        Self::negotiate(stream, deadline)
    }

    /// Reads the greeting from a connected stream and enters command mode.
    pub fn negotiate(stream: UnixStream, deadline: Instant) -> Result<Self, Error> {
        let writer = stream.try_clone().map_err(Error::QmpIo)?;
        let mut q = Self { reader: BufReader::new(stream), writer, events: Vec::new() };
        let greeting = q.read_message(deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(Error::QmpGreeting { got: greeting });
        }
        q.execute("qmp_capabilities", None, deadline)?;
        Ok(q)
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, Error> {
        // Bytes of a line survive a timed-out read (read_until keeps them), so reading in slices
        // loses nothing.
        let mut line = Vec::new();
        loop {
            signals::check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { what: Waited::QmpAnswer, console_tail: String::new() });
            }
            self.reader.get_ref().set_read_timeout(Some(left.min(READ_SLICE))).map_err(Error::QmpIo)?;
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => return Err(Error::QmpClosed),
                Ok(_) if line.ends_with(b"\n") => break,
                // End of file in the middle of a line.
                Ok(_) => return Err(Error::QmpClosed),
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(Error::QmpIo(e)),
            }
        }
        serde_json::from_slice(&line).map_err(|source| Error::QmpMalformed {
            line: String::from_utf8_lossy(&line).trim().to_owned(),
            source,
        })
    }

    /// Runs a command and returns its `return` value; a QMP `error` becomes `Error::QmpCommand`.
    pub fn execute(&mut self, cmd: &str, args: Option<Value>, deadline: Instant) -> Result<Value, Error> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(Error::QmpIo)?;
        loop {
            let m = self.read_message(deadline)?;
            if m.get("event").is_some() {
                self.events.push(m);
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(Error::QmpCommand {
                    command: cmd.to_owned(),
                    class: e["class"].as_str().unwrap_or("unknown").to_owned(),
                    desc: e["desc"].as_str().unwrap_or("no description").to_owned(),
                });
            }
            return Err(Error::QmpUnexpected { command: cmd.to_owned(), answer: m });
        }
    }

    /// Waits for the event `name` (one already received first), keeping the others in
    /// `events`.
    pub fn wait_event(&mut self, name: &str, deadline: Instant) -> Result<Value, Error> {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return Ok(self.events.remove(i));
        }
        loop {
            let m = self.read_message(deadline)?;
            if m["event"] == name {
                return Ok(m);
            }
            if m.get("event").is_some() {
                self.events.push(m);
            }
        }
    }

    /// `stop`: pauses every vCPU, as a host does for maintenance.
    pub fn stop(&mut self, deadline: Instant) -> Result<(), Error> {
        self.execute("stop", None, deadline).map(drop)
    }

    /// `cont`: resumes.
    pub fn cont(&mut self, deadline: Instant) -> Result<(), Error> {
        self.execute("cont", None, deadline).map(drop)
    }

    /// `system_reset`: a hard reboot.
    pub fn system_reset(&mut self, deadline: Instant) -> Result<(), Error> {
        self.execute("system_reset", None, deadline).map(drop)
    }

    /// `query-status`: the run state (`running`, `paused`, ...).
    pub fn status(&mut self, deadline: Instant) -> Result<String, Error> {
        let r = self.execute("query-status", None, deadline)?;
        Ok(r["status"].as_str().unwrap_or("unknown").to_owned())
    }

    /// `quit`: QEMU exits.
    pub fn quit(&mut self, deadline: Instant) -> Result<(), Error> {
        match self.execute("quit", None, deadline) {
            Ok(_) => Ok(()),
            // QEMU may close the socket before answering.
            Err(Error::QmpClosed) => Ok(()),
            Err(Error::QmpIo(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A scripted QMP server on a socket pair: answers each command line in turn.
    fn fake(script: Vec<&'static str>) -> (UnixStream, std::thread::JoinHandle<Vec<String>>) {
        let (a, b) = UnixStream::pair().unwrap();
        let h = std::thread::spawn(move || {
            let mut w = b.try_clone().unwrap();
            let mut r = BufReader::new(b);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").unwrap();
            let mut got = Vec::new();
            for answer in script {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                got.push(line.trim().to_owned());
                w.write_all(answer.as_bytes()).unwrap();
            }
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
            got
        });
        (a, h)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn negotiates_and_runs_commands_skipping_events() {
        let (s, h) = fake(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"STOP\", \"timestamp\": {}}\n{\"return\": {}}\n",
            "{\"return\": {\"status\": \"paused\", \"running\": false}}\n",
        ]);
        let mut q = Qmp::negotiate(s, soon()).unwrap();
        q.stop(soon()).unwrap();
        assert_eq!(q.status(soon()).unwrap(), "paused");
        assert_eq!(q.events.len(), 1);
        drop(q);
        let sent = h.join().unwrap();
        assert_eq!(sent[0], r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(sent[1], r#"{"execute":"stop"}"#);
        assert_eq!(sent[2], r#"{"execute":"query-status"}"#);
    }

    #[test]
    fn errors_garbage_and_silence_are_reported() {
        let (s, _h) = fake(vec![
            "{\"return\": {}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            "garbage\n",
        ]);
        let mut q = Qmp::negotiate(s, soon()).unwrap();
        let e = q.cont(soon()).unwrap_err();
        assert!(
            matches!(&e, Error::QmpCommand { command, class, desc } if command == "cont" && class == "GenericError" && desc == "nope"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "QMP cont failed: nope (GenericError)");
        let e = q.stop(soon()).unwrap_err();
        assert!(matches!(&e, Error::QmpMalformed { line, .. } if line == "garbage"), "{e:?}");
        assert_eq!(e.to_string(), "malformed QMP message \"garbage\"");
        let t0 = Instant::now();
        let e = q.status(Instant::now() + Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, Error::Timeout { what: Waited::QmpAnswer, .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "the deadline was not kept: {:?}", t0.elapsed());
    }

    #[test]
    fn a_line_split_across_read_slices_arrives_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let h = std::thread::spawn(move || {
            let mut w = b;
            w.write_all(b"{\"QMP\": {\"version\"").unwrap();
            std::thread::sleep(READ_SLICE * 2);
            w.write_all(b": {}, \"capabilities\": []}}\n").unwrap();
            let mut r = BufReader::new(w.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            w.write_all(b"{\"return\": {}}\n").unwrap();
            line
        });
        Qmp::negotiate(a, soon()).unwrap();
        assert_eq!(h.join().unwrap().trim(), r#"{"execute":"qmp_capabilities"}"#);
    }
}
