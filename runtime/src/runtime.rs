//! [`Runtime`]: the current component version, its verification, hot swap and calls.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Wake, Waker};
use std::time::Instant;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use crate::cache::{self, EngineEntry};
use crate::host::bindings::substra::orchestrator::types;
use crate::host::bindings::{Orchestrator, OrchestratorPre};
use crate::host::{CallState, Effects};
use crate::overlay::OwnedBackend;
use crate::{
    BackendError, BoxFuture, Context, Invocation, Invoked, LogicInfo, MethodInfo, RuntimeConfig, RuntimeError,
    StateBackend, StateEntry,
};

/// Fuel between two yields of a running call to the async executor, so a long call does not
/// hold an executor thread for its whole duration (a few milliseconds of guest code).
const FUEL_YIELD_INTERVAL: u64 = 20_000_000;

/// Fuel for verifying a component (`version` and `methods`) when the per-call budget is lower:
/// a tight per-call budget must not prevent loading.
const MIN_VERIFY_FUEL: u64 = 1_000_000_000;

/// Runs the logic component. Thread-safe and cheap to clone (an `Arc` inside); holds the
/// current component version, which [`Runtime::swap`] replaces atomically.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    engine: Arc<EngineEntry>,
    linker: Linker<CallState>,
    current: RwLock<Arc<Loaded>>,
    /// Held for the whole of a swap (never by calls, which only read `current`).
    swapping: Mutex<()>,
}

/// One loaded, verified version, ready to instantiate.
struct Loaded {
    info: Arc<LogicInfo>,
    read_only: HashMap<String, bool>,
    pre: OrchestratorPre<CallState>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.info();
        f.debug_struct("Runtime")
            .field("sha256", &info.sha256)
            .field("version", &info.version)
            .field("methods", &info.methods.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads and verifies `component` (calls its `version` and `methods` exports).
    ///
    /// Compiling takes tens of milliseconds to seconds the first time a component is seen (in
    /// this process, or on this machine with a `cache_dir`); call it off the async executor's
    /// threads (e.g. `spawn_blocking`) when that matters.
    pub fn new(config: RuntimeConfig, component: &[u8]) -> Result<Self, RuntimeError> {
        let engine = cache::engine_for(&config)?;
        let mut linker = Linker::new(&engine.engine);
        Orchestrator::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError::Component(format!("building the linker: {e:#}")))?;
        let loaded = load(&engine, &linker, &config, component, cache::sha256_hex(component))?;
        let current = RwLock::new(Arc::new(loaded));
        Ok(Self { inner: Arc::new(Inner { config, engine, linker, current, swapping: Mutex::new(()) }) })
    }

    /// [`Runtime::new`] with the component read from `path`.
    pub fn from_path(config: RuntimeConfig, path: &Path) -> Result<Self, RuntimeError> {
        let bytes = read_component(path)?;
        Self::new(config, &bytes)
    }

    /// The settings this runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    fn current(&self) -> Arc<Loaded> {
        self.inner.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The current version.
    pub fn info(&self) -> Arc<LogicInfo> {
        self.current().info.clone()
    }

    /// Whether `method` is read-only in the current version; `None` when it is not exported.
    pub fn is_read_only(&self, method: &str) -> Option<bool> {
        self.current().read_only.get(method).copied()
    }

    /// Loads, verifies and atomically switches to a new version; calls in flight finish on the
    /// old one, calls that start afterwards run on the new one. On error the current version
    /// keeps serving.
    ///
    /// Verification, before anything changes: the component compiles, links against the
    /// orchestrator world, instantiates and answers `version` and `methods` (as [`Runtime::new`]
    /// checks), and it can replace the current version ([`RuntimeError::Incompatible`]
    /// otherwise): the same WIT world, and a method table that keeps every method of the current
    /// one with the same read-only flag (methods may be added, never removed).
    ///
    /// The bytes of the current version are accepted at once, without reloading them.
    /// Compiling a component seen for the first time takes a while (see [`Runtime::new`]):
    /// call it off the async executor's threads.
    pub fn swap(&self, component: &[u8]) -> Result<Arc<LogicInfo>, RuntimeError> {
        // One swap at a time, so that each compares the candidate with the version it replaces.
        let _swapping = cache::lock(&self.inner.swapping);
        let current = self.current();
        let sha256 = cache::sha256_hex(component);
        if sha256 == current.info.sha256 {
            tracing::debug!(%sha256, "swap to the current version: nothing to do");
            return Ok(current.info.clone());
        }
        let loaded = load(&self.inner.engine, &self.inner.linker, &self.inner.config, component, sha256)?;
        check_replaceable(&current.info, &loaded.info)?;
        let info = loaded.info.clone();
        *self.inner.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        // The host that asked for the swap logs it, with where the bytes came from.
        tracing::debug!(from_sha256 = %current.info.sha256, to_sha256 = %info.sha256, "swapped the logic component");
        Ok(info)
    }

