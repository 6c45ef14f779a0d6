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

use orchestrator_proto::event_query::{EventQuery, InvalidPageToken, PageStart, next_page_token};
use orchestrator_proto::{Event, QueryEventsParam, QueryEventsResponse};
use prost::Message;
use sqlx::{PgPool, Row};

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

impl From<InvalidPageToken> for QueryEventsError {
    fn from(InvalidPageToken(token): InvalidPageToken) -> Self {
        Self::Token(token)
    }
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

/// One page of the channel's events matching the request's filter: [`EventQuery`]'s
/// semantics, with the filter, the order and the cursor in the SQL so that a page is read off
/// the `(channel, ts_micros, position)` index.
pub async fn query_events(pool: &PgPool, channel: &str, request: &[u8]) -> Result<Vec<u8>, QueryEventsError> {
    let query = EventQuery::new(QueryEventsParam::decode(request)?)?;
    if query.matches_nothing() {
        return Ok(QueryEventsResponse::default().encode_to_vec());
    }
    let sql = if query.descending { QUERY_DESCENDING } else { QUERY_ASCENDING };
    let (cursor_ts, cursor_position, offset) = match query.start {
        PageStart::Offset(n) => (None, 0_i64, i64::try_from(n).unwrap_or(i64::MAX)),
        PageStart::After { ts_micros, position } => (Some(ts_micros), position, 0),
    };
    let filter = &query.filter;
    let metadata = serde_json::to_string(&filter.metadata).unwrap_or_else(|_| "{}".to_owned());
    let size = query.page_size as usize;
    let rows = sqlx::query(sql)
        .bind(channel)
        .bind(&filter.asset_key)
        .bind(filter.asset_kind)
        .bind(filter.event_kind)
        .bind(metadata)
        .bind(query.start_micros)
        .bind(query.end_micros)
        .bind(cursor_ts)
        .bind(cursor_position)
        .bind(i64::from(query.page_size) + 1)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let more = rows.len() > size;
    let mut events = Vec::with_capacity(rows.len().min(size));
    let mut last = None;
    for row in rows.iter().take(size) {
        let payload: Vec<u8> = row.try_get("payload")?;
        events.push(Event::decode(payload.as_slice()).map_err(QueryEventsError::Corrupt)?);
        last = Some((row.try_get::<i64, _>("ts_micros")?, row.try_get::<i64, _>("position")?));
    }
    let next_page_token = match (more, last) {
        (true, Some((ts, position))) => next_page_token(ts, position),
        _ => String::new(),
    };
    Ok(QueryEventsResponse { events, next_page_token }.encode_to_vec())
}
