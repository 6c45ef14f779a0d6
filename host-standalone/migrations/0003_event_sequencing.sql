-- Per-channel, gap-free event positions, assigned after commit.
--
-- Writers only INSERT into events (global `position` from a sequence: no lock shared between
-- channels, no conflict between writers). A sequencer then numbers the committed rows of a
-- channel 1, 2, 3, ... in (tx, position) order, under a lock on that channel's row of
-- channel_sequences only. A row is numbered once it is committed, so a number once visible is
-- never followed by a smaller one: readers (relay, SubscribeToEvents) walk channel_position and
-- can never skip an event that commits late.
ALTER TABLE events ADD COLUMN channel_position bigint;

CREATE UNIQUE INDEX events_channel_sequence ON events (channel, channel_position);
-- The sequencer's work list: rows not numbered yet (small; emptied as soon as they commit).
CREATE INDEX events_unsequenced ON events (channel, tx, position) WHERE channel_position IS NULL;
CREATE INDEX events_channel_event_id ON events (channel, event_id);

-- Last position handed out per channel.
CREATE TABLE channel_sequences (
    channel       text PRIMARY KEY,
    last_position bigint NOT NULL DEFAULT 0
);

-- Last event position of each channel confirmed by the broker (the relay's resume point).
CREATE TABLE relay_progress (
    channel            text PRIMARY KEY,
    confirmed_position bigint NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Wake the sequencer when events commit: NOTIFY is delivered only on commit, never after a
-- rollback. One notification per channel and transaction (identical payloads are merged).
CREATE FUNCTION notify_events_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orchestrator_events_written', channel) FROM (SELECT DISTINCT channel FROM new_rows) AS c;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_written AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_written();
