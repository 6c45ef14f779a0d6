//! The write calls of a channel, one after another, several to a flush (group commit).
//!
//! Concurrent SERIALIZABLE transactions over the same plan fail one another (40001) and retry
//! until a budget runs out; the serial order the ledger gives in distributed mode is the remedy
//! here too. Each channel has one writer task in the process, with a connection of its own
//! that holds the channel's session-level advisory lock while calls keep coming (a second
//! orchestrator process on the same database waits its turn; see [`lease`]).
//!
//! The writer takes the calls queued for the channel and runs them in arrival order, each
//! seeing the writes of the calls before it. Nobody else writes the channel under the lock, so
//! the rows it read or wrote are remembered ([`cache`]) and reads need no transaction; the
//! group's writes and events then go to the database in one autocommitted statement, which
//! answers every call of the group. A single-task registration thus costs one read of its new
//! key and one flush, where a transaction per call cost BEGIN, the reads, the flush and COMMIT.
//!
//! If the flush fails on a statement error, nothing of it is stored and the group's calls run
//! again one by one, so that only the call at fault fails. If the connection is lost during
//! the flush, the writer's next lease is granted only once the old session is gone, and the
//! group's first event (or its writes) tells whether the flush committed before answering.
//!
//! Event positions are assigned at insert: the channel's highest position plus the event's
//! index in the group. Under the lock that number is final, and rows become visible in position
//! order, so readers following positions never skip one.

mod cache;
mod lease;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orchestrator_runtime::Runtime;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{mpsc, oneshot};

use self::cache::{GroupState, LeaseBackend};
use self::lease::{LOCK_WAIT, Lease, ServerProcess};
use super::backend::{GET_MANY, is_connection_lost, is_lock_timeout};
use super::executor::{AttemptError, Call, CallError, CallOutcome, budget_exhausted, from_db, invoke_with};
use super::flush::{Batch, EventColumns, flush};
use crate::events::EventHub;

/// Most calls in one flush, which also bounds what the first of them waits for the commit.
const MAX_GROUP_CALLS: usize = 32;
/// A group takes no more calls once its writes and events reach this size.
const MAX_GROUP_BYTES: usize = 8 << 20;
/// How long a writer keeps the channel's lock with nothing to write. Calls of one client come
/// back to back (well under a millisecond apart); a lock given up takes a round trip to get
/// back and empties the cache.
const IDLE_RELEASE: Duration = Duration::from_millis(50);
/// How long a writer tries to learn the fate of a flush whose answer was lost.
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
    /// How the writers open their own connections (the pool's settings).
    options: Arc<PgConnectOptions>,
    runtime: Runtime,
    retry_budget: Duration,
    hub: Arc<EventHub>,
}

