//! The committed-state reads of one call, inside that call's database transaction.
//!
//! The backend owns the transaction for the length of the call; the runtime hands the backend
//! back afterwards, and the executor takes the transaction (and the call's first database
//! failure) out of it to end it.

use std::collections::HashMap;

use orchestrator_runtime::{BackendError, BoxFuture, StateBackend};
use sqlx::{Postgres, Transaction};

use orchestrator_runtime::DEFAULT_SCAN_LIMIT;

/// One index probe per key, whatever the planner believes. `key = ANY($2)` lets it choose to
/// walk the whole channel and filter (it did, with no statistics: a 100,000-row scan per
/// lookup); a `LIMIT 1` lateral subquery cannot be flattened into a join, so each key is looked
/// up on its own.
pub const GET_MANY: &str = "SELECT k.key, s.value FROM UNNEST($2::text[]) AS k(key) \
     CROSS JOIN LATERAL (SELECT value FROM state WHERE channel = $1 AND key = k.key LIMIT 1) AS s";

/// A page of a channel's keys in [$2, $3), at most $4 of them, in key order.
pub(crate) const SCAN: &str =
    "SELECT key, value FROM state WHERE channel = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4";

/// SQLSTATEs after which the whole call may be retried in a new transaction.
pub(crate) fn is_retryable_code(code: Option<&str>) -> bool {
    matches!(code, Some("40001" | "40P01"))
}

/// Failures of the connection rather than of a statement: the transaction is gone, nothing of
/// it was committed (outside COMMIT itself), and running the call again is safe.
pub(crate) fn is_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed
    )
}

/// The session itself is gone (its connection, or the server ended it): with it any lock or
/// transaction it held. SQLSTATE class 08 is a connection exception, class 57 an operator
/// intervention (57P01: terminated by an administrator).
pub(crate) fn is_connection_lost(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|e| e.code());
    is_connection_error(err) || code.is_some_and(|code| code.starts_with("08") || code.starts_with("57"))
}

/// A lock wait ran out of `lock_timeout` (55P03).
pub(crate) fn is_lock_timeout(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|e| e.code()).as_deref() == Some("55P03")
}

/// The first database failure seen during a call (later ones are usually
/// "current transaction is aborted" and say nothing).
#[derive(Debug, Clone)]
pub(crate) struct DbFailure {
    pub(crate) message: String,
    retryable: bool,
}

impl DbFailure {
    pub(crate) fn from_sqlx(err: &sqlx::Error) -> Self {
        let code = err.as_database_error().and_then(|e| e.code());
        Self { message: err.to_string(), retryable: is_retryable_code(code.as_deref()) || is_connection_error(err) }
    }

    pub(crate) fn retryable(&self) -> bool {
        self.retryable
    }
}

/// [`StateBackend`] over the `state` table, scoped to one channel, in one call's transaction.
pub struct PgBackend {
    tx: Transaction<'static, Postgres>,
    channel: String,
    /// The first database failure of the call, which decides its outcome.
    failure: Option<DbFailure>,
}

impl PgBackend {
    pub(crate) fn new(tx: Transaction<'static, Postgres>, channel: String) -> Self {
        Self { tx, channel, failure: None }
    }

    /// The transaction back, with the call's first database failure.
    pub(crate) fn into_parts(self) -> (Transaction<'static, Postgres>, Option<DbFailure>) {
        (self.tx, self.failure)
    }
}

fn record(failure: &mut Option<DbFailure>, err: &sqlx::Error) -> BackendError {
    let current = DbFailure::from_sqlx(err);
    let error = BackendError { message: current.message.clone(), retryable: current.retryable() };
    if failure.is_none() {
        *failure = Some(current);
    }
    error
}

impl StateBackend for PgBackend {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(GET_MANY)
                .bind(&self.channel)
                .bind(keys)
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|err| record(&mut self.failure, &err))?;
            let mut found: HashMap<String, Vec<u8>> = rows.into_iter().collect();
            // A key asked twice gets its value twice: clone for all but the last occurrence.
            let mut remaining: HashMap<&str, usize> = HashMap::new();
            for key in keys {
                *remaining.entry(key.as_str()).or_default() += 1;
            }
            Ok(keys
                .iter()
                .map(|key| {
                    let left = remaining.entry(key.as_str()).or_default();
                    *left = left.saturating_sub(1);
                    if *left == 0 { found.remove(key) } else { found.get(key).cloned() }
                })
                .collect())
        })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>, BackendError>> {
        Box::pin(async move {
            // The runtime promises start < end and limit >= 1; stay total anyway.
            let limit = if limit == 0 { DEFAULT_SCAN_LIMIT } else { limit };
            if end <= start {
                return Ok(Vec::new());
            }
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(SCAN)
                .bind(&self.channel)
                .bind(start)
                .bind(end)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|err| record(&mut self.failure, &err))?;
            Ok(rows)
        })
    }
}
