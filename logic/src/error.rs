//! Orchestration errors: the reference's `OE` codes and message templates
//! (docs/api-contract.md §7), defined once for the logic and its hosts in
//! `orchestrator-contract`.

pub use orchestrator_contract::{ErrorKind, LogicError, MAX_MESSAGE_BYTES};

pub type Result<T, E = LogicError> = core::result::Result<T, E>;