impl Writers {
    pub(super) fn new(pool: &PgPool, runtime: Runtime, retry_budget: Duration, hub: Arc<EventHub>) -> Self {
        let shared = Shared { options: pool.connect_options(), runtime, retry_budget, hub };
        Self { shared: Arc::new(shared), queues: Mutex::new(HashMap::new()) }
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
            logic: None,
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
    let mut group = GroupState::default();
    // Jobs of a group that could not be flushed, in arrival order: they go first in the next.
    let mut again: Vec<Job> = Vec::new();
    loop {
        let mut jobs = std::mem::take(&mut again);
        if jobs.is_empty() {
            let holding = group.lease.as_ref().is_some_and(Lease::held);
            let next = if holding {
                match tokio::time::timeout(IDLE_RELEASE, queue.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        give_up(&mut group).await;
                        queue.recv().await
                    }
                }
            } else {
                queue.recv().await
            };
            match next {
                Some(job) => jobs.push(job),
                // The server is shutting down: dropping the connection releases the lock.
                None => return,
            }
        } else {
            // The database is failing: give it a moment rather than spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        again = run_group(&shared, &channel, &mut group, jobs, Some(&mut queue)).await;
    }
}

/// Gives the channel's lock up (and drops the connection if that fails: closing it releases
/// the lock too).
async fn give_up(group: &mut GroupState) {
    if let Some(lease) = group.lease.as_mut()
        && let Err(err) = lease.unlock().await
    {
        tracing::debug!(error = %err, "unlocking the channel failed; closing the writer's connection");
        group.lease = None;
    }
}

/// Makes sure the writer holds the channel's lock, first letting a session that waits for it
/// go ahead.
async fn hold_lock(shared: &Shared, channel: &str, group: &mut GroupState) -> Result<(), CallError> {
    let lease = match &mut group.lease {
        Some(lease) => lease,
        empty @ None => {
            let opened =
                Lease::open(&shared.options, channel).await.map_err(|err| CallError::Database(err.to_string()))?;
            empty.insert(opened)
        }
    };
    let result = match lease.others_waiting().await {
        Ok(true) => {
            tracing::debug!(channel, "another session waits for the channel's lock: letting it go first");
            lease.unlock().await
        }
        Ok(false) => Ok(()),
        Err(err) => Err(err),
    };
    let result = match result {
        Ok(()) => lease.lock().await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(()),
        Err(err) if is_lock_timeout(&err) => Err(CallError::NotApplied(format!(
            "the call was not applied: another database session held channel {channel}'s write lock for longer \
             than {LOCK_WAIT:?}; retrying is safe"
        ))),
        Err(err) => {
            group.lease = None;
            Err(CallError::Database(err.to_string()))
        }
    }
}

/// What running one call came to.
enum Step {
    /// Answered, nothing to store.
    Done(CallOutcome),
    /// Answered once its writes and events are stored.
    Wrote { outcome: CallOutcome, writes: Vec<(String, Option<Vec<u8>>)>, events: Vec<Vec<u8>>, columns: EventColumns },
    /// The writer's connection (and with it the lock) is gone: the whole group runs again.
    Lost(CallError),
}

/// Runs `group` (and, given a `queue`, more queued calls, up to [`MAX_GROUP_CALLS`] or
/// [`MAX_GROUP_BYTES`]) and stores their writes and events in one flush, then answers every
/// call. Returns the calls to run again because nothing of them was stored.
async fn run_group(
    shared: &Shared,
    channel: &str,
    state: &mut GroupState,
    mut group: Vec<Job>,
    mut queue: Option<&mut mpsc::UnboundedReceiver<Job>>,
) -> Vec<Job> {
    state.pending.clear();
    if let Err(err) = hold_lock(shared, channel, state).await {
        return match err {
            CallError::NotApplied(_) => {
                answer_all(group, &err);
                Vec::new()
            }
            err => again_or_give_up(shared, group, &err),
        };
    }
    let mut outcomes: Vec<CallOutcome> = Vec::with_capacity(group.len());
    let mut batch = Batch::default();
    let mut bytes = 0usize;
    loop {
        if outcomes.len() == group.len() {
            let Some(queue) = queue.as_deref_mut() else { break };
            if group.len() >= MAX_GROUP_CALLS || bytes >= MAX_GROUP_BYTES {
                break;
            }
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let job = &mut group[outcomes.len()];
        match run_call(shared, channel, state, job).await {
            Step::Done(outcome) => outcomes.push(outcome),
            Step::Wrote { outcome, writes, events, columns } => {
                bytes += state.add_writes(writes);
                bytes += events.iter().map(Vec::len).sum::<usize>();
                batch.push_events(events, columns);
                outcomes.push(outcome);
            }
            Step::Lost(err) => {
                tracing::warn!(channel, error = %err, calls = group.len(), "writer's connection lost; running the calls again");
                state.pending.clear();
                state.lease = None;
                return again_or_give_up(shared, group, &err);
            }
        }
    }

    batch.writes = std::mem::take(&mut state.pending);
    if batch.is_empty() {
        answer(group, outcomes);
        return Vec::new();
    }
    let Some(lease) = state.lease.as_mut() else {
        return again_or_give_up(shared, group, &CallError::Database("the writer's connection was lost".to_owned()));
    };
    match flush(&mut lease.conn, channel, &batch).await {
        Ok(head) => {
            for (key, value) in batch.writes {
                lease.cache.insert(key, value);
            }
            if let Some(head) = head {
                // Local streams and the relay need not wait for the NOTIFY round trip.
                shared.hub.advance(channel, head);
            }
            answer(group, outcomes);
            Vec::new()
        }
        Err(err) if is_connection_lost(&err) => {
            let lost = lease.process().clone();
            state.lease = None;
            match settle_lost_flush(shared, channel, &lost, &batch).await {
                Ok((mut lease, true)) => {
                    for (key, value) in batch.writes {
                        lease.cache.insert(key, value);
                    }
                    state.lease = Some(lease);
                    answer(group, outcomes);
                    Vec::new()
                }
                Ok((lease, false)) => {
                    tracing::warn!(channel, error = %err, "flush lost before it committed; running its calls again");
                    state.lease = Some(lease);
                    again_or_give_up(shared, group, &CallError::Database(err.to_string()))
                }
                Err(check) => {
                    tracing::error!(channel, error = %err, check = %check, "flush outcome unknown");
                    let unknown = CallError::OutcomeUnknown(format!(
                        "the database connection was lost while storing the call and the outcome could not be \
                         determined: the call may have been applied ({err})"
                    ));
                    answer_all(group, &unknown);
                    Vec::new()
                }
            }
        }
        Err(err) => {
            if group.len() == 1 {
                // The only call is at fault (its reads stand: nothing else was written).
                let failure = from_db(&err);
                return match settle(shared, &group[0], failure) {
                    Some(outcome) => {
                        answer(group, vec![outcome]);
                        Vec::new()
                    }
                    None => group,
                };
            }
            // Later calls may have read the writes of the one at fault: run each alone.
            tracing::debug!(channel, error = %err, calls = group.len(), "group flush refused; running its calls one by one");
            let mut jobs = group.into_iter();
            while let Some(job) = jobs.next() {
                let again = Box::pin(run_group(shared, channel, &mut *state, vec![job], None)).await;
                if !again.is_empty() {
                    return again.into_iter().chain(jobs).collect();
                }
            }
            Vec::new()
        }
    }
}

/// Runs the logic for `job` over the group's state, again while a transient failure lasts
/// within the budget.
async fn run_call(shared: &Shared, channel: &str, state: &mut GroupState, job: &mut Job) -> Step {
    loop {
        job.attempts = job.attempts.saturating_add(1);
        let attempts = job.attempts;
        // The backend owns the group's state for the call and hands it back after.
        let backend = LeaseBackend::new(std::mem::take(state), channel.to_owned());
        let (backend, invoked) = invoke_with(&shared.runtime, &job.call, backend).await;
        let (group, read_failure) = backend.into_parts();
        *state = group;
        // A failed read decides the outcome, whatever the logic made of it.
        let failure = match (read_failure, invoked) {
            (Some(failure), _) if failure.lost => return Step::Lost(CallError::Database(failure.message)),
            (Some(failure), _) => AttemptError::Final(CallError::Database(failure.message)),
            (None, Err(err)) => err,
            (None, Ok(invocation)) => {
                let fuel_consumed = invocation.fuel_consumed;
                let logic = Some(invocation.logic);
                match invocation.result {
                    Ok(response) if invocation.writes.is_empty() && invocation.events.is_empty() => {
                        return Step::Done(CallOutcome { result: Ok(response), attempts, fuel_consumed, logic });
                    }
                    Ok(response) => match EventColumns::extract(&invocation.events) {
                        Ok(columns) => {
                            return Step::Wrote {
                                outcome: CallOutcome { result: Ok(response), attempts, fuel_consumed, logic },
                                writes: invocation.writes,
                                events: invocation.events,
                                columns,
                            };
                        }
                        Err(err) => AttemptError::Final(CallError::InvalidEvent(err)),
                    },
                    // A refused call wrote nothing.
                    Err(error) => {
                        return Step::Done(CallOutcome {
                            result: Err(CallError::Logic(error)),
                            attempts,
                            fuel_consumed,
                            logic,
                        });
                    }
                }
            }
        };
        if let Some(outcome) = settle(shared, job, failure) {
            return Step::Done(outcome);
        }
    }
}

/// Opens the writer's next lease after the connection was lost during a flush of `batch`, and
/// tells whether that flush committed: its first event is stored, or (with no event) every
/// write of it is in place.
async fn settle_lost_flush(
    shared: &Shared,
    channel: &str,
    lost: &ServerProcess,
    batch: &Batch,
) -> Result<(Lease, bool), sqlx::Error> {
    let lease = tokio::time::timeout(OUTCOME_WAIT, Lease::succeed(&shared.options, channel, lost)).await;
    let mut lease = lease.map_err(|_| sqlx::Error::PoolTimedOut)??;
    let committed = match batch.first_event_id() {
        Some(id) => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE channel = $1 AND event_id = $2)")
                .bind(channel)
                .bind(id)
                .fetch_one(&mut lease.conn)
                .await?
        }
        None => {
            let keys: Vec<&str> = batch.writes.keys().map(String::as_str).collect();
            let rows: Vec<(String, Vec<u8>)> =
                sqlx::query_as(GET_MANY).bind(channel).bind(&keys).fetch_all(&mut lease.conn).await?;
            let stored: HashMap<String, Vec<u8>> = rows.into_iter().collect();
            batch.writes.iter().all(|(key, value)| stored.get(key) == value.as_ref())
        }
    };
    Ok((lease, committed))
}

