//! Reading phc2sys's output (linuxptp 3.1.1 with `-m -q`): each clock update is one line,
//! `phc2sys[12.345]: CLOCK_REALTIME phc offset -123 s2 freq +456 delay 789` (phc2sys.c:607-614,
//! state s0 unlocked, s1 jump, s2 locked: servo.h's enum servo_state). A jump steps the clock by
//! minus the offset (phc2sys.c:589); the rest is kept verbatim for the report.
#![forbid(unsafe_code)]

/// One clock update as phc2sys printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The clock's offset from the PHC, ns (clock minus PHC).
    pub offset_ns: i64,
    /// The servo state: 0 unlocked, 1 jump (the clock was stepped by -offset), 2 locked.
    pub state: u8,
    /// The frequency the servo asked for, ppb (the clock was set to minus this).
    pub freq_ppb: f64,
}

/// What one line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A clock update.
    Update(Update),
    /// Anything else.
    Other,
}

/// Strips the `phc2sys[123.456]: ` prefix `-m` puts before each message.
fn body(line: &str) -> &str {
    let t = line.trim();
    match t.split_once("]: ") {
        Some((head, rest)) if head.starts_with("phc2sys[") => rest,
        _ => t,
    }
}

/// Classifies one line.
pub fn parse(line: &str) -> Line {
    let words: Vec<&str> = body(line).split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "offset") else { return Line::Other };
    let (Some(off), Some(st), Some(f), Some(freq)) =
        (words.get(at + 1), words.get(at + 2), words.get(at + 3), words.get(at + 4))
    else {
        return Line::Other;
    };
    if *f != "freq" {
        return Line::Other;
    }
    let (Ok(offset_ns), Some(Ok(state)), Ok(freq_ppb)) =
        (off.parse::<i64>(), st.strip_prefix('s').map(str::parse::<u8>), freq.parse::<f64>())
    else {
        return Line::Other;
    };
    Line::Update(Update { offset_ns, state, freq_ppb })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_from_real_lines() {
        assert_eq!(
            parse("phc2sys[115.282]: CLOCK_REALTIME phc offset   -30000123456 s1 freq  -12345 delay    512"),
            Line::Update(Update { offset_ns: -30_000_123_456, state: 1, freq_ppb: -12345.0 })
        );
        assert_eq!(
            parse("phc2sys[116.282]: CLOCK_REALTIME phc offset        -7 s2 freq    +104 delay    498"),
            Line::Update(Update { offset_ns: -7, state: 2, freq_ppb: 104.0 })
        );
        assert_eq!(
            parse("CLOCK_REALTIME phc offset 12 s0 freq +0"),
            Line::Update(Update { offset_ns: 12, state: 0, freq_ppb: 0.0 })
        );
        assert_eq!(parse("phc2sys[1.000]: reconfiguring after port state change"), Line::Other);
        assert_eq!(parse("phc2sys[1.000]: CLOCK_REALTIME phc offset x s2 freq +1"), Line::Other);
        assert_eq!(parse(""), Line::Other);
    }
}
