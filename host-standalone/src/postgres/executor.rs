//! How a call runs against PostgreSQL.
//!
//! - Read-only methods (per the component's method table) run at once, side by side, each in
//!   its own `REPEATABLE READ READ ONLY` snapshot.
//! - Write methods go to their channel's writer ([`super::writer`]): the write calls of a
//!   channel run one after another, several to a flush, so they never conflict and the outcome
//!   is that of the serial order, as on a ledger.
//!
//! Transient database failures (a lost connection before commit, a deadlock) re-run the call,
//! with a new transaction id and time, while the retry budget lasts.
//! Nothing partial is ever committed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use orchestrator_runtime::{Context, Invocation, Invoked, LogicError, LogicInfo, Runtime, RuntimeError, StateBackend};
use sqlx::{PgPool, Postgres, Transaction};

use super::backend::{DbFailure, PgBackend};
use super::writer::Writers;
use crate::events::EventHub;

/// Isolation of a call's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    /// Methods the component declares read-only: a consistent snapshot, no writes.
    ReadOnly,
    /// Everything else: run by the channel's writer, in the channel's serial order.
    ReadWrite,
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
    /// The database refused a statement of the call.
    #[error("{0}")]
    Database(String),
    /// The call was not applied, and sending it again is safe: the message names the cause.
    #[error("{0}")]
    NotApplied(String),
    /// The connection was lost while committing and the outcome could not be learnt.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The logic emitted bytes that are not an `orchestrator.Event`.
    #[error("OE0007: the logic emitted an invalid event: {0}")]
    InvalidEvent(String),
}

/// The result of a call and what it cost.
#[derive(Debug)]
pub struct CallOutcome {
    /// The response bytes, or why there are none.
    pub result: Result<Vec<u8>, CallError>,
    /// Times the logic ran (1 without retry).
    pub attempts: u32,
    /// Fuel consumed by the last run.
    pub fuel_consumed: u64,
    /// The component version that gave the answer (the last run's: a swap may happen between
    /// runs); `None` when no version answered (the call failed around the logic) or when the
    /// logic ran elsewhere (distributed mode).
    pub logic: Option<Arc<LogicInfo>>,
}

/// The identity and arguments of one call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Caller's MSP id.
    pub msp_id: String,
    /// Channel the call is scoped to.
    pub channel: String,
    /// gRPC method path without the leading slash.
    pub method: String,
    /// Protobuf request bytes.
    pub request: Bytes,
    /// Transaction kind.
    pub mode: TxMode,
}

/// Runs calls: reads on pooled snapshots, writes through the per-channel writers.
#[derive(Debug, Clone)]
pub struct Executor {
    pool: PgPool,
    runtime: Runtime,
    retry_budget: Duration,
    writers: Arc<Writers>,
}

/// Outcome of one run of the logic that did not produce an [`Invocation`].
pub(super) enum AttemptError {
    /// A transient failure: the call may run again.
    Retryable(CallError),
    /// Final.
    Final(CallError),
}

pub(super) fn from_db(err: &sqlx::Error) -> AttemptError {
    from_failure(DbFailure::from_sqlx(err))
}

pub(super) fn from_failure(failure: DbFailure) -> AttemptError {
    if failure.retryable() {
        AttemptError::Retryable(CallError::Database(failure.message))
    } else {
        AttemptError::Final(CallError::Database(failure.message))
    }
}

/// What a call that ran out of retry budget answers: the cause, and that it was not applied.
pub(super) fn budget_exhausted(budget: Duration, attempts: u32, last: &CallError) -> CallError {
    let cause = match last {
        CallError::Database(_) => "a transient database failure",
        _ => "a transient failure",
    };
    tracing::warn!(attempts, error = %last, "call abandoned: retry budget exhausted");
    CallError::NotApplied(format!(
        "the call was not applied: {cause} persisted for longer than the retry budget ({budget:?}, \
         ORCHESTRATOR_TX_RETRY_BUDGET) after {attempts} attempts; retrying is safe"
    ))
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

/// Runs the logic for `call` over `backend`, with a new transaction id and time for this run;
/// the backend comes back with the result (whatever it is) for the caller to end what it holds.
pub(super) async fn invoke_with<B: StateBackend + 'static>(
    runtime: &Runtime,
    call: &Call,
    backend: B,
) -> (B, Result<Invocation, AttemptError>) {
    let ctx = Context {
        msp_id: call.msp_id.clone(),
        channel: call.channel.clone(),
        tx_id: uuid::Uuid::new_v4().to_string(),
        tx_time_micros: now_micros(),
    };
    let Invoked { backend, outcome } = runtime.invoke(&ctx, &call.method, &call.request, backend).await;
    let outcome = outcome.map_err(|err| match err {
        RuntimeError::Backend(be) if be.retryable => AttemptError::Retryable(CallError::Database(be.message)),
        RuntimeError::Backend(be) => AttemptError::Final(CallError::Database(be.message)),
        RuntimeError::Trap(message) => AttemptError::Final(CallError::Trap(message)),
        RuntimeError::Component(message) | RuntimeError::Incompatible(message) => {
            AttemptError::Final(CallError::Component(message))
        }
        RuntimeError::Cache(err) => AttemptError::Final(CallError::Component(err.to_string())),
    });
    (backend, outcome)
}

