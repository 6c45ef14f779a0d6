//! The write overlay: the call's own writes over a backend's committed reads.
//!
//! The Fabric peer has no read-your-writes and PostgreSQL reads are batched, so the runtime
//! provides the WIT `state` semantics itself: every read consults the write set first, scans
//! merge the write set into backend pages, and backends only ever see reads.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::{BackendError, StateBackend, StateEntry, StateWrite};

pub use orchestrator_contract::{DEFAULT_SCAN_LIMIT, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use orchestrator_contract::{SCAN_BOUND_SLACK_BYTES as BOUND_SLACK_BYTES, ScanPage, StateError};

/// How much of an offending key an error message quotes.
const QUOTED_KEY_BYTES: usize = 128;

/// Net writes of a call, by key: `Some` = put, `None` = delete.
pub(crate) type WriteSet = BTreeMap<String, Option<Vec<u8>>>;

/// A backend the runtime can hand back to its owner as the concrete type it was given: the
/// store of a call must be of one type (the linker's), so the backend travels boxed and is
/// downcast back after the call.
pub(crate) trait OwnedBackend: StateBackend {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<B: StateBackend + 'static> OwnedBackend for B {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// The state one call sees: its write set over a backend.
pub(crate) struct Overlay {
    backend: Box<dyn OwnedBackend>,
    writes: WriteSet,
    /// The first backend failure; once set every further state call fails without touching the
    /// backend, and the call fails with it whatever the logic answers.
    failure: Option<BackendError>,
    /// Cap on the extra backend entries a scan asks for to make up for the call's deletes
    /// (unbounded; tests lower it to exercise the multi-round path).
    read_ahead_cap: usize,
}

fn quote(key: &str) -> String {
    if key.len() <= QUOTED_KEY_BYTES {
        return format!("{key:?}");
    }
    let mut cut = QUOTED_KEY_BYTES;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}...", &key[..cut])
}

fn check_str(key: &str, max: usize, what: &str) -> Result<(), StateError> {
    if key.len() > max {
        return Err(StateError::InvalidKey(format!("{what} {} is {} bytes long (max {max})", quote(key), key.len())));
    }
    if key.as_bytes().contains(&0) {
        return Err(StateError::InvalidKey(format!("{what} {} contains NUL", quote(key))));
    }
    Ok(())
}

pub(crate) fn check_key(key: &str) -> Result<(), StateError> {
    check_str(key, MAX_KEY_BYTES, "key")
}

fn check_bound(bound: &str) -> Result<(), StateError> {
    check_str(bound, MAX_KEY_BYTES + BOUND_SLACK_BYTES, "scan bound")
}

fn check_value(value: &[u8]) -> Result<(), StateError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StateError::ValueTooLarge(value.len() as u64));
    }
    Ok(())
}

impl Overlay {
    pub fn new(backend: Box<dyn OwnedBackend>) -> Self {
        Self { backend, writes: WriteSet::new(), failure: None, read_ahead_cap: usize::MAX }
    }

    #[cfg(test)]
    pub fn with_read_ahead_cap(mut self, cap: usize) -> Self {
        self.read_ahead_cap = cap;
        self
    }

    /// Ends the call: its net writes (sorted by key), its first backend failure, and the
    /// backend itself.
    pub fn finish(self) -> (Vec<StateWrite>, Option<BackendError>, Box<dyn OwnedBackend>) {
        (self.writes.into_iter().collect(), self.failure, self.backend)
    }

    fn check_healthy(&self) -> Result<(), StateError> {
        match &self.failure {
            Some(e) => Err(StateError::Backend(e.message.clone())),
            None => Ok(()),
        }
    }

