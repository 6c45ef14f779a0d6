//! The committed-state reads of one call, inside that call's database transaction.
//!
//! The backend owns the transaction for the length of the call; the runtime hands the backend
//! back afterwards, and the executor takes the transaction (and the call's first database
//! failure) out of it to end it.

use std::collections::HashMap;

use orchestrator_runtime::{BackendError, BoxFuture, StateBackend};
use sqlx::{PgPool, Postgres, Transaction};

use orchestrator_runtime::DEFAULT_SCAN_LIMIT;

/// One index probe per key, whatever the planner believes. `key = ANY($2)` lets it choose to
/// walk the whole channel and filter (it did, with no statistics: a 100,000-row scan per
/// lookup); a `LIMIT 1` lateral subquery cannot be flattened into a join, so each key is looked
/// up on its own.
pub const GET_MANY: &str = "SELECT k.key, s.value FROM UNNEST($2::text[]) AS k(key) \
     CROSS JOIN LATERAL (SELECT value FROM state WHERE channel = $1 AND key = k.key LIMIT 1) AS s";

/// Below this many keys a get-many runs on the call's own connection only. Each key is one
/// index probe (about 6 µs in PostgreSQL), so a large get-many (a QueryTasks page of 5,000 tasks
/// is 30 ms of probes) is split in two halves run at the same time on two connections, the
/// second on the call's snapshot; under that size the two extra round trips cost more than the
/// half they save.
const SPLIT_GET_MANY_KEYS: usize = 1_000;

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

/// [`StateBackend`] over the `state` table, scoped to one channel, in one read-only call's
/// `REPEATABLE READ` transaction.
pub struct PgBackend {
    tx: Transaction<'static, Postgres>,
    channel: String,
    /// Where a large get-many finds its second connection.
    pool: PgPool,
    /// The transaction's exported snapshot, once a large get-many asked for it: the second
    /// connection reads exactly what the call's own transaction reads.
    snapshot: Option<String>,
    /// The first database failure of the call, which decides its outcome.
    failure: Option<DbFailure>,
}

impl PgBackend {
    pub(crate) fn new(tx: Transaction<'static, Postgres>, channel: String, pool: PgPool) -> Self {
        Self { tx, channel, pool, snapshot: None, failure: None }
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

impl PgBackend {
    /// The rows of `keys` that exist, in no particular order.
    async fn fetch_many(&mut self, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
        let helper = if keys.len() >= SPLIT_GET_MANY_KEYS { self.snapshot_reader().await? } else { None };
        let Some(mut helper) = helper else {
            return sqlx::query_as(GET_MANY).bind(&self.channel).bind(keys).fetch_all(&mut *self.tx).await;
        };
        let (mine, theirs) = keys.split_at(keys.len() / 2);
        let channel = self.channel.as_str();
        let (rows, other) = tokio::join!(
            sqlx::query_as::<_, (String, Vec<u8>)>(GET_MANY).bind(channel).bind(mine).fetch_all(&mut *self.tx),
            async {
                let rows = sqlx::query_as::<_, (String, Vec<u8>)>(GET_MANY)
                    .bind(channel)
                    .bind(theirs)
                    .fetch_all(&mut *helper)
                    .await;
                // Read-only: ending it either way is the same; a failed end only costs the
                // connection, which the pool replaces.
                let _ = helper.rollback().await;
                rows
            }
        );
        let mut rows = rows?;
        rows.extend(other?);
        Ok(rows)
    }

    /// A second transaction on this call's snapshot, or none when the pool has no connection
    /// to spare (a server that busy gains nothing from splitting a read).
    async fn snapshot_reader(&mut self) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
        let idle = self.pool.num_idle() > 0;
        if !idle && self.pool.size() >= self.pool.options().get_max_connections() {
            return Ok(None);
        }
        let snapshot = match &self.snapshot {
            Some(snapshot) => snapshot.clone(),
            None => {
                let exported: String =
                    sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut *self.tx).await?;
                self.snapshot.insert(exported).clone()
            }
        };
        // A snapshot id is hex digits and dashes; anything else is not ours to inline.
        if !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Ok(None);
        }
        let begin = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'; {}",
            super::generic_plans!()
        );
        let begin = sqlx::AssertSqlSafe(begin);
        if idle { self.pool.try_begin_with(begin).await } else { self.pool.begin_with(begin).await.map(Some) }
    }
}

impl StateBackend for PgBackend {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let rows = self.fetch_many(keys).await.map_err(|err| record(&mut self.failure, &err))?;
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

#[cfg(test)]
mod tests {
    use orchestrator_runtime::StateBackend;

    use super::{PgBackend, SPLIT_GET_MANY_KEYS};

    const CHANNEL: &str = "mychannel";

    /// A get-many large enough to be split reads every key, in the asked order (duplicates
    /// included), on the call's snapshot: rows another transaction commits after the call's
    /// first read stay invisible to both halves.
    #[tokio::test]
    async fn a_split_get_many_reads_the_calls_snapshot() {
        let url =
            format!("postgres://postgres@127.0.0.1:5432/orch_unit_{}?sslmode=disable", uuid::Uuid::new_v4().simple());
        let pool = super::super::connect(&url, 4).await.expect("test database");
        let n = SPLIT_GET_MANY_KEYS * 3 / 2;
        let keys: Vec<String> = (0..n).map(|i| format!("k/{i:06}")).collect();
        // Every even key exists.
        let stored: Vec<String> = keys.iter().step_by(2).cloned().collect();
        sqlx::query("INSERT INTO state (channel, key, value) SELECT $1, k, 'old' FROM UNNEST($2::text[]) AS k")
            .bind(CHANNEL)
            .bind(&stored)
            .execute(&pool)
            .await
            .expect("seed");

        let tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.expect("read transaction");
        let mut backend = PgBackend::new(tx, CHANNEL.to_owned(), pool.clone());
        // The first read takes the transaction's snapshot.
        assert_eq!(backend.get_many(&keys[..1]).await.expect("first read"), vec![Some(b"old".to_vec())]);

        // Committed afterwards, at both ends of the key list (so in both halves): an update, an
        // insert of a missing key and a delete.
        let last = n - 2;
        sqlx::query(
            "WITH u AS (UPDATE state SET value = 'new' WHERE channel = $1 AND key = ANY($2)), \
             d AS (DELETE FROM state WHERE channel = $1 AND key = ANY($3)) \
             INSERT INTO state (channel, key, value) SELECT $1, k, 'new' FROM UNNEST($4::text[]) AS k",
        )
        .bind(CHANNEL)
        .bind(vec![keys[2].clone(), keys[last].clone()])
        .bind(vec![keys[4].clone(), keys[last - 2].clone()])
        .bind(vec![keys[3].clone(), keys[last + 1].clone()])
        .execute(&pool)
        .await
        .expect("concurrent write");

        let mut asked: Vec<String> = keys.iter().rev().cloned().collect();
        asked.push(keys[2].clone());
        let got = backend.get_many(&asked).await.expect("split read");
        assert!(backend.snapshot.is_some(), "a get-many of {} keys is split", asked.len());
        assert_eq!(got.len(), asked.len());
        for (key, value) in asked.iter().zip(&got) {
            let index: usize = key[2..].parse().expect("numbered key");
            let expected = index.is_multiple_of(2).then(|| b"old".to_vec());
            assert_eq!(value, &expected, "{key}");
        }

        drop(backend);
        pool.close().await;
        super::super::drop_database(&url).await.expect("drop the test database");
    }
}
