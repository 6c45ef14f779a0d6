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
//!
//! # Embedding
//!
//! A host owns a [`Runtime`], a store of committed state and events, and a [`StateBackend`]
//! that reads that store. For each call it builds a [`Context`], passes a backend **by value**
//! to [`Runtime::invoke`], gets it back in [`Invoked::backend`] (on success and on every
//! failure: a backend may own the call's database transaction), and commits or discards the
//! call's writes and events as the outcome says. The standalone host (PostgreSQL), the Fabric
//! chaincode and `examples/embedded` (a plain program with an in-memory store, the shortest
//! complete host) all do exactly this.
//!
//! ```
//! use orchestrator_proto::RegisterOrganizationParam;
//! use orchestrator_runtime::{Context, Invoked, MemoryBackend, Runtime, RuntimeConfig};
//! use prost::Message;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Compiles and verifies the component (seconds the first time, see `RuntimeConfig::cache_dir`).
//! let runtime = Runtime::new(RuntimeConfig::default(), orchestrator_logic_component::COMPONENT)?;
//! // One channel's committed state.
//! let state = MemoryBackend::new();
//! // Everything that varies comes from the host: caller, channel, transaction id and time.
//! let ctx = Context {
//!     msp_id: "MyOrg1MSP".to_owned(),
//!     channel: "mychannel".to_owned(),
//!     tx_id: "tx-1".to_owned(),
//!     tx_time_micros: 1_700_000_000_000_000,
//! };
//! let method = "orchestrator.OrganizationService/RegisterOrganization";
//! let request = RegisterOrganizationParam { address: String::new() }.encode_to_vec();
//! // A clone shares the state; it comes back in `backend` (unused here).
//! let Invoked { backend: _, outcome } = runtime.invoke(&ctx, method, &request, state.clone()).await;
//! // `Err`: a trap or a backend failure, nothing to commit.
//! let invocation = outcome?;
//! // `Err`: the logic refused the call (its OE message), nothing to commit either.
//! let _response: Vec<u8> = invocation.result?;
//! // Success: commit the writes and keep the events, together.
//! state.apply(&invocation.writes);
//! assert!(!state.is_empty());
//! assert_eq!(invocation.events.len(), 1, "ORGANIZATION/CREATED");
//!
//! // Once committed, the same registration is refused and leaves nothing to commit.
//! let ctx = Context { tx_id: "tx-2".to_owned(), ..ctx };
//! let again = runtime.invoke(&ctx, method, &request, state.clone()).await.outcome?;
//! assert!(again.result.is_err() && again.writes.is_empty() && again.events.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # The contract between the runtime and a host
//!
//! ## What the runtime does
//!
//! - **Read-your-writes.** The call's puts and deletes stay in an overlay; its reads and scans
//!   see them merged over the backend's committed state. A backend only ever serves reads
//!   ([`StateBackend::get_many`], [`StateBackend::scan`]) and never sees a write.
//! - **Net writes, sorted.** [`Invocation::writes`] holds one entry per key written: its last
//!   value (`Some`) or a delete (`None`), sorted by key bytewise. A delete may name a key that
//!   is not in committed state (written, then deleted, by the same call): storing it must be a
//!   no-op. Keys are at most [`MAX_KEY_BYTES`] without NUL, values at most [`MAX_VALUE_BYTES`]
//!   (the runtime refuses anything else to the logic).
//! - **Events in order.** [`Invocation::events`] are the protobuf `orchestrator.Event`s in
//!   emission order.
//! - **Nothing on a failure.** On a business error (`result` is `Err`) `writes` and `events`
//!   are empty; on a trap or a backend failure there is no [`Invocation`] at all. The first
//!   [`BackendError`] of a call fails it: later state calls fail without reaching the backend,
//!   and the outcome is [`RuntimeError::Backend`] whatever the logic made of it.
//! - **One call, one instance**, with the fuel and memory limits of [`RuntimeConfig`].
//!
//! ## What the host must do
//!
//! - **Commit atomically, on success only.** When the outcome is `Ok` and `result` is `Ok`,
//!   store every write and every event of the call together (one transaction), events after
//!   those of the calls committed before; otherwise store nothing. Only publish committed
//!   events.
//! - **Scope state by channel.** The logic's keys do not name the channel: a backend serves
//!   the committed state of `Context::channel` only (a `channel` column in PostgreSQL, one
//!   world state per channel on Fabric, one store per channel in memory).
//! - **Isolate calls.** The reads of one call must come from one consistent snapshot (no other
//!   call's commit visible half-way through), and two calls writing the same channel must be
//!   serialized (the later one reads what the earlier one committed) or conflict-checked (the
//!   later commit is refused when what it read has changed, and the call runs again). The
//!   standalone host serializes: read-only methods run on a `REPEATABLE READ READ ONLY`
//!   snapshot, and every write call of a channel goes to that channel's single writer, which
//!   runs them one after another while it holds the channel's advisory lock (another process
//!   on the same database waits for it). The Fabric host conflict-checks: the chaincode
//!   simulates over the peer's state, and at commit every peer's MVCC validation (the versions
//!   of the keys read) and phantom check (the range queries) invalidates a transaction whose
//!   reads changed, which the client submits again.
//! - **Retry only what may be retried.** [`RuntimeError::is_retryable`] (a [`BackendError`]
//!   built with [`BackendError::retryable`], e.g. PostgreSQL 40001, a lost connection before
//!   commit) means nothing was committed and the whole call may run again, from a new
//!   snapshot and with a new context. Other backend errors and traps are final for that
//!   call. A business error is an answer: never retry it.
//! - **Keep calls deterministic.** The logic reads no clock and no randomness: the
//!   [`Context`] carries the caller, the channel, the transaction id and the time. Event ids
//!   derive from the transaction id, so it must be unique per attempt (a retry gets a new one);
//!   replicas that must agree (Fabric endorsers) take the same context from the proposal.
//! - **Honour read-only methods.** A method listed `read_only` in [`LogicInfo::methods`] never
//!   writes nor emits; a host may run it on a snapshot outside the write path, and should
//!   refuse a read-only call that comes back with writes or events.
//!
//! ## What [`MemoryBackend`] does not do
//!
//! [`MemoryBackend`] is a shared map for one call at a time (tests, benches, a sequential
//! program). It gives **no isolation** between concurrent calls: each read sees whatever is
//! applied at that moment, so a call running while another's writes are applied may read part
//! of them. It does **no conflict detection**: two concurrent calls that read the same key and
//! both [`MemoryBackend::apply`] their writes both succeed, the later silently overwriting the
//! earlier (a lost update). And it keeps no events. A host that runs calls concurrently over it
//! must serialize them (one call and its `apply` at a time) or bring its own isolation.

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
pub use runtime::{Runtime, check_replaceable};

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
/// [`Runtime::invoke`] takes the backend by value and hands it back, so a backend may own
/// what it reads through (a transaction, a connection, a store) and record what happened
/// (e.g. its first failure) for the host to act on after the call.
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

/// A boxed backend is a backend, for hosts that choose theirs at run time.
impl<T: StateBackend + ?Sized> StateBackend for Box<T> {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        (**self).get_many(keys)
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>> {
        (**self).scan(start, end, limit)
    }
}

/// What [`Runtime::invoke`] hands back: the caller's backend, on success and on every failure,
/// and the call's outcome (see the [crate example](crate#embedding)).
#[derive(Debug)]
#[must_use = "the outcome says whether to commit the call's writes and events"]
pub struct Invoked<B> {
    /// The backend the call read through, as it was passed (plus whatever it recorded):
    /// the host commits or rolls back what it owns (e.g. its transaction).
    pub backend: B,
    /// The call's outcome (see [`Runtime::invoke`]).
    pub outcome: Result<Invocation, RuntimeError>,
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
