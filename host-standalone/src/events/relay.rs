//! Publishes numbered events to RabbitMQ, in position order per channel, at least once.
//!
//! The broker is a consumer of the outbox, not part of a call: requests commit whatever the
//! broker does, and the relay catches up from `relay_progress` (the last position the broker
//! confirmed, per channel) whenever it (re)connects. Publishing is pipelined: up to `window`
//! messages are unconfirmed at once, and progress only moves past confirmed positions, so a
//! crash or an outage republishes the unconfirmed tail (consumers deduplicate by message id =
//! event id) and never skips an event.
//!
//! One process relays at a time (a session advisory lock), so replicas do not interleave.
//!
//! A broker that stops answering without closing the connection (stalled, half-open) is caught
//! by the confirm timeout while events wait to be confirmed, and by the AMQP heartbeat while
//! the relay is idle: either ends the session, so health says NOT_SERVING and the relay
//! reconnects, instead of waiting for the kernel's TCP timeouts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use sqlx::{Connection as _, PgConnection};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::EventHub;
use super::hub::NumberedEvent;
use super::json::{EventJson, JsonError};
use super::topology::Topology;

/// Health service name reporting the relay (the API itself stays SERVING during an outage).
pub const HEALTH_SERVICE: &str = "orchestrator.EventRelay";

/// Advisory lock key held by the one relaying process.
const RELAY_LOCK: i64 = 0x6f72_6368_7265_6c79; // "orchrely"

/// How often an idle relay checks its connections (and re-reads progress, in case a
/// notification was missed).
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// AMQP URL of the broker.
    pub url: String,
    /// Events read per query.
    pub batch: usize,
    /// Most unconfirmed messages in flight.
    pub window: usize,
    /// Pause before reconnecting after a failure.
    pub reconnect_delay: Duration,
    /// Longest wait for the broker: a publish unconfirmed for this long, or a connection
    /// not set up within it, ends the session (NOT_SERVING, then a new connection).
    pub confirm_timeout: Duration,
    /// AMQP heartbeat interval asked of the broker, unless the URL sets `heartbeat` itself;
    /// detects a dead connection while nothing is being published.
    pub heartbeat: Duration,
}

/// Default of [`RelayConfig::confirm_timeout`].
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`RelayConfig::heartbeat`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Longest wait for a courteous close of a connection that is being given up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            batch: 500,
            window: 1_000,
            reconnect_delay: Duration::from_secs(1),
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }
}

/// Counters of the relay, for logs, health and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Messages handed to the broker.
    pub published: AtomicU64,
    /// Messages the broker confirmed.
    pub confirmed: AtomicU64,
    /// Confirmed messages the broker returned as unroutable (no queue bound to the channel).
    pub returned: AtomicU64,
    /// Stored events that could not be encoded (skipped; never expected).
    pub skipped: AtomicU64,
    /// Successful broker connections.
    pub connects: AtomicU64,
    /// Whether the relay is connected now.
    pub connected: AtomicBool,
    /// The last broker-confirmed position of each channel, as recorded.
    confirmed_positions: Mutex<HashMap<String, i64>>,
}

impl RelayStats {
    fn set_confirmed(&self, channel: &str, position: i64) {
        let mut positions = self.confirmed_positions.lock().unwrap_or_else(PoisonError::into_inner);
        let known = positions.entry(channel.to_owned()).or_default();
        *known = (*known).max(position);
    }

    /// How many committed events of each channel of `heads` (channel, last position) the broker
    /// has not confirmed yet.
    pub fn lag(&self, heads: &[(String, i64)]) -> Vec<(String, i64)> {
        let positions = self.confirmed_positions.lock().unwrap_or_else(PoisonError::into_inner);
        heads
            .iter()
            .map(|(channel, head)| (channel.clone(), (head - positions.get(channel).copied().unwrap_or(0)).max(0)))
            .collect()
    }
}

