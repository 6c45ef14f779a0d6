//! QueryEvents, answered by the host from the events outbox: the events the logic emitted are
//! rows of `events` (written in the transaction of the call that emitted them), so past events
//! are the host's to serve, with the same rows that feed the relay and the stream.
//!
//! Order: event timestamp (the transaction time), then outbox position, ascending or
//! descending. The reference orders ties by random event id; the position orders them the way
//! they were emitted, which is a valid reading of "timestamp, then id" and a useful one.
//!
//! Tokens: decimal offsets are accepted as the reference hands them out; the tokens handed out
//! here are keyset cursors (`k:<ts>:<position>` of the last row served), so a page costs the
//! same wherever it is in the channel's history.

use orchestrator_proto::{Event, QueryEventsParam, QueryEventsResponse, SortOrder};
use prost::Message;
use sqlx::{PgPool, Row};

/// Page size when the request says 0, as the reference and the logic's queries.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page served at once; a larger request gets this many and a next token.
const MAX_PAGE_SIZE: u32 = 10_000;

/// Why QueryEvents failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryEventsError {
    /// The request bytes are not a `QueryEventsParam`.
    #[error("grpc: error unmarshalling request: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A page token that is neither an offset nor a cursor (UNKNOWN, as the reference).
    #[error("invalid page token {}", crate::quote::quoted(.0))]
    Token(String),
    /// The database failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// A stored payload does not decode.
    #[error("OE0007: corrupt stored event: {0}")]
    Corrupt(prost::DecodeError),
}

#[derive(Debug, PartialEq, Eq)]
enum Start {
    Offset(i64),
    After { ts: i64, position: i64 },
}

fn parse_token(token: &str) -> Result<Start, QueryEventsError> {
    let invalid = || QueryEventsError::Token(token.to_owned());
    if token.is_empty() {
        return Ok(Start::Offset(0));
    }
    if let Some(cursor) = token.strip_prefix("k:") {
        let (ts, position) = cursor.split_once(':').ok_or_else(invalid)?;
        return Ok(Start::After {
            ts: ts.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        });
    }
    token.parse::<u32>().map(|n| Start::Offset(i64::from(n))).map_err(|_| invalid())
}

/// The query in both directions; only the comparison and the order differ.
macro_rules! events_query {
    ($after:literal, $order:literal) => {
        concat!(
            "SELECT payload, ts_micros, position FROM events \
             WHERE channel = $1 \
               AND ($2 = '' OR asset_key = $2) \
               AND ($3 = 0 OR asset_kind = $3) \
               AND ($4 = 0 OR event_kind = $4) \
               AND metadata @> $5::jsonb \
               AND ($6::int8 IS NULL OR ts_micros >= $6) \
               AND ($7::int8 IS NULL OR ts_micros <= $7) \
               AND ($8::int8 IS NULL OR (ts_micros, position) ",
            $after,
            " ($8, $9)) ORDER BY ts_micros ",
            $order,
            ", position ",
            $order,
            " LIMIT $10 OFFSET $11"
        )
    };
}
const QUERY_ASCENDING: &str = events_query!(">", "ASC");
const QUERY_DESCENDING: &str = events_query!("<", "DESC");

fn micros(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds.saturating_mul(1_000_000).saturating_add(i64::from(ts.nanos) / 1_000)
}

/// One page of the channel's events matching the request's filter.
pub async fn query_events(pool: &PgPool, channel: &str, request: &[u8]) -> Result<Vec<u8>, QueryEventsError> {
    let req = QueryEventsParam::decode(request)?;
    let start = parse_token(&req.page_token)?;
    let size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let filter = req.filter.unwrap_or_default();
    // No event carries NUL in these (the logic refuses it in what reaches them), and a jsonb or
    // text parameter cannot: such a filter matches nothing.
    let has_nul = |s: &String| s.contains('\0');
    if has_nul(&filter.asset_key) || filter.metadata.iter().any(|(k, v)| has_nul(k) || has_nul(v)) {
        return Ok(QueryEventsResponse::default().encode_to_vec());
    }
    let descending = req.sort == SortOrder::Descending as i32;
    let sql = if descending { QUERY_DESCENDING } else { QUERY_ASCENDING };
    let (cursor_ts, cursor_position, offset) = match start {
        Start::Offset(n) => (None, 0_i64, n),
        Start::After { ts, position } => (Some(ts), position, 0),
    };
    let metadata = serde_json::to_string(&filter.metadata).unwrap_or_else(|_| "{}".to_owned());
    let rows = sqlx::query(sql)
        .bind(channel)
        .bind(&filter.asset_key)
        .bind(filter.asset_kind)
        .bind(filter.event_kind)
        .bind(metadata)
        .bind(filter.start.as_ref().map(micros))
        .bind(filter.end.as_ref().map(micros))
        .bind(cursor_ts)
        .bind(cursor_position)
        .bind(i64::from(size) + 1)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let more = rows.len() > size as usize;
    let mut events = Vec::with_capacity(rows.len().min(size as usize));
    let mut last = None;
    for row in rows.iter().take(size as usize) {
        let payload: Vec<u8> = row.try_get("payload")?;
        events.push(Event::decode(payload.as_slice()).map_err(QueryEventsError::Corrupt)?);
        last = Some((row.try_get::<i64, _>("ts_micros")?, row.try_get::<i64, _>("position")?));
    }
    let next_page_token = match (more, last) {
        (true, Some((ts, position))) => format!("k:{ts}:{position}"),
        _ => String::new(),
    };
    Ok(QueryEventsResponse { events, next_page_token }.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(parse_token("").ok(), Some(Start::Offset(0)));
        assert_eq!(parse_token("120").ok(), Some(Start::Offset(120)));
        assert_eq!(parse_token("k:17:4").ok(), Some(Start::After { ts: 17, position: 4 }));
        for bad in ["-1", "x", "k:", "k:1", "k:a:b"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
