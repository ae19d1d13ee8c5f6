//! The host side of the agent channel: connect to the guest's virtio-serial socket, send a request,
//! wait for the matching answer within a deadline, and time each exchange for offset estimates.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::{GuestClocks, Op, Request, Response};
use crate::qmp::{timed_out, READ_SLICE};
use crate::{signals, Error, Waited};

/// One timed exchange: host CLOCK_REALTIME before sending and after the answer arrived.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The answer.
    pub response: Response,
    /// Host realtime when the request left.
    pub host_sent_ns: i64,
    /// Host realtime when the answer arrived.
    pub host_received_ns: i64,
}

impl Exchange {
    /// Round trip.
    pub fn rtt_ns(&self) -> i64 {
        self.host_received_ns - self.host_sent_ns
    }

    /// Guest realtime minus host realtime, taking the guest's reading at the round trip's midpoint.
    pub fn offset_ns(&self) -> i64 {
        let mid = self.host_sent_ns + self.rtt_ns() / 2;
        self.response.clocks.realtime_ns - mid
    }

    /// The `ok` value as the answer type of `request` (`Op::name`): a missing or malformed field
    /// is an error naming the request, never a default.
    pub fn answer<T: serde::de::DeserializeOwned>(&self, request: &'static str) -> Result<T, Error> {
        let ok = self.response.ok.clone().unwrap_or(serde_json::Value::Null);
        T::deserialize(&ok).map_err(|source| Error::AgentAnswer {
            request,
            answer: ok.to_string(),
            source: Some(source),
        })
    }
}

/// An offset estimate from several exchanges.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OffsetEstimate {
    /// Guest minus host.
    pub offset_ns: i64,
    /// Half the best round trip: the offset is within this whatever the path asymmetry.
    pub uncertainty_ns: i64,
    /// The guest clocks in the best exchange.
    pub clocks: GuestClocks,
}

/// A connection to the guest agent.
pub struct AgentClient {
    /// The connection; none yet for a client made by `unconnected` that has sent nothing.
    io: Option<(BufReader<UnixStream>, UnixStream)>,
    path: std::path::PathBuf,
    next_id: u64,
}

/// Host CLOCK_REALTIME in ns.
pub fn host_realtime_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_nanos() as i64
}

impl AgentClient {
    /// Connects to the agent socket, retrying until `deadline` while QEMU creates it.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, Error> {
        loop {
            match UnixStream::connect(path) {
                Ok(s) => {
                    let writer = s.try_clone().map_err(Error::AgentIo)?;
                    return Ok(Self {
                        io: Some((BufReader::new(s), writer)),
                        path: path.to_owned(),
                        next_id: 1,
                    });
                }
                Err(_) if Instant::now() < deadline => {
                    signals::check()?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(Error::AgentConnect { path: path.to_owned(), source }),
            }
        }
    }

    /// A client that connects to `path` only when it first sends: a guest that holds
    /// (`agent::held`) takes its requests another way, and a connection would reach it as an
    /// interrupt at a moment the host's timing decides.
    pub fn unconnected(path: &Path) -> Self {
        Self { io: None, path: path.to_owned(), next_id: 1 }
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, op: Op, deadline: Instant) -> Result<Exchange, Error> {
        let (id, host_sent_ns) = self.send(op)?;
        self.wait(id, host_sent_ns, deadline)
    }

