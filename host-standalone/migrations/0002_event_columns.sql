-- What QueryEvents filters and sorts on, extracted from each event at insert so queries never
-- decode payloads. ts_micros: the event timestamp (the transaction time) in microseconds;
-- metadata: the event's string map, for JSON containment filters.
ALTER TABLE events
    ADD COLUMN asset_key  text   NOT NULL DEFAULT '',
    ADD COLUMN asset_kind int    NOT NULL DEFAULT 0,
    ADD COLUMN event_kind int    NOT NULL DEFAULT 0,
    ADD COLUMN ts_micros  bigint NOT NULL DEFAULT 0,
    ADD COLUMN metadata   jsonb  NOT NULL DEFAULT '{}';

-- QueryEvents pages walk (channel, ts_micros, position) in either direction; a filter on one
-- asset reads only that asset's rows.
CREATE INDEX events_channel_time ON events (channel, ts_micros, position);
CREATE INDEX events_channel_asset ON events (channel, asset_key, ts_micros, position);
