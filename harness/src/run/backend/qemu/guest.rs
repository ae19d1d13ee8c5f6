//! The core every QEMU backend shares: `GuestRun` (the session, events, the daemon's config and
//! log, backend facts, observations taken on the way) with the steps that do not depend on time,
//! and `Guest`, the engine's `Backend` over a `Clock`, which owns how time passes and is measured.

use super::*;
use crate::guest::ntp;
use phc_qemu::agent;

/// How a backend's time passes and its offsets are read: what differs between virtual time, real
/// time and a nested guest.
pub trait Clock {
    /// Scenario time now.
    fn now_ns(&self) -> i64;
    /// Lets time pass to scenario time `t_ns`.
    fn advance(&mut self, g: &mut GuestRun, t_ns: i64) -> Result<(), Error>;
    /// Starts a disturbance now; `Some` is the scenario time the guest was really back at.
    fn apply(&mut self, g: &mut GuestRun, d: &Disturbance) -> Result<Option<f64>, Error>;
    /// Reads the offsets now.
    fn look(&mut self, g: &mut GuestRun) -> Result<Observation, Error>;
    /// Reads the daemon's new log lines into events, where they are not brought by `look`.
    fn poll(&mut self, _g: &mut GuestRun) -> Result<(), Error> {
        Ok(())
    }
    /// Whether the guest answers now (not paused): chronyd's views are read at the end only then.
    fn running(&self) -> bool {
        true
    }
    /// This clock's own facts for the report.
    fn info(&self, _info: &mut BTreeMap<String, Value>) {}
}

use mock_phc::ntp_server::NTP_SERVER_ADDR;
/// The server's control file (`guest::ntp::ServerState`) and its log, in the guest.
const NTP_CONTROL: &str = "/run/phc-ntp-server.json";
const NTP_SERVER_LOG: &str = "/tmp/ntp-server.log";

/// Joins the server's namespace (`$1`: the pid of the `unshare -n` it runs in) to the guest's:
/// a veth pair (busybox names the peer), one end moved into the namespace, a /30 between them.
const NETNS_SCRIPT: &str = "P=$1; ip link add ntpc type veth || exit 1; \
    pi=$(cat /sys/class/net/ntpc/iflink); peer=; \
    for d in /sys/class/net/*; do [ \"$(cat $d/ifindex)\" = \"$pi\" ] && peer=${d##*/}; done; \
    [ -n \"$peer\" ] || { echo 'no veth peer for ntpc'; exit 1; }; \
    ip link set \"$peer\" netns \"$P\" || exit 1; \
    nsenter -t \"$P\" -n sh -c \"ip link set lo up && ip addr add 10.200.0.1/30 dev $peer && ip link set $peer up\" || exit 1; \
    ip addr add 10.200.0.2/30 dev ntpc && ip link set ntpc up";

fn answer(a: mock_phc::NtpAnswer) -> ntp::Answer {
    match a {
        mock_phc::NtpAnswer::Time => ntp::Answer::Time,
        mock_phc::NtpAnswer::Silent => ntp::Answer::Silent,
        mock_phc::NtpAnswer::Garbage => ntp::Answer::Garbage,
    }
}

/// A scenario's guest: what every clock shares.
pub struct GuestRun {
    /// The guest and its agent.
    pub(crate) session: Session,
    /// Events since the engine last drained them.
    pub(crate) events: Vec<Event>,
    /// chronyd's configuration, when the scenario runs chrony.
    pub(crate) chrony_conf: Option<String>,
    chrony_lines_seen: usize,
    client_lines_seen: usize,
    /// chronyd's log as seen so far.
    pub(crate) chrony: ChronyLog,
    /// The real phc2sys's command line and output, when the scenario runs phc2sys.
    pub(crate) phc2sys_argv: Option<Vec<String>>,
    pub(crate) phc2sys: phc2sys::Phc2sysLog,
    /// Backend facts for the report.
    pub(crate) info: BTreeMap<String, Value>,
    /// The real ntpd or timesyncd, when the scenario runs one.
    pub(crate) client: Option<ntpclients::ClientRun>,
    /// The scenario's NTP server as it is now, when a daemon asks one (see `start_ntp_server`).
    pub(crate) ntp_server: Option<ntp::ServerState>,
    /// Observations made on the way (the guest's offset right before a SYNC step).
    pub(crate) taken: Vec<Observation>,
    /// The wall time a call to the agent may take.
    pub(crate) timeout: Duration,
    /// The guest's CLOCK_MONOTONIC_RAW at the agent's last answer.
    pub(crate) last_raw_ns: Option<i64>,
    /// The guest's interrupt counts when its daemons first started (see `wakeups`).
    irq_start: Option<IrqCount>,
}

