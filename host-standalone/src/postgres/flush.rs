//! The one statement that stores what write calls produced: state puts and deletes, and their
//! events numbered after the channel's head, with a notification for listeners.
//!
//! Used by the standalone writers (a group of calls, autocommitted) and by the ledger listener
//! of distributed mode (a block's events, in its transaction). Both hold the channel's advisory
//! lock, so the head they number after is final.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::events::hub::COMMITTED;

/// The columns of the events table taken from the events' protobuf, one entry per event.
#[derive(Debug, Default)]
pub(super) struct EventColumns {
    ids: Vec<String>,
    asset_keys: Vec<String>,
    asset_kinds: Vec<i32>,
    event_kinds: Vec<i32>,
    ts_micros: Vec<i64>,
    /// The metadata map as a JSON object.
    metadata: Vec<String>,
}

impl EventColumns {
    /// The columns of `events`, or why one of them is not an `orchestrator.Event`.
    pub(super) fn extract(events: &[Vec<u8>]) -> Result<Self, String> {
        let mut columns = EventColumns::default();
        for bytes in events {
            let event = <orchestrator_proto::Event as prost::Message>::decode(bytes.as_slice())
                .map_err(|err| err.to_string())?;
            if event.id.is_empty() {
                return Err("event without id".to_owned());
            }
            let ts = event.timestamp.unwrap_or_default();
            columns.ts_micros.push(ts.seconds.saturating_mul(1_000_000).saturating_add(i64::from(ts.nanos) / 1_000));
            columns.metadata.push(serde_json::to_string(&event.metadata).map_err(|err| err.to_string())?);
            columns.ids.push(event.id);
            columns.asset_keys.push(event.asset_key);
            columns.asset_kinds.push(event.asset_kind);
            columns.event_kinds.push(event.event_kind);
        }
        Ok(columns)
    }

    fn append(&mut self, other: EventColumns) {
        self.ids.extend(other.ids);
        self.asset_keys.extend(other.asset_keys);
        self.asset_kinds.extend(other.asset_kinds);
        self.event_kinds.extend(other.event_kinds);
        self.ts_micros.extend(other.ts_micros);
        self.metadata.extend(other.metadata);
    }
}

/// What one flush stores.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Net writes by key: `Some` = put, `None` = delete.
    pub(super) writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Encoded `orchestrator.Event`s in emission order, and their columns.
    events: Vec<Vec<u8>>,
    columns: EventColumns,
}

impl Batch {
    /// A batch of events only (a ledger block).
    pub(super) fn of_events(events: Vec<Vec<u8>>) -> Result<Self, String> {
        let columns = EventColumns::extract(&events)?;
        Ok(Self { writes: BTreeMap::new(), events, columns })
    }

    /// Adds one call's events after those already in the batch.
    pub(super) fn push_events(&mut self, events: Vec<Vec<u8>>, columns: EventColumns) {
        self.events.extend(events);
        self.columns.append(columns);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty()
    }

    /// The id of the batch's first event: finding it stored proves the batch committed.
    pub(super) fn first_event_id(&self) -> Option<&str> {
        self.columns.ids.first().map(String::as_str)
    }
}

