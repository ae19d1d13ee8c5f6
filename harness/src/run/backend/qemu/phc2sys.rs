//! The real phc2sys in the guest: Debian's linuxptp 3.1.1, `phc2sys -s <igb PHC> -c
//! CLOCK_REALTIME -O 0` with the scenario's servo settings, its output read as events (a jump
//! is a step of the system clock).

use mock_phc::{Event, EventKind, Phc2sysConfig};

use crate::run::backend::phc2syslog::{self, Line};

/// Where the guest's phc2sys writes its `-m` output.
pub const PHC2SYS_LOG: &str = "/tmp/phc2sys.log";

/// The command line for `cfg` against `device`: `-R`, `-N`, `-F`, `-S`, `-P`, `-I` as the model
/// reads them (phc2sys.c:1440-1475), `-m -q` for updates on stdout and nothing in syslog.
pub fn argv(cfg: &Phc2sysConfig, device: &str) -> Vec<String> {
    [
        "phc2sys".to_owned(),
        "-s".into(),
        device.into(),
        "-c".into(),
        "CLOCK_REALTIME".into(),
        "-O".into(),
        "0".into(),
        "-R".into(),
        cfg.rate_hz.to_string(),
        "-N".into(),
        cfg.readings.to_string(),
        "-F".into(),
        cfg.first_step_threshold_s.to_string(),
        "-S".into(),
        cfg.step_threshold_s.to_string(),
        "-P".into(),
        cfg.kp.to_string(),
        "-I".into(),
        cfg.ki.to_string(),
        "-m".into(),
        "-q".into(),
    ]
    .to_vec()
}

/// phc2sys's output as events: lines are stamped with the scenario time they were first seen at.
#[derive(Debug, Default)]
pub(crate) struct Phc2sysLog {
    /// Every line seen, for the report.
    pub text: String,
    locked: bool,
}

impl Phc2sysLog {
    /// Records `lines` seen at scenario time `t_ns`; a jump (s1) is a step by minus the offset.
    pub fn take(&mut self, t_ns: i64, lines: &[&str], events: &mut Vec<Event>) {
        for l in lines {
            self.text.push_str(l);
            self.text.push('\n');
            if let Line::Update(u) = phc2syslog::parse(l) {
                if u.state == 1 {
                    let text = format!("CLOCK_REALTIME stepped by {:+} ns", -u.offset_ns);
                    events.push(Event { t_ns, source: "phc2sys", kind: EventKind::Note(text) });
                    events.push(Event {
                        t_ns,
                        source: "phc2sys",
                        kind: EventKind::Step { delta_ns: u.offset_ns.saturating_neg() },
                    });
                }
                if (u.state == 2) != self.locked {
                    self.locked = u.state == 2;
                    let text = if self.locked { "servo locked" } else { "servo unlocked" };
                    events.push(Event { t_ns, source: "phc2sys", kind: EventKind::Note(text.into()) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_carries_the_servo_settings() {
        let a = argv(&Phc2sysConfig { rate_hz: 4.0, ..Default::default() }, "/dev/ptp0");
        let s = a.join(" ");
        assert!(s.starts_with("phc2sys -s /dev/ptp0 -c CLOCK_REALTIME -O 0 -R 4 -N 5 "), "{s}");
        assert!(s.contains(" -P 0.7 -I 0.3 -m -q"), "{s}");
    }

    #[test]
    fn a_jump_is_a_step_by_minus_the_offset() {
        let mut log = Phc2sysLog::default();
        let mut ev = Vec::new();
        log.take(
            5,
            &[
                "phc2sys[1.0]: CLOCK_REALTIME phc offset -30000000000 s1 freq +0 delay 500",
                "phc2sys[2.0]: CLOCK_REALTIME phc offset 12 s2 freq +3 delay 500",
            ],
            &mut ev,
        );
        assert!(matches!(ev[1].kind, EventKind::Step { delta_ns: 30_000_000_000 }), "{ev:?}");
        assert!(matches!(&ev[2].kind, EventKind::Note(n) if n == "servo locked"), "{ev:?}");
        assert_eq!(log.text.lines().count(), 2);
    }
}