/// The guest's interrupts since boot at one moment, from `/proc/interrupts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IrqCount {
    /// Local timer interrupts (`LOC`): the idle guest's wake-ups for its own timers.
    pub timer: u64,
    /// Every interrupt, the timer's and the devices' (the agent's port, the NIC) included.
    pub all: u64,
    /// CLOCK_MONOTONIC_RAW when read.
    pub raw_ns: i64,
    /// The CPU's (busy, all) ticks from `/proc/stat`, where it could be read.
    pub cpu: Option<(u64, u64)>,
}

/// The first line of `/proc/stat` (all CPUs): (busy ticks, all ticks), idle and iowait being
/// the only ticks not busy.
pub(crate) fn parse_cpu_ticks(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().map_while(|w| w.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    let all: u64 = v.iter().take(8).sum();
    Some((all - v[3] - v[4], all))
}

/// Whether `guest_wakeups` names the timers and tasks (`PHC_TRACE_WAKEUPS=1`): a diagnostic,
/// off by default, since counting the trace at the end costs seconds of guest time under TCG.
fn trace_wakeups() -> bool {
    std::env::var_os("PHC_TRACE_WAKEUPS").is_some_and(|v| v == "1")
}

/// Turns on the guest's timer and wake-up trace events (tracefs), for `guest_wakeups`.
const TRACE_ON: &str = "T=/sys/kernel/tracing; [ -e $T/trace ] || mount -t tracefs nodev $T || exit 1; \
    echo 0 > $T/tracing_on; echo > $T/trace; echo 4096 > $T/buffer_size_kb; \
    for e in timer/hrtimer_expire_entry timer/timer_expire_entry sched/sched_wakeup; do \
    echo 1 > $T/events/$e/enable; done; echo 1 > $T/tracing_on";

/// Stops the trace and counts its events: `timer FUNCTION N` and `woken COMM N` lines.
const TRACE_COUNT: &str = "T=/sys/kernel/tracing; echo 0 > $T/tracing_on || exit 1; \
    grep -o 'function=[^ ]*' $T/trace | sort | uniq -c | sort -rn | head -12 | \
    while read n f; do echo \"timer ${f#function=} $n\"; done; \
    grep -o 'sched_wakeup: comm=[^ ]*' $T/trace | sort | uniq -c | sort -rn | head -12 | \
    while read n _ c; do echo \"woken ${c#comm=} $n\"; done; \
    for p in /proc/[0-9]*; do read -r l < $p/stat && echo \"task $l\"; done";

/// CPU ticks (user + system, USER_HZ) by task name, summed, from the `task` lines of
/// `TRACE_COUNT` (a task's `/proc/PID/stat`).
pub(crate) fn parse_task_ticks(text: &str) -> BTreeMap<String, u64> {
    let mut ticks = BTreeMap::new();
    for line in text.lines() {
        let Some(stat) = line.strip_prefix("task ") else { continue };
        // The name sits in parentheses and may hold spaces; the fields after it are plain.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state (0), ..., utime (11), stime (12).
        let (Some(u), Some(k)) = (rest.get(11), rest.get(12)) else { continue };
        if let (Ok(u), Ok(k)) = (u.parse::<u64>(), k.parse::<u64>()) {
            *ticks.entry(name.to_owned()).or_insert(0) += u + k;
        }
    }
    ticks.retain(|_, n| *n > 0);
    ticks
}

/// The counts `TRACE_COUNT` prints: (timer callbacks by function, wake-ups by task name).
pub(crate) fn parse_trace_counts(text: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut timers, mut woken) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(kind), Some(name), Some(n), None) = (w.next(), w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match kind {
            "timer" => timers.insert(name.to_owned(), n),
            "woken" => woken.insert(name.to_owned(), n),
            _ => None,
        };
    }
    (timers, woken)
}

