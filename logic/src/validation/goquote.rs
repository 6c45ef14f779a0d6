//! How messages show client strings: Go's `strconv.Quote` (the `%q` verb the reference's
//! messages use) and the cut that keeps a quoted input short.
//!
//! Every module that names client input in an error (validation, pagination, the asset
//! modules, `call.rs`, `error.rs`) uses these, not only the field rules.

use std::fmt::Write as _;

/// Go's `strconv.Quote` (the `%q` verb), used by the reference's metadata messages.
pub fn go_quote(s: &str) -> String {
    let quoted = cut_at_char(s, QUOTED_INPUT_BYTES);
    let mut out = String::with_capacity(quoted.len() + 2);
    out.push('"');
    for c in quoted.chars() {
        let _ = match c {
            '"' | '\\' => write!(out, "\\{c}"),
            _ if go_is_print(c) => write!(out, "{c}"),
            '\u{7}' => write!(out, "\\a"),
            '\u{8}' => write!(out, "\\b"),
            '\u{c}' => write!(out, "\\f"),
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\t' => write!(out, "\\t"),
            '\u{b}' => write!(out, "\\v"),
            _ if c < ' ' || c == '\u{7f}' => write!(out, "\\x{:02x}", u32::from(c)),
            _ if u32::from(c) < 0x10000 => write!(out, "\\u{:04x}", u32::from(c)),
            _ => write!(out, "\\U{:08x}", u32::from(c)),
        };
    }
    out.push('"');
    if quoted.len() < s.len() {
        let _ = write!(out, "... ({} bytes)", s.len());
    }
    out
}

pub use orchestrator_contract::{QUOTED_INPUT_BYTES, cut_at_char, shown};

/// Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols, ASCII space), without
/// Unicode tables: controls, separators, format and private-use characters and noncharacters are
/// not printable; other unassigned code points (also escaped by Go) are not recognised.
fn go_is_print(c: char) -> bool {
    const NOT_PRINT: &[(u32, u32)] = &[
        (0xAD, 0xAD),
        (0x600, 0x605),
        (0x61C, 0x61C),
        (0x6DD, 0x6DD),
        (0x70F, 0x70F),
        (0x890, 0x891),
        (0x8E2, 0x8E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0xE000, 0xF8FF),
        (0xFDD0, 0xFDEF),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0x323B0, 0xE00FF),  // unassigned planes 4-13, then tags (E0001, E0020-E007F)
        (0xE01F0, 0x10FFFF), // unassigned, then private use (planes 15-16)
    ];
    let u = u32::from(c);
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || u & 0xFFFE == 0xFFFE
            || NOT_PRINT.iter().any(|&(lo, hi)| (lo..=hi).contains(&u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain é 例"), "\"plain é 例\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("\u{7}\u{8}\u{c}\n\r\t\u{b}"), "\"\\a\\b\\f\\n\\r\\t\\v\"");
        assert_eq!(go_quote("\u{0}\u{1f}\u{7f}"), "\"\\x00\\x1f\\x7f\"");
        assert_eq!(go_quote("\u{85}\u{a0}\u{200b}\u{feff}"), "\"\\u0085\\u00a0\\u200b\\ufeff\"");
        assert_eq!(go_quote("😀\u{e0001}"), "\"😀\\U000e0001\"");
    }
}
