//! Native test support: an in-memory host with the WIT state semantics, a harness to call the
//! API, and scenarios written once and run against any [`Driver`] — natively here, through the
//! compiled component in the runtime crate's tests (as CosmWasm tests contracts both ways).

pub mod fuzz;
pub mod record;
pub mod scenarios;
pub mod wire;

pub use fuzz::Rng;

use std::collections::BTreeMap;
use std::ops::Bound;

use orchestrator_proto::Event;
use prost::Message;

use crate::call::Context;
use crate::error::LogicError;
use crate::imports::{Imports, MAX_KEY_BYTES, SCAN_BOUND_SLACK_BYTES, ScanPage, StateError, key_fault};

/// Something that runs API calls with commit-on-success semantics.
pub trait Driver {
    /// Run one call as `msp` on `channel`; its writes and events commit only if it succeeds.
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError>;
    /// Every committed event so far, in commit and emission order.
    fn events(&self) -> Vec<Event>;
}

/// Typed convenience over [`Driver::call_raw`].
pub fn call<Req: Message, Resp: Message + Default>(
    driver: &mut dyn Driver,
    msp: &str,
    channel: &str,
    method: &str,
    request: &Req,
) -> Result<Resp, LogicError> {
    let bytes = driver.call_raw(msp, channel, method, &request.encode_to_vec())?;
    Resp::decode(bytes.as_slice()).map_err(|e| LogicError::internal(format!("bad response: {e}")))
}

/// Committed state of one channel.
#[derive(Default, Clone)]
pub struct MemState {
    pub entries: BTreeMap<String, Vec<u8>>,
}

/// Net writes of a call: `Some` puts, `None` deletes.
pub type WriteSet = BTreeMap<String, Option<Vec<u8>>>;

/// The host of one call: the committed state plus this call's overlay.
pub struct MemImports<'a> {
    committed: &'a BTreeMap<String, Vec<u8>>,
    overlay: WriteSet,
    events: Vec<Vec<u8>>,
}

impl<'a> MemImports<'a> {
    pub fn new(committed: &'a BTreeMap<String, Vec<u8>>) -> Self {
        MemImports { committed, overlay: BTreeMap::new(), events: Vec::new() }
    }

    /// The call's net writes and events, to apply on success.
    pub fn into_parts(self) -> (WriteSet, Vec<Vec<u8>>) {
        (self.overlay, self.events)
    }
}

/// The WIT contract's key rule, as every host enforces it (so native tests see what hosts see).
fn check_key(key: &str) -> Result<(), StateError> {
    match key_fault(key) {
        Some(fault) => Err(StateError::InvalidKey(format!("key of {} bytes {fault}", key.len()))),
        None => Ok(()),
    }
}

/// Scan bounds may go a few bytes past the key limit (an upper bound after a maximal prefix).
fn check_bound(bound: &str) -> Result<(), StateError> {
    if bound.len() > MAX_KEY_BYTES + SCAN_BOUND_SLACK_BYTES || bound.contains('\0') {
        return Err(StateError::InvalidKey(format!("scan bound of {} bytes", bound.len())));
    }
    Ok(())
}

impl Imports for MemImports<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        Ok(match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.committed.get(key).cloned(),
        })
    }

    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        check_key(key)?;
        if key.is_empty() {
            return Err(StateError::InvalidKey("empty key".to_owned()));
        }
        self.overlay.insert(key.to_owned(), Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StateError> {
        check_key(key)?;
        self.overlay.insert(key.to_owned(), None);
        Ok(())
    }

    fn scan(&mut self, start: &str, end: &str, limit: u32, cursor: Option<&str>) -> Result<ScanPage, StateError> {
        check_bound(start)?;
        check_bound(end)?;
        if let Some(cursor) = cursor {
            check_bound(cursor)?;
        }
        let from = match cursor {
            Some(c) if c > start => c,
            _ => start,
        };
        if from >= end {
            return Ok(ScanPage::default());
        }
        let limit = if limit == 0 { 1_000 } else { limit as usize };
        let range = (Bound::Included(from), Bound::Excluded(end));
        let mut base = self.committed.range::<str, _>(range).peekable();
        let mut over = self.overlay.range::<str, _>(range).peekable();
        let mut entries = Vec::new();
        // Merge both ordered streams; the overlay wins on equal keys, `None` hides the key.
        loop {
            let take_overlay = match (base.peek(), over.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((ok, _))) => ok <= bk,
            };
            let (key, value) = if take_overlay {
                let (k, v) = over.next().ok_or_else(|| StateError::Backend("merge".into()))?;
                if base.peek().is_some_and(|(bk, _)| *bk == k) {
                    base.next();
                }
                match v {
                    Some(v) => (k, v),
                    None => continue,
                }
            } else {
                base.next().ok_or_else(|| StateError::Backend("merge".into()))?
            };
            if entries.len() == limit {
                return Ok(ScanPage { entries, next_cursor: Some(key.clone()) });
            }
            entries.push((key.clone(), value.clone()));
        }
        Ok(ScanPage { entries, next_cursor: None })
    }

    fn emit(&mut self, event: Vec<u8>) {
        self.events.push(event);
    }
}

