//! User-given text (experiment names, labels, paths, process names) made
//! safe for logs and terminals: control characters become visible escapes,
//! so a name cannot forge a log line or send a terminal escape sequence.
//! The agent's logs and events and `faultctl`'s tables share this one
//! function; JSON output does not use it (serde's escaping is exact).

use std::{borrow::Cow, fmt};

/// C0 controls, DEL and the C1 controls (U+0080..U+009F, which some
/// terminals take as escape sequences too).
const fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}')
}

/// `text` with every control character escaped: `\n`, `\r`, `\t`, `\x1b`
/// (C0 and DEL), `\u{9b}` (C1). Everything else, backslashes included, is
/// unchanged; borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(Escaped(text).to_string())
}

/// Displays its text with control characters escaped, like
/// [`escape_controls`], without an allocation: for log fields
/// (`name = %Escaped(&name)`).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if u32::from(c) < 0x80 => write!(f, "\\x{:02x}", u32::from(c))?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        for (raw, shown) in [
            ("checkout", "checkout"),
            ("red\x1b[31mX", "red\\x1b[31mX"),
            ("a\nb\rc\td", "a\\nb\\rc\\td"),
            ("nul\0bel\x07del\x7f", "nul\\x00bel\\x07del\\x7f"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("c1 \u{80} and \u{9f}", "c1 \\u{80} and \\u{9f}"),
            // Not controls: printable non-ASCII, NBSP (U+00A0), a backslash.
            ("zürich \u{a0}日本 a\\x1b", "zürich \u{a0}日本 a\\x1b"),
            ("", ""),
        ] {
            assert_eq!(escape_controls(raw), shown, "{raw:?}");
            assert_eq!(Escaped(raw).to_string(), shown, "{raw:?}");
        }
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_control_is_escaped() {
        for c in (0..=0x9f_u32)
            .filter_map(char::from_u32)
            .filter(|&c| is_control(c))
        {
            let shown = escape_controls(&c.to_string()).into_owned();
            assert!(
                shown.starts_with('\\') && !shown.chars().any(is_control),
                "{c:?} shown as {shown:?}"
            );
        }
    }
}