    /// [`Runtime::swap`] with the component read from `path`.
    pub fn swap_path(&self, path: &Path) -> Result<Arc<LogicInfo>, RuntimeError> {
        let bytes = read_component(path)?;
        self.swap(&bytes)
    }

    /// Runs one call on a fresh instance of the current version (calls are independent: no heap
    /// or globals carried over) over `backend`, and hands `backend` back with the outcome.
    ///
    /// The backend is taken by value, so it may own what the call reads through (a database
    /// transaction, a connection, a whole in-memory store), and it comes back in
    /// [`Invoked::backend`] whatever happened: the host then commits or rolls back what it
    /// holds. Only if this future is dropped before it completes is the backend dropped with it.
    ///
    /// [`Invoked::outcome`]:
    /// - `Ok(invocation)`: the logic answered; `invocation.result` is its response or its
    ///   business error (then `writes` and `events` are empty).
    /// - `Err(RuntimeError::Backend)`: the backend failed during the call, whatever the logic
    ///   answered afterwards; retry the whole call when the error is retryable.
    /// - `Err(RuntimeError::Trap)`: the logic trapped (panic, fuel, memory); the runtime keeps
    ///   serving other calls.
    pub async fn invoke<B: StateBackend + 'static>(
        &self,
        ctx: &Context,
        method: &str,
        request: &[u8],
        backend: B,
    ) -> Invoked<B> {
        let loaded = self.current();
        let engine = &self.inner.engine;
        let fuel = self.inner.config.fuel_per_call;
        let Ok(_slot) = engine.slots.acquire().await else {
            let closed = RuntimeError::Component("the instance pool is closed".to_owned());
            return Invoked { backend, outcome: Err(closed) };
        };
        let mut store = new_store(engine, Box::new(backend));
        let ran = run(&loaded, &mut store, fuel, ctx, method, request).await;
        let fuel_consumed = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let (effects, backend) = store.into_data().finish();
        let backend = owned::<B>(backend);
        let outcome = match ran {
            Err(error) => Err(error),
            Ok(outcome) => settle(&loaded.info, ctx, method, outcome, effects, fuel_consumed),
        };
        Invoked { backend, outcome }
    }
}

/// What the component's `invoke` export returned, or its trap.
type Answer = wasmtime::Result<Result<Vec<u8>, types::Error>>;

/// Configures `store` and runs the call on a fresh instance; `Err` when no instance ran.
async fn run(
    loaded: &Loaded,
    store: &mut Store<CallState>,
    fuel: u64,
    ctx: &Context,
    method: &str,
    request: &[u8],
) -> Result<Answer, RuntimeError> {
    configure(store, fuel)?;
    let instance = loaded.pre.instantiate_async(&mut *store).await.map_err(|e| instantiation_error(e, &loaded.info))?;
    Ok(instance.substra_orchestrator_api().call_invoke(&mut *store, &ctx.into(), method, request).await)
}

/// The backend `invoke` was given, out of the call's store.
fn owned<B: StateBackend + 'static>(backend: Box<dyn OwnedBackend>) -> B {
    match backend.into_any().downcast::<B>() {
        Ok(backend) => *backend,
        // `invoke` put a `B` in the store and nothing replaces it: not reachable.
        Err(_) => unreachable!("the call's store holds the backend invoke was given"),
    }
}

