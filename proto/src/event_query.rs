//! QueryEvents as pure functions over a host's own rows: the page token, the page size, the
//! filter, the order and the next token, defined once.
//!
//! Events are not state the logic can serve: every host keeps the events the logic emitted in
//! its own store (PostgreSQL rows here) and answers QueryEvents itself. A host with an index
//! (the standalone host) pushes the filter into its query and uses [`EventQuery`] for the
//! request and the token; a host without one (an in-memory embedding) hands its rows to
//! [`EventQuery::page`]. Both give the same pages; the standalone host's tests compare them.
//!
//! Order: event timestamp, then the row's position in the host's store (emission order), either
//! way. Tokens: the reference's decimal offsets are accepted; the tokens handed out are keyset
//! cursors `k:<timestamp µs>:<position>` of the last event served.

use crate::{Event, EventQueryFilter, QueryEventsParam, QueryEventsResponse, SortOrder};

/// Page size when the request says 0, as the reference and the logic's queries.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page served at once; a larger request gets this many and a next token.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// Skip this many matching events (the reference's tokens; also the first page, 0).
    Offset(u64),
    /// After the event at this timestamp and position, in the query's order.
    After {
        /// Its timestamp in microseconds.
        ts_micros: i64,
        /// Its position in the host's store.
        position: i64,
    },
}

/// A page token that is neither an offset nor a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPageToken(pub String);

impl std::fmt::Display for InvalidPageToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid page token {:?}", self.0)
    }
}

impl std::error::Error for InvalidPageToken {}

/// A timestamp in microseconds, the precision events are compared and paged at.
pub fn timestamp_micros(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds.saturating_mul(1_000_000).saturating_add(i64::from(ts.nanos) / 1_000)
}

/// The token of the page after the one ending with the event at `ts_micros`, `position`.
pub fn next_page_token(ts_micros: i64, position: i64) -> String {
    format!("k:{ts_micros}:{position}")
}

/// One QueryEvents request, understood.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Where the page starts.
    pub start: PageStart,
    /// Events per page, 1 ..= [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Newest first.
    pub descending: bool,
    /// What events must match.
    pub filter: EventQueryFilter,
    /// The filter's bounds in microseconds, inclusive.
    pub start_micros: Option<i64>,
    /// See `start_micros`.
    pub end_micros: Option<i64>,
}

impl EventQuery {
    /// Reads `param`; fails only on a bad page token.
    pub fn new(param: QueryEventsParam) -> Result<Self, InvalidPageToken> {
        let start = parse_page_token(&param.page_token)?;
        let page_size = match param.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let descending = param.sort == SortOrder::Descending as i32;
        let filter = param.filter.unwrap_or_default();
        let start_micros = filter.start.as_ref().map(timestamp_micros);
        let end_micros = filter.end.as_ref().map(timestamp_micros);
        Ok(Self { start, page_size, descending, filter, start_micros, end_micros })
    }

    /// Whether no event can match: no event carries NUL in its asset key or metadata (the
    /// logic refuses it in everything that reaches them), and a host's store may not be able to
    /// hold it in a query parameter either.
    pub fn matches_nothing(&self) -> bool {
        let has_nul = |s: &String| s.contains('\0');
        has_nul(&self.filter.asset_key) || self.filter.metadata.iter().any(|(k, v)| has_nul(k) || has_nul(v))
    }

    /// Whether `event` passes the filter: each field given must be equal, the metadata given
    /// must be contained in the event's, and the timestamp within the inclusive bounds.
    pub fn matches(&self, event: &Event) -> bool {
        let filter = &self.filter;
        let ts = timestamp_micros(&event.timestamp.unwrap_or_default());
        (filter.asset_key.is_empty() || filter.asset_key == event.asset_key)
            && (filter.asset_kind == 0 || filter.asset_kind == event.asset_kind)
            && (filter.event_kind == 0 || filter.event_kind == event.event_kind)
            && filter.metadata.iter().all(|(k, v)| event.metadata.get(k) == Some(v))
            && self.start_micros.is_none_or(|start| ts >= start)
            && self.end_micros.is_none_or(|end| ts <= end)
    }

