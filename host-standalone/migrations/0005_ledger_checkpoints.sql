-- Distributed mode: the events of each channel come from the Fabric ledger, block by block.
-- `block` is the last block whose events are all in `events`; a listener resumes after it.
-- One row per channel, updated in the transaction that inserts the block's events, so the
-- checkpoint and the events can never disagree. `block` is not indexed: the update is HOT.
CREATE TABLE ledger_checkpoints (
    channel    text PRIMARY KEY,
    block      bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
