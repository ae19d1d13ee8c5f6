//! Escaping, one function per output format, for every piece of text that comes from data
//! (scenario names and descriptions, reasons, check names, daemon log lines, device names, the
//! contents of a suite folder) and lands in a file or on a terminal. Every writer of JUnit, SVG,
//! the XHTML index, KTAP, Markdown and terminal text goes through here; nothing else escapes.
//!
//! One rule throughout: text is never dropped. A character a format cannot carry is shown as
//! `\u{1b}`-style text, so a reader sees that something odd was there and what it was.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

/// Appends `c` as `\u{1b}`-style text.
fn visible(out: &mut String, c: char) {
    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
}

/// Characters some reader takes as the end of a line: LF, VT, FF, CR, NEL (U+0085), and the
/// Unicode line and paragraph separators. (The C0 ones are also [`char::is_control`].)
fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Bidirectional formatting characters: they reorder what a terminal shows without showing
/// themselves.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters XML 1.0 does not allow at all, even as a character reference: C0 controls other
/// than tab, LF and CR, and U+FFFE and U+FFFF. (Lone surrogates cannot occur in a `str`.)
pub fn xml_forbidden(c: char) -> bool {
    matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

fn xml(s: &str, attr: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' if attr => o.push_str("&quot;"),
            '\'' if attr => o.push_str("&#39;"),
            // Attribute-value normalisation turns raw tab, LF and CR into spaces.
            '\t' | '\n' if attr => {
                let _ = write!(o, "&#{};", u32::from(c));
            }
            // A parser turns a raw CR (and CR LF) into LF.
            '\r' => o.push_str("&#13;"),
            c if xml_forbidden(c) => visible(&mut o, c),
            // Allowed but discouraged (DEL, C1) or a line end to XML 1.1 (NEL, U+2028): as
            // references, which every parser gives back as they are.
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(o, "&#x{:x};", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o
}

/// Text for XML (and XHTML) element content: `& < >` as entities, CR, DEL, C1 controls and the
/// Unicode line separators as character references, and the characters XML 1.0 forbids
/// ([`xml_forbidden`]) as visible `\u{..}` text.
pub fn xml_text(s: &str) -> String {
    xml(s, false)
}

/// Text for an XML (and XHTML) attribute value in either kind of quotes: as [`xml_text`], and
/// `"`, `'`, tab and LF as references too, so that the value reads back as it was.
pub fn xml_attr(s: &str) -> String {
    xml(s, true)
}

/// One KTAP test name, diagnostic or `# SKIP` reason: one line in every reader's sense (every
/// control character and line separator as visible `\u{..}` text) and no `#`, which would start
/// a directive (`ok 1 name # SKIP`): it becomes `_`.
pub fn ktap(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '#' => o.push('_'),
            c if c.is_control() || is_line_break(c) || is_bidi(c) => visible(&mut o, c),
            c => o.push(c),
        }
    }
    o
}

/// Inline Markdown with nothing that Markdown or HTML would act on: backslash, `|`, backtick,
/// `*`, `[` and `]` backslash-escaped, `& < >` as entities, and control characters and line
/// breaks as visible `\u{..}` text. Safe in a table cell: it never adds a column or ends the row.
pub fn markdown_cell(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '`' | '*' | '[' | ']' => {
                o.push('\\');
                o.push(c);
            }
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            c if c.is_control() || is_line_break(c) || is_bidi(c) => visible(&mut o, c),
            c => o.push(c),
        }
    }
    o
}

/// [`markdown_cell`] for the start of a line (a heading's or a list item's text, a line of a
/// paragraph): also what would make the line a heading (`#`), a list item (`-`, `+` or `1.`
/// before a space), a thematic break or setext underline (a line of `-`, `=` or `_`) or a code
/// fence (`~~~`) is escaped. (`>`, `*`, backtick and `|` are escaped everywhere.)
pub fn markdown_line(s: &str) -> String {
    let t = s.trim_start_matches([' ', '\t']);
    let mut o = markdown_cell(t);
    let spaced = |rest: &str| rest.is_empty() || rest.starts_with([' ', '\t']);
    let only = |c: char| o.chars().all(|x| x == c || x == ' ');
    let digits = o.bytes().take_while(u8::is_ascii_digit).count();
    if o.starts_with('#')
        || o.starts_with("~~~")
        || (o.starts_with(['-', '+']) && spaced(&o[1..]))
        || (o.starts_with('-') && only('-'))
        || (o.starts_with('=') && only('='))
        || (o.starts_with('_') && only('_'))
    {
        o.insert(0, '\\');
    } else if digits > 0 && o[digits..].starts_with(['.', ')']) && spaced(&o[digits + 1..]) {
        o.insert(digits, '\\');
    }
    o
}