/// Runs the logic natively over per-channel in-memory state, with a ticking clock.
#[derive(Default, Clone)]
pub struct Harness {
    channels: BTreeMap<String, MemState>,
    events: Vec<Event>,
    calls: u64,
    /// Microseconds since the epoch of the next call (advances 1 ms per call).
    pub clock_micros: i64,
}

impl Harness {
    pub fn new() -> Self {
        Harness { clock_micros: 1_700_000_000_000_000, ..Default::default() }
    }

    pub fn state(&self, channel: &str) -> Option<&MemState> {
        self.channels.get(channel)
    }

    /// Every channel's committed state, by name.
    pub fn channels(&self) -> impl Iterator<Item = (&str, &MemState)> {
        self.channels.iter().map(|(name, state)| (name.as_str(), state))
    }

    /// The same state, clock and call count, without the event log (snapshots that are only
    /// run against need no history).
    pub fn without_events(&self) -> Harness {
        Harness {
            channels: self.channels.clone(),
            events: Vec::new(),
            calls: self.calls,
            clock_micros: self.clock_micros,
        }
    }

    /// Runs one call in the given context (transaction id and time chosen by the caller, so that two
    /// drivers can run the same call alike); commits on success like [`Driver::call_raw`].
    pub fn call_in(&mut self, ctx: &Context, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        let state = self.channels.entry(ctx.channel.clone()).or_default();
        let mut host = MemImports::new(&state.entries);
        let response = crate::api::invoke(ctx, &mut host, method, request)?;
        let (writes, events) = host.into_parts();
        for (key, value) in writes {
            match value {
                Some(v) => state.entries.insert(key, v),
                None => state.entries.remove(&key),
            };
        }
        for bytes in events {
            let event = Event::decode(bytes.as_slice()).map_err(|e| LogicError::internal(format!("bad event: {e}")))?;
            self.events.push(event);
        }
        Ok(response)
    }
}

impl Driver for Harness {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        self.calls += 1;
        self.clock_micros += 1_000;
        let ctx = Context {
            msp_id: msp.to_owned(),
            channel: channel.to_owned(),
            tx_id: format!("native-tx-{}", self.calls),
            tx_time_micros: self.clock_micros,
        };
        self.call_in(&ctx, method, request)
    }

    fn events(&self) -> Vec<Event> {
        self.events.clone()
    }
}

/// Expands to one `#[test]` per scenario: `scenario_tests!(<driver expression>)` runs each on a
/// fresh driver; `scenario_tests!(with <fn(fn(&mut dyn Driver))>)` hands each scenario to a
/// runner (differential checks); `scenario_tests!(all)` is the slice of every `(name, scenario)`.
/// The list of scenarios is written once, here.
#[macro_export]
macro_rules! scenario_tests {
    // Braces: the expansion is items for tests, an expression for `all`.
    (@list $mode:tt) => {
        $crate::scenario_tests! { @each $mode;
            organizations,
            bad_requests,
            hostile_inputs,
            data_managers,
            data_samples,
            datasets,
            functions,
            function_actions,
            pagination,
            compute_plans,
            plan_actions,
            plan_running,
            task_registration,
            task_registration_errors,
            task_resend,
            task_actions,
            task_function_builds,
            task_queries,
            models,
            multiple_models,
            performances,
            failure_reports,
            profiling,
            task_input_assets,
            disable_outputs,
            two_organization_plan,
        }
    };
    (@each [new $new:expr]; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let mut driver = $new;
                $crate::testing::scenarios::$name(&mut driver);
            }
        )*
    };
    (@each [with $runner:path]; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $runner($crate::testing::scenarios::$name);
            }
        )*
    };
    // Every scenario with its name, as a slice expression (corpus builders).
    (@each [all]; $($name:ident),* $(,)?) => {
        &[$((stringify!($name), $crate::testing::scenarios::$name as fn(&mut dyn $crate::testing::Driver))),*]
    };
    (all) => {
        $crate::scenario_tests!(@list [all])
    };
    (with $runner:path) => {
        $crate::scenario_tests!(@list [with $runner]);
    };
    ($new:expr) => {
        $crate::scenario_tests!(@list [new $new]);
    };
}