/// Runs the logic for `call` over `tx`, which comes back with the result.
async fn invoke_in(
    runtime: &Runtime,
    pool: &PgPool,
    tx: Transaction<'static, Postgres>,
    call: &Call,
) -> (Transaction<'static, Postgres>, Result<Invocation, AttemptError>) {
    let (backend, invoked) = invoke_with(runtime, call, PgBackend::new(tx, call.channel.clone(), pool.clone())).await;
    let (tx, failure) = backend.into_parts();
    // A database failure during the call decides the outcome, whatever the logic made of it.
    if let Some(failure) = failure {
        return (tx, Err(from_failure(failure)));
    }
    (tx, invoked)
}

impl Executor {
    /// An executor over `pool`; writers announce new event heads to `hub` as soon as they commit.
    pub fn new(pool: PgPool, runtime: Runtime, retry_budget: Duration, hub: Arc<EventHub>) -> Self {
        let writers = Arc::new(Writers::new(&pool, runtime.clone(), retry_budget, hub));
        Self { pool, runtime, retry_budget, writers }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `call` to completion: committed, or rolled back with the reason.
    pub async fn run(&self, call: Call) -> CallOutcome {
        match call.mode {
            TxMode::ReadOnly => self.read(&call).await,
            TxMode::ReadWrite => self.writers.submit(call).await,
        }
    }

    async fn read(&self, call: &Call) -> CallOutcome {
        let started = Instant::now();
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            match self.read_attempt(call).await {
                Ok((response, fuel_consumed, logic)) => {
                    return CallOutcome { result: response, attempts, fuel_consumed, logic: Some(logic) };
                }
                Err(AttemptError::Retryable(err)) if started.elapsed() < self.retry_budget => {
                    tracing::debug!(method = %call.method, attempt = attempts, error = %err, "retrying read");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempts.min(10)))).await;
                }
                Err(AttemptError::Retryable(err)) => {
                    let err = budget_exhausted(self.retry_budget, attempts, &err);
                    return CallOutcome { result: Err(err), attempts, fuel_consumed: 0, logic: None };
                }
                Err(AttemptError::Final(err)) => {
                    return CallOutcome { result: Err(err), attempts, fuel_consumed: 0, logic: None };
                }
            }
        }
    }

    /// The answer, the fuel it took and the version that gave it.
    async fn read_attempt(
        &self,
        call: &Call,
    ) -> Result<(Result<Vec<u8>, CallError>, u64, Arc<LogicInfo>), AttemptError> {
        let tx = self
            .pool
            .begin_with(concat!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ", super::generic_plans!()))
            .await
            .map_err(|err| AttemptError::Retryable(CallError::Database(err.to_string())))?;
        let (tx, invoked) = invoke_in(&self.runtime, &self.pool, tx, call).await;
        // A read-only transaction has nothing to commit: ending it either way is the same.
        rollback(tx).await;
        let invocation = invoked?;
        if !invocation.writes.is_empty() || !invocation.events.is_empty() {
            return Err(AttemptError::Final(CallError::Component(format!(
                "OE0007: {} is declared read-only but wrote state or emitted events",
                call.method
            ))));
        }
        Ok((invocation.result.map_err(CallError::Logic), invocation.fuel_consumed, invocation.logic))
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::is_retryable_code;

    #[test]
    fn retryable_codes() {
        assert!(is_retryable_code(Some("40001")));
        assert!(is_retryable_code(Some("40P01")));
        assert!(!is_retryable_code(Some("23505")));
        assert!(!is_retryable_code(None));
    }
}
