//! The guest's other NTP clients, real, against the scenario's NTP server: Debian's ntpd (NTPsec
//! 1.2.2) and systemd-timesyncd (252), unpacked from their packages by ci/setup-vm.sh into the
//! image (`phc_qemu::image::ImageSpec::ntp_daemons`). Each gets the configuration Debian ships,
//! pointed at the server, plus the scenario's settings; its log is read as events (a step it
//! logs is a step of the clock).

use mock_phc::{Event, EventKind, NtpdConfig, TimesyncdConfig};

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ntpd (NTPsec).
    Ntpd,
    /// systemd-timesyncd.
    Timesyncd,
}

/// One client: how it is started and what its log said.
#[derive(Debug, Clone)]
pub struct ClientRun {
    /// Which.
    pub kind: Kind,
    /// Its configuration file in the guest, and its text.
    pub conf_path: &'static str,
    /// The configuration.
    pub conf: String,
    /// Its command line (through `sh -c` for timesyncd's environment).
    pub argv: Vec<String>,
    /// Where its output goes in the guest.
    pub log: &'static str,
    /// Every line seen, for the report.
    pub text: String,
}

/// ntpd's minpoll/maxpoll exponent for a poll of `s` seconds (ntpd's range 0..=17).
fn log2_poll(s: f64) -> i32 {
    (s.max(1.0).log2().floor() as i32).clamp(0, 17)
}

/// ntpd with Debian's /etc/ntpsec/ntp.conf, but one `server` for its four `pool`s, and
/// without `tos minclock 4 minsane 3` (it would never trust one server) and the leap file (the
/// guest has no tzdata); `logconfig =allall` so that its clock events reach the log. Started as
/// Debian's unit starts it (`-g -N`), in the foreground (`-n`), logging to stderr.
pub fn ntpd(cfg: &NtpdConfig, server: &str) -> ClientRun {
    let d = NtpdConfig::default();
    let mut conf = format!(
        "driftfile /var/lib/ntpsec/ntp.drift\ntos maxclock 11\n\
         server {server} iburst minpoll {} maxpoll {}\n\
         restrict default kod nomodify nopeer noquery limited\nrestrict 127.0.0.1\nrestrict ::1\n\
         logconfig =allall\n",
        log2_poll(cfg.poll_s),
        log2_poll(cfg.maxpoll_s)
    );
    for (name, v, default) in [
        ("step", cfg.step_threshold_s, d.step_threshold_s),
        ("stepout", cfg.stepout_s, d.stepout_s),
        ("panic", cfg.panic_threshold_s, d.panic_threshold_s),
    ] {
        if v != default {
            conf.push_str(&format!("tinker {name} {v}\n"));
        }
    }
    let argv =
        ["sh", "-c", "mkdir -p /var/lib/ntpsec && exec ntpd -n -g -N -l stderr -c /etc/ntpsec/ntp.conf"];
    ClientRun {
        kind: Kind::Ntpd,
        conf_path: "/etc/ntpsec/ntp.conf",
        conf,
        argv: argv.map(String::from).to_vec(),
        log: "/tmp/ntpd.log",
        text: String::new(),
    }
}

/// systemd-timesyncd with Debian's timesyncd.conf (every line commented out) and the
/// scenario's: `NTP=` the server, no fallback (no pool lookups), the poll bounds. It runs as its
/// own user (timesyncd drops to systemd-timesync), logging at debug level to stderr, without
/// systemd as PID 1 or D-Bus (it waits for the bus and goes on without it).
pub fn timesyncd(cfg: &TimesyncdConfig, server: &str) -> ClientRun {
    let conf = format!(
        "[Time]\nNTP={server}\nFallbackNTP=\nPollIntervalMinSec={}\nPollIntervalMaxSec={}\n",
        cfg.poll_min_s, cfg.poll_max_s
    );
    let script = "mkdir -p /var/lib/systemd /run/systemd/timesync && \
                  busybox chown 998:998 /run/systemd/timesync && \
                  export SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=debug SYSTEMD_COLORS=0 && \
                  exec /lib/systemd/systemd-timesyncd";
    ClientRun {
        kind: Kind::Timesyncd,
        conf_path: "/etc/systemd/timesyncd.conf",
        conf,
        argv: ["sh", "-c", script].map(String::from).to_vec(),
        log: "/tmp/timesyncd.log",
        text: String::new(),
    }
}

impl Kind {
    /// The events' source.
    pub fn source(self) -> &'static str {
        match self {
            Self::Ntpd => "ntpd",
            Self::Timesyncd => "timesyncd",
        }
    }

    /// What one line of its log says: a step (seconds added to the clock), a note, or nothing.
    pub fn parse(self, line: &str) -> Option<Result<i64, String>> {
        match self {
            Self::Ntpd => parse_ntpd(line),
            Self::Timesyncd => parse_timesyncd(line),
        }
    }
}

