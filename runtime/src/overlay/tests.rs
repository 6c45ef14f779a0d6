#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::*;
use crate::runtime::block_on;
use crate::{BoxFuture, MemoryBackend};
use orchestrator_logic::testing::Rng;

/// A backend call, as recorded by [`Recording`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    GetMany(Vec<String>),
    Scan(String, String, u32),
}

/// Wraps a [`MemoryBackend`], records calls, and fails on demand.
#[derive(Clone, Default)]
struct Recording {
    inner: MemoryBackend,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Fail every call from this call index on (0 = the first call).
    fail_from: Option<usize>,
    /// Return scan entries in a wrong order.
    unordered: bool,
}

impl Recording {
    fn new(entries: &[(&str, &str)]) -> Self {
        Self {
            inner: MemoryBackend::from_entries(entries.iter().map(|(k, v)| (k.to_string(), v.as_bytes()))),
            ..Self::default()
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> Result<(), BackendError> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(call);
        match self.fail_from {
            Some(n) if calls.len() > n => Err(BackendError::retryable(format!("injected failure #{}", calls.len()))),
            _ => Ok(()),
        }
    }
}

impl StateBackend for Recording {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        Box::pin(async move {
            self.record(Call::GetMany(keys.to_vec()))?;
            self.inner.get_many(keys).await
        })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>, BackendError>> {
        Box::pin(async move {
            assert!(limit >= 1, "scan with limit 0");
            assert!(start < end, "scan of an empty range");
            self.record(Call::Scan(start.to_owned(), end.to_owned(), limit))?;
            let mut entries = self.inner.scan(start, end, limit).await?;
            if self.unordered {
                entries.reverse();
            }
            Ok(entries)
        })
    }
}

fn overlay(backend: &Recording) -> Overlay {
    Overlay::new(Box::new(backend.clone()))
}

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| k.to_string()).collect()
}