    /// The page of `rows` (each event with its position in the host's store, in any order)
    /// this query asks for.
    pub fn page<'a>(&self, rows: impl IntoIterator<Item = (i64, &'a Event)>) -> QueryEventsResponse {
        if self.matches_nothing() {
            return QueryEventsResponse::default();
        }
        let mut matching: Vec<(i64, i64, &Event)> = rows
            .into_iter()
            .filter(|(_, event)| self.matches(event))
            .map(|(position, event)| (timestamp_micros(&event.timestamp.unwrap_or_default()), position, event))
            .collect();
        matching.sort_by_key(|(ts, position, _)| (*ts, *position));
        if self.descending {
            matching.reverse();
        }
        let after = |ts: i64, position: i64| match self.start {
            PageStart::Offset(_) => true,
            PageStart::After { ts_micros, position: last } if self.descending => (ts, position) < (ts_micros, last),
            PageStart::After { ts_micros, position: last } => (ts, position) > (ts_micros, last),
        };
        let skip = match self.start {
            PageStart::Offset(n) => usize::try_from(n).unwrap_or(usize::MAX),
            PageStart::After { .. } => 0,
        };
        let size = self.page_size as usize;
        let mut rest = matching.into_iter().filter(|(ts, position, _)| after(*ts, *position)).skip(skip);
        let served: Vec<(i64, i64, &Event)> = rest.by_ref().take(size).collect();
        let next_page_token = match (rest.next(), served.last()) {
            (Some(_), Some((ts, position, _))) => next_page_token(*ts, *position),
            _ => String::new(),
        };
        QueryEventsResponse { events: served.into_iter().map(|(_, _, event)| event.clone()).collect(), next_page_token }
    }
}

/// Reads a page token: empty (the first page), a decimal offset, or a cursor.
pub fn parse_page_token(token: &str) -> Result<PageStart, InvalidPageToken> {
    let invalid = || InvalidPageToken(token.to_owned());
    if token.is_empty() {
        return Ok(PageStart::Offset(0));
    }
    if let Some(cursor) = token.strip_prefix("k:") {
        let (ts, position) = cursor.split_once(':').ok_or_else(invalid)?;
        return Ok(PageStart::After {
            ts_micros: ts.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        });
    }
    // The reference's offsets are uint32.
    token.parse::<u32>().map(|n| PageStart::Offset(u64::from(n))).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(parse_page_token(""), Ok(PageStart::Offset(0)));
        assert_eq!(parse_page_token("120"), Ok(PageStart::Offset(120)));
        assert_eq!(parse_page_token("k:17:4"), Ok(PageStart::After { ts_micros: 17, position: 4 }));
        for bad in ["-1", "x", "k:", "k:1", "k:a:b"] {
            assert_eq!(parse_page_token(bad), Err(InvalidPageToken(bad.to_owned())), "{bad}");
        }
    }

    fn event(id: &str, seconds: i64, kind: i32) -> Event {
        Event {
            id: id.to_owned(),
            asset_kind: kind,
            timestamp: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn pages_follow_timestamp_then_position_in_both_orders() {
        // Positions are not in timestamp order: the timestamp decides first.
        let events = [event("a", 2, 1), event("b", 1, 2), event("c", 2, 1), event("d", 3, 1)];
        let rows = || events.iter().enumerate().map(|(i, e)| (i as i64 + 1, e));
        let ids = |page: &QueryEventsResponse| page.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let mut query = EventQuery::new(QueryEventsParam { page_size: 2, ..Default::default() }).expect("query");
        let first = query.page(rows());
        assert_eq!(ids(&first), ["b", "a"]);
        assert_eq!(first.next_page_token, "k:2000000:1");
        query.start = parse_page_token(&first.next_page_token).expect("token");
        let second = query.page(rows());
        assert_eq!(ids(&second), ["c", "d"]);
        assert_eq!(second.next_page_token, "", "nothing after");
        let descending = EventQuery::new(QueryEventsParam { sort: SortOrder::Descending as i32, ..Default::default() })
            .expect("query");
        assert_eq!(ids(&descending.page(rows())), ["d", "c", "a", "b"]);
        let offset =
            EventQuery::new(QueryEventsParam { page_token: "1".to_owned(), ..Default::default() }).expect("query");
        assert_eq!(ids(&offset.page(rows())), ["a", "c", "d"]);
        let kind_2 = EventQuery::new(QueryEventsParam {
            filter: Some(EventQueryFilter { asset_kind: 2, ..Default::default() }),
            ..Default::default()
        })
        .expect("query");
        assert_eq!(ids(&kind_2.page(rows())), ["b"]);
    }
}
