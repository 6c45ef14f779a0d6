//! Numbers committed events per channel: 1, 2, 3, ... with no gap.
//!
//! Writers never take a lock shared with other writers (the reference locked the whole events
//! table, so every write on every channel serialized). Instead, once rows are committed, one
//! short READ COMMITTED transaction per channel and batch locks that channel's row of
//! `channel_sequences`, numbers the unnumbered rows in (transaction, emission) order and NOTIFYs
//! the new head. Only committed rows are numbered, so numbers appear in increasing order: a
//! reader that has seen position N never later finds a new row below N. Several orchestrator
//! processes may run sequencers; the row lock keeps them from numbering a channel twice.

use sqlx::PgPool;

use super::hub::SEQUENCED;

/// Most rows numbered in one transaction.
pub const BATCH: u64 = 10_000;

/// What one numbering transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    /// Rows numbered.
    pub count: u64,
    /// The channel's new head.
    pub last_position: i64,
}

/// Numbers up to `limit` committed rows of `channel`; `None` when there were none.
pub async fn number_batch(pool: &PgPool, channel: &str, limit: u64) -> Result<Option<Numbered>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO channel_sequences (channel) VALUES ($1) ON CONFLICT (channel) DO NOTHING")
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    let last: i64 = sqlx::query_scalar("SELECT last_position FROM channel_sequences WHERE channel = $1 FOR UPDATE")
        .bind(channel)
        .fetch_one(&mut *tx)
        .await?;
    // A new statement, hence a new snapshot: it sees whatever a concurrent sequencer numbered
    // before we got the lock.
    let (count, head): (i64, Option<i64>) = sqlx::query_as(
        "WITH todo AS ( \
             SELECT position, row_number() OVER (ORDER BY tx, position) AS n FROM events \
             WHERE channel = $1 AND channel_position IS NULL \
             ORDER BY tx, position LIMIT $3 \
         ), numbered AS ( \
             UPDATE events e SET channel_position = $2 + todo.n FROM todo \
             WHERE e.position = todo.position RETURNING e.channel_position \
         ) \
         SELECT count(*), max(channel_position) FROM numbered",
    )
    .bind(channel)
    .bind(last)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_one(&mut *tx)
    .await?;
    let Some(head) = head.filter(|_| count > 0) else {
        tx.rollback().await?;
        return Ok(None);
    };
    sqlx::query("UPDATE channel_sequences SET last_position = $2 WHERE channel = $1")
        .bind(channel)
        .bind(head)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(SEQUENCED).bind(format!("{head}:{channel}")).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(Numbered { count: u64::try_from(count).unwrap_or_default(), last_position: head }))
}
