//! What Go's `net/url` (1.19–1.21) decides, reduced to what the two predicates need: whether
//! `url.Parse` / `url.ParseRequestURI` fail, and the scheme, host and path they return.
//!
//! A port rather than a URL crate: the accept/reject decisions must be Go's, byte for byte,
//! and the logic takes no dependency that could drift from them.

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
    let valid_port =
        |port: &str| port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
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
