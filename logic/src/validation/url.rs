//! govalidator's `IsURL` and `IsRequestURL` (2020-01-08), the two URL rules of the reference:
//! Go's `net/url` parse ([`super::neturl`]) as a filter, then for `IsURL` the `rxURL` pattern
//! ([`super::url_pattern`]) on the original text.

use super::{neturl, url_pattern};

/// govalidator `IsURL` (2020-01-08): length and prefix checks, Go's `url.Parse` as a filter,
/// then the `rxURL` pattern on the original text.
pub fn is_url(s: &str) -> bool {
    if s.is_empty() || s.len() <= 3 || s.starts_with('.') || s.chars().count() >= 2083 {
        return false;
    }
    // "host:8000/x" would parse as scheme "host": govalidator parses it as "http://host:8000/x"
    // instead, but still matches the pattern against the text as given.
    let parsed =
        if s.contains(':') && !s.contains("://") { neturl::parse(&format!("http://{s}")) } else { neturl::parse(s) };
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
    neturl::parse_request_uri(s).is_some_and(|url| !url.scheme.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
