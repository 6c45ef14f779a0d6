//! What a channel's writer knows of the channel's state while it holds the channel's lock, and
//! the state backend its calls read through.
//!
//! Nobody else writes a channel's rows while its lock is held, so a row read or written since
//! the lock was taken is known without asking the database again, absent rows included (a
//! registration first checks that its key is free). Reads that miss go to the database without
//! a transaction: under the lock the latest commit is the writer's own. The writes of the
//! group's earlier calls, not flushed yet, are laid over both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use orchestrator_runtime::{BackendError, BoxFuture, DEFAULT_SCAN_LIMIT, StateBackend, StateEntry};

use super::lease::Lease;
use crate::postgres::backend::{GET_MANY, SCAN, is_connection_lost};

/// Most bytes of state a channel's cache keeps; past it the cache starts over (it is only a
/// shortcut: everything in it is also in the database).
const MAX_CACHE_BYTES: usize = 64 << 20;
/// Bookkeeping per cached entry, roughly (map slot, key and value headers).
const ENTRY_OVERHEAD: usize = 64;

/// Committed state rows of one channel, as of the last flush under the current lock: `None`
/// for a key known to be absent.
#[derive(Debug, Default)]
pub(super) struct StateCache {
    entries: HashMap<String, Option<Vec<u8>>>,
    bytes: usize,
}

fn weight(key: &str, value: Option<&Vec<u8>>) -> usize {
    key.len() + value.map_or(0, Vec::len) + ENTRY_OVERHEAD
}

impl StateCache {
    pub(super) fn get(&self, key: &str) -> Option<Option<&Vec<u8>>> {
        self.entries.get(key).map(Option::as_ref)
    }

