//! Validation primitives of docs/business-rules.md §0.3, shared by every request validator.
//!
//! The reference validates requests with ozzo-validation v4.3.0, whose `is.URL` and
//! `is.RequestURL` rules come from govalidator (2020-01-08). Clients see the resulting texts inside
//! `OE0101: <kind> is not valid: <field errors>`, so both the accept/reject decisions and the
//! messages are reproduced exactly. Everything takes plain `&str`s so this module stays
//! independent of the generated protobuf types.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

// ---------------------------------------------------------------------------------------------
// Messages of the ozzo-validation rules the reference uses (v4: required.go, absent.go, length.go,
// match.go, in.go, is/rules.go).

/// `validation.Required`.
pub const MSG_REQUIRED: &str = "cannot be blank";
/// `validation.Nil` (a field that must be absent).
pub const MSG_BLANK: &str = "must be blank";
/// `is.UUID`.
pub const MSG_UUID: &str = "must be a valid UUID";
/// `is.URL`.
pub const MSG_URL: &str = "must be a valid URL";
/// `is.RequestURL`.
pub const MSG_REQUEST_URL: &str = "must be a valid request URL";
/// `is.Hexadecimal`.
pub const MSG_HEXADECIMAL: &str = "must be a valid hexadecimal number";
/// `validation.Match`.
pub const MSG_MATCH: &str = "must be in a valid format";
/// `validation.In`.
pub const MSG_IN: &str = "must be a valid value";

/// Maximum length, in bytes, of names, tags, identifiers and metadata keys and values.
pub const MAX_LEN: usize = 100;

/// Message of ozzo's `Length(min, max)` (its `buildLengthRuleError`); 0 means "no bound".
pub fn length_message(min: usize, max: usize) -> String {
    match (min, max) {
        (0, 0) => "the value must be empty".to_owned(),
        (0, max) => format!("the length must be no more than {max}"),
        (min, 0) => format!("the length must be no less than {min}"),
        (min, max) if min == max => format!("the length must be exactly {min}"),
        (min, max) => format!("the length must be between {min} and {max}"),
    }
}

/// ozzo's `Length(min, max)` on a string: Go's `len`, so **bytes**; an empty value always passes
/// (the reference pairs it with `Required`).
pub fn length_rule(value: &str, min: usize, max: usize) -> Option<String> {
    let len = value.len();
    let bad = len > 0 && ((min > 0 && len < min) || (max > 0 && len > max) || (min == 0 && max == 0));
    bad.then(|| length_message(min, max))
}

// ---------------------------------------------------------------------------------------------
// Error accumulator.

/// The failing fields of one struct, rendered like ozzo's `Errors.Error()`:
/// `a: <msg>; b: (<nested>.); c: <msg>.` — fields in byte order (Go's `sort.Strings`),
/// joined by `"; "`, closed by `"."`, a nested struct (or `Each` list, keyed `"0"`, `"1"`, …)
/// printed in parentheses with its own final dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors {
    fields: BTreeMap<String, FieldError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldError {
    Message(String),
    Nested(FieldErrors),
}

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `msg` for `field` unless the field already failed: ozzo stops at a field's first
    /// failing rule, so callers check one field's rules in the reference's order.
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.fields.entry(field.to_owned()).or_insert_with(|| FieldError::Message(msg.into()));
    }

    /// Records the errors of a nested struct or list; nothing when `inner` is empty.
    pub fn nested(&mut self, field: &str, inner: FieldErrors) {
        if !inner.is_empty() {
            self.fields.entry(field.to_owned()).or_insert(FieldError::Nested(inner));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The ozzo text, or `None` when every field passed.
    pub fn into_message(self) -> Option<String> {
        (!self.is_empty()).then(|| self.to_string())
    }
}

impl fmt::Display for FieldErrors {
    /// Empty errors render as `""`, as in ozzo.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fields.is_empty() {
            return Ok(());
        }
        for (i, (field, error)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match error {
                FieldError::Message(msg) => write!(f, "{field}: {msg}")?,
                FieldError::Nested(inner) => write!(f, "{field}: ({inner})")?,
            }
        }
        f.write_str(".")
    }
}

// ---------------------------------------------------------------------------------------------
// Field rules, as the reference combines them.

/// `Required, is.UUID` (asset keys and references).
pub fn require_uuid(errs: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() {
        errs.add(field, MSG_REQUIRED);
    } else {
        check_uuid(errs, field, value);
    }
}

/// `is.UUID` alone, as in `Each(is.UUID)`: an empty value passes (string rules skip it).
pub fn check_uuid(errs: &mut FieldErrors, field: &str, value: &str) {
    if !value.is_empty() && !is_uuid(value) {
        errs.add(field, MSG_UUID);
    }
}

/// `Required, Length(1, 100)`: names of plans, data managers, functions, profiling steps.
pub fn require_name(errs: &mut FieldErrors, field: &str, value: &str) {
    require_length(errs, field, value, 1, MAX_LEN);
}

/// `Required, Length(1, 100)`: function input/output identifiers.
pub fn require_identifier(errs: &mut FieldErrors, field: &str, value: &str) {
    require_length(errs, field, value, 1, MAX_LEN);
}

