//! Host-side runtime for the orchestrator's logic component.
//!
//! Every host (standalone PostgreSQL, Fabric chaincode, tests, benches) embeds the same
//! WebAssembly component through this crate. The runtime:
//!
//! - loads a component, identifies it by the sha256 of its bytes (computed once, when loaded:
//!   [`LogicInfo`], which hosts report, see [`identity`]), compiles it once per process
//!   (and once per machine with a disk cache of precompiled `.cwasm` files), and verifies it by
//!   calling its `version` and `methods` exports;
//! - runs every call on a fresh instance (no heap or globals carried over), with a fuel budget
//!   and a linear-memory cap, so a trap or exhausted fuel fails that call only;
//! - answers the component's `state` imports through a write overlay over a [`StateBackend`]
//!   (read-your-writes, scans that see the call's own writes): backends only serve committed
//!   reads, and the net writes come back in [`Invocation::writes`];
//! - buffers the component's events;
//! - hot-swaps to a new component version atomically ([`Runtime::swap`]), once it has verified
//!   that the new one can serve every call the current one can.

mod cache;
mod host;
pub mod identity;
mod memory;
mod overlay;
mod runtime;
pub mod settings;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

pub use memory::MemoryBackend;
pub use overlay::{DEFAULT_SCAN_LIMIT, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use runtime::Runtime;

/// A boxed, sendable future (what [`StateBackend`] methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A committed key/value pair, as [`StateBackend::scan`] returns them.
pub type StateEntry = (String, Vec<u8>);

/// A net write of a call: `Some(value)` = put, `None` = delete.
pub type StateWrite = (String, Option<Vec<u8>>);

pub use orchestrator_contract::{Context, ErrorKind, LogicError};

/// One entry of the component's method table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// gRPC method path without the leading slash, e.g. `orchestrator.InfoService/QueryVersion`.
    pub name: String,
    /// True when the method never writes state nor emits events.
    pub read_only: bool,
}

/// Error of a state backend. `retryable` = the whole call may be retried (e.g. PostgreSQL 40001).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What failed.
    pub message: String,
    /// Whether the host may retry the whole call (in a new transaction).
    pub retryable: bool,
}

impl BackendError {
    /// A backend error the host should not retry.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }

    /// A backend error after which the whole call may be retried.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }
}

/// Committed-state reads for one call (the host's current transaction). Backends never see
/// writes: the runtime keeps them in an overlay and hands them to the host at the end.
///
/// Keys are ordered bytewise (UTF-8 byte order), as Rust's `str` ordering does.
pub trait StateBackend: Send {
    /// One result per key, in order.
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>>;

    /// Keys in [start, end) ascending, at most `limit` entries (limit >= 1).
    ///
    /// Fewer than `limit` entries means the range is exhausted: a backend whose store pages
    /// internally (e.g. a Fabric range-query iterator) must keep reading until it has `limit`
    /// entries or reaches the end. `start < end` always holds.
    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>>;
}

/// Outcome of one call.
#[derive(Debug)]
pub struct Invocation {
    /// The logic's answer: response bytes, or its business error.
    pub result: Result<Vec<u8>, LogicError>,
    /// Net writes of the call, sorted by key: `Some(value)` = put, `None` = delete. Empty when
    /// `result` is `Err` (a failed call must leave no partial write: the host then rolls back).
    pub writes: Vec<StateWrite>,
    /// Emitted events (protobuf-encoded `orchestrator.Event`), in emission order. Empty when
    /// `result` is `Err`.
    pub events: Vec<Vec<u8>>,
    /// Fuel the call consumed (instantiation included), for logs and benchmarks.
    pub fuel_consumed: u64,
    /// The version that ran the call (a swap may have happened since).
    pub logic: Arc<LogicInfo>,
}

/// Failure of a call or of a load, outside the logic's own business errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The component trapped (panic, out of fuel, out of memory, bug): that one call fails
    /// with INTERNAL.
    #[error("logic trapped: {0}")]
    Trap(String),
    /// The backend failed during the call; carries its error (host retries when retryable).
    #[error("state backend: {0}")]
    Backend(BackendError),
    /// Loading/compiling/instantiating failed.
    #[error("component: {0}")]
    Component(String),
    /// A swap was refused: the component loads and verifies on its own but cannot replace the
    /// current version (another WIT world, a method missing, a read-only flag changed).
    #[error("incompatible with the current version: {0}")]
    Incompatible(String),
    /// The precompiled-component cache directory could not be used.
    #[error("cache: {0}")]
    Cache(#[from] std::io::Error),
}

impl RuntimeError {
    /// True when the host may retry the whole call: a backend failure marked retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Backend(e) if e.retryable)
    }
}

/// Runtime settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Fuel per call (deterministic instruction budget). The default is large enough for a
    /// 10,000-task batch.
    pub fuel_per_call: u64,
    /// Max linear memory per instance in bytes (default 512 MiB, at most 4 GiB).
    pub max_memory_bytes: usize,
    /// Directory for precompiled components (`<sha256>-<engine>.cwasm`); `None` = no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Max concurrent instances for the pooling allocator (default 64). Calls beyond this wait
    /// for a free slot.
    pub max_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { fuel_per_call: 20_000_000_000, max_memory_bytes: 512 << 20, cache_dir: None, max_instances: 64 }
    }
}

/// A loaded, verified component version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicInfo {
    /// sha256 of the component bytes, lowercase hex.
    pub sha256: String,
    /// What the component's `version` export returned.
    pub version: String,
    /// The WIT package and version of the world the component was built against, e.g.
    /// `substra:orchestrator@0.1.0` (from the name of its `api` export).
    pub world: String,
    /// What the component's `methods` export returned, in its order.
    pub methods: Vec<MethodInfo>,
}