    /// Sends one request without waiting: what a stopped guest finds first when it runs again.
    /// Returns its id and the host time it was sent at, for `wait`.
    pub fn send(&mut self, op: Op) -> Result<(u64, i64), Error> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_string(&Request { id, op }).expect("requests serialize");
        line.push('\n');
        let host_sent_ns = host_realtime_ns();
        if self.io.is_none() {
            *self = Self {
                next_id: self.next_id,
                ..Self::connect(&self.path, Instant::now() + Duration::from_secs(5))?
            };
        }
        let (_, writer) = self.io.as_mut().expect("connected above");
        writer.write_all(line.as_bytes()).map_err(Error::AgentIo)?;
        Ok((id, host_sent_ns))
    }

    /// Waits for the answer to request `id` (sent at `host_sent_ns`).
    pub fn wait(&mut self, id: u64, host_sent_ns: i64, deadline: Instant) -> Result<Exchange, Error> {
        // Bytes of a line survive a timed-out read (read_until keeps them), so reading in slices,
        // to notice SIGINT/SIGTERM between them, loses nothing.
        let mut buf = Vec::new();
        loop {
            signals::check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { what: Waited::AgentAnswer, console_tail: String::new() });
            }
            let (reader, _) = self.io.as_mut().ok_or(Error::AgentClosed)?;
            reader.get_ref().set_read_timeout(Some(left.min(READ_SLICE))).map_err(Error::AgentIo)?;
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => return Err(Error::AgentClosed),
                Ok(_) if buf.ends_with(b"\n") => {}
                Ok(_) => return Err(Error::AgentClosed),
                Err(e) if timed_out(&e) => continue,
                Err(e) => return Err(Error::AgentIo(e)),
            }
            let host_received_ns = host_realtime_ns();
            let line = std::mem::take(&mut buf);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let response: Response = serde_json::from_str(text)
                .map_err(|source| Error::AgentGarbage { shown: text.chars().take(80).collect(), source })?;
            if response.id < id {
                continue; // a late answer to an abandoned request
            }
            if response.id != id {
                return Err(Error::AgentOutOfOrder { got: response.id, want: id });
            }
            if let Some(err) = &response.err {
                return Err(Error::Guest(err.clone()));
            }
            return Ok(Exchange { response, host_sent_ns, host_received_ns });
        }
    }

    /// Calls and deserializes the `ok` value.
    pub fn call_value<T: serde::de::DeserializeOwned>(
        &mut self,
        op: Op,
        deadline: Instant,
    ) -> Result<T, Error> {
        let request = op.name();
        self.call(op, deadline)?.answer(request)
    }

    /// Guest minus host realtime: the exchange with the shortest round trip of `n` wins.
    pub fn offset(&mut self, n: usize, deadline: Instant) -> Result<OffsetEstimate, Error> {
        self.offset_within(n, n, i64::MAX, deadline)
    }

    /// As `offset`, with at least `n` exchanges, and more (up to `max_n`) while the best round
    /// trip is still over `rtt_ns`: on a busy host one exchange in three can wait milliseconds
    /// for a CPU, and an offset known only that well is no reading of a clock within 1 ms.
    pub fn offset_within(
        &mut self,
        n: usize,
        max_n: usize,
        rtt_ns: i64,
        deadline: Instant,
    ) -> Result<OffsetEstimate, Error> {
        let mut best: Option<Exchange> = None;
        for k in 0..max_n.max(n).max(1) {
            if k >= n.max(1) && best.as_ref().is_some_and(|b| b.rtt_ns() <= rtt_ns) {
                break;
            }
            let ex = self.call(Op::Clocks, deadline)?;
            if best.as_ref().is_none_or(|b| ex.rtt_ns() < b.rtt_ns()) {
                best = Some(ex);
            }
        }
        let b = best.expect("at least one exchange");
        Ok(OffsetEstimate {
            offset_ns: b.offset_ns(),
            uncertainty_ns: b.rtt_ns() / 2,
            clocks: b.response.clocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(answers: Vec<String>) -> (std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            for a in answers {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                w.write_all(a.as_bytes()).unwrap();
            }
            std::thread::sleep(Duration::from_secs(2));
        });
        (path, dir)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn offset_uses_the_guest_reading_and_the_midpoint() {
        let now = host_realtime_ns();
        let answer = format!(
            "{{\"id\":1,\"ok\":null,\"clocks\":{{\"realtime_ns\":{},\"monotonic_raw_ns\":1}}}}\n",
            now - 30_000_000_000i64
        );
        let (p, _d) = serve(vec![answer]);
        let mut c = AgentClient::connect(&p, soon()).unwrap();
        let est = c.offset(1, soon()).unwrap();
        assert!((est.offset_ns + 30_000_000_000).abs() < 1_000_000_000, "{est:?}");
        assert!(est.uncertainty_ns >= 0);
    }

    #[test]
    fn garbage_errors_and_silence_end_with_clear_errors() {
        let (p, _d) = serve(vec!["this is not json\n".into()]);
        let mut c = AgentClient::connect(&p, soon()).unwrap();
        let e = c.call(Op::Hello, soon()).unwrap_err();
        assert!(matches!(&e, Error::AgentGarbage { shown, .. } if shown == "this is not json"), "{e:?}");
        assert_eq!(e.to_string(), "garbage from the guest agent: \"this is not json\"");

        let err =
            "{\"id\":1,\"err\":\"no such device\",\"clocks\":{\"realtime_ns\":0,\"monotonic_raw_ns\":0}}\n";
        let (p, _d2) = serve(vec![err.into()]);
        let mut c = AgentClient::connect(&p, soon()).unwrap();
        assert!(matches!(c.call(Op::Hello, soon()), Err(Error::Guest(m)) if m == "no such device"));

        let (p, _d3) = serve(vec![]);
        let mut c = AgentClient::connect(&p, soon()).unwrap();
        let e = c.call(Op::Hello, Instant::now() + Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, Error::Timeout { what: Waited::AgentAnswer, .. }), "{e:?}");
        assert_eq!(e.to_string(), "timed out waiting for an answer from the guest agent");
    }

    #[test]
    fn an_answer_of_the_wrong_shape_says_what_came() {
        let ok = "{\"id\":1,\"ok\":\"text\",\"clocks\":{\"realtime_ns\":0,\"monotonic_raw_ns\":0}}\n";
        let (p, _d) = serve(vec![ok.into()]);
        let mut c = AgentClient::connect(&p, soon()).unwrap();
        let e = c.call_value::<u64>(Op::Hello, soon()).unwrap_err();
        assert_eq!(e.to_string(), "unexpected answer from the guest agent to hello: \"text\"");
        assert!(crate::chain(&e).contains("invalid type: string"), "{}", crate::chain(&e));
    }
}