fn step_ns(s: &str) -> Option<i64> {
    s.trim().trim_start_matches('+').parse::<f64>().ok().and_then(|v| mock_phc::time::secs_to_ns(v).ok())
}

/// ntpd's lines are `DATE ntpd[PID]: TEXT`.
fn parse_ntpd(line: &str) -> Option<Result<i64, String>> {
    let text = line.split_once("]: ").map_or(line, |(_, t)| t).trim();
    if let Some(v) = text.strip_prefix("CLOCK: time stepped by ") {
        return step_ns(v).map(Ok);
    }
    // System and peer events (`PROTO: ADDR STATUS CODE NAME [TEXT]`) worth showing.
    const EVENTS: [&str; 8] = [
        "clock_step",
        "spike_detect",
        "clock_sync",
        "freq_mode",
        "panic_stop",
        "sys_peer",
        "reachable",
        "unreachable",
    ];
    let event = text.strip_prefix("PROTO: ").and_then(|r| r.split_whitespace().nth(3));
    if text.starts_with("CLOCK: ") || event.is_some_and(|e| EVENTS.contains(&e)) {
        return Some(Err(text.to_owned()));
    }
    None
}

fn parse_timesyncd(line: &str) -> Option<Result<i64, String>> {
    let text = line.trim();
    if let Some(v) = text.strip_prefix("adjust (jump): ") {
        return step_ns(v.trim_end_matches("sec")).map(Ok);
    }
    const NOTES: [&str; 8] = [
        "Contacted time server",
        "Initial clock synchronization",
        "Timed out waiting",
        "System time changed",
        "System clock time unset or jumped backwards",
        "interval/delta/delay/jitter/drift",
        "Waiting after exhausting servers",
        "Server has too large root distance",
    ];
    NOTES.iter().any(|p| text.starts_with(p)).then(|| Err(text.to_owned()))
}

impl ClientRun {
    /// Records `lines` seen at scenario time `t_ns` as events.
    pub fn take(&mut self, t_ns: i64, lines: &[&str], events: &mut Vec<Event>) {
        let source = self.kind.source();
        for l in lines {
            self.text.push_str(l);
            self.text.push('\n');
            match self.kind.parse(l) {
                Some(Ok(delta_ns)) => {
                    events.push(Event { t_ns, source, kind: EventKind::Step { delta_ns } });
                }
                Some(Err(note)) => events.push(Event { t_ns, source, kind: EventKind::Note(note) }),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntpd_steps_and_events_from_its_log_lines() {
        let k = Kind::Ntpd;
        assert_eq!(
            k.parse("2026-01-01T00:10:00 ntpd[51]: CLOCK: time stepped by 30.000123"),
            Some(Ok(30_000_123_000))
        );
        assert_eq!(
            k.parse("2026-01-01T00:10:00 ntpd[51]: CLOCK: time stepped by -0.500000"),
            Some(Ok(-500_000_000))
        );
        assert_eq!(
            k.parse("2026-01-01T00:10:00 ntpd[51]: PROTO: 0.0.0.0 c61c 0d clock_step +30.000123 s"),
            Some(Err("PROTO: 0.0.0.0 c61c 0d clock_step +30.000123 s".into()))
        );
        assert_eq!(k.parse("2026-01-01T00:10:00 ntpd[51]: PROTO: 10.200.0.1 8011 81 mobilize assoc 1"), None);
        assert_eq!(k.parse("2026-01-01T00:10:00 ntpd[51]: INIT: Using SO_TIMESTAMPNS"), None);
    }

    #[test]
    fn timesyncd_jumps_and_notes_from_its_log_lines() {
        let k = Kind::Timesyncd;
        assert_eq!(k.parse("  adjust (jump): +30.000 sec"), Some(Ok(30_000_000_000)));
        assert_eq!(k.parse("  adjust (jump): -0.512 sec"), Some(Ok(-512_000_000)));
        assert_eq!(k.parse("  adjust (slew): +0.012 sec"), None);
        assert!(matches!(k.parse("Contacted time server 10.200.0.1:123 (10.200.0.1)."), Some(Err(_))));
        assert_eq!(k.parse("  status       : 2000 sync"), None);
    }

    #[test]
    fn configurations_name_the_server_and_the_scenario_settings() {
        let n = ntpd(&NtpdConfig { stepout_s: 600.0, ..Default::default() }, "10.200.0.1");
        assert!(n.conf.contains("server 10.200.0.1 iburst minpoll 6 maxpoll 10\n"), "{}", n.conf);
        assert!(n.conf.contains("tinker stepout 600\n") && !n.conf.contains("tinker step "), "{}", n.conf);
        assert!(!n.conf.contains("minsane"), "{}", n.conf);
        let t = timesyncd(&TimesyncdConfig::default(), "10.200.0.1");
        assert!(t
            .conf
            .contains("NTP=10.200.0.1\nFallbackNTP=\nPollIntervalMinSec=32\nPollIntervalMaxSec=2048\n"));
    }
}
