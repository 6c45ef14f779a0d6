//! The contract between the logic component and its hosts, written once.
//!
//! The WIT world (`wit/orchestrator.wit`) says what crosses the component boundary; this crate
//! says what those values mean on either side of it, so the logic, the runtime and both hosts
//! share one definition instead of mirroring each other:
//!
//! - [`ErrorKind`]: every error class with its `OE` code, its gRPC status code and its Fabric
//!   response status, from one table ([`error`]);
//! - [`LogicError`]: a business error, kind plus the complete status message;
//! - [`Context`]: what varies per call (caller, channel, transaction id and time);
//! - [`StateError`], [`ScanPage`] and the state limits ([`state`]);
//! - [`wit_conversions!`]: the conversions between these types and the bindings that
//!   `wit-bindgen` (in the component) or `wasmtime::component::bindgen!` (in the runtime)
//!   generate from the WIT, so neither side writes them by hand.
//!
//! It has no dependencies: it builds for `wasm32-unknown-unknown` inside the component as well
//! as natively.

pub mod error;
pub mod state;

pub use error::{
    ErrorKind, GrpcCode, LogicError, MALFORMED_REQUEST_PREFIX, MAX_MESSAGE_BYTES, QUOTED_INPUT_BYTES, cut_at_char,
    shown,
};
pub use state::{
    DEFAULT_SCAN_LIMIT, MAX_KEY_BYTES, MAX_VALUE_BYTES, SCAN_BOUND_SLACK_BYTES, ScanPage, StateError, key_fault,
};

/// Per-call context supplied by the host (the WIT `context` record).
///
/// Everything that varies per call comes in here, so every Fabric endorser computes the same
/// result from the same proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// MSP id of the caller (the `mspid` header, or the creator of a Fabric proposal).
    pub msp_id: String,
    /// Channel the call is scoped to.
    pub channel: String,
    /// Transaction id, unique per call attempt; event ids derive from it.
    pub tx_id: String,
    /// Transaction time in microseconds since the Unix epoch.
    pub tx_time_micros: i64,
}
