//! PostgreSQL: connection pool, database creation, embedded migrations, the state backend the
//! logic reads through, the executor (reads on snapshots) and the per-channel writers (write
//! calls in serial order, group commit).

/// The statement that makes a call's transaction reuse the plans of its prepared statements.
///
/// The state statements are index probes whose plan never depends on the values, but with the
/// planner settings below PostgreSQL judged the generic plan costlier and planned every
/// execution again: about half a millisecond per statement, more than running it. Scoped to
/// the transactions of calls: QueryEvents, whose filters do depend on the values, keeps custom
/// plans.
macro_rules! generic_plans {
    () => {
        "SET LOCAL plan_cache_mode = force_generic_plan"
    };
}
pub(crate) use generic_plans;

mod backend;
mod events;
mod executor;
mod flush;
pub mod ledger;
pub mod nodelay;
mod writer;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

pub use backend::{GET_MANY, PgBackend};
pub use events::{QueryEventsError, query_events};
pub use executor::{Call, CallError, CallOutcome, Executor, TxMode};
pub use writer::channel_lock_key;

/// The schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Failure to get a usable database.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The URL cannot be parsed.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// The server cannot be reached, or refused a statement.
    #[error("database {action}: {source}")]
    Database {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn db_error(action: &'static str) -> impl FnOnce(sqlx::Error) -> SetupError {
    move |source| SetupError::Database { action, source }
}

/// Quotes an SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQLSTATEs of a lost race between two `CREATE DATABASE` of the same name.
fn is_duplicate_database(err: &sqlx::Error) -> bool {
    matches!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("42P04" | "23505"))
}

/// Creates the database named in `url` if it does not exist, through the server's `postgres`
/// maintenance database. Returns whether it was created.
pub async fn create_database_if_missing(url: &str) -> Result<bool, SetupError> {
    let options = PgConnectOptions::from_str(url).map_err(SetupError::Url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        // No database in the URL: PostgreSQL uses the user's default one, which must exist.
        return Ok(false);
    };
    if name == "postgres" {
        return Ok(false);
    }
    let mut conn = maintenance_connection(&options).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .map_err(db_error("look up the database"))?;
    let mut created = false;
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(&name));
        match sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await {
            Ok(_) => created = true,
            Err(err) if is_duplicate_database(&err) => {}
            Err(err) => return Err(db_error("create the database")(err)),
        }
    }
    conn.close().await.ok();
    Ok(created)
}

/// A connection to the server's `postgres` database, to create or drop another one.
async fn maintenance_connection(options: &PgConnectOptions) -> Result<sqlx::PgConnection, SetupError> {
    options.clone().database("postgres").connect().await.map_err(db_error("connect to the maintenance database"))
}

/// Drops a database (tests use it to clean up after themselves).
pub async fn drop_database(url: &str) -> Result<(), SetupError> {
    let options = PgConnectOptions::from_str(url).map_err(SetupError::Url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut conn = maintenance_connection(&options).await?;
    let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_identifier(&name));
    sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await.map_err(db_error("drop the database"))?;
    conn.close().await.ok();
    Ok(())
}

/// Session settings of every orchestrator connection.
///
/// Every statement the host runs is a point lookup or a range scan on a known index. Left to
/// itself, the planner picks plans from table statistics, and without them (a fresh database,
/// or autovacuum off, as on this project's machines) it cached a plan that fetched a key list by
/// reading the whole channel: QueryTasks pages then cost O(tasks in the channel). Refusing
/// sequential and bitmap scans leaves plain index scans with every key condition in the index
/// condition, whatever the statistics say.
pub const PLANNER_SETTINGS: [(&str, &str); 2] = [("enable_seqscan", "off"), ("enable_bitmapscan", "off")];

/// Creates the database if missing, opens the pool and applies the migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, SetupError> {
    create_database_if_missing(url).await?;
    let options = PgConnectOptions::from_str(url).map_err(SetupError::Url)?.options(PLANNER_SETTINGS);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        // No ping before each use: a connection that died fails its call's first statement,
        // and the call runs again on another one (a lost connection is a retryable failure).
        .test_before_acquire(false)
        .after_connect(|conn, _| Box::pin(async move { nodelay::set_on(conn).await.map(drop) }))
        .connect_with(options)
        .await
        .map_err(db_error("connect"))?;
    MIGRATOR.run(&pool).await?;
    warn_if_autovacuum_off(&pool).await;
    Ok(pool)
}

/// The hot path does not depend on vacuum (event rows are insert-only, unchanged values are not
/// rewritten), but rows that must change (task status moves, deletions) leave dead versions
/// that only VACUUM reclaims; the orchestrator never runs it itself.
async fn warn_if_autovacuum_off(pool: &PgPool) {
    match sqlx::query_scalar::<_, String>("SELECT current_setting('autovacuum')").fetch_one(pool).await {
        Ok(setting) if setting == "off" => tracing::warn!(
            "PostgreSQL runs with autovacuum off: dead row versions left by status changes are never \
             reclaimed; schedule VACUUM (ANALYZE) or turn autovacuum on"
        ),
        Ok(_) => {}
        Err(err) => tracing::debug!(error = %err, "could not read the autovacuum setting"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_identifier("orchestrator"), "\"orchestrator\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
