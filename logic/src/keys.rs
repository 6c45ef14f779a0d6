//! The state key layout. Every query of the API is a range scan over one of these prefixes.
//!
//! Primary records: `<asset>/<key>`. Secondary indexes: `idx/<asset>/<index>/<fields...>/<key>`
//! with empty values, written in the same call as the record. Components are joined by `/`;
//! free-text components (MSP ids) are escaped so they cannot contain `/`; timestamps are
//! fixed-width so bytewise order is chronological order. Keys are byte-ordered on every host
//! (PostgreSQL `COLLATE "C"`, Fabric's LevelDB/CouchDB, BTreeMap).

use std::borrow::Cow;

/// Escape a free-text component: `%` and `/` are percent-encoded.
pub fn escape(component: &str) -> Cow<'_, str> {
    if !component.contains(['%', '/']) {
        return Cow::Borrowed(component);
    }
    let mut out = String::with_capacity(component.len() + 4);
    for c in component.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Fixed-width, sortable rendering of a timestamp in microseconds (non-negative times).
pub fn time(micros: i64) -> String {
    format!("{:020}", micros.max(0))
}

/// Join components with `/`, escaping each.
pub fn join(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&escape(part));
    }
    out
}

/// The `[start, end)` range holding every key that starts with `prefix` + `/`.
pub fn prefix_range(prefix: &str) -> (String, String) {
    // '0' is the byte right after '/', so "<prefix>0" bounds every "<prefix>/..." key.
    (format!("{prefix}/"), format!("{prefix}0"))
}

pub fn organization(id: &str) -> String {
    join(&["organization", id])
}
pub const ORGANIZATIONS: &str = "organization";

pub fn datamanager(key: &str) -> String {
    join(&["datamanager", key])
}
pub fn datasample(key: &str) -> String {
    join(&["datasample", key])
}
pub fn function(key: &str) -> String {
    join(&["function", key])
}
pub fn computeplan(key: &str) -> String {
    join(&["computeplan", key])
}
pub fn computetask(key: &str) -> String {
    join(&["computetask", key])
}
pub fn model(key: &str) -> String {
    join(&["model", key])
}
/// A performance's key is `<task>|<output identifier>` (the reference's composite key).
pub fn performance(key: &str) -> String {
    join(&["performance", key])
}
pub fn failurereport(asset_key: &str) -> String {
    join(&["failurereport", asset_key])
}

/// `idx/<asset>/created/<time>/<key>`: creation order, the default order of every Query RPC.
pub fn created_index(asset: &str, micros: i64, key: &str) -> String {
    join(&["idx", asset, "created", &time(micros), key])
}
/// The prefix of [`created_index`] for one asset kind.
pub fn created_prefix(asset: &str) -> String {
    join(&["idx", asset, "created"])
}

/// Last component of an index key: the asset key it points to.
pub fn last_component(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_components_apart() {
        assert_eq!(escape("MyOrg1MSP"), "MyOrg1MSP");
        assert_eq!(escape("a/b%c"), "a%2Fb%25c");
        assert_eq!(join(&["organization", "x/y"]), "organization/x%2Fy");
    }

    #[test]
    fn times_sort_bytewise() {
        assert!(time(9) < time(10));
        assert!(time(999_999_999) < time(1_000_000_000_000));
        assert_eq!(time(1).len(), 20);
    }

    #[test]
    fn prefix_range_bounds_children_only() {
        let (start, end) = prefix_range("organization");
        assert!(start.as_str() <= "organization/a" && "organization/a" < end.as_str());
        assert!("organization/\u{10FFFF}" < end.as_str());
        assert!("organizations" >= end.as_str() || "organizations" < start.as_str());
    }

    #[test]
    fn last_component_is_the_key() {
        assert_eq!(last_component("idx/function/created/000/abc"), "abc");
    }
}
