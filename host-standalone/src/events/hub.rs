//! The process's one LISTEN connection, fanned out to every waiter.
//!
//! Waiters never poll the database for news: SubscribeToEvents streams watch their channel's
//! head (highest committed position), the relay watches a global change counter. Heads move on
//! the writers' NOTIFY (sent by the flush statement, delivered at commit), and at once for the
//! writers of this process. Notifications lost while the LISTEN connection was down are
//! recovered by a resync from the table once it is back (LISTEN first, then read, so nothing
//! falls in between).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// NOTIFY channel of the writers: payload = `<channel's new head>:<channel>`.
pub const COMMITTED: &str = "orchestrator_events_committed";

/// One committed, numbered event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NumberedEvent {
    /// Its position in the channel (1, 2, 3, ...), assigned at insert.
    #[sqlx(rename = "channel_position")]
    pub position: i64,
    /// The event id.
    pub event_id: String,
    /// The protobuf `orchestrator.Event`.
    pub payload: Vec<u8>,
}

/// Shared news about events, for every consumer in the process.
#[derive(Debug)]
pub struct EventHub {
    pool: PgPool,
    /// Channel → highest committed position known.
    heads: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Bumped whenever a head moves (the relay serves every channel).
    changes: watch::Sender<u64>,
    /// Set on shutdown: every head watch is dropped, which ends the streams waiting on them.
    closed: std::sync::atomic::AtomicBool,
}

/// The hub's background tasks; aborted when dropped.
#[derive(Debug)]
pub struct HubTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HubTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn is_pool_closed(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::PoolClosed)
}

/// Parses a COMMITTED payload.
fn parse_committed(payload: &str) -> Option<(i64, &str)> {
    let (position, channel) = payload.split_once(':')?;
    Some((position.parse().ok()?, channel))
}

impl EventHub {
    /// A hub over `pool`; nothing runs until [`EventHub::start`].
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            heads: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The pool the hub reads from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the listener.
    pub fn start(self: &Arc<Self>) -> HubTasks {
        let listener = tokio::spawn(Arc::clone(self).listen());
        HubTasks { tasks: vec![listener] }
    }

    fn head_sender(&self, channel: &str) -> watch::Sender<i64> {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            // A watch whose sender is already gone: its receivers see the hub closed.
            return watch::Sender::new(0);
        }
        heads.entry(channel.to_owned()).or_insert_with(|| watch::Sender::new(0)).clone()
    }

    /// Up to `limit` events of `channel` after position `after`, in position order: what the
    /// relay publishes and the streams send.
    pub async fn numbered_after(
        &self,
        channel: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<NumberedEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT channel_position, event_id, payload FROM events \
             WHERE channel = $1 AND channel_position > $2 ORDER BY channel_position LIMIT $3",
        )
        .bind(channel)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Watches the highest committed position of `channel`.
    pub fn head(&self, channel: &str) -> watch::Receiver<i64> {
        self.head_sender(channel).subscribe()
    }

    /// Watches the change counter: it moves whenever any channel's head does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records that `channel` has committed events up to `position`.
    pub fn advance(&self, channel: &str, position: i64) {
        let moved = self.head_sender(channel).send_if_modified(|head| {
            if position > *head {
                *head = position;
                true
            } else {
                false
            }
        });
        if moved {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Ends every wait on a channel head (SubscribeToEvents streams end), for shutdown.
    pub fn close(&self) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        heads.clear();
    }

    /// Every channel whose head is known, with its head.
    pub fn heads(&self) -> Vec<(String, i64)> {
        let heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        heads.iter().map(|(channel, head)| (channel.clone(), *head.borrow())).filter(|(_, h)| *h > 0).collect()
    }

    /// Reads every channel's head from the table: one index probe per channel (a loose scan of
    /// `events_channel_sequence`), whatever the number of events.
    async fn resync(&self) -> Result<(), sqlx::Error> {
        let heads: Vec<(String, i64)> = sqlx::query_as(
            "WITH RECURSIVE channels AS ( \
                 (SELECT channel FROM events ORDER BY channel LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT e.channel FROM events e WHERE e.channel > c.channel ORDER BY e.channel LIMIT 1) \
                 FROM channels c WHERE c.channel IS NOT NULL \
             ) \
             SELECT c.channel, (SELECT max(e.channel_position) FROM events e WHERE e.channel = c.channel) \
             FROM channels c WHERE c.channel IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        for (channel, position) in heads {
            self.advance(&channel, position);
        }
        Ok(())
    }

    async fn listen(self: Arc<Self>) {
        loop {
            match self.listen_once().await {
                Ok(()) => return,
                Err(err) if is_pool_closed(&err) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "event listener lost its connection; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn listen_once(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(COMMITTED).await?;
        self.resync().await?;
        loop {
            match listener.try_recv().await? {
                Some(notification) => match parse_committed(notification.payload()) {
                    Some((position, channel)) => self.advance(channel, position),
                    None => tracing::warn!(payload = notification.payload(), "malformed events notification"),
                },
                // The connection was lost and re-established: what was sent meanwhile is gone.
                None => self.resync().await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_payloads() {
        assert_eq!(parse_committed("12:mychannel"), Some((12, "mychannel")));
        assert_eq!(parse_committed("3:a:b"), Some((3, "a:b")));
        assert_eq!(parse_committed("x:mychannel"), None);
        assert_eq!(parse_committed("mychannel"), None);
    }
}
