//! One call = one database transaction: begin, run the logic over the transaction's reads,
//! flush its writes and events, commit. Serialization failures restart the whole call (new
//! transaction, new transaction id and time) while the retry budget lasts. Nothing partial is
//! ever committed: any error rolls the attempt back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orchestrator_runtime::{Context, Invocation, LogicError, Runtime, RuntimeError};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Mutex;

use super::backend::{DbFailure, PgBackend, TxSlot};

/// Isolation of a call's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    /// Methods the component declares read-only: a consistent snapshot, no writes.
    ReadOnly,
    /// Everything else: SERIALIZABLE.
    ReadWrite,
}

impl TxMode {
    fn begin_statement(self) -> &'static str {
        match self {
            Self::ReadOnly => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Self::ReadWrite => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// Why a call failed (after retries, if any).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The logic refused the call; the message is the complete status message.
    #[error("{}", .0.message)]
    Logic(LogicError),
    /// The component trapped (panic, fuel or memory exhausted).
    #[error("{0}")]
    Trap(String),
    /// The component misbehaved (bad return, instantiation failure).
    #[error("{0}")]
    Component(String),
    /// The database failed (including serialization failures past the retry budget).
    #[error("{0}")]
    Database(String),
    /// The logic emitted bytes that are not an `orchestrator.Event`.
    #[error("OE0007: the logic emitted an invalid event: {0}")]
    InvalidEvent(String),
}

/// The result of a call and what it cost.
#[derive(Debug)]
pub struct CallOutcome {
    /// The response bytes, or why there are none.
    pub result: Result<Vec<u8>, CallError>,
    /// Transactions tried (1 without retry).
    pub attempts: u32,
    /// Fuel consumed by the last attempt.
    pub fuel_consumed: u64,
}

/// The identity and arguments of one call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Caller's MSP id.
    pub msp_id: &'a str,
    /// Channel the call is scoped to.
    pub channel: &'a str,
    /// gRPC method path without the leading slash.
    pub method: &'a str,
    /// Protobuf request bytes.
    pub request: &'a [u8],
    /// Transaction kind.
    pub mode: TxMode,
}

/// Runs calls in transactions of a pool, retrying serialization failures within a budget.
#[derive(Debug, Clone)]
pub struct Executor {
    pool: PgPool,
    retry_budget: Duration,
}

/// Outcome of one attempt.
enum AttemptError {
    /// A serialization failure or deadlock: the call may run again.
    Retryable(CallError),
    /// Final.
    Final(CallError),
}

/// The columns of the events table taken from the events' protobuf, one entry per event.
#[derive(Debug, Default)]
struct EventColumns {
    ids: Vec<String>,
    asset_keys: Vec<String>,
    asset_kinds: Vec<i32>,
    event_kinds: Vec<i32>,
    ts_micros: Vec<i64>,
    /// The metadata map as a JSON object.
    metadata: Vec<String>,
}

impl EventColumns {
    fn extract(events: &[Vec<u8>]) -> Result<Self, String> {
        let mut columns = EventColumns::default();
        for bytes in events {
            let event = <orchestrator_proto::Event as prost::Message>::decode(bytes.as_slice())
                .map_err(|err| err.to_string())?;
            if event.id.is_empty() {
                return Err("event without id".to_owned());
            }
            let ts = event.timestamp.unwrap_or_default();
            columns.ts_micros.push(ts.seconds.saturating_mul(1_000_000).saturating_add(i64::from(ts.nanos) / 1_000));
            columns.metadata.push(serde_json::to_string(&event.metadata).map_err(|err| err.to_string())?);
            columns.ids.push(event.id);
            columns.asset_keys.push(event.asset_key);
            columns.asset_kinds.push(event.asset_kind);
            columns.event_kinds.push(event.event_kind);
        }
        Ok(columns)
    }
}

fn from_db(err: &sqlx::Error) -> AttemptError {
    let failure = DbFailure::from_sqlx(err);
    from_failure(failure)
}