/// Sums `/proc/interrupts` over its CPU columns: (local timer interrupts, all interrupts).
/// `ERR` and `MIS` (one count, not per CPU) are errors, not wake-ups, and are left out.
pub(crate) fn parse_interrupts(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines();
    let cpus = lines.next()?.split_whitespace().filter(|w| w.starts_with("CPU")).count();
    if cpus == 0 {
        return None;
    }
    let (mut timer, mut all) = (0u64, 0u64);
    for line in lines {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name == "ERR" || name == "MIS" {
            continue;
        }
        let n: u64 = rest.split_whitespace().take(cpus).map_while(|w| w.parse::<u64>().ok()).sum();
        all += n;
        if name == "LOC" {
            timer = n;
        }
    }
    Some((timer, all))
}

impl GuestRun {
    /// The booted guest's run, with the boot facts for the report: `accel` as reported, and the
    /// kernel line where it is the one booted directly.
    pub fn new(session: Session, bi: &BootInfo, accel: &str, kernel: Option<&QemuOptions>) -> Self {
        let mut info = BTreeMap::new();
        info.insert("accel".into(), json!(accel));
        info.insert("accel_reason".into(), json!(bi.accel_reason));
        info.insert("image_build_s".into(), json!(bi.image_build_s));
        info.insert("accel_detect_s".into(), json!(bi.accel_detect_s));
        if let Some(opts) = kernel {
            info.insert("kernel_line".into(), json!(opts.kernel_line.name()));
            info.insert("kernel_release".into(), json!(bi.kernel_release));
        }
        info.insert("boot_to_ready_s".into(), json!(round3(session.boot_to_ready.as_secs_f64())));
        if let Some(snap) = &bi.snapshot {
            info.insert("boot_snapshot".into(), snap.to_json());
        }
        info.insert("guest_holds".into(), json!(session.holding()));
        Self {
            session,
            events: Vec::new(),
            chrony_conf: None,
            chrony_lines_seen: 0,
            client_lines_seen: 0,
            chrony: ChronyLog::default(),
            phc2sys_argv: None,
            phc2sys: phc2sys::Phc2sysLog::default(),
            ntp_server: None,
            client: None,
            info,
            taken: Vec::new(),
            timeout: CALL_TIMEOUT,
            last_raw_ns: None,
            irq_start: None,
        }
    }

