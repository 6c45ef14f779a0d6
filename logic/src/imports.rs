//! What the logic needs from whoever runs it: transactional key-value state and an event sink.
//!
//! In the component these are the WIT imports (`guest.rs`); natively (tests, benchmarks) an
//! in-memory implementation (`testing.rs`). The semantics are the WIT's: read-your-writes,
//! scans see the call's own writes, bytewise key order.

pub use orchestrator_contract::{
    MAX_KEY_BYTES, MAX_VALUE_BYTES, SCAN_BOUND_SLACK_BYTES, ScanPage, StateError, key_fault,
};

/// State and events as the logic sees them; every method is one WIT import call.
pub trait Imports {
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