fn from_failure(failure: DbFailure) -> AttemptError {
    if failure.retryable() {
        AttemptError::Retryable(CallError::Database(failure.message))
    } else {
        AttemptError::Final(CallError::Database(failure.message))
    }
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)).unwrap_or(0)
}

async fn rollback(tx: Transaction<'static, Postgres>) {
    // A failed rollback leaves nothing behind either: the connection is reset by the pool.
    if let Err(err) = tx.rollback().await {
        tracing::debug!(error = %err, "rollback failed");
    }
}

impl Executor {
    /// An executor over `pool`.
    pub fn new(pool: PgPool, retry_budget: Duration) -> Self {
        Self { pool, retry_budget }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `call` to completion: committed, or rolled back with the reason.
    pub async fn run(&self, runtime: &Runtime, call: Call<'_>) -> CallOutcome {
        let started = Instant::now();
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            match self.attempt(runtime, call).await {
                Ok((response, fuel_consumed)) => {
                    return CallOutcome { result: Ok(response), attempts, fuel_consumed };
                }
                Err(AttemptError::Retryable(err)) if started.elapsed() < self.retry_budget => {
                    tracing::debug!(method = call.method, attempt = attempts, error = %err, "retrying call");
                    // A tiny jittered pause spreads colliding writers apart; the reference
                    // retries at once, which livelocks more easily under contention.
                    let cap_micros = 200u128 * u128::from(attempts.min(20));
                    let jitter = uuid::Uuid::new_v4().as_u128() % cap_micros.max(1);
                    tokio::time::sleep(Duration::from_micros(u64::try_from(jitter).unwrap_or_default())).await;
                }
                Err(AttemptError::Retryable(err) | AttemptError::Final(err)) => {
                    return CallOutcome { result: Err(err), attempts, fuel_consumed: 0 };
                }
            }
        }
    }

    async fn attempt(&self, runtime: &Runtime, call: Call<'_>) -> Result<(Vec<u8>, u64), AttemptError> {
        let tx = self.pool.begin_with(call.mode.begin_statement()).await.map_err(|err| from_db(&err))?;
        let slot = Arc::new(Mutex::new(TxSlot { tx: Some(tx), failure: None }));
        let ctx = Context {
            msp_id: call.msp_id.to_owned(),
            channel: call.channel.to_owned(),
            tx_id: uuid::Uuid::new_v4().to_string(),
            tx_time_micros: now_micros(),
        };
        let backend = PgBackend::new(Arc::clone(&slot), call.channel.to_owned());
        let invoked = runtime.invoke(&ctx, call.method, call.request, Box::new(backend)).await;

        let (tx, failure) = {
            let mut slot = slot.lock().await;
            (slot.tx.take(), slot.failure.take())
        };
        let Some(mut tx) = tx else {
            return Err(AttemptError::Final(CallError::Database(
                "the call's database transaction was lost".to_owned(),
            )));
        };
        // A database failure during the call decides the outcome, whatever the logic made of it.
        if let Some(failure) = failure {
            rollback(tx).await;
            return Err(from_failure(failure));
        }
        let invocation: Invocation = match invoked {
            Ok(invocation) => invocation,
            Err(err) => {
                rollback(tx).await;
                return Err(match err {
                    RuntimeError::Backend(be) if be.retryable => {
                        AttemptError::Retryable(CallError::Database(be.message))
                    }
                    RuntimeError::Backend(be) => AttemptError::Final(CallError::Database(be.message)),
                    RuntimeError::Trap(message) => AttemptError::Final(CallError::Trap(message)),
                    RuntimeError::Component(message) => AttemptError::Final(CallError::Component(message)),
                    RuntimeError::Cache(err) => AttemptError::Final(CallError::Component(err.to_string())),
                });
            }
        };
        let response = match invocation.result {
            Ok(response) => response,
            Err(logic) => {
                rollback(tx).await;
                return Err(AttemptError::Final(CallError::Logic(logic)));
            }
        };
        if let Err(err) = flush(&mut tx, call.channel, invocation.writes, invocation.events).await {
            rollback(tx).await;
            return Err(err);
        }
        tx.commit().await.map_err(|err| from_db(&err))?;
        Ok((response, invocation.fuel_consumed))
    }
}