/// Stores `batch` on `channel` in one statement, numbering its events after the channel's head
/// and notifying listeners (delivered at commit, never after a rollback). Returns the channel's
/// new head when the batch had events.
///
/// A put whose value is already stored rewrites nothing: without a vacuum every needless row
/// version stays behind and slows each later read of that key. Deleted rows are found one key
/// at a time, as in [`super::backend::GET_MANY`] (the rows are ours alone under the channel
/// lock, so their ctids hold until the DELETE).
pub(super) async fn flush(conn: &mut PgConnection, channel: &str, batch: &Batch) -> Result<Option<i64>, sqlx::Error> {
    let mut put_keys = Vec::new();
    let mut put_values = Vec::new();
    let mut delete_keys = Vec::new();
    for (key, value) in &batch.writes {
        match value {
            Some(value) => {
                put_keys.push(key.as_str());
                put_values.push(value.as_slice());
            }
            None => delete_keys.push(key.as_str()),
        }
    }
    let columns = &batch.columns;
    let (head, _notified): (Option<i64>, Option<String>) = sqlx::query_as(
        "WITH upserted AS ( \
             INSERT INTO state (channel, key, value) \
             SELECT $1, w.key, w.value FROM UNNEST($2::text[], $3::bytea[]) AS w(key, value) \
             ON CONFLICT (channel, key) DO UPDATE SET value = EXCLUDED.value \
             WHERE state.value IS DISTINCT FROM EXCLUDED.value \
         ), deleted AS ( \
             DELETE FROM state WHERE ctid = ANY(ARRAY( \
                 SELECT s.ctid FROM UNNEST($4::text[]) AS d(key) \
                 CROSS JOIN LATERAL (SELECT ctid FROM state WHERE channel = $1 AND key = d.key LIMIT 1) AS s)) \
         ), inserted AS ( \
             INSERT INTO events (channel, channel_position, event_id, payload, asset_key, asset_kind, event_kind, \
                                 ts_micros, metadata) \
             SELECT $1, (SELECT COALESCE(max(channel_position), 0) FROM events WHERE channel = $1) + e.n, \
                    e.id, e.payload, e.asset_key, e.asset_kind, e.event_kind, e.ts_micros, e.metadata::jsonb \
             FROM UNNEST($5::text[], $6::bytea[], $7::text[], $8::int4[], $9::int4[], $10::int8[], $11::text[]) \
                  WITH ORDINALITY AS e(id, payload, asset_key, asset_kind, event_kind, ts_micros, metadata, n) \
             ORDER BY e.n \
             RETURNING channel_position \
         ), head AS ( \
             SELECT max(channel_position) AS position FROM inserted \
         ) \
         SELECT position, \
                CASE WHEN position IS NULL THEN NULL ELSE pg_notify($12, position::text || ':' || $1)::text END \
         FROM head",
    )
    .bind(channel)
    .bind(put_keys)
    .bind(put_values)
    .bind(delete_keys)
    .bind(&columns.ids)
    .bind(&batch.events)
    .bind(&columns.asset_keys)
    .bind(&columns.asset_kinds)
    .bind(&columns.event_kinds)
    .bind(&columns.ts_micros)
    .bind(&columns.metadata)
    .bind(COMMITTED)
    .fetch_one(conn)
    .await?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_columns() {
        use prost::Message;
        let event = orchestrator_proto::Event {
            id: "abc".to_owned(),
            asset_key: "k".to_owned(),
            asset_kind: 6,
            event_kind: 2,
            timestamp: Some(prost_types::Timestamp { seconds: 2, nanos: 5_000 }),
            metadata: [("reason".to_owned(), "a \"quoted\" text".to_owned())].into(),
            ..Default::default()
        };
        let columns = EventColumns::extract(&[event.encode_to_vec()]).expect("columns");
        assert_eq!(columns.ids, ["abc"]);
        assert_eq!(columns.ts_micros, [2_000_005]);
        assert_eq!(columns.metadata, [r#"{"reason":"a \"quoted\" text"}"#]);
        assert!(EventColumns::extract(&[vec![0xff]]).is_err());
        assert!(EventColumns::extract(&[orchestrator_proto::Event::default().encode_to_vec()]).is_err());
    }

    #[test]
    fn batches_keep_emission_order() {
        use prost::Message;
        let event = |id: &str| orchestrator_proto::Event { id: id.to_owned(), ..Default::default() }.encode_to_vec();
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        for ids in [["a", "b"], ["c", "d"]] {
            let events: Vec<Vec<u8>> = ids.iter().map(|id| event(id)).collect();
            let columns = EventColumns::extract(&events).expect("columns");
            batch.push_events(events, columns);
        }
        assert_eq!(batch.columns.ids, ["a", "b", "c", "d"]);
        assert_eq!(batch.first_event_id(), Some("a"));
        assert_eq!(batch.events.len(), 4);
    }
}