/// An inline code span holding `s` as it reads (HTML and Markdown inside a code span are not
/// acted on), with control characters and line breaks as visible `\u{..}` text and delimiters
/// longer than any run of backticks in it. Not for a table cell (a `|` there still splits it).
pub fn markdown_code(s: &str) -> String {
    let body = terminal_line(s);
    if body.is_empty() {
        return "` `".to_owned();
    }
    let fence = "`".repeat(longest_backtick_run(&body) + 1);
    let all_spaces = body.chars().all(|c| c == ' ');
    let pad = body.starts_with('`')
        || body.ends_with('`')
        || (body.starts_with(' ') && body.ends_with(' ') && !all_spaces);
    let sp = if pad { " " } else { "" };
    format!("{fence}{sp}{body}{sp}{fence}")
}

fn longest_backtick_run(s: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// A relative link target for Markdown or HTML: every byte but ASCII letters, digits and
/// `-._~/` percent-encoded, and a leading `/` too, so the target stays a path below the page
/// (never `javascript:`, never `//host`) and nothing in it ends the link.
pub fn url_path(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (b == b'/' && i > 0) {
            o.push(char::from(b));
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// A paragraph of text: each line as [`markdown_line`], line ends kept (LF, CR LF) so that the
/// text wraps as its author wrote it; a blank line still separates paragraphs.
pub fn markdown_paragraph(s: &str) -> String {
    s.split('\n').map(|l| markdown_line(l.strip_suffix('\r').unwrap_or(l))).collect::<Vec<_>>().join("\n")
}

/// A fenced code block holding `s` as it is (control characters aside, shown as with
/// [`terminal`]): the fence is longer than any run of backticks in `s`, so nothing in it ends
/// the block.
pub fn markdown_code_block(s: &str) -> String {
    let body = terminal(s);
    let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
    format!("{fence}\n{}\n{fence}", body.trim_end_matches('\n'))
}

/// Text for a terminal: every control character but LF and tab (C0, DEL, C1, so ESC and every
/// escape sequence) and the bidirectional formatting characters as visible `\u{..}` text.
pub fn terminal(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => o.push(c),
            c if c.is_control() || is_bidi(c) => visible(&mut o, c),
            c => o.push(c),
        }
    }
    o
}

/// [`terminal`] for a value shown within one line: LF, tab and the Unicode line separators
/// visible too.
pub fn terminal_line(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() || is_line_break(c) || is_bidi(c) => visible(&mut o, c),
            c => o.push(c),
        }
    }
    o
}

/// Reading back what the XML writers produce, for the tests here and in the writers' modules.
#[cfg(test)]
pub(crate) mod read {
    use quick_xml::events::{BytesStart, Event};
    use quick_xml::Reader;

    /// One element: its name, attributes (unescaped) and direct text (unescaped).
    #[derive(Debug, Default, Clone)]
    pub struct El {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub text: String,
    }

    impl El {
        /// The value of attribute `k`.
        pub fn attr(&self, k: &str) -> Option<&str> {
            self.attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
        }
    }

