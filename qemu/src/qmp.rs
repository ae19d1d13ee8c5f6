//! A QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst): the greeting, capability
//! negotiation, and commands with their answers, skipping asynchronous events. Every read is
//! bounded by a deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Error;

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
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Past the deadline this is a slow start, not a QMP failure: say so.
                Err(e) => return Err(Error::Timeout(format!("the QMP socket {} ({e})", path.display()))),
            }
        };
        Self::negotiate(stream, deadline)
    }

    /// Reads the greeting from a connected stream and enters command mode.
    pub fn negotiate(stream: UnixStream, deadline: Instant) -> Result<Self, Error> {
        let writer = stream.try_clone().map_err(|e| Error::Qmp(e.to_string()))?;
        let mut q = Self { reader: BufReader::new(stream), writer, events: Vec::new() };
        let greeting = q.read_message(deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", None, deadline)?;
        Ok(q)
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, Error> {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.reader.get_ref().set_read_timeout(Some(left)).map_err(|e| Error::Qmp(e.to_string()))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(Error::Qmp("QEMU closed the QMP connection".into())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| Error::Qmp(format!("malformed QMP message {:?}: {e}", line.trim()))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(Error::Timeout("QMP answer".into()))
            }
            Err(e) => Err(Error::Qmp(e.to_string())),
        }
    }

    /// Runs a command and returns its `return` value; a QMP `error` becomes `Error::Qmp`.
    pub fn execute(&mut self, cmd: &str, args: Option<Value>, deadline: Instant) -> Result<Value, Error> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(|e| Error::Qmp(format!("{cmd}: {e}")))?;
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
                return Err(Error::Qmp(format!("{cmd}: {}", e["desc"].as_str().unwrap_or("error"))));
            }
            return Err(Error::Qmp(format!("{cmd}: unexpected answer {m}")));
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
            Err(Error::Qmp(m)) if m.contains("closed") => Ok(()),
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
        let e = q.cont(soon()).unwrap_err().to_string();
        assert!(e.contains("cont: nope"), "{e}");
        let e = q.stop(soon()).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        let e = q.status(Instant::now() + Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, Error::Timeout(_) | Error::Qmp(_)), "{e}");
    }
}