fn page_keys(page: &ScanPage) -> Vec<&str> {
    page.entries.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn get_reads_own_writes_and_deletes() {
    let backend = Recording::new(&[("a", "1"), ("b", "2")]);
    let mut state = overlay(&backend);
    block_on(async {
        assert_eq!(state.get("a").await, Ok(v("1")));
        assert_eq!(state.get("zz").await, Ok(None));
        state.put("a".into(), b"10".to_vec()).unwrap();
        state.delete("b".into()).unwrap();
        state.put("c".into(), b"3".to_vec()).unwrap();
        assert_eq!(state.get("a").await, Ok(v("10")));
        assert_eq!(state.get("b").await, Ok(None));
        assert_eq!(state.get("c").await, Ok(v("3")));
    });
    // Only the first two reads reached the backend.
    assert_eq!(backend.calls(), vec![Call::GetMany(keys(&["a"])), Call::GetMany(keys(&["zz"]))]);
    let (writes, failure, _) = state.finish();
    assert!(failure.is_none());
    assert_eq!(writes, vec![("a".to_string(), v("10")), ("b".to_string(), None), ("c".to_string(), v("3")),]);
}

#[test]
fn get_many_sends_only_missing_keys_once() {
    let backend = Recording::new(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let mut state = overlay(&backend);
    block_on(async {
        state.put("b".into(), b"20".to_vec()).unwrap();
        state.delete("c".into()).unwrap();
        let got = state.get_many(&keys(&["d", "a", "b", "c", "x", "a", "d"])).await.unwrap();
        assert_eq!(got, vec![v("4"), v("1"), v("20"), None, None, v("1"), v("4")]);
        // All answered by the overlay: no backend call.
        let got = state.get_many(&keys(&["b", "c", "b"])).await.unwrap();
        assert_eq!(got, vec![v("20"), None, v("20")]);
        assert_eq!(state.get_many(&[]).await, Ok(vec![]));
    });
    assert_eq!(
        backend.calls(),
        vec![Call::GetMany(keys(&["d", "a", "x"]))],
        "one backend call, missing keys only, each once, in first-seen order"
    );
}

#[test]
fn keys_and_values_are_validated() {
    let backend = Recording::new(&[]);
    let mut state = overlay(&backend);
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let max = "k".repeat(MAX_KEY_BYTES);
    block_on(async {
        assert!(matches!(state.get(&long).await, Err(StateError::InvalidKey(_))));
        assert!(matches!(state.get("a\0b").await, Err(StateError::InvalidKey(m)) if m.contains("NUL")));
        assert!(matches!(state.get_many(&["ok".to_string(), long.clone()]).await, Err(StateError::InvalidKey(_))));
        assert!(matches!(state.put(long.clone(), vec![]), Err(StateError::InvalidKey(_))));
        assert!(matches!(state.delete("\0".into()), Err(StateError::InvalidKey(_))));
        assert_eq!(
            state.put("big".into(), vec![0; MAX_VALUE_BYTES + 1]),
            Err(StateError::ValueTooLarge(MAX_VALUE_BYTES as u64 + 1))
        );
        assert!(matches!(state.scan("a\0", "b", 1, None).await, Err(StateError::InvalidKey(_))));
        assert!(matches!(state.scan("a", "b", 1, Some("a\0")).await, Err(StateError::InvalidKey(_))));
        // Limits are inclusive.
        state.put(max.clone(), vec![0; MAX_VALUE_BYTES]).unwrap();
        assert_eq!(state.get(&max).await.unwrap().map(|v| v.len()), Some(MAX_VALUE_BYTES));
    });
    // A long key is quoted, not copied whole, into the message.
    let Err(StateError::InvalidKey(message)) = block_on(state.get(&"x".repeat(100_000))) else {
        panic!("expected invalid-key");
    };
    assert!(message.len() < 300, "{message}");
    // Nothing invalid reached the backend.
    assert!(backend.calls().is_empty());
}

#[test]
fn scan_merges_puts_and_deletes() {
    let backend = Recording::new(&[("k1", "b1"), ("k2", "b2"), ("k4", "b4"), ("k6", "b6"), ("z", "zz")]);
    let mut state = overlay(&backend);
    block_on(async {
        state.put("k3".into(), b"o3".to_vec()).unwrap();
        state.put("k4".into(), b"o4".to_vec()).unwrap();
        state.delete("k2".into()).unwrap();
        state.delete("k5".into()).unwrap(); // not in the backend
        state.put("k7".into(), b"o7".to_vec()).unwrap();
        state.put("j".into(), b"outside".to_vec()).unwrap();

        let page = state.scan("k", "l", 0, None).await.unwrap();
        assert_eq!(page_keys(&page), ["k1", "k3", "k4", "k6", "k7"]);
        assert_eq!(page.entries[2].1, b"o4");
        assert_eq!(page.next_cursor, None);

        let page = state.scan("k", "l", 2, None).await.unwrap();
        assert_eq!(page_keys(&page), ["k1", "k3"]);
        assert_eq!(page.next_cursor.as_deref(), Some("k4"));
        let page = state.scan("k", "l", 2, page.next_cursor.as_deref()).await.unwrap();
        assert_eq!(page_keys(&page), ["k4", "k6"]);
        assert_eq!(page.next_cursor.as_deref(), Some("k7"));
        let page = state.scan("k", "l", 2, page.next_cursor.as_deref()).await.unwrap();
        assert_eq!(page_keys(&page), ["k7"]);
        assert_eq!(page.next_cursor, None);

        // A page exactly as long as the rest of the range has no next cursor.
        let page = state.scan("k", "l", 5, None).await.unwrap();
        assert_eq!(page.entries.len(), 5);
        assert_eq!(page.next_cursor, None);

        // Empty and inverted ranges; a cursor never widens the range.
        assert!(state.scan("l", "k", 3, None).await.unwrap().entries.is_empty());
        assert!(state.scan("k", "k", 3, None).await.unwrap().entries.is_empty());
        let page = state.scan("k4", "l", 1, Some("a")).await.unwrap();
        assert_eq!(page_keys(&page), ["k4"]);
        let page = state.scan("k", "l", 10, Some("zzz")).await.unwrap();
        assert!(page.entries.is_empty() && page.next_cursor.is_none());
    });
}

#[test]
fn scan_fills_pages_hidden_by_deletes_in_one_round_trip() {
    let entries: Vec<(String, String)> = (0..20).map(|i| (format!("t{i:02}"), format!("{i}"))).collect();
    let refs: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let backend = Recording::new(&refs);
    let mut state = overlay(&backend);
    block_on(async {
        for i in 0..10 {
            state.delete(format!("t{i:02}")).unwrap();
        }
        let page = state.scan("t", "u", 3, None).await.unwrap();
        assert_eq!(page_keys(&page), ["t10", "t11", "t12"]);
        assert_eq!(page.next_cursor.as_deref(), Some("t13"));
    });
    assert_eq!(backend.calls(), vec![Call::Scan("t".into(), "u".into(), 14)], "page + 1 look-ahead + 10 hidden");
}

#[test]
fn scan_keeps_reading_when_deletes_hide_a_whole_batch() {
    let entries: Vec<(String, String)> = (0..20).map(|i| (format!("t{i:02}"), format!("{i}"))).collect();
    let refs: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let backend = Recording::new(&refs);
    let mut state = overlay(&backend).with_read_ahead_cap(0);
    block_on(async {
        for i in (0..18).filter(|i| i % 6 != 5) {
            state.delete(format!("t{i:02}")).unwrap();
        }
        // Visible: t05, t11, t17, t18, t19.
        let page = state.scan("t", "u", 2, None).await.unwrap();
        assert_eq!(page_keys(&page), ["t05", "t11"]);
        assert_eq!(page.next_cursor.as_deref(), Some("t17"));
        let page = state.scan("t", "u", 2, Some("t17")).await.unwrap();
        assert_eq!(page_keys(&page), ["t17", "t18"]);
        assert_eq!(page.next_cursor.as_deref(), Some("t19"));
    });
    let calls = backend.calls();
    assert!(calls.len() > 2, "several rounds expected: {calls:?}");
    // Rounds resume at the last key seen (inclusive for the backend, skipped by the overlay).
    assert_eq!(calls[0], Call::Scan("t".into(), "u".into(), 3));
    assert_eq!(calls[1], Call::Scan("t02".into(), "u".into(), 4));
}

#[test]
fn backend_failure_is_sticky_and_first_one_wins() {
    let mut backend = Recording::new(&[("a", "1")]);
    backend.fail_from = Some(1);
    let mut state = overlay(&backend);
    block_on(async {
        assert_eq!(state.get("a").await, Ok(v("1")));
        let Err(StateError::Backend(message)) = state.scan("a", "b", 1, None).await else {
            panic!("expected a backend error");
        };
        assert_eq!(message, "injected failure #2");
        // Further calls fail without reaching the backend; writes too.
        assert!(matches!(state.get("b").await, Err(StateError::Backend(_))));
        assert!(matches!(state.get_many(&keys(&["c"])).await, Err(StateError::Backend(_))));
        assert!(matches!(state.put("c".into(), vec![]), Err(StateError::Backend(_))));
        assert!(matches!(state.delete("c".into()), Err(StateError::Backend(_))));
    });
    assert_eq!(backend.calls().len(), 2);
    let (_, failure, _) = state.finish();
    let failure = failure.unwrap();
    assert_eq!(failure.message, "injected failure #2");
    assert!(failure.retryable);
}

#[test]
fn backend_protocol_violations_fail_the_call() {
    let mut backend = Recording::new(&[("a", "1"), ("b", "2")]);
    backend.unordered = true;
    let mut state = overlay(&backend);
    let result = block_on(state.scan("a", "c", 5, None));
    assert!(matches!(result, Err(StateError::Backend(m)) if m.contains("ascending")));
    let (_, failure, _) = state.finish();
    assert!(!failure.unwrap().retryable);

    struct Short;
    impl StateBackend for Short {
        fn get_many<'a>(&'a mut self, _: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
            Box::pin(std::future::ready(Ok(vec![])))
        }
        fn scan<'a>(
            &'a mut self,
            _: &'a str,
            _: &'a str,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>, BackendError>> {
            Box::pin(std::future::ready(Ok(vec![("zzz".to_string(), vec![])])))
        }
    }
    let mut state = Overlay::new(Box::new(Short));
    assert!(matches!(block_on(state.get("a")), Err(StateError::Backend(_))));
    let mut state = Overlay::new(Box::new(Short));
    let result = block_on(state.scan("a", "b", 5, None));
    assert!(matches!(result, Err(StateError::Backend(m)) if m.contains("outside")));
}

