//! Events read from a Fabric ledger (distributed mode), appended to the same `events` table the
//! standalone writers fill: one database transaction per block, under the channel's advisory
//! lock, numbering the block's events after the channel's head. Positions therefore follow the
//! ledger's order, so every organization's facade numbers the same events alike, and the
//! checkpoint moves with the events, so a restart neither loses nor repeats a block.

use sqlx::PgPool;

use super::flush::{Batch, flush};
use super::writer::channel_lock_key;

/// Why a block could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The database failed; the block can be appended again.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The block's events cannot be stored (not `orchestrator.Event`s, or a database refusal).
    #[error("{0}")]
    Events(String),
}

/// The last block of `channel` whose events are stored, if any.
pub async fn checkpoint(pool: &PgPool, channel: &str) -> Result<Option<u64>, sqlx::Error> {
    let block: Option<i64> = sqlx::query_scalar("SELECT block FROM ledger_checkpoints WHERE channel = $1")
        .bind(channel)
        .fetch_optional(pool)
        .await?;
    Ok(block.and_then(|b| u64::try_from(b).ok()))
}

/// Appends the events of `block` (encoded `orchestrator.Event`s, in ledger order) to `channel`
/// and moves its checkpoint. A block at or below the checkpoint is skipped (another process on
/// the same database, or a replay after reconnecting): returns whether it was appended.
pub async fn append_block(pool: &PgPool, channel: &str, block: u64, events: Vec<Vec<u8>>) -> Result<bool, AppendError> {
    let block =
        i64::try_from(block).map_err(|_| AppendError::Events(format!("block number {block} is out of range")))?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(channel_lock_key(channel)).execute(&mut *tx).await?;
    let stored: Option<i64> = sqlx::query_scalar("SELECT block FROM ledger_checkpoints WHERE channel = $1")
        .bind(channel)
        .fetch_optional(&mut *tx)
        .await?;
    if stored.is_some_and(|stored| stored >= block) {
        return Ok(false);
    }
    let batch =
        Batch::of_events(events).map_err(|err| AppendError::Events(format!("OE0007: an invalid event: {err}")))?;
    flush(&mut tx, channel, &batch).await.map_err(|err| AppendError::Events(format!("database: {err}")))?;
    sqlx::query(
        "INSERT INTO ledger_checkpoints (channel, block) VALUES ($1, $2) \
         ON CONFLICT (channel) DO UPDATE SET block = EXCLUDED.block, updated_at = now()",
    )
    .bind(channel)
    .bind(block)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
