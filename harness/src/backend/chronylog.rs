//! Reading chronyd's log: the lines that matter to a recovery (steps, source selection, loss of
//! sources) become events; the rest is kept verbatim for the report.
#![forbid(unsafe_code)]

/// What one log line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// "System clock was stepped by X seconds": X was added to the clock.
    Stepped {
        /// The step, ns.
        delta_ns: i64,
    },
    /// A line worth showing as a note (selection, unsynchronised, "wrong by").
    Note(String),
    /// Anything else.
    Other,
}

/// Strips the `2026-11-27T12:00:00Z ` timestamp chronyd puts before each line in debug mode.
fn body(line: &str) -> &str {
    let t = line.trim();
    match t.split_once(' ') {
        Some((ts, rest)) if ts.len() >= 19 && ts.as_bytes().get(4) == Some(&b'-') && ts.contains('T') => rest,
        _ => t,
    }
}

fn seconds_after(text: &str, prefix: &str) -> Option<f64> {
    let rest = text.strip_prefix(prefix)?;
    rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
}

/// Classifies one line.
pub fn parse(line: &str) -> Line {
    let b = body(line);
    if let Some(s) = seconds_after(b, "System clock was stepped by ") {
        // A number chronyd could not have printed (NaN, beyond i64 ns) is not a step.
        if let Ok(delta_ns) = mock_phc::time::secs_to_ns(s) {
            return Line::Stepped { delta_ns };
        }
    }
    const NOTES: [&str; 8] = [
        "System clock wrong by",
        "Forward time jump",
        "Backward time jump",
        "Selected source",
        "Can't synchronise",
        "No suitable source",
        "Source ",
        "chronyd version",
    ];
    if NOTES.iter().any(|p| b.starts_with(p)) {
        return Line::Note(b.to_owned());
    }
    Line::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_notes_from_real_lines() {
        assert_eq!(
            parse("2026-11-27T12:00:01Z System clock was stepped by 13.480021 seconds"),
            Line::Stepped { delta_ns: 13_480_021_000 }
        );
        assert_eq!(
            parse("System clock was stepped by -3.060000 seconds"),
            Line::Stepped { delta_ns: -3_060_000_000 }
        );
        assert_eq!(
            parse("2026-11-27T12:00:01Z System clock wrong by 13.480021 seconds"),
            Line::Note("System clock wrong by 13.480021 seconds".into())
        );
        assert_eq!(
            parse("2026-11-27T12:00:00Z Selected source PHC0"),
            Line::Note("Selected source PHC0".into())
        );
        assert_eq!(parse("2026-11-27T12:00:00Z Frequency 1.234 +/- 0.1 ppm read"), Line::Other);
        assert_eq!(parse(""), Line::Other);
    }
}