/// Why a relay session ended.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker connection lost")]
    BrokerLost,
    #[error("broker refused event {position} of channel {channel}")]
    Nacked { channel: String, position: i64 },
    #[error("broker did not confirm event {position} of channel {channel} within {timeout:?}")]
    Unconfirmed { channel: String, position: i64, timeout: Duration },
    #[error("broker did not answer within {timeout:?} while {doing}")]
    Stalled { doing: &'static str, timeout: Duration },
    #[error("invalid AMQP URL: {0}")]
    Url(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The relay task.
#[derive(Debug)]
pub struct Relay {
    hub: Arc<EventHub>,
    config: RelayConfig,
    topology: Topology,
    json: EventJson,
    stats: Arc<RelayStats>,
    health: Option<HealthReporter>,
}

impl Relay {
    /// A relay over the hub's pool.
    pub fn new(
        hub: Arc<EventHub>,
        config: RelayConfig,
        topology: Topology,
        health: Option<HealthReporter>,
    ) -> Result<Self, JsonError> {
        Ok(Self {
            hub,
            config,
            topology,
            json: EventJson::new(orchestrator_proto::FILE_DESCRIPTOR_SET)?,
            stats: Arc::new(RelayStats::default()),
            health,
        })
    }

    /// The relay's counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    async fn set_health(&self, status: ServingStatus) {
        if let Some(health) = &self.health {
            health.set_service_status(HEALTH_SERVICE, status).await;
        }
    }

    /// Relays until the database pool closes, reconnecting after every failure.
    pub async fn run(self) {
        self.set_health(ServingStatus::NotServing).await;
        // Failed attempts since the relay was last connected: the first one of an outage is a
        // warning, the retries only every minute or so.
        let mut failures: u32 = 0;
        loop {
            match self.session().await {
                Ok(()) => return,
                Err(RelayError::Database(sqlx::Error::PoolClosed)) => return,
                Err(err) => {
                    if self.stats.connected.swap(false, Ordering::Relaxed) {
                        failures = 0;
                    }
                    failures = failures.saturating_add(1);
                    self.set_health(ServingStatus::NotServing).await;
                    let every = (60_000 / self.config.reconnect_delay.as_millis().max(1)).max(1);
                    if failures == 1 || u128::from(failures) % every == 0 {
                        tracing::warn!(
                            error = %err,
                            attempts = failures,
                            retry_in_ms = self.config.reconnect_delay.as_millis(),
                            "event relay degraded: requests still succeed, events wait in the outbox"
                        );
                    } else {
                        tracing::debug!(error = %err, attempts = failures, "event relay still degraded");
                    }
                    tokio::time::sleep(self.config.reconnect_delay).await;
                }
            }
        }
    }

    /// Waits until this process holds the relay lock; the lock lives as long as the connection.
    async fn lock(&self) -> Result<PgConnection, RelayError> {
        let mut waiting_logged = false;
        loop {
            let mut conn = self.hub.pool().acquire().await?.detach();
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(RELAY_LOCK).fetch_one(&mut conn).await?;
            if locked {
                return Ok(conn);
            }
            conn.close().await.ok();
            if !waiting_logged {
                tracing::info!("another orchestrator process is relaying events; standing by");
                waiting_logged = true;
            }
            tokio::time::sleep(IDLE_CHECK).await;
        }
    }

    /// A connection and a confirming channel with the topology declared, within the timeout:
    /// a broker that accepts the TCP connection and then says nothing must not hold the relay.
    async fn open(&self) -> Result<(Connection, lapin::Channel), RelayError> {
        let uri = broker_uri(&self.config.url, self.config.heartbeat)?;
        let timeout = self.config.confirm_timeout;
        let connection = tokio::time::timeout(timeout, Connection::connect_uri(uri, ConnectionProperties::default()))
            .await
            .map_err(|_| RelayError::Stalled { doing: "connecting", timeout })??;
        let setup = async {
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            self.topology.declare(&channel).await?;
            Ok::<_, RelayError>(channel)
        };
        match tokio::time::timeout(timeout, setup).await {
            Ok(Ok(channel)) => Ok((connection, channel)),
            Ok(Err(err)) => {
                close(&connection, "relay setup failed").await;
                Err(err)
            }
            Err(_) => {
                close(&connection, "relay setup stalled").await;
                Err(RelayError::Stalled { doing: "declaring the exchange and queues", timeout })
            }
        }
    }

    async fn session(&self) -> Result<(), RelayError> {
        let mut lock = self.lock().await?;
        let (connection, channel) = self.open().await?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats.connected.store(true, Ordering::Relaxed);
        self.set_health(ServingStatus::Serving).await;
        tracing::info!(
            exchange = %self.topology.exchange,
            queues = self.topology.queues.len(),
            "event relay connected to the broker"
        );
        let mut changes = self.hub.changes();
        let result = async {
            loop {
                changes.borrow_and_update();
                self.drain(&channel).await?;
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return Ok(()) },
                    () = tokio::time::sleep(IDLE_CHECK) => {
                        if !channel.status().connected() {
                            return Err(RelayError::BrokerLost);
                        }
                        // The lock connection must still be alive, else another process may relay.
                        sqlx::query("SELECT 1").execute(&mut lock).await?;
                    }
                }
            }
        }
        .await;
        if result.is_err() {
            // Say so before the (bounded) close: health must not lag behind a stalled broker.
            self.set_health(ServingStatus::NotServing).await;
        }
        close(&connection, "relay stopping").await;
        lock.close().await.ok();
        result
    }

    /// Publishes every numbered event not yet confirmed, channel by channel.
    async fn drain(&self, amqp: &lapin::Channel) -> Result<(), RelayError> {
        // Heads come from the hub (resynced from the table at start); progress is one row per
        // channel.
        let confirmed: HashMap<String, i64> =
            sqlx::query_as::<_, (String, i64)>("SELECT channel, confirmed_position FROM relay_progress")
                .fetch_all(self.hub.pool())
                .await?
                .into_iter()
                .collect();
        for (channel, position) in &confirmed {
            self.stats.set_confirmed(channel, *position);
        }
        let mut heads = self.hub.heads();
        heads.sort();
        for (channel, head) in heads {
            let confirmed = confirmed.get(&channel).copied().unwrap_or(0);
            if head > confirmed {
                self.relay_channel(amqp, &channel, confirmed).await?;
            }
        }
        Ok(())
    }

    async fn relay_channel(&self, amqp: &lapin::Channel, channel: &str, mut confirmed: i64) -> Result<(), RelayError> {
        let batch = self.config.batch.max(1);
        let window = self.config.window.max(1);
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut recorded = confirmed;
        let mut published_up_to = confirmed;
        loop {
            let rows =
                self.hub.numbered_after(channel, published_up_to, i64::try_from(batch).unwrap_or(i64::MAX)).await?;
            let fetched = rows.len();
            for NumberedEvent { position, event_id, payload } in rows {
                published_up_to = position;
                let confirm = match self.json.encode(&payload) {
                    Ok(body) => {
                        let properties = BasicProperties::default()
                            .with_content_type("application/json".into())
                            .with_delivery_mode(2)
                            .with_message_id(event_id.as_str().into());
                        let timeout = self.config.confirm_timeout;
                        let publish = amqp.basic_publish(
                            self.topology.exchange.as_str().into(),
                            channel.into(),
                            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                            &body,
                            properties,
                        );
                        let confirm = tokio::time::timeout(timeout, publish)
                            .await
                            .map_err(|_| RelayError::Stalled { doing: "publishing", timeout })??;
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        Some(confirm)
                    }
                    Err(err) => {
                        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(channel, position, event_id = %event_id, error = %err, "event skipped by the relay");
                        None
                    }
                };
                in_flight.push_back(InFlight { position, confirm, published: Instant::now() });
                while in_flight.len() >= window {
                    if let Some(item) = in_flight.pop_front() {
                        confirmed = self.settle(channel, item).await?;
                    }
                }
            }
            if confirmed > recorded {
                self.record(channel, confirmed).await?;
                recorded = confirmed;
            }
            if fetched < batch {
                break;
            }
        }
        while let Some(item) = in_flight.pop_front() {
            confirmed = self.settle(channel, item).await?;
        }
        if confirmed > recorded {
            self.record(channel, confirmed).await?;
        }
        Ok(())
    }

    async fn settle(&self, channel: &str, item: InFlight) -> Result<i64, RelayError> {
        let InFlight { position, confirm, published } = item;
        let Some(confirm) = confirm else { return Ok(position) };
        let timeout = self.config.confirm_timeout;
        let confirmation = tokio::time::timeout_at((published + timeout).into(), confirm)
            .await
            .map_err(|_| RelayError::Unconfirmed { channel: channel.to_owned(), position, timeout })??;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(returned)) => {
                self.stats.returned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    channel,
                    position,
                    reply = %returned.reply_text,
                    "event unroutable: no queue is bound to this channel"
                );
            }
            Confirmation::Nack(_) => return Err(RelayError::Nacked { channel: channel.to_owned(), position }),
        }
        self.stats.confirmed.fetch_add(1, Ordering::Relaxed);
        Ok(position)
    }

    async fn record(&self, channel: &str, confirmed: i64) -> Result<(), RelayError> {
        sqlx::query(
            "INSERT INTO relay_progress (channel, confirmed_position) VALUES ($1, $2) \
             ON CONFLICT (channel) DO UPDATE SET confirmed_position = GREATEST(relay_progress.confirmed_position, EXCLUDED.confirmed_position), updated_at = now()",
        )
        .bind(channel)
        .bind(confirmed)
        .execute(self.hub.pool())
        .await?;
        self.stats.set_confirmed(channel, confirmed);
        Ok(())
    }
}

