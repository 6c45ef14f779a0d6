//! The process's one LISTEN connection, fanned out to every waiter.
//!
//! Waiters never poll the database for news: SubscribeToEvents streams watch their channel's
//! head (highest numbered position), the relay watches a global change counter, and the
//! sequencer is handed the channels with committed but unnumbered rows. Notifications lost
//! while the LISTEN connection was down are recovered by a resync from the tables once it is
//! back (LISTEN first, then read, so nothing falls in between).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::sequencer;

/// NOTIFY channel of the outbox trigger: payload = the channel of committed events.
pub const WRITTEN: &str = "orchestrator_events_written";
/// NOTIFY channel of the sequencer: payload = `<last position>:<channel>`.
pub const SEQUENCED: &str = "orchestrator_events_sequenced";

/// One committed, numbered event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NumberedEvent {
    /// Its position in the channel (1, 2, 3, ...).
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
    /// Channel → highest numbered position known.
    heads: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Bumped whenever a head moves (the relay serves every channel).
    changes: watch::Sender<u64>,
    /// Channels the sequencer must look at.
    dirty: Mutex<BTreeSet<String>>,
    dirty_notify: Notify,
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

/// Parses a SEQUENCED payload.
fn parse_sequenced(payload: &str) -> Option<(i64, &str)> {
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
            dirty: Mutex::new(BTreeSet::new()),
            dirty_notify: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The pool the hub reads from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the listener and the sequencer.
    pub fn start(self: &Arc<Self>) -> HubTasks {
        let listener = tokio::spawn(Arc::clone(self).listen());
        let sequencer = tokio::spawn(Arc::clone(self).sequence());
        HubTasks { tasks: vec![listener, sequencer] }
    }

    fn head_sender(&self, channel: &str) -> watch::Sender<i64> {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            // A watch whose sender is already gone: its receivers see the hub closed.
            return watch::Sender::new(0);
        }
        heads.entry(channel.to_owned()).or_insert_with(|| watch::Sender::new(0)).clone()
    }

    /// Up to `limit` events of `channel` numbered after `after`, in position order: what the
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

    /// Watches the highest numbered position of `channel`.
    pub fn head(&self, channel: &str) -> watch::Receiver<i64> {
        self.head_sender(channel).subscribe()
    }

    /// Watches the change counter: it moves whenever any channel's head does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records that `channel` is numbered up to `position`.
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

    /// Hands `channel` to the sequencer.
    pub fn mark_dirty(&self, channel: &str) {
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner).insert(channel.to_owned());
        self.dirty_notify.notify_one();
    }

    /// Reads the tables: channels with unnumbered rows, and every channel's head.
    async fn resync(&self) -> Result<(), sqlx::Error> {
        let unsequenced: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT channel FROM events WHERE channel_position IS NULL")
                .fetch_all(&self.pool)
                .await?;
        for channel in unsequenced {
            self.mark_dirty(&channel);
        }
        let heads: Vec<(String, i64)> =
            sqlx::query_as("SELECT channel, last_position FROM channel_sequences").fetch_all(&self.pool).await?;
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
        listener.listen_all([WRITTEN, SEQUENCED]).await?;
        self.resync().await?;
        loop {
            match listener.try_recv().await? {
                Some(notification) => match notification.channel() {
                    WRITTEN => self.mark_dirty(notification.payload()),
                    SEQUENCED => match parse_sequenced(notification.payload()) {
                        Some((position, channel)) => self.advance(channel, position),
                        None => tracing::warn!(payload = notification.payload(), "malformed sequencer notification"),
                    },
                    _ => {}
                },
                // The connection was lost and re-established: what was sent meanwhile is gone.
                None => self.resync().await?,
            }
        }
    }

    async fn sequence(self: Arc<Self>) {
        loop {
            let channels = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
            if channels.is_empty() {
                self.dirty_notify.notified().await;
                continue;
            }
            for channel in channels {
                loop {
                    match sequencer::number_batch(&self.pool, &channel, sequencer::BATCH).await {
                        Ok(Some(numbered)) => {
                            self.advance(&channel, numbered.last_position);
                            if numbered.count < sequencer::BATCH {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(err) if is_pool_closed(&err) => return,
                        Err(err) => {
                            tracing::warn!(channel = %channel, error = %err, "numbering events failed; will retry");
                            self.mark_dirty(&channel);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequenced_payloads() {
        assert_eq!(parse_sequenced("12:mychannel"), Some((12, "mychannel")));
        assert_eq!(parse_sequenced("3:a:b"), Some((3, "a:b")));
        assert_eq!(parse_sequenced("x:mychannel"), None);
        assert_eq!(parse_sequenced("mychannel"), None);
    }
}