    /// The scenario's daemons: chronyd reading `chrony_device` (its configuration into the
    /// report), the real phc2sys reading the igb PHC.
    pub fn daemons(&mut self, s: &Scenario, chrony_device: &str) {
        self.chrony_conf = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::Chrony(c) => Some(c.chrony_conf(chrony_device, NTP_SERVER_ADDR)),
            _ => None,
        });
        self.client = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::Ntpd(c) => Some(ntpclients::ntpd(c, NTP_SERVER_ADDR)),
            DisciplineConfig::Timesyncd(c) => Some(ntpclients::timesyncd(c, NTP_SERVER_ADDR)),
            _ => None,
        });
        if let Some(c) = &self.client {
            self.info.insert(format!("{}_conf", c.kind.source()), json!(c.conf));
        }
        if s.world.disciplines.iter().any(DisciplineConfig::needs_ntp_server) {
            let n = s.world.ntp_server();
            let state = ntp::ServerState {
                answer: answer(n.answer),
                offset_s: n.offset_s,
                delay_s: n.delay_s,
                jitter_s: n.jitter_s,
                stratum: n.stratum,
                seed: s.world.seed,
            };
            self.info.insert("ntp_server".into(), json!(state));
            self.ntp_server = Some(state);
        }
        if let Some(c) = &self.chrony_conf {
            self.info.insert("chrony_conf".into(), json!(c));
        }
        self.phc2sys_argv = s.world.disciplines.iter().find_map(|d| match d {
            DisciplineConfig::Phc2sys(c) => Some(phc2sys::argv(c, GUEST_PHC)),
            _ => None,
        });
        if let Some(a) = &self.phc2sys_argv {
            self.info.insert("phc2sys_argv".into(), json!(a.join(" ")));
        }
    }

    /// One agent request, allowed `timeout`.
    pub fn call<T: DeserializeOwned>(&mut self, op: Op) -> Result<T, Error> {
        let timeout = self.timeout;
        self.call_within(op, timeout)
    }

    /// One agent request, allowed `timeout`; the guest's raw clock of its answer is kept.
    pub fn call_within<T: DeserializeOwned>(&mut self, op: Op, timeout: Duration) -> Result<T, Error> {
        let request = op.name();
        let ex = self.session.call(op, Instant::now() + timeout)?;
        self.last_raw_ns = Some(ex.response.clocks.monotonic_raw_ns);
        ex.answer(request)
    }

    /// An event at `t_ns`.
    pub fn note(&mut self, t_ns: i64, source: &'static str, text: impl Into<String>) {
        self.events.push(Event { t_ns, source, kind: EventKind::Note(text.into()) });
    }

    /// The guest's interrupt counts now.
    fn interrupts(&mut self) -> Result<IrqCount, Error> {
        let text: String = self.call(Op::ReadFile { path: "/proc/interrupts".into() })?;
        let (timer, all) =
            parse_interrupts(&text).ok_or_else(|| Error::Guest("/proc/interrupts: no CPU columns".into()))?;
        let raw_ns = self.last_raw_ns.unwrap_or(0);
        let stat = self.call::<String>(Op::ReadFile { path: "/proc/stat".into() });
        let cpu = stat.ok().as_deref().and_then(parse_cpu_ticks);
        Ok(IrqCount { timer, all, raw_ns, cpu })
    }

    /// The guest's wake-ups per guest second since its daemons first started, for the report
    /// (`guest_wakeups`, see JSON.md): what each second of scenario costs in hand-offs between
    /// QEMU's threads under virtual time. Left out, with the reason, where the guest rebooted
    /// since (its counts started again).
    fn wakeups(&mut self) -> Option<Value> {
        let start = self.irq_start?;
        let end = match self.interrupts() {
            Ok(e) => e,
            Err(e) => return Some(json!({ "unavailable": e.to_string() })),
        };
        if end.raw_ns <= start.raw_ns || end.all < start.all {
            return Some(json!({ "unavailable": "the guest rebooted: its interrupt counts started again" }));
        }
        let guest_s = (end.raw_ns - start.raw_ns) as f64 / 1e9;
        let per_s = |n: u64| (n as f64 / guest_s * 100.0).round() / 100.0;
        let mut w = json!({
            "guest_s": round3(guest_s),
            "timer_per_s": per_s(end.timer - start.timer),
            "interrupts_per_s": per_s(end.all - start.all),
        });
        if let (Some((b0, a0)), Some((b1, a1))) = (start.cpu, end.cpu) {
            if a1 > a0 {
                // The share of guest time its CPU ran code: what TCG had to execute.
                w["busy_share"] = json!(((b1 - b0) as f64 / (a1 - a0) as f64 * 10_000.0).round() / 10_000.0);
            }
        }
        // Which timers fired and which tasks they woke, per guest second (tracefs, where the
        // kernel has it and it was switched on at the start).
        if !trace_wakeups() {
            return Some(w);
        }
        if let Ok(r) = self.call::<ExecResult>(Op::Exec {
            argv: ["sh", "-c", TRACE_COUNT].map(String::from).to_vec(),
            timeout_s: 30.0,
        }) {
            let (timers, woken) = parse_trace_counts(&r.stdout);
            let rate = |m: BTreeMap<String, u64>| -> BTreeMap<String, f64> {
                m.into_iter().map(|(k, n)| (k, per_s(n))).collect()
            };
            if !timers.is_empty() {
                w["timers_per_s"] = json!(rate(timers));
                w["woken_per_s"] = json!(rate(woken));
            }
            // Since boot, in USER_HZ ticks (10 ms): who ran the guest's CPU.
            let ticks = parse_task_ticks(&r.stdout);
            if !ticks.is_empty() {
                w["cpu_s_by_task_since_boot"] =
                    json!(ticks.into_iter().map(|(k, n)| (k, n as f64 / 100.0)).collect::<BTreeMap<_, _>>());
            }
        }
        Some(w)
    }

    /// Starts the scenario's NTP server in a network namespace of its own, joined to the guest's
    /// by a veth pair (`NETNS_SCRIPT`): the clients' packets cross the guest kernel's UDP/IP
    /// stack and never leave the guest.
    fn start_ntp_server(&mut self) -> Result<(), Error> {
        let Some(state) = self.ntp_server.clone() else { return Ok(()) };
        self.write_ntp_state(&state)?;
        let argv = [
            "unshare",
            "-n",
            "/bin/phc-harness",
            "ntp-serve",
            "--clock",
            GUEST_PHC,
            "--control",
            NTP_CONTROL,
        ]
        .map(String::from)
        .to_vec();
        let agent::Spawned { pid } =
            self.call(Op::Spawn { name: "ntp-server".into(), argv, log: NTP_SERVER_LOG.into() })?;
        let r: ExecResult = self.call(Op::Exec {
            argv: ["sh", "-c", NETNS_SCRIPT, "sh", &pid.to_string()].map(String::from).to_vec(),
            timeout_s: 20.0,
        })?;
        if r.code != 0 {
            return Err(Error::Guest(format!(
                "the NTP server's network (veth pair to its namespace) failed: {}{}",
                r.stdout.trim(),
                r.stderr.trim()
            )));
        }
        Ok(())
    }

    fn write_ntp_state(&mut self, state: &ntp::ServerState) -> Result<(), Error> {
        let contents = serde_json::to_string(state).map_err(|e| Error::Guest(e.to_string()))?;
        self.call::<Value>(Op::WriteFile { path: NTP_CONTROL.into(), contents })?;
        Ok(())
    }

    /// The scenario changes its NTP server (an `ntp_server` event): the next request meets it.
    pub fn change_ntp_server(&mut self, t_ns: i64, d: &Disturbance) -> Result<(), Error> {
        let Disturbance::NtpServer { answer: a, offset_s } = d else { return Ok(()) };
        let Some(mut state) = self.ntp_server.clone() else {
            return Err(Error::Unsupported {
                what: "ntp_server".into(),
                why: "no daemon of this scenario asks an NTP server".into(),
            });
        };
        if let Some(a) = a {
            state.answer = answer(*a);
        }
        if let Some(o) = offset_s {
            state.offset_s = *o;
        }
        self.write_ntp_state(&state)?;
        self.note(
            t_ns,
            "world",
            format!("NTP server: answers {:?}, off by {} s", state.answer, state.offset_s),
        );
        self.ntp_server = Some(state);
        Ok(())
    }

    /// Starts the scenario's daemons afresh (after boot or reboot); `now` stamps the notes, `site`
    /// follows "chronyd started".
    pub fn start_daemons(&mut self, now: impl Fn() -> i64, site: &str) -> Result<(), Error> {
        self.start_ntp_server()?;
        if self.irq_start.is_none() {
            // Facts for the report only: a guest whose counts cannot be read still runs.
            self.irq_start = self.interrupts().ok();
            if trace_wakeups() {
                let _ = self.call::<ExecResult>(Op::Exec {
                    argv: ["sh", "-c", TRACE_ON].map(String::from).to_vec(),
                    timeout_s: 10.0,
                });
            }
        }
        if let Some(conf) = self.chrony_conf.clone() {
            // Always with the noise logs (`calibrate`), read at the end: the fidelity ensemble is
            // calibrated by them, in virtual and real time alike.
            let conf = calibrate::chrony_conf(conf);
            self.call::<Value>(Op::WriteFile { path: "/etc/chrony.conf".into(), contents: conf })?;
            self.call::<Value>(Op::Spawn {
                name: "chronyd".into(),
                argv: ["chronyd", "-u", "root", "-d", "-f", "/etc/chrony.conf"].map(String::from).to_vec(),
                log: CHRONY_LOG.into(),
            })?;
            self.chrony_lines_seen = 0;
            self.note(now(), "world", format!("chronyd started{site}"));
        }
        if let Some(argv) = self.phc2sys_argv.clone() {
            self.call::<Value>(Op::Spawn { name: "phc2sys".into(), argv, log: phc2sys::PHC2SYS_LOG.into() })?;
            self.note(now(), "world", "phc2sys started");
        }
        if let Some(c) = self.client.clone() {
            let dir = c.conf_path.rsplit_once('/').map_or("/", |(d, _)| d);
            self.call::<ExecResult>(Op::Exec {
                argv: ["mkdir", "-p", dir].map(String::from).to_vec(),
                timeout_s: 10.0,
            })?;
            self.call::<Value>(Op::WriteFile { path: c.conf_path.into(), contents: c.conf.clone() })?;
            let name = c.kind.source();
            self.call::<Value>(Op::Spawn { name: name.into(), argv: c.argv.clone(), log: c.log.into() })?;
            if let Some(own) = &mut self.client {
                own.text.clear();
            }
            self.client_lines_seen = 0;
            self.note(now(), "world", format!("{name} started{site}"));
        }
        Ok(())
    }

    /// The daemon's log lines seen at scenario time `t_ns`, as events.
    pub fn take_lines(&mut self, t_ns: i64, lines: &[&str]) {
        if self.chrony_conf.is_some() {
            self.chrony.take(t_ns, lines, &mut self.events);
        } else if let Some(c) = &mut self.client {
            c.take(t_ns, lines, &mut self.events);
        } else if self.phc2sys_argv.is_some() {
            self.phc2sys.take(t_ns, lines, &mut self.events);
        }
    }

    /// The log whose new lines come back with each observation (virtual time): the daemon's.
    pub fn tail_log(&self) -> Option<String> {
        if self.chrony_conf.is_some() {
            Some(CHRONY_LOG.to_owned())
        } else if let Some(c) = &self.client {
            Some(c.log.to_owned())
        } else {
            self.phc2sys_argv.as_ref().map(|_| phc2sys::PHC2SYS_LOG.to_owned())
        }
    }

    /// Reads chronyd's log (or the NTP client's) and takes its new lines, stamped `now()` when
    /// read.
    pub fn poll_log(&mut self, now: impl Fn() -> i64) -> Result<(), Error> {
        let log = match (&self.chrony_conf, &self.client) {
            (Some(_), _) => CHRONY_LOG,
            (None, Some(c)) => c.log,
            (None, None) => return Ok(()),
        };
        let text: String = self.call(Op::ReadFile { path: log.into() })?;
        let t_ns = now();
        let seen = if self.chrony_conf.is_some() {
            &mut self.chrony_lines_seen
        } else {
            &mut self.client_lines_seen
        };
        let fresh: Vec<&str> = text.lines().skip(*seen).collect();
        *seen += fresh.len();
        self.take_lines(t_ns, &fresh);
        Ok(())
    }
}

