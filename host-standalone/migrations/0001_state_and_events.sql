-- State of every channel as the logic sees it: an ordered key-value map per channel.
-- COLLATE "C" orders keys bytewise (UTF-8 byte order), as the logic, BTreeMap and Fabric do,
-- so range scans return keys in the logic's order.
CREATE TABLE state (
    channel text COLLATE "C" NOT NULL,
    key     text COLLATE "C" NOT NULL,
    value   bytea NOT NULL,
    PRIMARY KEY (channel, key)
);

-- Events outbox: written in the transaction of the call that emitted them.
-- position: insertion order (emission order within a transaction);
-- tx: the writing transaction, so a relay can deliver in (tx, position) order up to the
-- oldest transaction still running and never skip a row committed late.
CREATE TABLE events (
    position    bigserial PRIMARY KEY,
    tx          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    channel     text NOT NULL,
    event_id    text NOT NULL,
    payload     bytea NOT NULL, -- protobuf orchestrator.Event
    inserted_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_channel_position ON events (channel, position);