/// `Length(0, 100)`: the optional plan tag.
pub fn check_tag(errs: &mut FieldErrors, field: &str, value: &str) {
    if let Some(msg) = length_rule(value, 0, MAX_LEN) {
        errs.add(field, msg);
    }
}

fn require_length(errs: &mut FieldErrors, field: &str, value: &str, min: usize, max: usize) {
    if value.is_empty() {
        errs.add(field, MSG_REQUIRED);
    } else if let Some(msg) = length_rule(value, min, max) {
        errs.add(field, msg);
    }
}

/// `Required, Length(64, 64), is.Hexadecimal` (addressable and data-sample checksums).
pub fn require_checksum(errs: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() {
        errs.add(field, MSG_REQUIRED);
    } else if let Some(msg) = length_rule(value, 64, 64) {
        errs.add(field, msg);
    } else if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        errs.add(field, MSG_HEXADECIMAL);
    }
}

/// `Required, is.URL` (storage addresses).
pub fn require_url(errs: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() {
        errs.add(field, MSG_REQUIRED);
    } else if !is_url(value) {
        errs.add(field, MSG_URL);
    }
}

/// `is.RequestURL` alone: an empty value means "not given" and passes (organization address).
pub fn check_request_url(errs: &mut FieldErrors, field: &str, value: &str) {
    if !value.is_empty() && !is_request_url(value) {
        errs.add(field, MSG_REQUEST_URL);
    }
}

/// `Required` on a message-typed or numeric field: presence (non-zero) only.
pub fn require_present(errs: &mut FieldErrors, field: &str, present: bool) {
    if !present {
        errs.add(field, MSG_REQUIRED);
    }
}

/// `Nil`: the field must be absent (failure-report `logs_address` outside BUILD/EXECUTION).
pub fn require_absent(errs: &mut FieldErrors, field: &str, present: bool) {
    if present {
        errs.add(field, MSG_BLANK);
    }
}

/// `In(allowed…)` on an enum: the zero value always passes (ozzo skips empty values).
pub fn check_in(errs: &mut FieldErrors, field: &str, value: i32, allowed: &[i32]) {
    if value != 0 && !allowed.contains(&value) {
        errs.add(field, MSG_IN);
    }
}

/// A required `Addressable`: `cannot be blank` when absent, otherwise its own rules nested
/// under `field` (`checksum`: required 64 hex; `storage_address`: required URL).
pub fn require_addressable(errs: &mut FieldErrors, field: &str, present: bool, checksum: &str, storage_address: &str) {
    if !present {
        errs.add(field, MSG_REQUIRED);
        return;
    }
    let mut inner = FieldErrors::new();
    require_checksum(&mut inner, "checksum", checksum);
    require_url(&mut inner, "storage_address", storage_address);
    errs.nested(field, inner);
}

/// Metadata limits: every key and every value at most 100 bytes (empty key allowed, any count).
///
/// The reference's check returns its own InvalidAsset error, so the field text carries the code:
/// `OE0101: metadata key "<k>" is too long` / `OE0101: metadata value for key "<k>" is too long`
/// (`%q` quoting). It reports the first offending entry of a Go map, i.e. a random one; the
/// smallest offending key is reported here so the answer is deterministic.
pub fn check_metadata<K, V>(errs: &mut FieldErrors, field: &str, metadata: impl IntoIterator<Item = (K, V)>)
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut entries = 0_usize;
    let offence = metadata
        .into_iter()
        .inspect(|_| entries += 1)
        .filter_map(|(key, value)| {
            let (key, value) = (key.as_ref(), value.as_ref());
            let what = if key.len() > MAX_LEN {
                "metadata key"
            } else if value.len() > MAX_LEN {
                "metadata value for key"
            } else {
                return None;
            };
            Some((key.to_owned(), format!("OE0101: {what} {} is too long", go_quote(key))))
        })
        .min_by(|a, b| a.0.cmp(&b.0));
    if let Some((_, msg)) = offence {
        errs.add(field, msg);
    }
    if entries > MAX_METADATA_ENTRIES {
        errs.add(field, format!("at most {MAX_METADATA_ENTRIES} entries ({entries} given)"));
    }
}

/// Most metadata entries an asset may carry (each at most [`MAX_LEN`] bytes of key and of
/// value): an asset stays well inside a state value.
pub const MAX_METADATA_ENTRIES: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// String predicates.

/// govalidator `IsUUID`: `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
/// (lowercase only, any version).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// A checksum: exactly 64 bytes of hexadecimal digits, either case.
pub fn is_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// govalidator `IsURL` (2020-01-08): length and prefix checks, Go's `url.Parse` as a filter,
/// then the `rxURL` pattern on the original text.
pub fn is_url(s: &str) -> bool {
    if s.is_empty() || s.len() <= 3 || s.starts_with('.') || s.chars().count() >= 2083 {
        return false;
    }
    // "host:8000/x" would parse as scheme "host": govalidator parses it as "http://host:8000/x"
    // instead, but still matches the pattern against the text as given.
    let parsed =
        if s.contains(':') && !s.contains("://") { go_url::parse(&format!("http://{s}")) } else { go_url::parse(s) };
    let Some(url) = parsed else { return false };
    if url.host.first() == Some(&b'.') {
        return false;
    }
    // Without a host, the path must at least look like a domain ("example.com/x", not "abc").
    if url.host.is_empty() && !url.path.is_empty() && !url.path.contains(&b'.') {
        return false;
    }
    url_pattern::matches(s)
}

