-- Event positions are assigned when the events are inserted, no longer by a sequencer after
-- commit: write calls of a channel now run one after another under that channel's advisory
-- lock, so each INSERT numbers its rows after the channel's highest position. Event rows are
-- never updated again: without a vacuum, the old UPDATE left a dead row version (and a dead
-- entry in every index) per event, and the sequencer's scan of unnumbered rows grew with the
-- channel's whole history.

-- Rows the previous sequencer had not numbered yet, in its order.
WITH todo AS (
    SELECT e.position,
           COALESCE(s.last_position, 0) + row_number() OVER (PARTITION BY e.channel ORDER BY e.tx, e.position) AS n
    FROM events e
    LEFT JOIN channel_sequences s ON s.channel = e.channel
    WHERE e.channel_position IS NULL
)
UPDATE events e SET channel_position = todo.n FROM todo WHERE e.position = todo.position;

DROP TRIGGER events_written ON events;
DROP FUNCTION notify_events_written();
DROP INDEX events_unsequenced;
ALTER TABLE events ALTER COLUMN channel_position SET NOT NULL;
ALTER TABLE events DROP COLUMN tx;
-- The channel's head is the last entry of events_channel_sequence.
DROP TABLE channel_sequences;
-- Nothing reads events by (channel, global position) any more: channel order is
-- channel_position, QueryEvents walks (channel, ts_micros, position). One index less per event.
DROP INDEX events_channel_position;