/// Writes the call's state changes and events in one statement.
async fn flush(
    tx: &mut Transaction<'static, Postgres>,
    channel: &str,
    writes: Vec<(String, Option<Vec<u8>>)>,
    events: Vec<Vec<u8>>,
) -> Result<(), AttemptError> {
    if writes.is_empty() && events.is_empty() {
        return Ok(());
    }
    // Last write of a key wins (the runtime already sends one per key; this keeps the upsert
    // valid even if it did not).
    let writes: BTreeMap<String, Option<Vec<u8>>> = writes.into_iter().collect();
    let mut put_keys = Vec::new();
    let mut put_values = Vec::new();
    let mut delete_keys = Vec::new();
    for (key, value) in writes {
        match value {
            Some(value) => {
                put_keys.push(key);
                put_values.push(value);
            }
            None => delete_keys.push(key),
        }
    }
    let columns = EventColumns::extract(&events).map_err(|err| AttemptError::Final(CallError::InvalidEvent(err)))?;
    sqlx::query(
        "WITH upserted AS ( \
             INSERT INTO state (channel, key, value) \
             SELECT $1, w.key, w.value FROM UNNEST($2::text[], $3::bytea[]) AS w(key, value) \
             ON CONFLICT (channel, key) DO UPDATE SET value = EXCLUDED.value \
         ), deleted AS ( \
             DELETE FROM state WHERE channel = $1 AND key = ANY($4::text[]) \
         ) \
         INSERT INTO events (channel, event_id, payload, asset_key, asset_kind, event_kind, ts_micros, metadata) \
         SELECT $1, e.id, e.payload, e.asset_key, e.asset_kind, e.event_kind, e.ts_micros, e.metadata::jsonb \
         FROM UNNEST($5::text[], $6::bytea[], $7::text[], $8::int4[], $9::int4[], $10::int8[], $11::text[]) \
              WITH ORDINALITY AS e(id, payload, asset_key, asset_kind, event_kind, ts_micros, metadata, n) \
         ORDER BY e.n",
    )
    .bind(channel)
    .bind(put_keys)
    .bind(put_values)
    .bind(delete_keys)
    .bind(columns.ids)
    .bind(events)
    .bind(columns.asset_keys)
    .bind(columns.asset_kinds)
    .bind(columns.event_kinds)
    .bind(columns.ts_micros)
    .bind(columns.metadata)
    .execute(&mut **tx)
    .await
    .map_err(|err| from_db(&err))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::backend::is_retryable_code;
    use super::*;

    #[test]
    fn event_columns() {
        use prost::Message;
        let event = orchestrator_proto::Event {
            id: "abc".to_owned(),
            asset_key: "k".to_owned(),
            asset_kind: 6,
            event_kind: 2,
            timestamp: Some(prost_types::Timestamp { seconds: 2, nanos: 5_000 }),
            metadata: [("reason".to_owned(), "a \"quoted\" text".to_owned())].into(),
            ..Default::default()
        };
        let columns = EventColumns::extract(&[event.encode_to_vec()]).expect("columns");
        assert_eq!(columns.ids, ["abc"]);
        assert_eq!(columns.ts_micros, [2_000_005]);
        assert_eq!(columns.metadata, [r#"{"reason":"a \"quoted\" text"}"#]);
        assert!(EventColumns::extract(&[vec![0xff]]).is_err());
        assert!(EventColumns::extract(&[orchestrator_proto::Event::default().encode_to_vec()]).is_err());
    }

    #[test]
    fn retryable_codes() {
        assert!(is_retryable_code(Some("40001")));
        assert!(is_retryable_code(Some("40P01")));
        assert!(!is_retryable_code(Some("23505")));
        assert!(!is_retryable_code(None));
    }
}