/// A scenario's guest on a clock: the engine's `Backend`, every step's error explained by QEMU's
/// exit where the channel was lost.
pub struct Guest<C> {
    pub(super) run: GuestRun,
    pub(super) clock: C,
}

impl<C: Clock> Guest<C> {
    /// Facts for the report: boot, chronyd's own view and log (read while the guest runs), the
    /// clock's own.
    pub fn finish(mut self) -> BTreeMap<String, Value> {
        let g = &mut self.run;
        if g.chrony_conf.is_some() && self.clock.running() {
            let mut info = std::mem::take(&mut g.info);
            chronyc_views(|op| g.call(op), &mut info);
            calibrate::collect(|op| g.call(op), &mut info);
            g.info = info;
            let _ = self.clock.poll(g);
            g.info.insert("chronyd_log".into(), json!(g.chrony.text.clone()));
        }
        if g.phc2sys_argv.is_some() {
            g.info.insert("phc2sys_log".into(), json!(g.phc2sys.text.clone()));
        }
        if g.client.is_some() && self.clock.running() {
            let _ = self.clock.poll(g);
        }
        if let Some(c) = &g.client {
            g.info.insert(format!("{}_log", c.kind.source()), json!(c.text.clone()));
        }
        if g.ntp_server.is_some() && self.clock.running() {
            if let Ok(log) = g.call::<String>(Op::ReadFile { path: NTP_SERVER_LOG.into() }) {
                g.info.insert("ntp_server_log".into(), json!(log));
            }
        }
        if self.clock.running() {
            if let Some(w) = g.wakeups() {
                g.info.insert("guest_wakeups".into(), w);
            }
        }
        self.info()
    }