    /// Every element of a whole document in document order, or why it is not well-formed XML
    /// (quick-xml's check, plus the characters XML 1.0 forbids, raw or as references, which
    /// quick-xml lets through).
    pub fn elements(doc: &str) -> Result<Vec<El>, String> {
        if let Some(c) = doc.chars().find(|&c| super::xml_forbidden(c)) {
            return Err(format!("forbidden character {c:?}"));
        }
        let mut r = Reader::from_str(doc);
        r.config_mut().check_end_names = true;
        let mut all: Vec<El> = Vec::new();
        // Indices into `all` of the open elements.
        let mut open: Vec<usize> = Vec::new();
        let mut roots = 0;
        let el = |e: &BytesStart| -> Result<El, String> {
            let mut attrs = Vec::new();
            for a in e.attributes() {
                let a = a.map_err(|e| e.to_string())?;
                let v = a.unescape_value().map_err(|e| e.to_string())?;
                if let Some(c) = v.chars().find(|&c| super::xml_forbidden(c)) {
                    return Err(format!("forbidden character reference {c:?}"));
                }
                attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), v.into_owned()));
            }
            Ok(El {
                name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                attrs,
                text: String::new(),
            })
        };
        loop {
            let ev = r.read_event().map_err(|e| format!("at {}: {e}", r.buffer_position()))?;
            match ev {
                Event::Start(e) => {
                    roots += usize::from(open.is_empty());
                    all.push(el(&e)?);
                    open.push(all.len() - 1);
                }
                Event::Empty(e) => {
                    roots += usize::from(open.is_empty());
                    all.push(el(&e)?);
                }
                Event::End(_) => {
                    open.pop();
                }
                Event::Text(t) => {
                    let t = t.xml_content().map_err(|e| e.to_string())?;
                    match open.last() {
                        Some(&i) => all[i].text.push_str(&t),
                        None if t.trim().is_empty() => {}
                        None => return Err(format!("text outside the root: {t:?}")),
                    }
                }
                Event::GeneralRef(g) => {
                    let c = match g.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) if super::xml_forbidden(c) => {
                            return Err(format!("forbidden character reference {c:?}"))
                        }
                        Some(c) => c,
                        None => match &*g.decode().map_err(|e| e.to_string())? {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => return Err(format!("unknown entity &{other};")),
                        },
                    };
                    let &i = open.last().ok_or("a reference outside the root")?;
                    all[i].text.push(c);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !open.is_empty() {
            return Err("unclosed elements".into());
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(all)
    }
}