/// govalidator `IsRequestURL`: Go's `url.ParseRequestURI` succeeds and the scheme is non-empty.
/// Note that Go takes `host:8000` as scheme `host` with an opaque part, so it passes.
pub fn is_request_url(s: &str) -> bool {
    go_url::parse_request_uri(s).is_some_and(|url| !url.scheme.is_empty())
}

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

/// How much of an input string a message quotes: messages go into gRPC trailers and log lines,
/// and a client cannot read a status whose metadata is over its limit (8 KiB in grpc-go).
pub const QUOTED_INPUT_BYTES: usize = 200;

/// `s` as a message shows it unquoted: whole when short, else its first
/// [`QUOTED_INPUT_BYTES`] and its length.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= QUOTED_INPUT_BYTES {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", cut_at_char(s, QUOTED_INPUT_BYTES), s.len()))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn cut_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

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

// ---------------------------------------------------------------------------------------------

/// What Go's `net/url` (1.19–1.21) decides, reduced to what the two predicates need: whether
/// `url.Parse` / `url.ParseRequestURI` fail, and the scheme, host and path they return.
mod go_url {
    pub(super) struct Parsed {
        pub scheme: String,
        /// Unescaped; Go strings may hold any byte.
        pub host: Vec<u8>,
        pub path: Vec<u8>,
    }

    /// `url.Parse`: the fragment is cut first and only needs well-formed escapes.
    pub(super) fn parse(raw: &str) -> Option<Parsed> {
        let (before, fragment) = raw.split_once('#').unwrap_or((raw, ""));
        let url = parse_reference(before, false)?;
        unescape(fragment, Mode::Other)?;
        Some(url)
    }

    /// `url.ParseRequestURI`: no fragment handling, and a relative reference is refused.
    pub(super) fn parse_request_uri(raw: &str) -> Option<Parsed> {
        parse_reference(raw, true)
    }

    fn parse_reference(raw: &str, via_request: bool) -> Option<Parsed> {
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) || (raw.is_empty() && via_request) {
            return None;
        }
        let mut url = Parsed { scheme: String::new(), host: Vec::new(), path: Vec::new() };
        if raw == "*" {
            url.path = b"*".to_vec();
            return Some(url);
        }
        let (scheme, rest) = split_scheme(raw)?;
        url.scheme = scheme.to_ascii_lowercase();
        // The query is split off and never checked.
        let mut rest = rest.split_once('?').map_or(rest, |(before, _)| before);
        if !rest.starts_with('/') {
            if !url.scheme.is_empty() {
                return Some(url); // opaque ("mailto:x", "host:8000"): nothing more is checked
            }
            let first_segment = rest.split_once('/').map_or(rest, |(segment, _)| segment);
            if via_request || first_segment.contains(':') {
                return None;
            }
        }
        if (!url.scheme.is_empty() || (!via_request && !rest.starts_with("///"))) && rest.starts_with("//") {
            let authority = &rest[2..];
            let (authority, path) = authority.find('/').map_or((authority, ""), |i| authority.split_at(i));
            url.host = parse_authority(authority)?;
            rest = path;
        }
        url.path = unescape(rest, Mode::Other)?;
        Some(url)
    }

    /// Go's `getScheme`: `[A-Za-z][A-Za-z0-9+.-]*:`; `None` for a leading ':'.
    fn split_scheme(raw: &str) -> Option<(&str, &str)> {
        for (i, b) in raw.bytes().enumerate() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' => {}
                b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
                b':' if i == 0 => return None,
                b':' => return Some((&raw[..i], &raw[i + 1..])),
                _ => return Some(("", raw)),
            }
        }
        Some(("", raw))
    }

    fn parse_authority(authority: &str) -> Option<Vec<u8>> {
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let host = parse_host(host)?;
        if let Some(userinfo) = userinfo {
            let valid = userinfo.chars().all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c));
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !valid || unescape(user, Mode::Other).is_none() || unescape(password, Mode::Other).is_none() {
                return None;
            }
        }
        Some(host)
    }

    /// Go's `parseHost`: `[ipv6][:port]` (with an RFC 6874 zone after `%25`) or `host[:port]`;
    /// the port may be empty but only digits.
    fn parse_host(host: &str) -> Option<Vec<u8>> {
        let valid_port = |port: &str| {
            port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        };
        if host.starts_with('[') {
            let close = host.rfind(']')?;
            if !valid_port(&host[close + 1..]) {
                return None;
            }
            if let Some(zone) = host[..close].find("%25") {
                let mut out = unescape(&host[..zone], Mode::Host)?;
                out.extend(unescape(&host[zone..close], Mode::Zone)?);
                out.extend(unescape(&host[close..], Mode::Host)?);
                return Some(out);
            }
        } else if let Some(colon) = host.rfind(':')
            && !valid_port(&host[colon..])
        {
            return None;
        }
        unescape(host, Mode::Host)
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Host,
        Zone,
        /// Path, fragment, user and password: only the escapes themselves are checked.
        Other,
    }

    /// ASCII bytes a host may hold unescaped (Go's `shouldEscape` in host mode).
    fn host_byte_ok(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&b)
    }

    /// Go's `unescape`: `%XX` must be well formed; a host may escape only non-ASCII bytes (and
    /// `%25`) and holds no other ASCII byte than `host_byte_ok`.
    fn unescape(s: &str, mode: Mode) -> Option<Vec<u8>> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                let value = hi << 4 | lo;
                let is_percent = value == b'%';
                let refused = match mode {
                    Mode::Host => hi < 8 && !is_percent,
                    Mode::Zone => !is_percent && value != b' ' && !(value < 0x80 && host_byte_ok(value)),
                    Mode::Other => false,
                };
                if refused {
                    return None;
                }
                out.push(value);
                i += 3;
            } else {
                if mode != Mode::Other && b < 0x80 && !host_byte_ok(b) {
                    return None;
                }
                out.push(b);
                i += 1;
            }
        }
        Some(out)
    }

    fn hex_value(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
}