    /// Backend facts gathered so far (for an aborted run's report too).
    pub fn info(&self) -> BTreeMap<String, Value> {
        let mut info = self.run.info.clone();
        self.clock.info(&mut info);
        info
    }
}

impl<C: Clock> Backend for Guest<C> {
    type Error = Error;

    fn name(&self) -> &'static str {
        "qemu"
    }

    fn advance_to(&mut self, t_ns: i64) -> Result<(), Error> {
        let r = self.clock.advance(&mut self.run, t_ns);
        r.map_err(|e| self.run.session.explain(e))
    }

    fn disturb(&mut self, d: &Disturbance) -> Result<Option<f64>, Error> {
        if let Disturbance::NtpServer { .. } = d {
            let now = self.clock.now_ns();
            let r = self.run.change_ntp_server(now, d).map(|()| None);
            return r.map_err(|e| self.run.session.explain(e));
        }
        let r = self.clock.apply(&mut self.run, d);
        r.map_err(|e| self.run.session.explain(e))
    }

    fn observe(&mut self) -> Result<Observation, Error> {
        let r = self.clock.look(&mut self.run);
        r.map_err(|e| self.run.session.explain(e))
    }

    fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.run.taken)
    }

    fn drain_events(&mut self) -> Result<Vec<Event>, Error> {
        let r = self.clock.poll(&mut self.run);
        r.map_err(|e| self.run.session.explain(e))?;
        Ok(std::mem::take(&mut self.run.events))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_cpu_ticks, parse_interrupts, parse_task_ticks, parse_trace_counts};

    #[test]
    fn task_ticks_sum_user_and_system_by_name() {
        let text = "task 51 (chronyd) S 1 51 51 0 -1 4194560 120 0 0 0 7 5 0 0 20 0 1 0 300\n\
                    task 52 (a b) R 1 52 52 0 -1 4194560 120 0 0 0 1 1 0 0\n\
                    task 53 (idle) S 1 53 53 0 -1 4194560 120 0 0 0 0 0 0 0\nnoise\n";
        let t = parse_task_ticks(text);
        assert_eq!(t.get("chronyd"), Some(&12));
        assert_eq!(t.get("a b"), Some(&2));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn cpu_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  10 1 20 900 5 3 2 0 0 0\ncpu0 10 1 20 900 5 3 2 0 0 0\n";
        assert_eq!(parse_cpu_ticks(stat), Some((36, 941)));
        assert_eq!(parse_cpu_ticks("intr 5\n"), None);
    }

    #[test]
    fn trace_counts_are_read_by_kind() {
        let (t, w) = parse_trace_counts("timer tick_nohz_handler 595\nwoken chronyd 238\ntimer x\nnoise\n");
        assert_eq!(t.get("tick_nohz_handler"), Some(&595));
        assert_eq!(w.get("chronyd"), Some(&238));
        assert_eq!((t.len(), w.len()), (1, 1));
    }

    #[test]
    fn interrupts_sum_cpu_columns_and_pick_the_local_timer() {
        let text = "           CPU0       CPU1\n  0:         96          4   IO-APIC   2-edge      timer\n \
                    25:          7          1  PCI-MSIX-0000:00:03.0   1-edge      virtio0-virtqueues\n\
                    NMI:          0          0   Non-maskable interrupts\n\
                    LOC:        686        300   Local timer interrupts\n\
                    IWI:          4          0   IRQ work interrupts\n\
                    ERR:          9\nMIS:          3\n";
        assert_eq!(parse_interrupts(text), Some((986, 96 + 4 + 7 + 1 + 986 + 4)));
        assert_eq!(parse_interrupts("no header\n"), None);
        assert_eq!(parse_interrupts(""), None);
    }
}