/// The broker URL with `heartbeat` (whole seconds, at least 1), unless the URL chose its own.
fn broker_uri(url: &str, heartbeat: Duration) -> Result<AMQPUri, RelayError> {
    let mut uri: AMQPUri = url.parse().map_err(RelayError::Url)?;
    if uri.query.heartbeat.is_none() {
        let seconds = heartbeat.as_secs().clamp(1, u64::from(u16::MAX));
        uri.query.heartbeat = u16::try_from(seconds).ok();
    }
    Ok(uri)
}

/// A published event waiting for the broker's confirm (`None`: skipped, nothing to wait for).
#[derive(Debug)]
struct InFlight {
    position: i64,
    confirm: Option<PublisherConfirm>,
    published: Instant,
}

/// Closes a connection courteously if the broker answers soon, else drops it.
async fn close(connection: &Connection, reason: &str) {
    if tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await.is_err() {
        tracing::debug!("the broker did not answer the close; connection dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_asked_unless_the_url_sets_it() {
        let uri = broker_uri("amqp://guest:guest@127.0.0.1:5672/%2f", Duration::from_secs(7)).expect("url");
        assert_eq!(uri.query.heartbeat, Some(7));
        let uri = broker_uri("amqp://127.0.0.1:5672/%2f?heartbeat=42", Duration::from_secs(7)).expect("url");
        assert_eq!(uri.query.heartbeat, Some(42));
        let uri = broker_uri("amqp://127.0.0.1/%2f", Duration::from_millis(10)).expect("url");
        assert_eq!(uri.query.heartbeat, Some(1), "0 would turn heartbeats off");
        assert!(matches!(broker_uri("http://x", Duration::from_secs(1)), Err(RelayError::Url(_))));
    }
}
