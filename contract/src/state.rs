//! The `state` interface's limits and errors, as every host must enforce them.

use crate::LogicError;

/// Longest state key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// How far a scan bound may go past [`MAX_KEY_BYTES`]: room for one upper-bound character after
/// a maximal prefix.
pub const SCAN_BOUND_SLACK_BYTES: usize = 4;
/// Largest state value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 << 20;
/// Page size of a scan called with `limit` 0.
pub const DEFAULT_SCAN_LIMIT: u32 = 1000;

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

/// A state call failed (the WIT `state-error`). The logic gives up the call; the host owns
/// retry decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The key is over the size cap or contains NUL.
    InvalidKey(String),
    /// The value is over the size cap.
    ValueTooLarge(u64),
    /// The backend failed (connection lost, serialization failure, ...).
    Backend(String),
}

/// What the logic answers when a state call fails under it: INTERNAL.
impl From<StateError> for LogicError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::InvalidKey(key) => LogicError::internal(format!("invalid state key {key:?}")),
            StateError::ValueTooLarge(size) => {
                LogicError::internal(format!("state value of {size} bytes is too large"))
            }
            StateError::Backend(msg) => LogicError::internal(format!("state backend: {msg}")),
        }
    }
}

/// One page of a range scan (the WIT `scan-page`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// At most `limit` entries, ascending by key.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Where the next page starts; `None` once the range is exhausted.
    pub next_cursor: Option<String>,
}