/// The outcome of a call that ran: a backend failure first, then the logic's answer or trap.
fn settle(
    info: &Arc<LogicInfo>,
    ctx: &Context,
    method: &str,
    outcome: Answer,
    effects: Effects,
    fuel_consumed: u64,
) -> Result<Invocation, RuntimeError> {
    let Effects { writes, events, failure } = effects;
    if let Some(error) = failure {
        tracing::debug!(
            method,
            tx_id = %ctx.tx_id,
            retryable = error.retryable,
            error = %error.message,
            "call failed on a state backend error"
        );
        return Err(RuntimeError::Backend(error));
    }
    if let Ok(result) = &outcome {
        tracing::debug!(
            method,
            tx_id = %ctx.tx_id,
            ok = result.is_ok(),
            fuel_consumed,
            writes = writes.len(),
            events = events.len(),
            "call done"
        );
    }
    match outcome {
        Ok(Ok(response)) => Ok(Invocation { result: Ok(response), writes, events, fuel_consumed, logic: info.clone() }),
        Ok(Err(error)) => Ok(Invocation {
            result: Err(error.into()),
            writes: Vec::new(),
            events: Vec::new(),
            fuel_consumed,
            logic: info.clone(),
        }),
        Err(trap) => {
            let message = describe_trap(&trap);
            tracing::warn!(
                method,
                tx_id = %ctx.tx_id,
                sha256 = %info.sha256,
                fuel_consumed,
                error = %format!("{trap:?}"),
                "logic trapped"
            );
            Err(RuntimeError::Trap(message))
        }
    }
}

fn read_component(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|e| RuntimeError::Component(format!("reading {}: {e}", path.display())))
}

/// A store for one call: memory cap, fresh host state over `backend`.
fn new_store(engine: &EngineEntry, backend: Box<dyn OwnedBackend>) -> Store<CallState> {
    let mut store = Store::new(&engine.engine, CallState::new(backend, engine.max_memory_bytes));
    store.limiter(|state| &mut state.limits);
    store
}

/// The call's fuel budget (apart from [`new_store`], so that the backend comes back out of the
/// store even when this fails).
fn configure(store: &mut Store<CallState>, fuel: u64) -> Result<(), RuntimeError> {
    store
        .set_fuel(fuel)
        .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)))
        .map_err(|e| RuntimeError::Component(format!("configuring the store: {e:#}")))
}

/// The short reason of a trap: the trap code when there is one, else the root cause (e.g. the
/// memory limiter's refusal); the full error with its wasm backtrace goes to the logs.
fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    }
}

fn instantiation_error(error: wasmtime::Error, info: &LogicInfo) -> RuntimeError {
    if error.downcast_ref::<wasmtime::Trap>().is_some() {
        RuntimeError::Trap(describe_trap(&error))
    } else {
        RuntimeError::Component(format!("instantiating {} ({}): {error:#}", info.sha256, info.version))
    }
}

/// The backend a component sees while being verified: its `version` and `methods` exports
/// must not touch state.
struct NoState;

impl StateBackend for NoState {
    fn get_many<'a>(&'a mut self, _keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        Box::pin(std::future::ready(Err(BackendError::fatal("no state while verifying a component"))))
    }

    fn scan<'a>(
        &'a mut self,
        _start: &'a str,
        _end: &'a str,
        _limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>> {
        Box::pin(std::future::ready(Err(BackendError::fatal("no state while verifying a component"))))
    }
}

/// Compiles (or fetches) `bytes`, links it and verifies it.
fn load(
    engine: &EngineEntry,
    linker: &Linker<CallState>,
    config: &RuntimeConfig,
    bytes: &[u8],
    sha256: String,
) -> Result<Loaded, RuntimeError> {
    let started = Instant::now();
    let (component, source) = engine.component(bytes, &sha256, config.cache_dir.as_deref())?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|e| RuntimeError::Component(format!("linking {sha256} against the orchestrator world: {e:#}")))?;
    let pre = OrchestratorPre::new(instance_pre)
        .map_err(|e| RuntimeError::Component(format!("{sha256} does not export the orchestrator world: {e:#}")))?;
    let world = world_of(&engine.engine, &component)
        .ok_or_else(|| RuntimeError::Component(format!("{sha256} exports no `api` interface of a WIT package")))?;
    let fuel = config.fuel_per_call.max(MIN_VERIFY_FUEL);
    let (version, methods) = {
        // The pool's verification slot (never shared with calls).
        let _slot = cache::lock(&engine.verify_slot);
        block_on(verify(engine, &pre, fuel))?
    };
    if version.is_empty() {
        return Err(RuntimeError::Component(format!("{sha256}: the component reports an empty version")));
    }
    if methods.is_empty() {
        return Err(RuntimeError::Component(format!("{sha256}: the component exports no method")));
    }
    let mut read_only = HashMap::with_capacity(methods.len());
    for method in &methods {
        if read_only.insert(method.name.clone(), method.read_only).is_some() {
            return Err(RuntimeError::Component(format!("{sha256}: method {} is listed twice", method.name)));
        }
    }
    tracing::info!(
        %sha256,
        %version,
        %world,
        methods = methods.len(),
        source = ?source,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "loaded the logic component"
    );
    Ok(Loaded { info: Arc::new(LogicInfo { sha256, version, world, methods }), read_only, pre })
}