/// Hostile text for the writers' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use proptest::prelude::*;

    use crate::judge::analysis::{Check, Recovery, Step};
    use crate::regress::summary::{Entry, FidelityEntry, Outcome, Summary};

    /// Strings that favour the characters that have broken formats before.
    pub(crate) fn nasty() -> impl Strategy<Value = String> {
        let pick = prop_oneof![
            any::<char>(),
            prop::sample::select(vec![
                '\0', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}',
                '\u{2029}', '\u{202e}', '\u{fffe}', '\u{ffff}', '&', '<', '>', '"', '\'', '#', '|', '\\',
                '`', '*', '[', ']', '-', '=', ' ', '1', '.'
            ]),
        ];
        prop::collection::vec(pick, 0..40).prop_map(|v| v.into_iter().collect())
    }

    /// What a reader gets back from escaped XML: the text, with what XML forbids shown.
    pub(crate) fn xml_expected(s: &str) -> String {
        s.chars()
            .map(
                |c| {
                    if super::xml_forbidden(c) {
                        format!("\\u{{{:x}}}", u32::from(c))
                    } else {
                        c.to_string()
                    }
                },
            )
            .collect()
    }

    /// Whether `t` is fit for a terminal: no control byte but LF and tab, no C1 control, no
    /// bidirectional formatting.
    pub(crate) fn terminal_safe(t: &str) -> Result<(), String> {
        if let Some(b) = t.bytes().find(|&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f) {
            return Err(format!("byte {b:#x} in {t:?}"));
        }
        if let Some(c) = t.chars().find(|&c| ('\u{80}'..='\u{9f}').contains(&c) || super::is_bidi(c)) {
            return Err(format!("{c:?} in {t:?}"));
        }
        Ok(())
    }

    /// The characters of a Markdown line that are not backslash-escaped (GFM's rule for a pipe
    /// in a table row, CommonMark's for the rest).
    pub(crate) fn unescaped(row: &str) -> String {
        let mut o = String::new();
        let mut chars = row.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                chars.next();
            } else {
                o.push(c);
            }
        }
        o
    }

    /// A suite whose every piece of text is one of `w` (cycled): one entry per outcome, each with
    /// a passing and a failing check, recovery metrics, an environment and a fidelity entry.
    pub(crate) fn summary(w: &[String]) -> Summary {
        let mut k = 0;
        let mut next = || {
            k += 1;
            w.get(k % w.len().max(1)).cloned().unwrap_or_default()
        };
        let outcomes = [Outcome::Pass, Outcome::Fail, Outcome::NoChecks, Outcome::Aborted, Outcome::Skipped];
        let entries = outcomes
            .iter()
            .map(|&outcome| Entry {
                scenario: next(),
                backend: next(),
                seed: 1,
                outcome,
                reason: Some(next()),
                dir: None,
                checks: vec![
                    Check { name: next(), expected: next(), actual: next(), pass: true },
                    Check { name: next(), expected: next(), actual: next(), pass: false },
                ],
                recovery: Some(Recovery {
                    disturbance_end_s: Some(1.0),
                    offset_after_disturbance_ns: Some(-5),
                    time_to_first_correction_s: None,
                    time_to_within_s: [(next(), Some(2.0))].into_iter().collect(),
                    steps: vec![Step { t_s: 1.0, delta_ns: 7, source: next() }],
                    correction: crate::model::scenario::Correction::Slew,
                    slew_duration_s: None,
                    max_abs_offset_ns: 9,
                    rms_after_recovery_ns: None,
                    read_errors: [(next(), 3)].into_iter().collect(),
                }),
                environment: [(next(), serde_json::Value::String(next()))].into_iter().collect(),
                tolerance: Vec::new(),
                interval_s: None,
            })
            .collect::<Vec<Entry>>();
        let fid = vec![
            FidelityEntry { scenario: next(), agrees: false, dir: next(), seed: None },
            FidelityEntry { scenario: next(), agrees: true, dir: next(), seed: None },
        ];
        let mut backends: Vec<String> = Vec::new();
        for e in &entries {
            if !backends.contains(&e.backend) {
                backends.push(e.backend.clone());
            }
        }
        Summary::new(backends, Some(next()), None, 5, entries, fid)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{nasty, terminal_safe, unescaped, xml_expected};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_format_escapes_what_it_must() {
        assert_eq!(xml_text("a<b>&\"'"), "a&lt;b&gt;&amp;\"'");
        assert_eq!(xml_attr("a\"'\t\n\r"), "a&quot;&#39;&#9;&#10;&#13;");
        assert_eq!(xml_text("\u{1b}[31m\0\u{85}\u{fffe}"), "\\u{1b}[31m\\u{0}&#x85;\\u{fffe}");
        assert_eq!(ktap("a # SKIP\u{b}ok 2 b\u{2028}"), "a _ SKIP\\u{b}ok 2 b\\u{2028}");
        assert_eq!(markdown_cell("max |offset|"), "max \\|offset\\|");
        assert_eq!(markdown_cell("<script>a\\|`*[x](y)"), "&lt;script&gt;a\\\\\\|\\`\\*\\[x\\](y)");
        assert_eq!(markdown_line("# h"), "\\# h");
        assert_eq!(markdown_line("12. x"), "12\\. x");
        assert_eq!(markdown_line("-30.000 s"), "-30.000 s");
        assert_eq!(markdown_line("- x"), "\\- x");
        assert_eq!(markdown_line("+10 s"), "+10 s");
        assert_eq!(markdown_line("= ="), "\\= =");
        assert_eq!(markdown_line("1.5 s"), "1.5 s");
        assert_eq!(markdown_paragraph("one\n---\r\ntwo"), "one\n\\---\ntwo");
        assert_eq!(markdown_code_block("a\n```\nb\n"), "````\na\n```\nb\n````");
        assert_eq!(markdown_code("a`b"), "``a`b``");
        assert_eq!(markdown_code("`a"), "`` `a ``");
        assert_eq!(markdown_code("<b>\n"), "`<b>\\u{a}`");
        assert_eq!(url_path("a-b/report.md"), "a-b/report.md");
        assert_eq!(url_path("//evil.example/x y)"), "%2F/evil.example/x%20y%29");
        assert_eq!(url_path("javascript:alert(1)"), "javascript%3Aalert%281%29");
        assert_eq!(terminal("\u{1b}]0;title\u{7}x\n\ty\u{9b}"), "\\u{1b}]0;title\\u{7}x\n\ty\\u{9b}");
        assert_eq!(terminal_line("a\nb\u{202e}"), "a\\u{a}b\\u{202e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn xml_reads_back_as_the_text_with_forbidden_characters_shown(s in nasty(), t in any::<String>()) {
            for s in [&s, &t] {
                let doc = format!("<r a=\"{}\" b='{}'>{}</r>", xml_attr(s), xml_attr(s), xml_text(s));
                let els = read::elements(&doc).map_err(|e| TestCaseError::fail(format!("{e}: {doc:?}")))?;
                prop_assert_eq!(els.len(), 1);
                let want = xml_expected(s);
                prop_assert_eq!(&els[0].text, &want);
                prop_assert_eq!(&els[0].attrs[0].1, &want);
                prop_assert_eq!(&els[0].attrs[1].1, &want);
                // Nothing a parser would normalise is left raw in an attribute value.
                prop_assert!(!xml_attr(s).contains(['\t', '\n', '\r', '"', '\'', '<']));
            }
        }

        #[test]
        fn ktap_text_is_one_line_without_a_directive(s in nasty(), t in any::<String>()) {
            for s in [&s, &t] {
                let k = ktap(s);
                prop_assert!(!k.contains('#'));
                prop_assert!(!k.chars().any(|c| c.is_control() || is_line_break(c)), "{:?}", k);
                // Every line splitter agrees it is one line.
                prop_assert_eq!(k.lines().count(), usize::from(!k.is_empty()));
            }
        }

        #[test]
        fn a_markdown_cell_keeps_the_row_s_columns(s in nasty(), t in any::<String>()) {
            for s in [&s, &t] {
                let row = format!("| a | {} | {} |", markdown_cell(s), markdown_line(s));
                let bare = unescaped(&row);
                prop_assert_eq!(bare.matches('|').count(), 4, "{}", row);
                prop_assert!(!bare.contains(['<', '>', '`', '*', '[']), "{}", row);
                prop_assert!(!row.chars().any(|c| c.is_control() || is_line_break(c)), "{:?}", row);
                let p = markdown_paragraph(s);
                prop_assert!(!p.contains(['<', '>', '\r']), "{}", p);
                prop_assert_eq!(p.split('\n').count(), s.split('\n').count());
                for l in p.split('\n') {
                    let digits = l.bytes().take_while(u8::is_ascii_digit).count();
                    let block = l.starts_with(['#', '>', '<', ' ', '\t'])
                        || ["- ", "+ ", "* ", "~~~", "```"].iter().any(|m| l.starts_with(m))
                        || ["-", "+", "*"].contains(&l)
                        || (!l.is_empty() && ['-', '=', '_', '*'].iter().any(|&c| l.chars().all(|x| x == c || x == ' ')))
                        || (digits > 0 && [". ", ") "].iter().any(|m| l[digits..].starts_with(m)));
                    prop_assert!(!block, "{:?} starts a block", l);
                }
                // Only the two fences are lines of backticks as long as the fence.
                let b = markdown_code_block(s);
                let fence = b.lines().next().unwrap_or_default();
                prop_assert_eq!(b.lines().filter(|l| l.trim_start().starts_with(fence)).count(), 2, "{}", b);
            }
        }

        #[test]
        fn terminal_text_holds_no_control_but_newline_and_tab(s in nasty(), t in any::<String>()) {
            for s in [&s, &t] {
                terminal_safe(&terminal(s)).map_err(TestCaseError::fail)?;
                let l = terminal_line(s);
                terminal_safe(&l).map_err(TestCaseError::fail)?;
                prop_assert!(!l.contains(['\n', '\t']));
                terminal_safe(&markdown_code_block(s)).map_err(TestCaseError::fail)?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// `compare`'s tables, either kind, keep their columns whatever the runs are called,
        /// and carry no HTML from them.
        #[test]
        fn compare_tables_keep_their_columns(w in prop::collection::vec(nasty(), 1..5)) {
            use crate::regress::compare::{Comparison, Row, Status};
            use crate::regress::compare_pair::{Pair, Row as PairRow, Side};
            let t = |i: usize| w[i % w.len()].clone();
            let v = |i: usize| serde_json::Value::String(t(i));
            let c = Comparison {
                rows: vec![Row { name: t(0), backend: t(1), metric: t(2), baseline: v(3), current: v(4), tolerance: t(5), slack: t(8), status: Status::Regressed }],
                errors: vec![t(6)],
                notes: vec![t(7)],
                runs: 1,
                skipped: 0,
            };
            let side = |i: usize| Side { dir: t(i), kernels: vec![t(i + 1)] };
            let p = Pair {
                sides: vec![side(0), side(2)],
                rows: vec![PairRow { name: t(0), backend: t(1), metric: t(2), values: vec![v(3), v(4)], tolerance: t(5), status: vec![Status::Improved, Status::Same] }],
                notes: vec![t(6)],
            };
            for (md, pipes) in [(c.to_markdown(), 9), (p.to_markdown(), 8)] {
                terminal_safe(&md).map_err(TestCaseError::fail)?;
                let widths: Vec<usize> =
                    md.lines().filter(|l| l.starts_with('|')).map(|l| unescaped(l).matches('|').count()).collect();
                prop_assert_eq!(&widths, &[pipes, pipes, pipes], "{}", md);
                prop_assert!(!unescaped(&md).contains(['<', '>', '`']), "{}", md);
                // One line per row, note and error: nothing from the data starts a line.
                prop_assert!(md.lines().all(|l| l.is_empty() || l.starts_with(['|', '-', 'A']) || l.chars().next().is_some_and(|c| c.is_ascii_digit())), "{}", md);
            }
        }
    }
}