fn answer(group: Vec<Job>, outcomes: Vec<CallOutcome>) {
    for (job, outcome) in group.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

fn answer_all(group: Vec<Job>, err: &CallError) {
    for job in group {
        let attempts = job.attempts.max(1);
        let result = Err(match err {
            CallError::NotApplied(message) => CallError::NotApplied(message.clone()),
            CallError::OutcomeUnknown(message) => CallError::OutcomeUnknown(message.clone()),
            other => CallError::Database(other.to_string()),
        });
        let _ = job.reply.send(CallOutcome { result, attempts, fuel_consumed: 0, logic: None });
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
    Some(CallOutcome { result: Err(err), attempts, fuel_consumed: 0, logic: None })
}

/// The jobs of a group that was not stored: those still within budget run again, the others
/// are told why they were not applied.
fn again_or_give_up(shared: &Shared, group: Vec<Job>, cause: &CallError) -> Vec<Job> {
    let mut again = Vec::new();
    for job in group {
        if job.received.elapsed() < shared.retry_budget {
            again.push(job);
        } else {
            let attempts = job.attempts.max(1);
            let err = budget_exhausted(shared.retry_budget, attempts, cause);
            let _ = job.reply.send(CallOutcome { result: Err(err), attempts, fuel_consumed: 0, logic: None });
        }
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        // Two orchestrator builds must agree on the key: it is part of the database protocol.
        assert_eq!(channel_lock_key("mychannel"), -8_712_152_384_692_794_069);
        assert_ne!(channel_lock_key("mychannel"), channel_lock_key("yourchannel"));
    }
}