/// Whether `next` can replace `current` while calls keep coming: what a client could call on
/// `current` it can still call, and each call is still routed the same way.
///
/// - The same WIT world: hosts were built against it.
/// - Every method of `current` is in `next` (methods may be added, never removed): a host
///   checks that a method exists on the current version, then runs the call on whatever
///   version is current by then; a removed method would fail calls already accepted.
/// - Each kept method keeps its read-only flag: hosts route a call by the flag they read
///   before it runs (standalone: a read-only snapshot or the channel's writer; distributed:
///   Evaluate or Submit), so a call routed by the old flag may run on the new version. A method
///   that became read-write would run in a read-only snapshot and fail; the other way round is
///   harmless once, but swapping back (a rollback) would then be that case.
///
/// Public for hosts that keep several versions side by side and pick one per call (the Fabric
/// chaincode runs the version its ledger names): they refuse a candidate on the same terms as
/// [`Runtime::swap`].
pub fn check_replaceable(current: &LogicInfo, next: &LogicInfo) -> Result<(), RuntimeError> {
    if next.world != current.world {
        return Err(RuntimeError::Incompatible(format!(
            "it exports world {} where the current version exports {}",
            next.world, current.world
        )));
    }
    let flags: HashMap<&str, bool> = next.methods.iter().map(|m| (m.name.as_str(), m.read_only)).collect();
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    for method in &current.methods {
        match flags.get(method.name.as_str()) {
            None => missing.push(method.name.as_str()),
            Some(&read_only) if read_only != method.read_only => {
                let kind = |read_only: bool| if read_only { "read-only" } else { "read-write" };
                changed.push(format!("{} ({} -> {})", method.name, kind(method.read_only), kind(read_only)));
            }
            Some(_) => {}
        }
    }
    let mut reasons = Vec::new();
    if !missing.is_empty() {
        reasons.push(format!("its method table lacks {} of the current one: {}", missing.len(), listed(&missing)));
    }
    if !changed.is_empty() {
        reasons.push(format!("it changes the read-only flag of {}: {}", changed.len(), listed(&changed)));
    }
    if reasons.is_empty() { Ok(()) } else { Err(RuntimeError::Incompatible(reasons.join("; "))) }
}

/// The first few of `items`, then how many more (a log line, not a report).
fn listed(items: &[impl AsRef<str>]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<&str> = items.iter().take(SHOWN).map(AsRef::as_ref).collect();
    match items.len().saturating_sub(SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// The WIT package of the component's `api` export, e.g. `substra:orchestrator@0.1.0` from the
/// export name `substra:orchestrator/api@0.1.0`: the world version the component was built
/// against (the runtime's bindings link only compatible ones).
fn world_of(engine: &Engine, component: &Component) -> Option<String> {
    component.component_type().exports(engine).find_map(|(name, _)| {
        let (package, rest) = name.split_once('/')?;
        let (interface, version) = match rest.split_once('@') {
            Some((interface, version)) => (interface, Some(version)),
            None => (rest, None),
        };
        (interface == "api").then(|| match version {
            Some(version) => format!("{package}@{version}"),
            None => package.to_owned(),
        })
    })
}

/// Calls `version` and `methods` on a fresh instance.
async fn verify(
    engine: &EngineEntry,
    pre: &OrchestratorPre<CallState>,
    fuel: u64,
) -> Result<(String, Vec<MethodInfo>), RuntimeError> {
    let failed =
        |what: &str, e: wasmtime::Error| RuntimeError::Component(format!("verifying the component: {what}: {e:#}"));
    let mut store = new_store(engine, Box::new(NoState));
    configure(&mut store, fuel)?;
    let instance = pre.instantiate_async(&mut store).await.map_err(|e| failed("instantiating", e))?;
    let api = instance.substra_orchestrator_api();
    let version = api.call_version(&mut store).await.map_err(|e| failed("version()", e))?;
    let methods = api
        .call_methods(&mut store)
        .await
        .map_err(|e| failed("methods()", e))?
        .into_iter()
        .map(|m| MethodInfo { name: m.name, read_only: m.read_only })
        .collect();
    Ok((version, methods))
}

/// Drives `future` to completion on the current thread. Used for verification, whose future
/// needs no reactor (the component runs on a wasmtime fiber; `NoState` answers at once).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
