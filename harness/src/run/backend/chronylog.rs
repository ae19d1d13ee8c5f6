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

/// The fields of the dated lines of a chronyd log with at least `min_fields` fields, in order;
/// headers and rule lines are skipped.
fn dated_lines(log: &str, min_fields: usize) -> impl Iterator<Item = Vec<&str>> {
    log.lines().filter_map(move |l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let dated = f.first().is_some_and(|d| d.len() == 10 && d.as_bytes().get(4) == Some(&b'-'));
        (dated && f.len() >= min_fields).then_some(f)
    })
}

/// Column `col` of the dated lines of a chronyd log with at least `min_fields` fields, where it
/// is a number, in order; headers, rule lines and `-` fields are skipped.
fn log_column(log: &str, col: usize, min_fields: usize) -> Vec<f64> {
    dated_lines(log, min_fields)
        .filter_map(|f| f[col].parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect()
}

/// The raw offsets (reference minus sample time, seconds) of the PHC readings in chronyd's
/// `refclocks` log, in order: the column after the DP, L and P fields (refclock.c `log_sample`).
/// Filtered samples (raw offset `-`) are skipped.
pub fn refclock_raw_offsets(log: &str) -> Vec<f64> {
    log_column(log, 6, 9)
}

/// The share of the refclock's PHC polls that gave chronyd no sample, from its `refclocks` log.
/// refclock.c logs every sample kept with the poll's number within its filter cycle (`DP`,
/// `driver_polled`: 0 to 2^(poll-dpoll) - 1, counted for every poll, refclock.c:773), so a number
/// skipped is a poll dropped: its reading failed, or hwclock.c HCL_ProcessReadings found none
/// of its readings' delays inside its window and kept none (hwclock.c:228-236). The cycle's
/// length is taken as the largest number seen plus one; a cycle dropped whole is not seen.
/// None with fewer than two samples.
pub fn refclock_dropped_share(log: &str) -> Option<f64> {
    let dps: Vec<u32> = dated_lines(log, 9).filter_map(|f| f[3].parse::<u32>().ok()).collect();
    let cycle = dps.iter().max()? + 1;
    if dps.len() < 2 {
        return None;
    }
    let skipped: u64 = dps.windows(2).map(|w| u64::from((w[1] + cycle - w[0] - 1) % cycle)).sum();
    Some(skipped as f64 / (skipped + dps.len() as u64) as f64)
}

/// The regressions' standard deviations (`Std dev'n`, seconds) in chronyd's `statistics` log, in
/// order (sourcestats.c `SST_DoNewRegression`).
pub fn statistics_std_devs(log: &str) -> Vec<f64> {
    log_column(log, 3, 13)
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

    #[test]
    fn refclock_raw_offsets_skip_headers_and_filtered_samples() {
        let log =
            "====\n   Date (UTC) Time         Refid  DP L P  Raw offset   Cooked offset      Disp.\n====\n\
                   2026-01-01 00:05:26.497034 PHC0   12 N 0 -1.900000e-08 -5.778987e-10  8.100e-08\n\
                   2026-01-01 00:05:27.248136 PHC0   15 N 0  3.000000e+01  3.000000e+01  8.100e-08\n\
                   2026-01-01 00:05:31.000000 PHC0    - N -       -       3.000000e+01  2.000e-07\n";
        assert_eq!(refclock_raw_offsets(log), vec![-1.9e-8, 30.0]);
    }

    #[test]
    fn dropped_polls_are_the_poll_numbers_skipped() {
        // chronyd 4.3 in real time under TCG (snapshot-restore, 2026-12-08): polls 3 and 1 of
        // their cycles dropped, two of nine.
        let log = "\
===============================================================================
   Date (UTC) Time         Refid  DP L P  Raw offset   Cooked offset      Disp.
===============================================================================
2026-12-08 00:29:27.682860 PHC0    0 N 0  2.400000e-08  1.317080e-08  1.000e-07
2026-12-08 00:29:27.934620 PHC0    1 N 0  2.500000e-08  1.513265e-08  1.000e-07
2026-12-08 00:29:28.186159 PHC0    2 N 0  2.700000e-08  1.809365e-08  1.000e-07
2026-12-08 00:29:28.060389 PHC0    - N -       -        1.661315e-08  1.000e-07
2026-12-08 00:29:28.942167 PHC0    0 N 0  2.300000e-08  1.248173e-08  1.000e-07
2026-12-08 00:29:29.193977 PHC0    2 N 0  3.600000e-08  2.609562e-08  1.000e-07
2026-12-08 00:29:29.445977 PHC0    3 N 0  3.600000e-08  2.609562e-08  1.000e-07
2026-12-08 00:29:29.709282 PHC0    0 N 0  1.056176e+01  1.056176e+01  1.000e-07
";
        let share = refclock_dropped_share(log).unwrap();
        assert!((share - 2.0 / 9.0).abs() < 1e-12, "{share}");
        let none = "2026-12-08 00:29:27.682860 PHC0    0 N 0  2.4e-08  1.3e-08  1.0e-07\n\
                    2026-12-08 00:29:27.934620 PHC0    1 N 0  2.5e-08  1.5e-08  1.0e-07\n";
        assert_eq!(refclock_dropped_share(none), Some(0.0));
        assert_eq!(refclock_dropped_share(""), None);
    }

    #[test]
    fn statistics_std_devs_from_real_lines() {
        let log = "   Date (UTC) Time     IP Address    Std dev'n Est offset  Offset sd  Diff freq   Est skew  Stress  Ns  Bs  Nr  Asym\n\
                   2026-01-01 00:04:23 PHC0             5.357e-08 -5.656e-08  3.866e-08 -4.155e-09  1.369e-08 1.4e-01   7   1   3  0.00\n\
                   2026-01-01 00:06:07 PHC0             2.111e+00 -3.040e+01  1.242e+00 -5.522e-02  6.511e-01 7.6e-01   7   1   3  0.00\n";
        assert_eq!(statistics_std_devs(log), vec![5.357e-8, 2.111]);
    }
}
