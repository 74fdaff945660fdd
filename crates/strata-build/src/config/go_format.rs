//! Values printed as Go's `fmt` prints them, for history entries: BuildKit
//! writes `created_by` with `fmt.Sprintf` (`CMD %q`, `SHELL %v`,
//! `HEALTHCHECK %q`; moby/buildkit `frontend/dockerfile/dockerfile2llb/
//! convert.go`), and an image's history must read the same to be the same.

use std::fmt::Write as _;

/// A string as Go's `strconv.Quote` writes it (what `%q` does to a string).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// A number as Go's `%q` writes an integer: the rune with that code point,
/// quoted (`'\x00'` for 0, `'A'` for 65), `'�'` when it is none.
pub(crate) fn quote_rune(n: i64) -> String {
    let c = u32::try_from(n)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}');
    let mut out = String::from("'");
    match c {
        '\'' => out.push_str("\\'"),
        '\\' => out.push_str("\\\\"),
        _ => push_escaped(&mut out, c),
    }
    out.push('\'');
    out
}

/// One character of a quoted string or rune, escaped as `strconv` does:
/// the C escapes, `\xNN` for other ASCII controls, `\uNNNN`/`\UNNNNNNNN`
/// for characters Go does not count as printable (`strconv.IsPrint`: other
/// controls and spaces other than U+0020).
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        ' ' => out.push(' '),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() || c.is_whitespace() || is_format(c) => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
}

/// The invisible formatting characters Go does not print as they are
/// (soft hyphen, zero-width and direction marks, the BOM).
fn is_format(c: char) -> bool {
    matches!(c as u32, 0xad | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0xfeff)
}

/// `[a b c]`: a string slice as Go's `%v` writes it.
pub(crate) fn plain_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// `["a" "b"]`: a string slice as Go's `%q` writes it.
pub(crate) fn quoted_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// A duration in nanoseconds as Go's `time.Duration.String` writes it
/// (`0s`, `1.5s`, `1m30s`, `1h0m0s`, `500ms`).
pub(crate) fn duration(ns: i64) -> String {
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0 => return "0s".into(),
            1..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (frac, int) = fraction(u, prec);
        let _ = write!(out, "{int}{frac}{unit}");
    } else {
        let (frac, secs) = fraction(u, 9);
        u = secs;
        let mut text = format!("{}{frac}s", u % 60);
        u /= 60;
        if u > 0 {
            text = format!("{}m{text}", u % 60);
            u /= 60;
            if u > 0 {
                text = format!("{u}h{text}");
            }
        }
        out = text;
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// Splits `v` into its integer part and the `prec` decimal digits below
/// it, written `.ddd` without trailing zeros (empty when all are zero), as
/// Go's `fmtFrac`.
fn fraction(v: u64, prec: u32) -> (String, u64) {
    let scale = 10u64.pow(prec);
    let (int, frac) = (v / scale, v % scale);
    if frac == 0 {
        return (String::new(), int);
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_as_strconv_quote() {
        assert_eq!(quote("a \"b\" \\c"), r#""a \"b\" \\c""#);
        assert_eq!(quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(quote("\u{1}é\u{a0}"), r#""\x01é\u00a0""#);
        assert_eq!(
            quoted_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\""]"#
        );
        assert_eq!(plain_list(&["/bin/sh".into(), "-e".into()]), "[/bin/sh -e]");
    }

    #[test]
    fn integers_quote_as_runes() {
        assert_eq!(quote_rune(0), r"'\x00'");
        assert_eq!(quote_rune(3), r"'\x03'");
        assert_eq!(quote_rune(65), "'A'");
        assert_eq!(quote_rune(39), r"'\''");
        assert_eq!(quote_rune(-1), "'\u{fffd}'");
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(30_000_000_000), "30s");
        assert_eq!(duration(90_000_000_000), "1m30s");
        assert_eq!(duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration(1_500_000_000), "1.5s");
        assert_eq!(duration(500_000_000), "500ms");
        assert_eq!(duration(1_500), "1.5µs");
        assert_eq!(duration(12), "12ns");
        assert_eq!(duration(-2_000_000_000), "-2s");
    }
}
