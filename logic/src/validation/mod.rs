//! Validation primitives of docs/business-rules.md §0.3, shared by every request validator.
//!
//! The reference validates requests with ozzo-validation v4.3.0, whose `is.URL` and
//! `is.RequestURL` rules come from govalidator (2020-01-08). Clients see the resulting texts inside
//! `OE0101: <kind> is not valid: <field errors>`, so both the accept/reject decisions and the
//! messages are reproduced exactly. Everything takes plain `&str`s so this module stays
//! independent of the generated protobuf types.
//!
//! This module holds the field rules the asset modules call; what they are built on sits in
//! submodules, one concern each:
//!
//! * `field_errors`: the accumulator and its ozzo rendering ([`FieldErrors`]);
//! * `url`: govalidator's `IsURL` and `IsRequestURL`, on top of
//!   * `neturl`: a port of what Go's `net/url` parse decides,
//!   * `url_pattern`: govalidator's `rxURL`, without a regex engine;
//! * `goquote`: Go's `%q` quoting and the cut of long inputs, used by every error message.

mod field_errors;
mod goquote;
mod neturl;
mod url;
mod url_pattern;

pub use field_errors::FieldErrors;
pub use goquote::{QUOTED_INPUT_BYTES, cut_at_char, go_quote, shown};
pub use url::{is_request_url, is_url};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
}