// ---------------------------------------------------------------------------------------------

/// govalidator's `rxURL` (2020-01-08) without a regex engine. Each helper maps the set of rune
/// positions a partial match may have reached to the set reachable after one more piece of the
/// pattern (a Thompson-style simulation), so alternation and backtracking are exact and the cost
/// stays polynomial. The pattern, piece by piece:
///
/// ```text
/// ^((ftp|tcp|udp|wss?|https?)://)?      scheme
///  (\S+(:\S*)?@)?                        user info
///  ( IPv4 | \[IPv6\] | hostname )        host (see the functions below)
///  \.?(:\d{1,5})?((/|\?|#)[^\s]*)?$      trailing dot, port, path/query/fragment
/// ```
/// `\s` is RE2's ASCII class `[\t\n\f\r ]`; `\d` is `[0-9]`.
mod url_pattern {
    pub(super) fn matches(s: &str) -> bool {
        let t = Text(s.chars().collect());
        let start = t.at_start();
        let mut p = start.clone();
        for scheme in ["ftp://", "tcp://", "udp://", "ws://", "wss://", "http://", "https://"] {
            or(&mut p, &t.lit(&start, scheme));
        }
        let p = t.opt(&p, |p| {
            let user = t.run(p, not_space, 1, None);
            let user = t.opt(&user, |q| t.run(&t.lit(q, ":"), not_space, 0, None));
            t.lit(&user, "@")
        });
        let mut host = ipv4(&t, &p);
        or(&mut host, &t.lit(&ipv6(&t, &t.lit(&p, "[")), "]"));
        or(&mut host, &hostname(&t, &p));
        let p = t.opt(&host, |p| t.lit(p, "."));
        let p = t.opt(&p, |p| t.run(&t.lit(p, ":"), |c| c.is_ascii_digit(), 1, Some(5)));
        let p = t.opt(&p, |p| t.run(&t.one(p, |c| matches!(c, '/' | '?' | '#')), not_space, 0, None));
        t.at_end(&p)
    }

    /// `([1-9]\d?|1\d\d|2[01]\d|22[0-3]|24\d|25[0-5])(\.(\d{1,2}|1\d\d|2[0-4]\d|25[0-5])){2}`
    /// `(?:\.([0-9]\d?|1\d\d|2[0-4]\d|25[0-5]))` — 224-239 refused as first octet.
    fn ipv4(t: &Text, from: &Pos) -> Pos {
        const FIRST: &[&[Range]] = &[
            &[('1', '9')],
            &[('1', '9'), D],
            &[one('1'), D, D],
            &[one('2'), ('0', '1'), D],
            &[one('2'), one('2'), ('0', '3')],
            &[one('2'), one('4'), D],
            &[one('2'), one('5'), ('0', '5')],
        ];
        // The last octet's `[0-9]\d?` is the same set as the middle ones' `\d{1,2}`.
        const OTHER: &[&[Range]] =
            &[&[D], &[D, D], &[one('1'), D, D], &[one('2'), ('0', '4'), D], &[one('2'), one('5'), ('0', '5')]];
        let p = t.alternatives(from, FIRST);
        t.repeat(&p, |p| t.alternatives(&t.lit(p, "."), OTHER), 3, 3)
    }

