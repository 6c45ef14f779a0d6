//! What the logic needs from whoever runs it: transactional key-value state and an event sink.
//!
//! In the component these are the WIT imports (`guest.rs`); natively (tests, benchmarks) an
//! in-memory implementation (`testing.rs`). The semantics are the WIT's: read-your-writes,
//! scans see the call's own writes, bytewise key order.

use crate::error::OrcError;

/// Longest state key, in bytes (the WIT `state` contract; every host enforces it).
pub const MAX_KEY_BYTES: usize = 1024;
/// How far a scan bound may go past [`MAX_KEY_BYTES`]: room for one upper-bound character after
/// a maximal prefix.
pub const SCAN_BOUND_SLACK_BYTES: usize = 4;
/// Largest state value, in bytes (the WIT `state` contract).
pub const MAX_VALUE_BYTES: usize = 4 << 20;

/// Why `key` cannot be a state key, if it cannot.
pub fn key_fault(key: &str) -> Option<&'static str> {
    if key.len() > MAX_KEY_BYTES {
        Some("is longer than a state key can be")
    } else if key.contains('\0') {
        Some("contains NUL")
    } else {
        None
    }
}

/// A state call failed. The logic stops the call: the host owns retry decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    InvalidKey(String),
    ValueTooLarge(u64),
    Backend(String),
}

impl From<StateError> for OrcError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::InvalidKey(key) => OrcError::internal(format!("invalid state key {key:?}")),
            StateError::ValueTooLarge(size) => OrcError::internal(format!("state value of {size} bytes is too large")),
            StateError::Backend(msg) => OrcError::internal(format!("state backend: {msg}")),
        }
    }
}

/// One page of a range scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(String, Vec<u8>)>,
    /// Where the next page starts; `None` once the range is exhausted.
    pub next_cursor: Option<String>,
}

pub trait Host {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// One result per key, in order.
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StateError>;
    fn delete(&mut self, key: &str) -> Result<(), StateError>;
    /// Keys in `[start, end)` ascending, at most `limit`; `cursor` resumes a previous page.
    fn scan(&mut self, start: &str, end: &str, limit: u32, cursor: Option<&str>) -> Result<ScanPage, StateError>;
    /// Protobuf-encoded `orchestrator.Event`; published only if the call commits.
    fn emit(&mut self, event: Vec<u8>);
}
