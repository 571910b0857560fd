//! Text from outside (remote names, remote stderr, local file names) made safe for
//! humans: every control character is escaped C-style (`\r`, `\n`, `\t`, `\x1b`),
//! a backslash is doubled, and bytes that are not UTF-8 are shown as `\xNN`. So a
//! name can neither move the cursor, forge a line of its own, nor recolour a
//! terminal, and every log line stays one line. `--json` does its own escaping.

/// `bytes` escaped for a terminal or a log line (see the module doc).
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let n = c as u32;
                    if n < 0x100 {
                        out.push_str(&format!("\\x{n:02x}"));
                    } else {
                        out.push_str(&format!("\\u{{{n:x}}}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `text` with its control characters escaped C-style, and nothing else changed
/// (a backslash stays one): for text that may already hold escaped parts, such as
/// a log message, so it stays one line and moves no cursor.
pub(crate) fn controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The first non-empty line of `bytes`, trimmed, escaped, and cut to `max` characters
/// (with `…` when cut): how a remote program's stderr goes onto one log line.
pub(crate) fn first_line(bytes: &[u8], max: usize) -> String {
    let line = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    cut(&escape(line), max)
}

/// Every non-empty line of `bytes`, trimmed and escaped, joined with ` | ` and cut
/// to `max` characters (with `…` when cut): how a remote program's whole stderr
/// (BusyBox find's 40-line usage text, say) goes onto one log line (issue 17).
pub(crate) fn fold(bytes: &[u8], max: usize) -> String {
    let lines: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .map(escape)
        .collect();
    cut(&lines.join(" | "), max)
}

/// `text` cut to at most `max` characters, with `…` at the end when it was longer.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BusyBox find's usage text (what it prints for `-printf`) becomes one line.
    #[test]
    fn a_multi_line_usage_text_folds_onto_one_cut_line() {
        let mut usage = String::from(
            "find: unrecognized: -printf\nBusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary.\n\nUsage: find [-HL] [PATH]... [OPTIONS] [ACTIONS]\n\nSearch for files and perform actions on them.\r\n",
        );
        for i in 0..40 {
            usage.push_str(&format!(
                "\t-name PATTERN\tMatch file name (w/o directory name) to PATTERN {i}\n"
            ));
        }
        let line = fold(usage.as_bytes(), 300);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(
            line.starts_with("find: unrecognized: -printf | BusyBox v1.35.0"),
            "{line}"
        );
        assert!(line.contains(" | Usage: find [-HL]"), "{line}");
        assert_eq!(line.chars().count(), 301, "cut, with …: {line}");
        assert!(line.ends_with('…'));
        assert_eq!(fold(b"\n  one  \n\n", 300), "one");
        assert_eq!(fold(b"", 300), "");
    }

    #[test]
    fn control_characters_and_bad_bytes_are_escaped() {
        assert_eq!(escape(b"plain name.txt"), "plain name.txt");
        assert_eq!(
            escape(b"a\rb\nc\td\x1b[31me\\f\x7f"),
            "a\\rb\\nc\\td\\x1b[31me\\\\f\\x7f"
        );
        assert_eq!(escape(b"caf\xc3\xa9 \xff"), "caf\u{e9} \\xff");
        assert_eq!(escape("\u{85}".as_bytes()), "\\x85");
        assert!(!escape(b"x\n[+] forged").contains('\n'));
    }

    #[test]
    fn controls_escapes_only_control_characters() {
        assert_eq!(controls("a\\b c"), "a\\b c");
        assert_eq!(
            controls("x\n[+] forged\r\x1b[2J"),
            "x\\n[+] forged\\r\\x1b[2J"
        );
        assert!(matches!(controls("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn first_line_skips_blank_lines_and_cuts() {
        assert_eq!(
            first_line(b"\n  \ntar: x: Cannot open\nmore\n", 80),
            "tar: x: Cannot open"
        );
        assert_eq!(first_line(b"", 80), "");
        assert_eq!(first_line(b"abcdef", 3), "abc…");
        assert_eq!(first_line(b"\x1b[2Jclear", 80), "\\x1b[2Jclear");
    }
}
