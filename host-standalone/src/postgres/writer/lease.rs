//! A channel's write lease: the writer's own connection (not a pooled one: a connection that
//! goes back to a pool must never carry the lock) and, while the writer holds it, the
//! channel's session-level advisory lock, with the state cache that is valid only as long.
//!
//! The writer takes the lock when calls arrive and gives it up when its queue has been idle
//! for a moment, or when another session (a second orchestrator process) waits for it, so
//! that writers of several processes take turns instead of one starving the others.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};

use super::cache::StateCache;
use super::channel_lock_key;
use crate::postgres::nodelay;

/// How long a writer waits for a channel's lock held by another session before its calls are
/// answered as not applied (with "retrying is safe"). Another orchestrator gives the lock up
/// within [`CHECK_EVERY`] of our waiting, so only a stuck session makes it run out.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(30);
/// How often a lease holder asks whether another session waits for the lock.
const CHECK_EVERY: Duration = Duration::from_millis(25);

/// Identifies a server process beyond its pid, which the server reuses.
#[derive(Debug, Clone)]
pub(super) struct ServerProcess {
    pid: i32,
    started: String,
}

/// The writer's connection and what it holds.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) conn: PgConnection,
    process: ServerProcess,
    key: i64,
    held: bool,
    /// Valid while `held`; emptied whenever the lock is taken or given up.
    pub(super) cache: StateCache,
    checked: Instant,
}

impl Lease {
    /// A new connection for `channel`'s writer, not holding the lock yet.
    pub(super) async fn open(options: &PgConnectOptions, channel: &str) -> Result<Self, sqlx::Error> {
        let mut conn = options.connect().await?;
        nodelay::set_on(&mut conn).await?;
        // The writer's statements run outside transactions, so the call transactions' SET LOCAL
        // of the generic-plan mode (see `super::super::generic_plans`) is set for the session.
        let settings =
            format!("SET plan_cache_mode = force_generic_plan; SET lock_timeout = '{}ms'", LOCK_WAIT.as_millis());
        sqlx::raw_sql(sqlx::AssertSqlSafe(settings)).execute(&mut conn).await?;
        let (pid, started): (i32, String) =
            sqlx::query_as("SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()")
                .fetch_one(&mut conn)
                .await?;
        Ok(Self {
            conn,
            process: ServerProcess { pid, started },
            key: channel_lock_key(channel),
            held: false,
            cache: StateCache::default(),
            checked: Instant::now(),
        })
    }

    /// A lease for `channel` after `lost`'s connection dropped: the old session is ended (the
    /// server may not have noticed yet) and the lock is granted only once it is gone, so the
    /// fate of whatever it was running is settled by then.
    pub(super) async fn succeed(
        options: &PgConnectOptions,
        channel: &str,
        lost: &ServerProcess,
    ) -> Result<Self, sqlx::Error> {
        let mut lease = Self::open(options, channel).await?;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
        )
        .bind(lost.pid)
        .bind(&lost.started)
        .execute(&mut lease.conn)
        .await?;
        lease.lock().await?;
        Ok(lease)
    }

    pub(super) fn process(&self) -> &ServerProcess {
        &self.process
    }

    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Takes the channel's lock (waiting up to [`LOCK_WAIT`]), with an empty cache: another
    /// session may have written since.
    pub(super) async fn lock(&mut self) -> Result<(), sqlx::Error> {
        if self.held {
            return Ok(());
        }
        self.cache.clear();
        sqlx::query("SELECT pg_advisory_lock($1)").bind(self.key).execute(&mut self.conn).await?;
        self.held = true;
        self.checked = Instant::now();
        Ok(())
    }

    /// Gives the lock up; what the cache knew is stale from now on.
    pub(super) async fn unlock(&mut self) -> Result<(), sqlx::Error> {
        self.cache.clear();
        if !std::mem::replace(&mut self.held, false) {
            return Ok(());
        }
        sqlx::query("SELECT pg_advisory_unlock($1)").bind(self.key).execute(&mut self.conn).await?;
        Ok(())
    }

    /// Whether another session waits for the lock; asks the server at most every
    /// [`CHECK_EVERY`] (answers `false` in between).
    pub(super) async fn others_waiting(&mut self) -> Result<bool, sqlx::Error> {
        if !self.held || self.checked.elapsed() < CHECK_EVERY {
            return Ok(false);
        }
        self.checked = Instant::now();
        // A bigint advisory key shows in pg_locks as its high and low 32 bits, objsubid 1.
        let bits = u64::from_ne_bytes(self.key.to_ne_bytes());
        let (high, low) = (i64::from((bits >> 32) as u32), i64::from(bits as u32));
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 1)",
        )
        .bind(high)
        .bind(low)
        .fetch_one(&mut self.conn)
        .await
    }
}
