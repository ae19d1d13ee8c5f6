//! The guest agent (`phc-harness agent --port /dev/vportNpM`): runs inside the QEMU guest as a
//! child of init and answers the host's requests (phc_qemu::agent) one line at a time. It keeps
//! the port open for its whole life: virtio-serial drops what the host sends while it is closed.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use phc::device::{clock_now_ns, clock_step_ns};
use phc::{Access, Phc};
use phc_qemu::agent::{ExecResult, GuestClocks, Op, Request, Response};
use serde_json::{json, Value};

/// Arguments of `agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The virtio-serial port to serve (inside the guest).
    #[arg(long)]
    pub port: PathBuf,
}

/// Most bytes of program output or file contents sent back.
const MAX_OUTPUT: usize = 256 * 1024;

fn clocks() -> GuestClocks {
    GuestClocks {
        realtime_ns: clock_now_ns(libc::CLOCK_REALTIME).unwrap_or(0),
        monotonic_raw_ns: clock_now_ns(libc::CLOCK_MONOTONIC_RAW).unwrap_or(0),
    }
}

/// Serves requests until the port closes.
pub fn run(args: AgentArgs) -> ExitCode {
    let port = match OpenOptions::new().read(true).write(true).open(&args.port) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("phc-harness: agent: {}: {e}", args.port.display());
            return ExitCode::from(2);
        }
    };
    let mut out = match port.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("phc-harness: agent: {e}");
            return ExitCode::from(2);
        }
    };
    let mut agent = Agent::default();
    let mut reader = BufReader::new(port);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                // The host is not connected: virtio-serial reads EOF. Wait and keep serving.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("phc-harness: agent: read: {e}");
                return ExitCode::from(1);
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => {
                let res = agent.handle(req.op);
                let (ok, err) = match res {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                };
                Response { id: req.id, ok, err, clocks: clocks() }
            }
            Err(e) => Response { id: 0, ok: None, err: Some(format!("bad request: {e}")), clocks: clocks() },
        };
        let mut text = serde_json::to_string(&reply).expect("responses serialize");
        text.push('\n');
        if let Err(e) = out.write_all(text.as_bytes()) {
            eprintln!("phc-harness: agent: write: {e}");
        }
    }
}

#[derive(Default)]
struct Agent {
    spawned: HashMap<String, Child>,
    phcs: HashMap<String, Phc>,
}

impl Agent {
    fn phc(&mut self, device: &str) -> Result<&Phc, String> {
        if !self.phcs.contains_key(device) {
            let p = Phc::open(device, Access::ReadWrite).map_err(|e| format!("{device}: {e}"))?;
            self.phcs.insert(device.to_owned(), p);
        }
        Ok(&self.phcs[device])
    }

    fn handle(&mut self, op: Op) -> Result<Value, String> {
        match op {
            Op::Hello => Ok(json!({ "version": env!("CARGO_PKG_VERSION") })),
            Op::Clocks => Ok(Value::Null),
            Op::PhcOffset { device } => {
                let phc = self.phc(&device)?;
                let samples = phc.sys_offset(25).map_err(|e| format!("{device}: {e}"))?;
                let est = phc::estimate::linuxptp(&samples).ok_or("no samples")?;
                // Sample offsets are system minus PHC; report PHC minus realtime.
                Ok(json!({ "phc_minus_realtime_ns": -est.offset_ns, "uncertainty_ns": est.uncertainty_ns }))
            }
            Op::SetPhc { device, host_ns } => {
                let phc = self.phc(&device)?;
                phc.settime(host_ns).map_err(|e| format!("{device}: settime: {e}"))?;
                Ok(Value::Null)
            }
            Op::StepRealtime { delta_ns } => {
                clock_step_ns(libc::CLOCK_REALTIME, delta_ns).map_err(|e| format!("step: {e}"))?;
                Ok(Value::Null)
            }
            Op::SetRealtime { host_ns } => {
                let now = clock_now_ns(libc::CLOCK_REALTIME).map_err(|e| e.to_string())?;
                clock_step_ns(libc::CLOCK_REALTIME, host_ns - now).map_err(|e| format!("step: {e}"))?;
                Ok(json!({ "stepped_ns": host_ns - now }))
            }
            Op::Exec { argv, timeout_s } => {
                exec(&argv, timeout_s).map(|r| serde_json::to_value(r).expect("plain"))
            }
            Op::Spawn { name, argv, log } => {
                let (prog, rest) = argv.split_first().ok_or("empty argv")?;
                let f = std::fs::File::create(&log).map_err(|e| format!("{log}: {e}"))?;
                let f2 = f.try_clone().map_err(|e| e.to_string())?;
                let child = Command::new(prog)
                    .args(rest)
                    .stdin(Stdio::null())
                    .stdout(f)
                    .stderr(f2)
                    .spawn()
                    .map_err(|e| format!("{prog}: {e}"))?;
                let pid = child.id();
                if let Some(mut old) = self.spawned.insert(name, child) {
                    let _ = old.kill();
                    let _ = old.wait();
                }
                Ok(json!({ "pid": pid }))
            }
            Op::Kill { name } => {
                let mut c = self.spawned.remove(&name).ok_or_else(|| format!("{name}: not running"))?;
                let _ = c.kill();
                let status = c.wait().map_err(|e| e.to_string())?;
                Ok(json!({ "status": status.to_string() }))
            }
            Op::WriteFile { path, contents } => {
                std::fs::write(&path, contents).map_err(|e| format!("{path}: {e}"))?;
                Ok(Value::Null)
            }
            Op::ReadFile { path } => {
                let mut f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                let mut buf = Vec::new();
                Read::by_ref(&mut f)
                    .take(MAX_OUTPUT as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("{path}: {e}"))?;
                Ok(Value::String(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
    }
}

fn exec(argv: &[String], timeout_s: f64) -> Result<ExecResult, String> {
    let (prog, rest) = argv.split_first().ok_or("empty argv")?;
    let dir = std::env::temp_dir();
    let (o, e) = (dir.join("phc-agent-exec.out"), dir.join("phc-agent-exec.err"));
    let so = std::fs::File::create(&o).map_err(|x| x.to_string())?;
    let se = std::fs::File::create(&e).map_err(|x| x.to_string())?;
    let mut child = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(so)
        .stderr(se)
        .spawn()
        .map_err(|x| format!("{prog}: {x}"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s.clamp(0.1, 3600.0));
    let code = loop {
        match child.try_wait().map_err(|x| x.to_string())? {
            Some(s) => break s.code().unwrap_or(-1),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let read = |p: &PathBuf| {
        let mut s = std::fs::read(p).unwrap_or_default();
        s.truncate(MAX_OUTPUT);
        String::from_utf8_lossy(&s).into_owned()
    };
    Ok(ExecResult { code, stdout: read(&o), stderr: read(&e) })
}
