//! The write calls of a channel, one after another, several to a transaction (group commit).
//!
//! Concurrent SERIALIZABLE transactions over the same plan fail one another (40001) and retry
//! until a budget runs out; the serial order the ledger gives in distributed mode is the remedy
//! here too. Each channel has one writer task in the process. It takes the calls queued for the
//! channel, opens one READ COMMITTED transaction holding the channel's advisory lock (so a
//! second orchestrator process on the same database waits its turn instead of racing), and
//! runs the calls in arrival order, each after the first under its own savepoint: a call that
//! fails on a database error is rolled back alone, and each call sees the writes of the calls
//! before it. One COMMIT answers the whole group.
//!
//! READ COMMITTED is what makes the lock enough: every statement takes a new snapshot, so after
//! the lock is granted each read sees everything the previous holder committed, and nothing
//! else can write the channel's rows until we commit.
//!
//! Event positions are assigned here, at insert: the channel's highest position plus the
//! event's index in the call. Under the lock that number is final, and rows become visible in
//! position order, so readers following positions never skip one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orchestrator_runtime::Runtime;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::GENERIC_PLANS;
use super::executor::{AttemptError, Call, CallError, CallOutcome, budget_exhausted, from_db, invoke_in, rollback};
use crate::events::EventHub;
use crate::events::hub::COMMITTED;

/// Most calls in one transaction, which also bounds what the first of them waits for the
/// commit. Each call's savepoint becomes a subtransaction, and a backend keeps at most 64 of
/// them in shared memory before every other snapshot has to look them up on disk (the "subxid
/// overflow" slowdown): stay well below.
const MAX_GROUP_CALLS: usize = 32;
/// How long a writer waits for a lost transaction's fate before calling it unknown.
const OUTCOME_WAIT: Duration = Duration::from_secs(5);

/// One queued write call.
struct Job {
    call: Call,
    received: Instant,
    attempts: u32,
    reply: oneshot::Sender<CallOutcome>,
}

/// The per-channel writer tasks of the process.
#[derive(Debug)]
pub(super) struct Writers {
    shared: Arc<Shared>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
}

/// What every writer task needs.
#[derive(Debug)]
struct Shared {
    pool: PgPool,
    runtime: Runtime,
    retry_budget: Duration,
    hub: Arc<EventHub>,
}

impl Writers {
    pub(super) fn new(pool: PgPool, runtime: Runtime, retry_budget: Duration, hub: Arc<EventHub>) -> Self {
        Self { shared: Arc::new(Shared { pool, runtime, retry_budget, hub }), queues: Mutex::new(HashMap::new()) }
    }

    /// Queues `call` on its channel's writer and waits for its outcome.
    pub(super) async fn submit(&self, call: Call) -> CallOutcome {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { call, received: Instant::now(), attempts: 0, reply };
        // A writer only stops when its queue is dropped, or if it panicked: start a new one.
        for _ in 0..2 {
            let queue = self.queue(&job.call.channel);
            match queue.send(job) {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => {
                    self.queues.lock().unwrap_or_else(PoisonError::into_inner).remove(&returned.call.channel);
                    job = returned;
                }
            }
        }
        answer.await.unwrap_or_else(|_| CallOutcome {
            result: Err(CallError::NotApplied(
                "the channel's writer stopped before running the call; retrying is safe".to_owned(),
            )),
            attempts: 0,
            fuel_consumed: 0,
        })
    }

    fn queue(&self, channel: &str) -> mpsc::UnboundedSender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(channel).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(Arc::clone(&self.shared), channel.to_owned(), receiver));
        queues.insert(channel.to_owned(), sender.clone());
        sender
    }
}