/// Short keys over a small alphabet (multi-byte characters included) so that random
/// operations collide and bounds fall between keys.
fn random_key(rng: &mut Rng) -> String {
    const ALPHABET: [&str; 5] = ["a", "b", "c", "é", "\u{10000}"];
    let len = 1 + rng.below(3);
    (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect()
}

fn model_page(
    model: &BTreeMap<String, Vec<u8>>,
    from: &str,
    end: &str,
    limit: usize,
) -> (Vec<(String, Vec<u8>)>, Option<String>) {
    if from >= end {
        return (vec![], None);
    }
    let mut all =
        model.range::<str, _>((Bound::Included(from), Bound::Excluded(end))).map(|(k, v)| (k.clone(), v.clone()));
    let page: Vec<_> = all.by_ref().take(limit).collect();
    (page, all.next().map(|(k, _)| k))
}

#[test]
fn overlay_matches_a_btreemap_model() {
    for seed in 1..=400u64 {
        let mut rng = Rng::new(seed);
        let mut committed = BTreeMap::new();
        for _ in 0..rng.below(40) {
            let value = rng.next_u64().to_le_bytes().to_vec();
            committed.insert(random_key(&mut rng), value);
        }
        let backend = Recording { inner: MemoryBackend::from_entries(committed.clone()), ..Recording::default() };
        let cap = [0, 1, 2, usize::MAX][rng.below(4)];
        let mut state = overlay(&backend).with_read_ahead_cap(cap);
        let mut model = committed.clone();

        for step in 0..60 {
            match rng.below(6) {
                0 | 1 => {
                    let key = random_key(&mut rng);
                    let value = rng.next_u64().to_le_bytes().to_vec();
                    state.put(key.clone(), value.clone()).unwrap();
                    model.insert(key, value);
                }
                2 => {
                    let key = random_key(&mut rng);
                    state.delete(key.clone()).unwrap();
                    model.remove(&key);
                }
                3 => {
                    let ks: Vec<String> = (0..rng.below(5)).map(|_| random_key(&mut rng)).collect();
                    let got = block_on(state.get_many(&ks)).unwrap();
                    let want: Vec<_> = ks.iter().map(|k| model.get(k).cloned()).collect();
                    assert_eq!(got, want, "seed {seed} step {step}: get_many {ks:?}");
                    let key = random_key(&mut rng);
                    assert_eq!(block_on(state.get(&key)).unwrap(), model.get(&key).cloned());
                }
                _ => {
                    let start = if rng.below(5) == 0 { String::new() } else { random_key(&mut rng) };
                    let end = if rng.below(5) == 0 { "\u{10FFFF}".to_owned() } else { random_key(&mut rng) };
                    let limit = rng.below64(6) as u32;
                    let page_len = if limit == 0 { DEFAULT_SCAN_LIMIT as usize } else { limit as usize };
                    let mut cursor: Option<String> = None;
                    let mut seen = Vec::new();
                    loop {
                        let page = block_on(state.scan(&start, &end, limit, cursor.as_deref())).unwrap();
                        let from = cursor.clone().unwrap_or_else(|| start.clone());
                        let (want, want_next) = model_page(&model, &from, &end, page_len);
                        assert_eq!(
                            (&page.entries, &page.next_cursor),
                            (&want, &want_next),
                            "seed {seed} step {step}: scan [{start:?}, {end:?}) limit {limit} from {from:?}"
                        );
                        seen.extend(page.entries);
                        match page.next_cursor {
                            Some(next) => cursor = Some(next),
                            None => break,
                        }
                    }
                    let (all, _) = model_page(&model, &start, &end, usize::MAX);
                    assert_eq!(seen, all, "seed {seed} step {step}: pages concatenated");
                }
            }
        }

        // The net writes turn the committed state into the model.
        let (writes, failure, _) = state.finish();
        assert!(failure.is_none());
        assert!(writes.windows(2).all(|w| w[0].0 < w[1].0), "writes sorted by key");
        let after = MemoryBackend::from_entries(committed);
        after.apply(&writes);
        assert_eq!(after.snapshot(), model, "seed {seed}: writes replay to the model");
        // Every backend scan asked for at least one entry over a non-empty range (asserted in
        // the recording backend) and every get_many for distinct keys.
        for call in backend.calls() {
            if let Call::GetMany(ks) = call {
                let mut sorted = ks.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), ks.len(), "seed {seed}: duplicate keys sent");
            }
        }
    }
}
