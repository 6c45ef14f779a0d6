//! An in-memory [`StateBackend`], for tests, benches and examples: one call at a time (see the
//! crate's contract, "What `MemoryBackend` does not do").

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{BackendError, BoxFuture, StateBackend, StateEntry, StateWrite};

/// Committed state in a shared `BTreeMap` (bytewise key order, like PostgreSQL `COLLATE "C"`
/// and Fabric). Clones share the same state: hand a clone to each call
/// ([`crate::Runtime::invoke`] takes it by value), then [`MemoryBackend::apply`] the writes of
/// the calls that succeed. No snapshot, no conflict detection: not for concurrent calls.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryBackend {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state holding `entries`.
    pub fn from_entries<K: Into<String>, V: Into<Vec<u8>>>(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let backend = Self::new();
        backend.lock().extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        backend
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A boxed handle on the same state, for hosts that hold backends as trait objects
    /// (`Box<dyn StateBackend>` is a backend too).
    pub fn boxed(&self) -> Box<dyn StateBackend> {
        Box::new(self.clone())
    }

    /// Commits a call's writes (`Some` = put, `None` = delete).
    pub fn apply(&self, writes: &[StateWrite]) {
        let mut state = self.lock();
        for (key, value) in writes {
            match value {
                Some(value) => {
                    state.insert(key.clone(), value.clone());
                }
                None => {
                    state.remove(key);
                }
            }
        }
    }

    /// The committed value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().clone()
    }

    /// Number of committed entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is committed.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl StateBackend for MemoryBackend {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        let state = self.lock();
        let values = keys.iter().map(|k| state.get(k).cloned()).collect();
        Box::pin(std::future::ready(Ok(values)))
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>> {
        let entries = if start >= end {
            Vec::new()
        } else {
            let take = usize::try_from(limit).unwrap_or(usize::MAX);
            self.lock()
                .range::<str, _>((Bound::Included(start), Bound::Excluded(end)))
                .take(take)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Box::pin(std::future::ready(Ok(entries)))
    }
}