    pub(super) fn insert(&mut self, key: String, value: Option<Vec<u8>>) {
        let new_len = value.as_ref().map_or(0, Vec::len);
        if self.bytes + weight(&key, value.as_ref()) > MAX_CACHE_BYTES {
            self.clear();
        }
        let key_len = key.len();
        match self.entries.insert(key, value) {
            Some(old) => self.bytes = self.bytes.saturating_sub(old.map_or(0, |v| v.len())) + new_len,
            None => self.bytes += key_len + new_len + ENTRY_OVERHEAD,
        }
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A read of the writer's connection that failed.
#[derive(Debug, Clone)]
pub(super) struct ReadFailure {
    pub(super) message: String,
    /// The connection (and with it the lock) is gone: the group must run again.
    pub(super) lost: bool,
}

/// What the calls of a group share with the writer: the lease (connection, lock, cache) and
/// the writes of the group's calls so far.
#[derive(Debug, Default)]
pub(super) struct GroupState {
    pub(super) lease: Option<Lease>,
    /// Net writes of the group's earlier calls, not flushed yet.
    pub(super) pending: BTreeMap<String, Option<Vec<u8>>>,
}

impl GroupState {
    /// Adds a call's net writes to the group's. A put of the value the cache already holds
    /// (and no earlier write of the group) writes nothing.
    pub(super) fn add_writes(&mut self, writes: Vec<(String, Option<Vec<u8>>)>) -> usize {
        let mut bytes = 0;
        for (key, value) in writes {
            if !self.pending.contains_key(&key)
                && let Some(lease) = &self.lease
                && lease.cache.get(&key) == Some(value.as_ref())
            {
                continue;
            }
            bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            self.pending.insert(key, value);
        }
        bytes
    }
}

/// [`StateBackend`] of a write call: the group's writes, then the cache, then the database.
/// It holds the writer's group state for the length of the call (the runtime hands it back).
pub(super) struct LeaseBackend {
    group: GroupState,
    channel: String,
    /// The first failed read of the call.
    failure: Option<ReadFailure>,
}

impl LeaseBackend {
    pub(super) fn new(group: GroupState, channel: String) -> Self {
        Self { group, channel, failure: None }
    }

    /// The group's state back, with the call's first failed read.
    pub(super) fn into_parts(self) -> (GroupState, Option<ReadFailure>) {
        (self.group, self.failure)
    }
}

fn record(failure: &mut Option<ReadFailure>, err: &sqlx::Error) -> BackendError {
    let lost = is_connection_lost(err);
    let message = err.to_string();
    if failure.is_none() {
        *failure = Some(ReadFailure { message: message.clone(), lost });
    }
    BackendError { message, retryable: lost }
}

fn no_lease() -> BackendError {
    BackendError { message: "the channel's write lock is not held".to_owned(), retryable: true }
}

impl StateBackend for LeaseBackend {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        Box::pin(async move {
            let GroupState { lease, pending } = &mut self.group;
            let failure = &mut self.failure;
            let lease = lease.as_mut().ok_or_else(no_lease)?;
            let mut asked: HashSet<&str> = HashSet::new();
            let missing: Vec<&str> = keys
                .iter()
                .map(String::as_str)
                .filter(|key| !pending.contains_key(*key) && lease.cache.get(key).is_none() && asked.insert(key))
                .collect();
            if !missing.is_empty() {
                let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(GET_MANY)
                    .bind(&self.channel)
                    .bind(&missing)
                    .fetch_all(&mut lease.conn)
                    .await
                    .map_err(|err| record(failure, &err))?;
                let mut found: HashMap<String, Vec<u8>> = rows.into_iter().collect();
                for key in missing {
                    lease.cache.insert(key.to_owned(), found.remove(key));
                }
            }
            Ok(keys
                .iter()
                .map(|key| match pending.get(key) {
                    Some(value) => value.clone(),
                    None => lease.cache.get(key).flatten().cloned(),
                })
                .collect())
        })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>> {
        Box::pin(async move {
            // The runtime promises start < end and limit >= 1; stay total anyway.
            let limit = if limit == 0 { DEFAULT_SCAN_LIMIT } else { limit } as usize;
            if end <= start {
                return Ok(Vec::new());
            }
            let GroupState { lease, pending } = &mut self.group;
            let failure = &mut self.failure;
            let lease = lease.as_mut().ok_or_else(no_lease)?;
            let range = (Bound::Included(start), Bound::Excluded(end));
            // Each pending delete may hide one stored row: read that many more, so that the
            // first `limit` entries of the merge are exact.
            let hidden = pending.range::<str, _>(range).filter(|(_, value)| value.is_none()).count();
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(SCAN)
                .bind(&self.channel)
                .bind(start)
                .bind(end)
                .bind(i64::try_from(limit + hidden).unwrap_or(i64::MAX))
                .fetch_all(&mut lease.conn)
                .await
                .map_err(|err| record(failure, &err))?;
            let mut merged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (key, value) in rows {
                lease.cache.insert(key.clone(), Some(value.clone()));
                merged.insert(key, value);
            }
            for (key, value) in pending.range::<str, _>(range) {
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
            Ok(merged.into_iter().take(limit).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_counts_its_bytes_and_starts_over_when_full() {
        let mut cache = StateCache::default();
        cache.insert("a".to_owned(), Some(vec![1; 10]));
        cache.insert("b".to_owned(), None);
        assert_eq!(cache.get("a"), Some(Some(&vec![1; 10])));
        assert_eq!(cache.get("b"), Some(None));
        assert_eq!(cache.get("c"), None);
        assert_eq!(cache.bytes, 1 + 10 + 1 + 2 * ENTRY_OVERHEAD);
        // Replacing a value counts the new size only.
        cache.insert("a".to_owned(), Some(vec![1; 4]));
        assert_eq!(cache.bytes, 1 + 4 + 1 + 2 * ENTRY_OVERHEAD);
        cache.insert("big".to_owned(), Some(vec![0; MAX_CACHE_BYTES]));
        assert_eq!(cache.len(), 1, "the cache started over");
        assert_eq!(cache.get("a"), None);
    }
}
