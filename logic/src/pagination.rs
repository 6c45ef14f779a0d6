//! Page tokens and paged range scans.
//!
//! The reference's tokens are decimal row offsets. Skipping an offset costs O(offset), so the
//! tokens this logic hands out are cursors instead (`k:<next key>`): a page costs O(page size)
//! whatever the size of the channel. Tokens are opaque to clients; decimal offsets are still
//! accepted, so a client that builds `"0"` or an offset itself keeps working.

use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::imports::{ScanPage, key_fault};
use crate::validation::go_quote;

/// Page size when the request says 0 (as the reference).
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page served in one response; larger requests get this many and a next token.
pub const MAX_PAGE_SIZE: u32 = 10_000;
const CURSOR_PREFIX: &str = "k:";
/// Chunk used to skip over an offset.
const SKIP_CHUNK: u32 = 1_000;

/// Where a page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStart {
    Offset(u64),
    Cursor(String),
}

pub fn parse_token(token: &str) -> Result<PageStart> {
    if token.is_empty() {
        return Ok(PageStart::Offset(0));
    }
    let invalid = || LogicError::unknown(format!("invalid page token {}", go_quote(token)));
    if let Some(cursor) = token.strip_prefix(CURSOR_PREFIX) {
        // Cursors are keys handed out by a previous page; anything else is not one of ours.
        return match key_fault(cursor) {
            None => Ok(PageStart::Cursor(cursor.to_owned())),
            Some(_) => Err(invalid()),
        };
    }
    // Like the reference, a token that is not an offset is a plain error (UNKNOWN); negative
    // numbers are refused rather than wrapped around.
    token.parse::<u64>().map(PageStart::Offset).map_err(|_| invalid())
}

pub fn effective_page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// A page of a range: the entries and the token of the next page (`""` on the last page).
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub entries: Vec<(String, Vec<u8>)>,
    pub next_page_token: String,
}

/// Read one page of `[start, end)` as the request's token and size say.
pub fn scan_page(call: &mut Call<'_>, start: &str, end: &str, token: &str, page_size: u32) -> Result<Page> {
    let size = effective_page_size(page_size);
    let cursor = match parse_token(token)? {
        PageStart::Cursor(key) => Some(key),
        PageStart::Offset(0) => None,
        PageStart::Offset(n) => match skip(call, start, end, n)? {
            Some(cursor) => Some(cursor),
            None => return Ok(Page::default()),
        },
    };
    // A cursor outside the range (forged or stale) reads nothing rather than another prefix.
    let cursor = cursor.map(|c| if c.as_str() < start { start.to_owned() } else { c });
    if cursor.as_deref().is_some_and(|c| c >= end) {
        return Ok(Page::default());
    }
    let ScanPage { entries, next_cursor } = call.scan(start, end, size, cursor.as_deref())?;
    let next_page_token = match next_cursor {
        Some(next) if entries.len() as u32 == size => format!("{CURSOR_PREFIX}{next}"),
        _ => String::new(),
    };
    Ok(Page { entries, next_page_token })
}

/// Skip `n` entries of the range; the cursor where the rest starts, `None` if nothing is left.
fn skip(call: &mut Call<'_>, start: &str, end: &str, mut n: u64) -> Result<Option<String>> {
    let mut cursor: Option<String> = None;
    while n > 0 {
        let chunk = n.min(u64::from(SKIP_CHUNK)) as u32;
        let page = call.scan(start, end, chunk, cursor.as_deref())?;
        n -= page.entries.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(None),
        }
    }
    Ok(cursor)
}

/// Paginate an in-memory, already ordered list (used when a filter is a key list rather than
/// a range, e.g. QueryDataSamples with `keys`). Tokens are offsets here.
pub fn paginate_vec<T>(items: Vec<T>, token: &str, page_size: u32) -> Result<(Vec<T>, String)> {
    let size = effective_page_size(page_size) as usize;
    let offset = match parse_token(token)? {
        PageStart::Offset(n) => usize::try_from(n).unwrap_or(usize::MAX),
        PageStart::Cursor(_) => {
            return Err(LogicError::unknown(format!("invalid page token {token:?}")));
        }
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let end = offset.saturating_add(page.len());
    let next = if page.len() == size && end < total { end.to_string() } else { String::new() };
    Ok((page, next))
}

/// One page of records through a secondary index: scan `index_prefix`, whose keys end with the
/// asset key, then load the records in one state call.
pub fn query_index<M: prost::Message + Default>(
    call: &mut Call<'_>,
    index_prefix: &str,
    token: &str,
    page_size: u32,
    record_key: impl Fn(&str) -> String,
) -> Result<(Vec<M>, String)> {
    let (start, end) = crate::keys::prefix_range(index_prefix);
    let page = scan_page(call, &start, &end, token, page_size)?;
    let keys: Vec<String> = page.entries.iter().map(|(k, _)| record_key(crate::keys::last_component(k))).collect();
    let records = call.load_many::<M>(&keys)?;
    let items = records
        .into_iter()
        .zip(&keys)
        .map(|(record, key)| record.ok_or_else(|| LogicError::internal(format!("index points to missing {key}"))))
        .collect::<Result<Vec<M>>>()?;
    Ok((items, page.next_page_token))
}

/// Every key of a prefix (for unpaginated lists), in key order.
pub fn scan_all_keys(call: &mut Call<'_>, prefix: &str) -> Result<Vec<String>> {
    let (start, end) = crate::keys::prefix_range(prefix);
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = call.scan(&start, &end, SKIP_CHUNK, cursor.as_deref())?;
        keys.extend(page.entries.into_iter().map(|(k, _)| k));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(parse_token(""), Ok(PageStart::Offset(0)));
        assert_eq!(parse_token("12"), Ok(PageStart::Offset(12)));
        assert_eq!(parse_token("k:abc/d"), Ok(PageStart::Cursor("abc/d".into())));
        assert!(parse_token("-1").is_err());
        assert!(parse_token("x").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(effective_page_size(0), 50);
        assert_eq!(effective_page_size(7), 7);
        assert_eq!(effective_page_size(u32::MAX), MAX_PAGE_SIZE);
    }

    #[test]
    fn vec_pages() {
        let (p, next) = paginate_vec((0..5).collect(), "", 2).expect("page");
        assert_eq!((p, next.as_str()), (vec![0, 1], "2"));
        let (p, next) = paginate_vec((0..5).collect(), "4", 2).expect("page");
        assert_eq!((p, next.as_str()), (vec![4], ""));
        let (p, next) = paginate_vec((0..4).collect(), "2", 2).expect("page");
        assert_eq!((p, next.as_str()), (vec![2, 3], ""));
    }
}