    /// govalidator's `IP` pattern, between the brackets (H = `[0-9a-fA-F]{1,4}`, V4 = dotted
    /// quad of `25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}[0-9]`).
    fn ipv6(t: &Text, from: &Pos) -> Pos {
        let h16 = |p: &Pos| t.run(p, |c| c.is_ascii_hexdigit(), 1, Some(4));
        let h16_colon = |p: &Pos| t.lit(&h16(p), ":");
        let colon_h16 = |p: &Pos| h16(&t.lit(p, ":"));
        let v4_octet = |p: &Pos| {
            t.alternatives(
                p,
                &[&[one('2'), one('5'), ('0', '5')], &[D], &[one('2'), ('0', '4'), D], &[D, D], &[one('1'), D, D]],
            )
        };
        let v4 = |p: &Pos| v4_octet(&t.repeat(p, |q| t.lit(&v4_octet(q), "."), 3, 3));
        let mut out = t.none();
        // (H:){7}H | (H:){1,7}: | (H:){1,6}:H
        or(&mut out, &h16(&t.repeat(from, h16_colon, 7, 7)));
        or(&mut out, &t.lit(&t.repeat(from, h16_colon, 1, 7), ":"));
        or(&mut out, &colon_h16(&t.repeat(from, h16_colon, 1, 6)));
        // (H:){1,5}(:H){1,2} | (H:){1,4}(:H){1,3} | (H:){1,3}(:H){1,4} | (H:){1,2}(:H){1,5}
        for k in 2..=5 {
            or(&mut out, &t.repeat(&t.repeat(from, h16_colon, 1, k), colon_h16, 1, 7 - k));
        }
        // H:((:H){1,6})
        or(&mut out, &t.repeat(&h16_colon(from), colon_h16, 1, 6));
        // :((:H){1,7}|:)
        let colon = t.lit(from, ":");
        or(&mut out, &t.repeat(&colon, colon_h16, 1, 7));
        or(&mut out, &t.lit(&colon, ":"));
        // fe80:(:[0-9a-fA-F]{0,4}){0,4}%[0-9a-zA-Z]{1,}
        let link =
            t.repeat(&t.lit(from, "fe80:"), |p| t.run(&t.lit(p, ":"), |c| c.is_ascii_hexdigit(), 0, Some(4)), 0, 4);
        or(&mut out, &t.run(&t.lit(&link, "%"), |c| c.is_ascii_alphanumeric(), 1, None));
        // ::(ffff(:0{1,4}){0,1}:){0,1}V4
        let mapped = t.opt(&t.lit(from, "::"), |p| {
            let q = t.opt(&t.lit(p, "ffff"), |q| t.run(&t.lit(q, ":"), |c| c == '0', 1, Some(4)));
            t.lit(&q, ":")
        });
        or(&mut out, &v4(&mapped));
        // (H:){1,4}:V4
        or(&mut out, &v4(&t.lit(&t.repeat(from, h16_colon, 1, 4), ":")));
        out
    }

    /// `(A|B)?NAME(?:\.([a-zA-Z\x{00a1}-\x{ffff}]{1,}))?` where
    /// A = `[a-zA-Z0-9]([a-zA-Z0-9-_]+)?[a-zA-Z0-9]([-\.][a-zA-Z0-9]+)*`,
    /// B = `(www\.)|([a-zA-Z0-9]+([-_\.]?[a-zA-Z0-9])*[a-zA-Z0-9]\.[a-zA-Z0-9]+)` (optional),
    /// NAME = `([a-zA-Z\x{00a1}-\x{ffff}0-9]+-?-?)*[a-zA-Z\x{00a1}-\x{ffff}0-9]+`.
    fn hostname(t: &Text, from: &Pos) -> Pos {
        let alnum = |c: char| c.is_ascii_alphanumeric();
        let mut prefix = from.clone();
        let a = t.one(from, alnum);
        let a = t.opt(&a, |p| t.run(p, |c| alnum(c) || c == '-' || c == '_', 1, None));
        let a = t.one(&a, alnum);
        or(&mut prefix, &t.star(&a, |p| t.run(&t.one(p, |c| c == '-' || c == '.'), alnum, 1, None)));
        or(&mut prefix, &t.lit(from, "www."));
        let b = t.run(from, alnum, 1, None);
        let b = t.star(&b, |p| t.one(&t.opt(p, |q| t.one(q, |c| matches!(c, '-' | '_' | '.'))), alnum));
        let b = t.one(&b, alnum);
        or(&mut prefix, &t.run(&t.lit(&b, "."), alnum, 1, None));
        let name = t.star(&prefix, |p| t.run(&t.run(p, name_char, 1, None), |c| c == '-', 0, Some(2)));
        let name = t.run(&name, name_char, 1, None);
        t.opt(&name, |p| t.run(&t.lit(p, "."), |c| c.is_ascii_alphabetic() || wide(c), 1, None))
    }

    type Range = (char, char);
    const D: Range = ('0', '9');
    const fn one(c: char) -> Range {
        (c, c)
    }

    fn not_space(c: char) -> bool {
        !matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
    }

    /// `\x{00a1}-\x{ffff}`: most of the BMP, not the astral planes.
    fn wide(c: char) -> bool {
        ('\u{a1}'..='\u{ffff}').contains(&c)
    }