/// The advisory-lock key of a channel's writes (FNV-1a, 64 bits): every orchestrator process
/// on the database must compute the same one, and anything else writing a channel's rows must
/// hold it too.
pub fn channel_lock_key(channel: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"orchestrator/channel/".iter().chain(channel.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

async fn write_loop(shared: Arc<Shared>, channel: String, mut queue: mpsc::UnboundedReceiver<Job>) {
    let begin = format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; {GENERIC_PLANS}; SELECT pg_advisory_xact_lock({})",
        channel_lock_key(&channel)
    );
    // Jobs of a lost transaction, in arrival order: they go first in the next group.
    let mut again: Vec<Job> = Vec::new();
    loop {
        let mut group = std::mem::take(&mut again);
        if group.is_empty() {
            match queue.recv().await {
                Some(job) => group.push(job),
                None => return,
            }
        } else {
            // The database is failing: give it a moment rather than spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        again = run_group(&shared, &channel, &begin, group, &mut queue).await;
    }
}

/// Runs `group` (and more queued calls, up to [`MAX_GROUP_CALLS`]) in one transaction and
/// answers every call once it committed. Returns the calls to run again because the transaction
/// was lost before it committed.
async fn run_group(
    shared: &Shared,
    channel: &str,
    begin: &str,
    mut group: Vec<Job>,
    queue: &mut mpsc::UnboundedReceiver<Job>,
) -> Vec<Job> {
    let mut tx: Option<Transaction<'static, Postgres>> = None;
    // Calls run in the current transaction: the first needs no savepoint (its failure rolls back
    // the transaction, which holds nothing else), the second sets one.
    let mut in_tx = 0usize;
    let mut outcomes: Vec<CallOutcome> = Vec::with_capacity(group.len());
    let mut head: Option<i64> = None;
    let mut xid: Option<String> = None;
    loop {
        if outcomes.len() == group.len() {
            if group.len() >= MAX_GROUP_CALLS {
                break;
            }
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let current = match tx.take() {
            Some(current) => current,
            None => match shared.pool.begin_with(sqlx::AssertSqlSafe(begin.to_owned())).await {
                Ok(current) => {
                    in_tx = 0;
                    current
                }
                Err(err) => {
                    // Only failed calls were run so far (each alone in its transaction).
                    let rest = group.split_off(outcomes.len());
                    for (job, outcome) in group.into_iter().zip(outcomes) {
                        let _ = job.reply.send(outcome);
                    }
                    return again_or_give_up(shared, rest, &CallError::Database(err.to_string()));
                }
            },
        };
        let protect = match in_tx {
            0 => Protect::None,
            1 => Protect::First,
            _ => Protect::Next,
        };
        let job = &mut group[outcomes.len()];
        match run_job(shared, channel, current, job, protect).await {
            JobStep::Ran { tx: back, outcome, flushed } => {
                tx = Some(back);
                in_tx += 1;
                if let Some(flushed) = flushed {
                    head = flushed.head.or(head);
                    xid = xid.or(Some(flushed.xid));
                }
                outcomes.push(outcome);
            }
            // The call was alone in its transaction, now rolled back: run it again in a new
            // one, or answer its failure and go on with the next call in a new one.
            JobStep::Undone(failure) => {
                if let Some(outcome) = settle(shared, job, failure) {
                    outcomes.push(outcome);
                }
            }
            JobStep::Lost(err) => {
                tracing::warn!(channel, error = %err, calls = group.len(), "write transaction lost; running its calls again");
                return again_or_give_up(shared, group, &err);
            }
        }
    }

    let committed = match tx {
        Some(tx) => tx.commit().await,
        None => Ok(()),
    };
    if let Err(err) = committed {
        // Without a write nothing was at stake: every answer stands.
        if let Some(xid) = &xid {
            match transaction_fate(&shared.pool, xid).await {
                Fate::Committed => {}
                Fate::Aborted => {
                    tracing::warn!(channel, error = %err, "commit failed; running the group again");
                    return again_or_give_up(shared, group, &CallError::Database(err.to_string()));
                }
                Fate::Unknown => {
                    tracing::error!(channel, xid, error = %err, "commit outcome unknown");
                    let message = format!(
                        "the database connection was lost while committing and the outcome could not be \
                         determined: the call may have been applied ({err})"
                    );
                    for job in group {
                        let attempts = job.attempts;
                        let result = Err(CallError::OutcomeUnknown(message.clone()));
                        let _ = job.reply.send(CallOutcome { result, attempts, fuel_consumed: 0 });
                    }
                    return Vec::new();
                }
            }
        }
    }
    if let Some(head) = head {
        // Local streams and the relay need not wait for the NOTIFY round trip.
        shared.hub.advance(channel, head);
    }
    for (job, outcome) in group.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
    Vec::new()
}

/// What the flush of a call left: the channel's new head (when it inserted events) and the
/// transaction id (to learn the fate of a commit whose answer was lost).
pub(super) struct Flushed {
    head: Option<i64>,
    xid: String,
}

enum JobStep {
    /// The job ran (successfully or not); the transaction is usable.
    Ran { tx: Transaction<'static, Postgres>, outcome: CallOutcome, flushed: Option<Flushed> },
    /// A statement of the job failed outside any savepoint: the transaction was rolled back.
    Undone(AttemptError),
    /// The transaction is gone: every job of the group must run again.
    Lost(CallError),
}

/// How a call is kept apart from the calls before it in the transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protect {
    /// The first call: nothing to keep apart.
    None,
    /// The second: sets the savepoint.
    First,
    /// Later calls: the previous call's savepoint is merged and a new one set, in one round trip.
    Next,
}

/// Runs one job, under its own savepoint unless it is the first of the transaction, retrying
/// transient statement failures within the budget.
async fn run_job(
    shared: &Shared,
    channel: &str,
    mut tx: Transaction<'static, Postgres>,
    job: &mut Job,
    protect: Protect,
) -> JobStep {
    let set_savepoint = match protect {
        Protect::None => None,
        Protect::First => Some("SAVEPOINT call"),
        Protect::Next => Some("RELEASE SAVEPOINT call; SAVEPOINT call"),
    };
    if let Some(statement) = set_savepoint
        && let Err(err) = sqlx::raw_sql(statement).execute(&mut *tx).await
    {
        return JobStep::Lost(CallError::Database(err.to_string()));
    }
    loop {
        job.attempts = job.attempts.saturating_add(1);
        let attempts = job.attempts;
        let (back, invoked) = invoke_in(&shared.runtime, tx, &job.call).await;
        let Some(back) = back else {
            return JobStep::Lost(CallError::Database("the call's database transaction was lost".to_owned()));
        };
        tx = back;
        let failure = match invoked {
            Ok(invocation) => match invocation.result {
                Ok(response) => match flush(&mut tx, channel, invocation.writes, invocation.events).await {
                    Ok(flushed) => {
                        let outcome =
                            CallOutcome { result: Ok(response), attempts, fuel_consumed: invocation.fuel_consumed };
                        return JobStep::Ran { tx, outcome, flushed };
                    }
                    Err(err) => err,
                },
                // A refused call wrote nothing: its reads need no undoing.
                Err(logic) => {
                    let outcome = CallOutcome {
                        result: Err(CallError::Logic(logic)),
                        attempts,
                        fuel_consumed: invocation.fuel_consumed,
                    };
                    return JobStep::Ran { tx, outcome, flushed: None };
                }
            },
            Err(err) => err,
        };
        if protect == Protect::None {
            rollback(tx).await;
            return JobStep::Undone(failure);
        }
        // A statement failed: undo this call alone, keep the transaction.
        if let Err(err) = sqlx::raw_sql("ROLLBACK TO SAVEPOINT call").execute(&mut *tx).await {
            return JobStep::Lost(CallError::Database(err.to_string()));
        }
        if let Some(outcome) = settle(shared, job, failure) {
            return JobStep::Ran { tx, outcome, flushed: None };
        }
    }
}

/// What a failed run of `job` comes to: `None` to run it again (a transient failure within the
/// budget), else its answer.
fn settle(shared: &Shared, job: &Job, failure: AttemptError) -> Option<CallOutcome> {
    let attempts = job.attempts;
    let err = match failure {
        AttemptError::Retryable(err) if job.received.elapsed() < shared.retry_budget => {
            tracing::debug!(method = %job.call.method, attempt = attempts, error = %err, "running the call again");
            return None;
        }
        AttemptError::Retryable(err) => budget_exhausted(shared.retry_budget, attempts, &err),
        AttemptError::Final(err) => err,
    };
    Some(CallOutcome { result: Err(err), attempts, fuel_consumed: 0 })
}

/// The jobs of a lost transaction: those still within budget run again, the others are told
/// why they were not applied.
fn again_or_give_up(shared: &Shared, group: Vec<Job>, cause: &CallError) -> Vec<Job> {
    let mut again = Vec::new();
    for job in group {
        if job.received.elapsed() < shared.retry_budget {
            again.push(job);
        } else {
            let attempts = job.attempts.max(1);
            let err = budget_exhausted(shared.retry_budget, attempts, cause);
            let _ = job.reply.send(CallOutcome { result: Err(err), attempts, fuel_consumed: 0 });
        }
    }
    again
}

enum Fate {
    Committed,
    Aborted,
    Unknown,
}

/// Asks the database what became of transaction `xid` after its COMMIT got no answer.
async fn transaction_fate(pool: &PgPool, xid: &str) -> Fate {
    let deadline = Instant::now() + OUTCOME_WAIT;
    loop {
        let status: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT pg_xact_status($1::xid8)").bind(xid).fetch_one(pool).await;
        match status.as_ref().map(Option::as_deref) {
            Ok(Some("committed")) => return Fate::Committed,
            Ok(Some("aborted")) => return Fate::Aborted,
            // "in progress": the server has not noticed the lost connection yet.
            Ok(Some(_)) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return Fate::Unknown,
        }
    }
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

/// Writes a call's state changes and events in one statement, numbering the events after the
/// channel's head and notifying listeners (delivered at commit, never after a rollback).
///
/// A put whose value is already stored rewrites nothing: without a vacuum every needless row
/// version stays behind and slows each later read of that key. Deleted rows are found one key
/// at a time, as in [`super::backend::GET_MANY`] (the rows are ours alone under the channel
/// lock, so their ctids hold until the DELETE).
pub(super) async fn flush(
    tx: &mut Transaction<'static, Postgres>,
    channel: &str,
    writes: Vec<(String, Option<Vec<u8>>)>,
    events: Vec<Vec<u8>>,
) -> Result<Option<Flushed>, AttemptError> {
    if writes.is_empty() && events.is_empty() {
        return Ok(None);
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
    let (head, xid, _notified): (Option<i64>, String, Option<String>) = sqlx::query_as(
        "WITH upserted AS ( \
             INSERT INTO state (channel, key, value) \
             SELECT $1, w.key, w.value FROM UNNEST($2::text[], $3::bytea[]) AS w(key, value) \
             ON CONFLICT (channel, key) DO UPDATE SET value = EXCLUDED.value \
             WHERE state.value IS DISTINCT FROM EXCLUDED.value \
         ), deleted AS ( \
             DELETE FROM state WHERE ctid = ANY(ARRAY( \
                 SELECT s.ctid FROM UNNEST($4::text[]) AS d(key) \
                 CROSS JOIN LATERAL (SELECT ctid FROM state WHERE channel = $1 AND key = d.key LIMIT 1) AS s)) \
         ), inserted AS ( \
             INSERT INTO events (channel, channel_position, event_id, payload, asset_key, asset_kind, event_kind, \
                                 ts_micros, metadata) \
             SELECT $1, (SELECT COALESCE(max(channel_position), 0) FROM events WHERE channel = $1) + e.n, \
                    e.id, e.payload, e.asset_key, e.asset_kind, e.event_kind, e.ts_micros, e.metadata::jsonb \
             FROM UNNEST($5::text[], $6::bytea[], $7::text[], $8::int4[], $9::int4[], $10::int8[], $11::text[]) \
                  WITH ORDINALITY AS e(id, payload, asset_key, asset_kind, event_kind, ts_micros, metadata, n) \
             ORDER BY e.n \
             RETURNING channel_position \
         ), head AS ( \
             SELECT max(channel_position) AS position FROM inserted \
         ) \
         SELECT position, pg_current_xact_id()::text, \
                CASE WHEN position IS NULL THEN NULL ELSE pg_notify($12, position::text || ':' || $1)::text END \
         FROM head",
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
    .bind(COMMITTED)
    .fetch_one(&mut **tx)
    .await
    .map_err(|err| from_db(&err))?;
    Ok(Some(Flushed { head, xid }))
}

#[cfg(test)]
mod tests {
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
    fn lock_keys_are_stable_and_distinct() {
        // Two orchestrator builds must agree on the key: it is part of the database protocol.
        assert_eq!(channel_lock_key("mychannel"), -8_712_152_384_692_794_069);
        assert_ne!(channel_lock_key("mychannel"), channel_lock_key("yourchannel"));
    }
}
