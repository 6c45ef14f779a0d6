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

/// Only the `id` field of `orchestrator.Event`; prost skips every other field.
#[derive(Clone, PartialEq, prost::Message)]
struct EventId {
    #[prost(string, tag = "1")]
    id: String,
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
    let mut event_ids = Vec::with_capacity(events.len());
    for event in &events {
        let decoded = <EventId as prost::Message>::decode(event.as_slice())
            .map_err(|err| AttemptError::Final(CallError::InvalidEvent(err.to_string())))?;
        if decoded.id.is_empty() {
            return Err(AttemptError::Final(CallError::InvalidEvent("event without id".to_owned())));
        }
        event_ids.push(decoded.id);
    }
    sqlx::query(
        "WITH upserted AS ( \
             INSERT INTO state (channel, key, value) \
             SELECT $1, w.key, w.value FROM UNNEST($2::text[], $3::bytea[]) AS w(key, value) \
             ON CONFLICT (channel, key) DO UPDATE SET value = EXCLUDED.value \
         ), deleted AS ( \
             DELETE FROM state WHERE channel = $1 AND key = ANY($4::text[]) \
         ) \
         INSERT INTO events (channel, event_id, payload) \
         SELECT $1, e.id, e.payload \
         FROM UNNEST($5::text[], $6::bytea[]) WITH ORDINALITY AS e(id, payload, n) \
         ORDER BY e.n",
    )
    .bind(channel)
    .bind(put_keys)
    .bind(put_values)
    .bind(delete_keys)
    .bind(event_ids)
    .bind(events)
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
    fn event_id_is_field_one() {
        // field 1, wire type 2, length 3, "abc", then an unknown varint field 5 = 1
        let bytes = [0x0A, 3, b'a', b'b', b'c', 0x28, 1];
        let decoded = <EventId as prost::Message>::decode(&bytes[..]);
        assert_eq!(decoded.map(|e| e.id).ok(), Some("abc".to_owned()));
    }

    #[test]
    fn retryable_codes() {
        assert!(is_retryable_code(Some("40001")));
        assert!(is_retryable_code(Some("40P01")));
        assert!(!is_retryable_code(Some("23505")));
        assert!(!is_retryable_code(None));
    }
}