    /// Records a backend failure (the first one wins) and returns what the logic sees.
    fn fail(&mut self, error: BackendError) -> StateError {
        let message = error.message.clone();
        tracing::debug!(error = %message, retryable = error.retryable, "state backend failed");
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        StateError::Backend(message)
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        if let Some(written) = self.writes.get(key) {
            return Ok(written.clone());
        }
        self.check_healthy()?;
        let keys = [key.to_owned()];
        let mut values = match self.backend.get_many(&keys).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail(e)),
        };
        if values.len() != 1 {
            return Err(
                self.fail(BackendError::fatal(format!("backend get_many returned {} values for 1 key", values.len())))
            );
        }
        Ok(values.pop().flatten())
    }

    /// One result per key, in order. Keys found in the write set are answered from it; the
    /// others go to the backend in a single `get_many` (duplicates sent once).
    pub async fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        for key in keys {
            check_key(key)?;
        }
        let mut missing: Vec<String> = Vec::new();
        let mut missing_index: BTreeMap<&str, usize> = BTreeMap::new();
        for key in keys {
            if !self.writes.contains_key(key.as_str()) && !missing_index.contains_key(key.as_str()) {
                missing_index.insert(key, missing.len());
                missing.push(key.clone());
            }
        }
        let fetched = if missing.is_empty() {
            Vec::new()
        } else {
            self.check_healthy()?;
            let fetched = match self.backend.get_many(&missing).await {
                Ok(v) => v,
                Err(e) => return Err(self.fail(e)),
            };
            if fetched.len() != missing.len() {
                let error = BackendError::fatal(format!(
                    "backend get_many returned {} values for {} keys",
                    fetched.len(),
                    missing.len()
                ));
                return Err(self.fail(error));
            }
            fetched
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.writes.get(key.as_str()) {
                Some(written) => out.push(written.clone()),
                None => {
                    let index = missing_index.get(key.as_str()).copied();
                    out.push(index.and_then(|i| fetched.get(i).cloned().flatten()));
                }
            }
        }
        Ok(out)
    }

    pub fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), StateError> {
        check_key(&key)?;
        check_value(&value)?;
        self.check_healthy()?;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    pub fn delete(&mut self, key: String) -> Result<(), StateError> {
        check_key(&key)?;
        self.check_healthy()?;
        self.writes.insert(key, None);
        Ok(())
    }

    /// Keys in [start, end) ascending, at most `limit` (0 = [`DEFAULT_SCAN_LIMIT`]), starting at
    /// `cursor` when given. `next_cursor` is the first key of the next page, or `None` when the
    /// range is exhausted. A page is short only when the range is exhausted: backend entries
    /// hidden by the call's deletes are made up for by fetching further.
    pub async fn scan(
        &mut self,
        start: &str,
        end: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ScanPage, StateError> {
        check_bound(start)?;
        check_bound(end)?;
        if let Some(cursor) = cursor {
            check_bound(cursor)?;
        }
        let limit = if limit == 0 { DEFAULT_SCAN_LIMIT } else { limit };
        // The cursor replaces `start`; it can never widen the range.
        let from = match cursor {
            Some(cursor) if cursor > start => cursor,
            _ => start,
        };
        if from >= end {
            return Ok(ScanPage { entries: Vec::new(), next_cursor: None });
        }
        self.check_healthy()?;

        // Collect one entry more than the page: its key is the next cursor.
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        let want = page.saturating_add(1);
        let mut merged: Vec<StateEntry> = Vec::new();
        // Position in the range: the backend has been read up to `lo` (excluded when
        // `lo_seen`, the first round reads from `from` included).
        let mut lo = from.to_owned();
        let mut lo_seen = false;
        loop {
            let lower = if lo_seen { Bound::Excluded(lo.as_str()) } else { Bound::Included(lo.as_str()) };
            // Entries the call deleted hide backend entries: ask for that many more so one
            // round trip usually fills the page. When resuming at `lo` (inclusive for the
            // backend, which takes a start key), one more for `lo` itself.
            let hidden = self
                .writes
                .range::<str, _>((lower, Bound::Excluded(end)))
                .filter(|(_, v)| v.is_none())
                .count()
                .min(self.read_ahead_cap);
            let need = want - merged.len();
            let request = need.saturating_add(hidden).saturating_add(usize::from(lo_seen)).min(u32::MAX as usize);
            let request_u32 = u32::try_from(request).unwrap_or(u32::MAX);
            let mut batch = match self.backend.scan(&lo, end, request_u32).await {
                Ok(batch) => batch,
                Err(e) => return Err(self.fail(e)),
            };
            batch.truncate(request);
            let exhausted = batch.len() < request;
            if let Err(problem) = check_batch(&batch, &lo, end) {
                return Err(self.fail(BackendError::fatal(problem)));
            }
            let last_raw = batch.last().map(|(k, _)| k.clone());
            let upper = match (&last_raw, exhausted) {
                (Some(last), false) => Bound::Included(last.as_str()),
                _ => Bound::Excluded(end),
            };
            let lower = if lo_seen { Bound::Excluded(lo.as_str()) } else { Bound::Included(lo.as_str()) };
            // Everything in (lower, upper) is now known: merge the backend entries the call
            // did not overwrite or delete with the call's puts.
            let mut puts =
                self.writes.range::<str, _>((lower, upper)).filter_map(|(k, v)| v.as_ref().map(|v| (k, v))).peekable();
            let mut backend = batch
                .into_iter()
                .filter(|(k, _)| !(self.writes.contains_key(k.as_str()) || (lo_seen && *k == lo)))
                .peekable();
            while merged.len() < want {
                let take_put = match (puts.peek(), backend.peek()) {
                    (Some((pk, _)), Some((bk, _))) => pk.as_str() < bk.as_str(),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                if take_put {
                    if let Some((k, v)) = puts.next() {
                        merged.push((k.clone(), v.clone()));
                    }
                } else if let Some(entry) = backend.next() {
                    merged.push(entry);
                }
            }
            if merged.len() >= want || exhausted {
                break;
            }
            match last_raw {
                Some(last) => {
                    lo = last;
                    lo_seen = true;
                }
                // Unreachable: an empty batch is exhausted (request >= 1).
                None => break,
            }
        }
        // `merged` holds at most `want` = page + 1 entries: the extra one starts the next page.
        let next_cursor = if merged.len() > page { merged.pop().map(|(key, _)| key) } else { None };
        Ok(ScanPage { entries: merged, next_cursor })
    }
}

/// A backend page must be strictly ascending and inside [lo, end).
fn check_batch(batch: &[StateEntry], lo: &str, end: &str) -> Result<(), String> {
    let mut previous: Option<&str> = None;
    for (key, _) in batch {
        let key = key.as_str();
        if key < lo || key >= end {
            return Err(format!(
                "backend scan of [{}, {}) returned key {} outside the range",
                quote(lo),
                quote(end),
                quote(key)
            ));
        }
        if let Some(previous) = previous
            && key <= previous
        {
            return Err(format!(
                "backend scan returned key {} after {}: not strictly ascending",
                quote(key),
                quote(previous)
            ));
        }
        previous = Some(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