    fn name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || wide(c)
    }

    /// A set of positions `0..=len` (bit `i`: a partial match may stand before rune `i`).
    #[derive(Clone)]
    struct Pos(Vec<u64>);

    impl Pos {
        fn set(&mut self, i: usize) {
            if let Some(word) = self.0.get_mut(i / 64) {
                *word |= 1 << (i % 64);
            }
        }

        fn has(&self, i: usize) -> bool {
            self.0.get(i / 64).is_some_and(|word| word >> (i % 64) & 1 == 1)
        }

        fn is_empty(&self) -> bool {
            self.0.iter().all(|&word| word == 0)
        }

        /// The positions, ascending.
        fn iter(&self) -> impl Iterator<Item = usize> + '_ {
            self.0.iter().enumerate().flat_map(|(w, &word)| {
                std::iter::successors(Some(word), |&bits| Some(bits & bits.wrapping_sub(1)))
                    .take_while(|&bits| bits != 0)
                    .map(move |bits| w * 64 + bits.trailing_zeros() as usize)
            })
        }
    }

    fn or(into: &mut Pos, other: &Pos) {
        for (a, b) in into.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// The text as runes; position `i` is "before rune `i`", `len` is the end.
    struct Text(Vec<char>);

    impl Text {
        fn none(&self) -> Pos {
            Pos(vec![0; self.0.len() / 64 + 1])
        }

        fn at_start(&self) -> Pos {
            let mut p = self.none();
            p.set(0);
            p
        }

        fn at_end(&self, p: &Pos) -> bool {
            p.has(self.0.len())
        }

        /// One rune satisfying `class`.
        fn one(&self, from: &Pos, class: impl Fn(char) -> bool) -> Pos {
            let mut to = self.none();
            for i in from.iter() {
                if self.0.get(i).is_some_and(|&c| class(c)) {
                    to.set(i + 1);
                }
            }
            to
        }

        /// `class{min,max}`, unbounded when `max` is `None`.
        fn run(&self, from: &Pos, class: impl Fn(char) -> bool + Copy, min: usize, max: Option<usize>) -> Pos {
            let mut cur = from.clone();
            for _ in 0..min {
                cur = self.one(&cur, class);
            }
            let mut all = cur.clone();
            match max {
                Some(max) => {
                    for _ in min..max {
                        cur = self.one(&cur, class);
                        or(&mut all, &cur);
                    }
                }
                // Extend each reached position through its run; a run already covered (from an
                // earlier start, or a later start still to come) ends the walk: linear overall.
                None => {
                    for start in cur.iter() {
                        let mut i = start;
                        while self.0.get(i).is_some_and(|&c| class(c)) && !all.has(i + 1) {
                            i += 1;
                            all.set(i);
                        }
                    }
                }
            }
            all
        }

        fn lit(&self, from: &Pos, text: &str) -> Pos {
            text.chars().fold(from.clone(), |p, want| self.one(&p, |c| c == want))
        }

        /// Union of alternatives, each a sequence of one-rune ranges.
        fn alternatives(&self, from: &Pos, alternatives: &[&[Range]]) -> Pos {
            let mut out = self.none();
            for alternative in alternatives {
                let end =
                    alternative.iter().fold(from.clone(), |p, &(lo, hi)| self.one(&p, |c| (lo..=hi).contains(&c)));
                or(&mut out, &end);
            }
            out
        }

        fn opt(&self, from: &Pos, piece: impl Fn(&Pos) -> Pos) -> Pos {
            let mut out = piece(from);
            or(&mut out, from);
            out
        }

        /// `(piece){min,max}`.
        fn repeat(&self, from: &Pos, piece: impl Fn(&Pos) -> Pos, min: usize, max: usize) -> Pos {
            let mut cur = from.clone();
            for _ in 0..min {
                cur = piece(&cur);
            }
            let mut all = cur.clone();
            for _ in min..max {
                cur = piece(&cur);
                or(&mut all, &cur);
            }
            all
        }

        /// `(piece)*`: only newly reached positions are fed back, until nothing new appears.
        fn star(&self, from: &Pos, piece: impl Fn(&Pos) -> Pos) -> Pos {
            let mut all = from.clone();
            let mut frontier = from.clone();
            while !frontier.is_empty() {
                frontier = piece(&frontier);
                for (new, seen) in frontier.0.iter_mut().zip(&mut all.0) {
                    *new &= !*seen;
                    *seen |= *new;
                }
            }
            all
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Expected answers are govalidator's (checked against Go 1.19's regexp and net/url running
    /// the same pattern and `IsURL` logic).
    const URLS: &[(&str, bool)] = &[
        // Examples, some of them in docs/business-rules.md §0.3.
        ("http://backend.org-1:8000/api/function/x/file/", true),
        ("https://s3.example.com/b/k", true),
        ("localhost:8000/a", true),
        ("http://127.0.0.1:8000/x", true),
        ("https://[::1]:443/x", true),
        ("s3://bucket/key", false),
        ("/relative/path", false),
        ("abc", false),
        ("http://", false),
        ("", false),
        (".example.com/a", false),
        ("http://exa mple.com", false),
        // Length: more than 3 bytes, fewer than 2083 runes.
        ("a.b", false),
        ("a.bc", true),
        // Schemes: only ftp, tcp, udp, ws, wss, http, https, lowercase.
        ("ftp://example.com", true),
        ("tcp://example.com:9000", true),
        ("udp://example.com:53", true),
        ("ws://example.com/socket", true),
        ("wss://example.com/socket", true),
        ("HTTP://example.com", false),
        ("file:///etc/passwd", false),
        ("mailto:someone@example.com", true), // "mailto:someone@" is user info
        // No scheme: the path must contain a dot, a ':' gets "http://" for the parse only.
        ("example.com", true),
        ("example.com/path", true),
        ("localhost", false),
        ("localhost/a", false),
        ("localhost:8000", true),
        ("//example.com", false),
        ("host:8000", true),
        ("host:port", false),
        // Ports: 1 to 5 digits; the parse wants digits only.
        ("http://example.com:", false),
        ("http://example.com:65535/", true),
        ("http://example.com:99999/", true),
        ("http://example.com:123456/", false),
        ("http://example.com:80a/", false),
        // IPv4: 224-239 refused as first octet (multicast), 240-255 accepted.
        ("http://1.2.3.4", true),
        ("http://10.0.0.255/", true),
        ("http://250.1.2.3/", true),
        ("http://230.1.2.3/", false),
        ("http://1.2.3.456/", false),
        ("http://0.1.2.3/", false),
        // IPv6 literals.
        ("http://[2001:db8::1]/", true),
        ("http://[2001:db8:0:0:0:0:0:1]:8080/x", true),
        ("http://[::ffff:192.0.2.1]/", true),
        ("http://[fe80::1%25en0]/", true),
        ("http://[::1", false),
        ("http://[g::1]/", false),
        // User info.
        ("http://user:pass@example.com/", true),
        ("http://user@example.com", true),
        ("http://us er@example.com", false),
        ("http://user@.example.com", false),
        // Trailing dot, dots, underscores, dashes.
        ("http://example.com./x", true),
        ("http://example..com", false),
        ("http://.example.com", false),
        ("http://my_host.example.com/", true),
        ("http://_host.example.com/", false),
        ("http://a--b.example.com/", true),
        ("http://a---b.com/", true),
        ("http://-a.com/", false),
        ("http://a-.com/", false),
        ("http://exa_mple/", true),
        // Unicode host (BMP only), astral runes refused.
        ("http://exämple.com/", true),
        ("http://例子.测试/", true),
        ("http://😀.com/", false),
        // Query and fragment.
        ("http://example.com?q=1", true),
        ("http://example.com#frag", true),
        ("http://example.com/p?q=a b", false),
        ("http://example.com/#a\u{1}b", true),
        ("http://example.com/%zz", false),
        ("http://example.com/%41", true),
        // Whitespace and control characters.
        (" http://example.com", false),
        ("http://example.com/ ", false),
        ("http://example.com/\t", false),
        ("http://example.com/a\u{a0}b", true),
        // A ':' without "//".
        ("http:example.com", false),
        ("example.com:8080/path", true),
        ("a:b@example.com", true),
        // Hosts the parse refuses although the pattern would take them.
        ("http://ex%41mple.com", false),
        ("http://example.com%C3%A9", false),
    ];

    #[test]
    fn url_table() {
        for &(url, want) in URLS {
            assert_eq!(is_url(url), want, "is_url({url:?})");
        }
    }

    #[test]
    fn url_length_bounds() {
        let base = "http://example.com/";
        let long = |runes: usize| format!("{base}{}", "a".repeat(runes - base.len()));
        assert!(is_url(&long(2082)));
        assert!(!is_url(&long(2083)));
        // The upper bound counts runes, not bytes.
        let wide = format!("{base}{}", "é".repeat(2082 - base.len()));
        assert!(wide.len() > 2083 && is_url(&wide));
    }

    #[test]
    fn request_urls() {
        for (url, want) in [
            ("http://host:8000", true),
            ("https://orchestrator.example.com/api", true),
            ("http://[::1]:8000/", true),
            ("grpc://host", true),
            // Go reads these as a scheme and an opaque part.
            ("host:8000", true),
            ("mailto:a@b", true),
            ("", false),
            ("/path", false),
            ("*", false),
            ("host", false),
            ("://host", false),
            ("1http://host", false),
            ("http://host#frag", false),
            ("http://host/#frag", true),
            ("http://ho st", false),
            ("http://host:80a", false),
            ("http://host/%zz", false),
            ("http://us\u{e9}r@host", false),
            ("http://host\n", false),
        ] {
            assert_eq!(is_request_url(url), want, "is_request_url({url:?})");
        }
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("0e1f3b2c-5a6d-4e7f-8a9b-0c1d2e3f4a5b"));
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
        assert!(!is_uuid("0E1F3B2C-5A6D-4E7F-8A9B-0C1D2E3F4A5B"));
        assert!(!is_uuid("0e1f3b2c-5a6d-4e7f-8a9b-0c1d2e3f4a5"));
        assert!(!is_uuid("0e1f3b2c5a6d-4e7f-8a9b-0c1d2e3f4a5b0"));
        assert!(!is_uuid("{0e1f3b2c-5a6d-4e7f-8a9b-0c1d2e3f4a5b}"));
        assert!(!is_uuid("0e1f3b2c-5a6d-4e7f-8a9b-0c1d2e3f4a5g"));
        assert!(!is_uuid(""));
    }

    #[test]
    fn checksums() {
        assert!(is_checksum(&"a".repeat(64)));
        assert!(is_checksum(&"0123456789abcdefABCDEF".repeat(3)[..64]));
        assert!(!is_checksum(&"a".repeat(63)));
        assert!(!is_checksum(&"a".repeat(65)));
        assert!(!is_checksum(&format!("{}g", "a".repeat(63))));
        let mut errs = FieldErrors::new();
        require_checksum(&mut errs, "a", "");
        require_checksum(&mut errs, "b", "abc");
        require_checksum(&mut errs, "c", &"z".repeat(64));
        require_checksum(&mut errs, "d", &"é".repeat(32)); // 64 bytes, not hex
        require_checksum(&mut errs, "e", &"F".repeat(64));
        assert_eq!(
            errs.into_message().as_deref(),
            Some(
                "a: cannot be blank; b: the length must be exactly 64; c: must be a valid hexadecimal number; \
                 d: must be a valid hexadecimal number."
            )
        );
    }

    #[test]
    fn lengths_count_bytes() {
        let mut errs = FieldErrors::new();
        require_name(&mut errs, "ascii100", &"a".repeat(100));
        require_name(&mut errs, "multibyte", &"é".repeat(51)); // 51 runes, 102 bytes
        require_name(&mut errs, "empty", "");
        require_identifier(&mut errs, "identifier", &"x".repeat(101));
        check_tag(&mut errs, "tag", &"€".repeat(34)); // 102 bytes
        check_tag(&mut errs, "tag_empty", "");
        check_tag(&mut errs, "tag_ok", &"t".repeat(100));
        assert_eq!(
            errs.into_message().as_deref(),
            Some(
                "empty: cannot be blank; identifier: the length must be between 1 and 100; \
                 multibyte: the length must be between 1 and 100; tag: the length must be no more than 100."
            )
        );
        assert_eq!(length_message(1, 0), "the length must be no less than 1");
        assert_eq!(length_message(0, 0), "the value must be empty");
    }

    #[test]
    fn field_errors_format() {
        let mut errs = FieldErrors::new();
        assert!(errs.is_empty());
        assert_eq!(errs.to_string(), "");
        require_uuid(&mut errs, "key", "not-a-uuid");
        require_name(&mut errs, "name", "");
        // A field keeps its first failing rule.
        errs.add("name", "ignored");
        require_addressable(&mut errs, "description", true, "", "s3://bucket/key");
        require_addressable(&mut errs, "opener", false, "", "");
        require_addressable(&mut errs, "archive", true, &"a".repeat(64), "http://example.com/a");
        let mut list = FieldErrors::new();
        for (i, key) in ["0e1f3b2c-5a6d-4e7f-8a9b-0c1d2e3f4a5b", "x", "", "y"].iter().enumerate() {
            check_uuid(&mut list, &i.to_string(), key);
        }
        errs.nested("data_manager_keys", list);
        errs.nested("empty", FieldErrors::new());
        assert_eq!(
            errs.into_message().as_deref(),
            Some(
                "data_manager_keys: (1: must be a valid UUID; 3: must be a valid UUID.); \
                 description: (checksum: cannot be blank; storage_address: must be a valid URL.); \
                 key: must be a valid UUID; name: cannot be blank; opener: cannot be blank."
            )
        );
        assert_eq!(FieldErrors::new().into_message(), None);
    }

    #[test]
    fn keys_sort_as_strings() {
        let mut errs = FieldErrors::new();
        for i in [2, 10, 1] {
            errs.add(&i.to_string(), MSG_UUID);
        }
        errs.add("B", "x");
        errs.add("a", "y");
        assert_eq!(
            errs.to_string(),
            "1: must be a valid UUID; 10: must be a valid UUID; 2: must be a valid UUID; B: x; a: y."
        );
    }

    #[test]
    fn other_rules() {
        let mut errs = FieldErrors::new();
        check_request_url(&mut errs, "address", "");
        check_request_url(&mut errs, "bad_address", "/path");
        require_present(&mut errs, "new_permissions", false);
        require_present(&mut errs, "logs_permission", true);
        require_absent(&mut errs, "logs_address", true);
        check_in(&mut errs, "kind", 0, &[1, 2]);
        check_in(&mut errs, "other_kind", 3, &[1, 2]);
        check_in(&mut errs, "good_kind", 2, &[1, 2]);
        require_url(&mut errs, "storage_address", "");
        assert_eq!(
            errs.into_message().as_deref(),
            Some(
                "bad_address: must be a valid request URL; logs_address: must be blank; \
                 new_permissions: cannot be blank; other_kind: must be a valid value; storage_address: cannot be blank."
            )
        );
    }

    #[test]
    fn metadata() {
        let mut errs = FieldErrors::new();
        let ok: HashMap<String, String> =
            [(String::new(), "v".repeat(100)), ("k".repeat(100), String::new())].into_iter().collect();
        check_metadata(&mut errs, "metadata", &ok);
        assert!(errs.is_empty());

        let long_key = "é".repeat(51); // 102 bytes
        check_metadata(&mut errs, "key", [(long_key.as_str(), "v")]);
        check_metadata(&mut errs, "value", [("b", "x".repeat(101)), ("a\"\n", "y".repeat(101))]);
        check_metadata(&mut errs, "both", [("k".repeat(101), "v".repeat(101))]);
        assert_eq!(
            errs.into_message(),
            Some(format!(
                "both: OE0101: metadata key \"{k}\" is too long; key: OE0101: metadata key \"{long_key}\" is too long; \
                 value: OE0101: metadata value for key \"a\\\"\\n\" is too long.",
                k = "k".repeat(101)
            ))
        );
    }

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
