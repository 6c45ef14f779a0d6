//! The runtime end to end, with the hand-assembled test component (see `common`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{EXTRA, QUERY, RUN, WORLD_VERSION, op, test_component, test_component_of};
use orchestrator_runtime::{
    BackendError, BoxFuture, Context, ErrorKind, LogicError, MemoryBackend, MethodInfo, Runtime, RuntimeConfig,
    RuntimeError, StateBackend,
};
use sha2::Digest;
use tokio::sync::oneshot;

fn ctx(tx_id: &str) -> Context {
    Context {
        msp_id: "MyOrg1MSP".to_owned(),
        channel: "mychannel".to_owned(),
        tx_id: tx_id.to_owned(),
        tx_time_micros: 1_700_000_000_000_000,
    }
}

/// Small pools: tests create several engines.
fn config() -> RuntimeConfig {
    RuntimeConfig { max_memory_bytes: 64 << 20, max_instances: 8, ..RuntimeConfig::default() }
}

fn runtime(version: &str) -> Runtime {
    Runtime::new(config(), &test_component(version)).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orchestrator-runtime-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn call(rt: &Runtime, request: &[u8], backend: &MemoryBackend) -> orchestrator_runtime::Invocation {
    rt.invoke(&ctx("tx"), RUN, request, backend.clone()).await.outcome.unwrap()
}

/// A backend that always fails.
struct Failing {
    retryable: bool,
}

impl StateBackend for Failing {
    fn get_many<'a>(&'a mut self, _: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        let error = BackendError { message: "could not serialize access".to_owned(), retryable: self.retryable };
        Box::pin(std::future::ready(Err(error)))
    }

    fn scan<'a>(
        &'a mut self,
        _: &'a str,
        _: &'a str,
        _: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>, BackendError>> {
        Box::pin(std::future::ready(Err(BackendError::fatal("down"))))
    }
}

/// A backend whose reads wait for a signal (and say when they start waiting).
struct Gated {
    entered: Option<oneshot::Sender<()>>,
    release: Option<oneshot::Receiver<()>>,
    delay: Duration,
}

impl StateBackend for Gated {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        Box::pin(async move {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(());
            }
            if let Some(release) = self.release.take() {
                let _ = release.await;
            }
            tokio::time::sleep(self.delay).await;
            Ok(vec![None; keys.len()])
        })
    }

    fn scan<'a>(
        &'a mut self,
        _: &'a str,
        _: &'a str,
        _: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>, BackendError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// A backend that owns its state and counts the reads it served (what a host gets back).
#[derive(Default)]
struct Owned {
    reads: u32,
    fail: Option<bool>,
}

impl StateBackend for Owned {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        self.reads += 1;
        let answer = match self.fail {
            Some(retryable) => Err(BackendError { message: "down".to_owned(), retryable }),
            None => Ok(vec![None; keys.len()]),
        };
        Box::pin(std::future::ready(answer))
    }

    fn scan<'a>(
        &'a mut self,
        _: &'a str,
        _: &'a str,
        _: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>, BackendError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[tokio::test]
async fn the_backend_comes_back_on_every_path() {
    let rt = Runtime::new(RuntimeConfig { fuel_per_call: 5_000_000, ..config() }, &test_component("test-own")).unwrap();
    // Success, a business error, a trap, exhausted fuel: the same value, with what it recorded.
    for (request, ok) in [(vec![op::GET], true), (vec![op::PUT_EMIT_ERR], true), (vec![op::TRAP], false)] {
        let invoked = rt.invoke(&ctx("tx"), RUN, &request, Owned { reads: 41, fail: None }).await;
        let expected = if request[0] == op::GET { 42 } else { 41 };
        assert_eq!(invoked.backend.reads, expected, "{request:?}");
        assert_eq!(invoked.outcome.is_ok(), ok, "{request:?}");
    }
    let invoked = rt.invoke(&ctx("tx"), RUN, &[op::SPIN], Owned::default()).await;
    assert!(matches!(invoked.outcome, Err(RuntimeError::Trap(_))));
    // A backend failure.
    let invoked = rt.invoke(&ctx("tx"), RUN, &[op::GET], Owned { reads: 0, fail: Some(true) }).await;
    assert!(invoked.outcome.as_ref().is_err_and(RuntimeError::is_retryable), "{:?}", invoked.outcome);
    assert_eq!((invoked.backend.reads, invoked.backend.fail), (1, Some(true)));
    // A boxed backend works too, and comes back boxed.
    let boxed: Box<dyn StateBackend> = Box::new(MemoryBackend::new());
    let invoked = rt.invoke(&ctx("tx"), RUN, &[op::GET], boxed).await;
    assert_eq!(invoked.outcome.unwrap().result, Ok(b"test-own".to_vec()));
}

#[test]
fn loads_and_verifies() {
    let bytes = test_component("test-1.0");
    let rt = Runtime::new(config(), &bytes).unwrap();
    let info = rt.info();
    assert_eq!(info.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(info.version, "test-1.0");
    assert_eq!(
        info.methods,
        vec![
            MethodInfo { name: RUN.to_owned(), read_only: false },
            MethodInfo { name: QUERY.to_owned(), read_only: true },
        ]
    );
    assert_eq!(rt.is_read_only(RUN), Some(false));
    assert_eq!(rt.is_read_only(QUERY), Some(true));
    assert_eq!(rt.is_read_only("test.Service/Nope"), None);
    // A second runtime in the process reuses the compiled component and agrees.
    let again = Runtime::new(config(), &bytes).unwrap();
    assert_eq!(*again.info(), *info);
}

#[test]
fn invalid_components_are_rejected() {
    for bytes in [&b"not wasm"[..], b"", b"\0asm\x01\0\0\0"] {
        let result = Runtime::new(config(), bytes);
        assert!(matches!(result, Err(RuntimeError::Component(_))), "{result:?}");
    }
    let result = Runtime::from_path(config(), std::path::Path::new("/nonexistent/logic.wasm"));
    assert!(matches!(result, Err(RuntimeError::Component(m)) if m.contains("/nonexistent/logic.wasm")));
}

#[test]
fn loads_from_a_path_and_fills_the_cache_dir() {
    let dir = temp_dir("from-path");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = test_component("test-path");
    let path = dir.join("logic.wasm");
    std::fs::write(&path, &bytes).unwrap();
    let cache_dir = dir.join("cache");
    let rt = Runtime::from_path(RuntimeConfig { cache_dir: Some(cache_dir.clone()), ..config() }, &path).unwrap();
    assert_eq!(rt.info().version, "test-path");
    let cached: Vec<String> =
        std::fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with(&format!("{}-", rt.info().sha256)) && cached[0].ends_with(".cwasm"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn answers_and_reports_fuel() {
    let rt = runtime("test-answer");
    let backend = MemoryBackend::new();
    let first = call(&rt, b"", &backend).await;
    assert_eq!(first.result, Ok(b"test-answer".to_vec()));
    assert!(first.writes.is_empty() && first.events.is_empty());
    assert!(first.fuel_consumed > 0);
    // Deterministic: the same call costs the same fuel.
    let second = call(&rt, b"", &backend).await;
    assert_eq!(second.fuel_consumed, first.fuel_consumed);
}

#[tokio::test]
async fn writes_and_events_come_back_on_success() {
    let rt = runtime("test-writes");
    let backend = MemoryBackend::new();
    let request = [op::PUT_EMIT_OK, 1, 2, 3];
    let invocation = call(&rt, &request, &backend).await;
    assert_eq!(invocation.result, Ok(request.to_vec()));
    assert_eq!(invocation.writes, vec![("k".to_owned(), Some(request.to_vec()))]);
    assert_eq!(invocation.events, vec![request.to_vec()]);
    // The backend saw nothing: the host commits.
    assert!(backend.is_empty());
    backend.apply(&invocation.writes);

    // The next call reads the committed value through the backend.
    let invocation = call(&rt, &[op::GET], &backend).await;
    assert_eq!(invocation.result, Ok(request.to_vec()));
    assert!(invocation.writes.is_empty() && invocation.events.is_empty());
}

#[tokio::test]
async fn business_errors_drop_writes_and_events() {
    let rt = runtime("test-error");
    let backend = MemoryBackend::new();
    let invocation = call(&rt, &[op::PUT_EMIT_ERR, 9], &backend).await;
    assert_eq!(invocation.result, Err(LogicError { kind: ErrorKind::NotFound, message: "nope".to_owned() }));
    assert!(invocation.writes.is_empty());
    assert!(invocation.events.is_empty());
    assert!(invocation.fuel_consumed > 0);
}

#[tokio::test]
async fn backend_failures_fail_the_call_whatever_the_logic_answers() {
    let rt = runtime("test-backend");
    for retryable in [true, false] {
        let result = rt.invoke(&ctx("tx"), RUN, &[op::GET], Failing { retryable }).await.outcome;
        // The logic turned the state error into err(internal, ...); the runtime reports the
        // backend failure instead so that the host can retry.
        match result {
            Err(error @ RuntimeError::Backend(_)) => {
                assert_eq!(error.is_retryable(), retryable);
                assert!(error.to_string().contains("could not serialize access"));
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_trap_fails_one_call_only() {
    let rt = runtime("test-trap");
    let backend = MemoryBackend::new();
    let result = rt.invoke(&ctx("tx"), RUN, &[op::TRAP], backend.clone()).await.outcome;
    assert!(matches!(&result, Err(RuntimeError::Trap(m)) if m.contains("unreachable")), "{result:?}");
    assert_eq!(call(&rt, b"", &backend).await.result, Ok(b"test-trap".to_vec()));
}

#[tokio::test]
async fn exhausted_fuel_fails_one_call_only() {
    let rt =
        Runtime::new(RuntimeConfig { fuel_per_call: 5_000_000, ..config() }, &test_component("test-fuel")).unwrap();
    let backend = MemoryBackend::new();
    let result = rt.invoke(&ctx("tx"), RUN, &[op::SPIN], backend.clone()).await.outcome;
    assert!(matches!(&result, Err(RuntimeError::Trap(m)) if m.contains("fuel")), "{result:?}");
    assert_eq!(call(&rt, b"", &backend).await.result, Ok(b"test-fuel".to_vec()));
}

#[tokio::test]
async fn exhausted_memory_fails_one_call_only() {
    let rt =
        Runtime::new(RuntimeConfig { max_memory_bytes: 8 << 20, ..config() }, &test_component("test-memory")).unwrap();
    let backend = MemoryBackend::new();
    // The guest grows its memory past the cap.
    let result = rt.invoke(&ctx("tx"), RUN, &[op::GROW], backend.clone()).await.outcome;
    assert!(matches!(&result, Err(RuntimeError::Trap(m)) if m.contains("growing memory")), "{result:?}");
    // A request larger than the cap cannot even be copied in.
    let mut big = vec![0u8; 16 << 20];
    big[0] = op::PUT_EMIT_OK;
    let result = rt.invoke(&ctx("tx"), RUN, &big, backend.clone()).await.outcome;
    assert!(matches!(&result, Err(RuntimeError::Trap(_))), "{result:?}");
    // Under the cap it works, and the next small call too.
    let mut fits = vec![0u8; 4 << 20];
    fits[0] = op::PUT_EMIT_OK;
    let invocation = rt.invoke(&ctx("tx"), RUN, &fits, backend.clone()).await.outcome.unwrap();
    assert_eq!(invocation.result.map(|r| r.len()), Ok(4 << 20));
    assert_eq!(call(&rt, b"", &backend).await.result, Ok(b"test-memory".to_vec()));
}

#[tokio::test]
async fn swap_switches_versions_and_keeps_serving_on_failure() {
    let rt = runtime("test-v1");
    let backend = MemoryBackend::new();
    let v1 = rt.info();

    let result = rt.swap(b"definitely not a component");
    assert!(matches!(result, Err(RuntimeError::Component(_))), "{result:?}");
    assert_eq!(rt.info(), v1);
    assert_eq!(call(&rt, b"", &backend).await.result, Ok(b"test-v1".to_vec()));

    let v2 = rt.swap(&test_component("test-v2")).unwrap();
    assert_eq!(v2.version, "test-v2");
    assert_ne!(v2.sha256, v1.sha256);
    assert_eq!(rt.info(), v2);
    // Clones share the current version.
    let clone = rt.clone();
    assert_eq!(call(&clone, b"", &backend).await.result, Ok(b"test-v2".to_vec()));
    // The info handed out before the swap still describes v1.
    assert_eq!(v1.version, "test-v1");
}

#[tokio::test]
async fn swap_accepts_added_methods_and_the_current_bytes() {
    let rt = runtime("test-base");
    let v1 = rt.info();
    assert_eq!(rt.is_read_only(EXTRA), None);
    // The current bytes again: accepted as they are, nothing reloaded.
    let same = rt.swap(&test_component("test-base")).unwrap();
    assert!(Arc::ptr_eq(&same, &v1));

    let table = [(RUN, false), (QUERY, true), (EXTRA, true)];
    let v2 = rt.swap(&test_component_of("test-more", WORLD_VERSION, &table)).unwrap();
    assert_eq!(v2.version, "test-more");
    assert_eq!(v2.methods.len(), 3);
    assert_eq!(rt.is_read_only(EXTRA), Some(true));
    assert_eq!(call(&rt, b"", &MemoryBackend::new()).await.result, Ok(b"test-more".to_vec()));
}

/// `swap(bytes)` is refused as incompatible with a reason containing `reason`, and the
/// current version keeps serving.
async fn assert_refused(rt: &Runtime, bytes: &[u8], reason: &str) {
    let before = rt.info();
    let result = rt.swap(bytes);
    assert!(
        matches!(&result, Err(RuntimeError::Incompatible(m)) if m.contains(reason)),
        "expected a refusal naming {reason:?}: {result:?}"
    );
    assert_eq!(rt.info(), before);
    assert_eq!(call(rt, b"", &MemoryBackend::new()).await.result, Ok(before.version.as_bytes().to_vec()));
}

#[tokio::test]
async fn swap_refuses_what_cannot_serve_the_current_calls() {
    let rt = runtime("test-keep");
    type Table = &'static [(&'static str, bool)];
    let refusals: [(&str, Table, String); 3] = [
        // A method of the current table missing.
        ("test-less", &[(RUN, false)], format!("lacks 1 of the current one: {QUERY}")),
        // A read-only flag changed, either way.
        ("test-flip", &[(RUN, true), (QUERY, true)], format!("{RUN} (read-write -> read-only)")),
        ("test-flop", &[(RUN, false), (QUERY, false)], format!("{QUERY} (read-only -> read-write)")),
    ];
    for (version, table, reason) in refusals {
        assert_refused(&rt, &test_component_of(version, WORLD_VERSION, table), &reason).await;
    }

    // A method added cannot be removed again: going back to the first table is refused.
    let table = [(RUN, false), (QUERY, true), (EXTRA, false)];
    rt.swap(&test_component_of("test-added", WORLD_VERSION, &table)).unwrap();
    assert_refused(&rt, &test_component("test-keep"), &format!("lacks 1 of the current one: {EXTRA}")).await;
}

#[tokio::test]
async fn swap_refuses_another_world() {
    let rt = runtime("test-world");
    // A semver-compatible world links (wasmtime matches 0.1.x names), but is not the same one.
    assert_refused(
        &rt,
        &test_component_of("test-world-2", "0.1.1", &common::METHODS),
        "exports world substra:orchestrator@0.1.1 where the current version exports substra:orchestrator@0.1.0",
    )
    .await;
    // An incompatible one does not even link.
    let result = rt.swap(&test_component_of("test-world-3", "0.2.0", &common::METHODS));
    assert!(matches!(&result, Err(RuntimeError::Component(m)) if m.contains("linking")), "{result:?}");
    assert_eq!(rt.info().version, "test-world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_on_the_old_version() {
    let rt = runtime("test-old");
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let backend = Gated { entered: Some(entered_tx), release: Some(release_rx), delay: Duration::ZERO };
    let in_flight = {
        let rt = rt.clone();
        // `invoke` futures are Send: hosts spawn them.
        tokio::spawn(async move { rt.invoke(&ctx("tx"), RUN, &[op::GET], backend).await.outcome })
    };
    entered_rx.await.unwrap();
    rt.swap(&test_component("test-new")).unwrap();
    release_tx.send(()).unwrap();
    let invocation = in_flight.await.unwrap().unwrap();
    assert_eq!(invocation.result, Ok(b"test-old".to_vec()));
    let backend = MemoryBackend::new();
    assert_eq!(call(&rt, &[op::GET], &backend).await.result, Ok(b"test-new".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_pool_wait_for_a_slot() {
    let rt = Runtime::new(RuntimeConfig { max_instances: 2, ..config() }, &test_component("test-pool")).unwrap();
    let rt = Arc::new(rt);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let backend = Gated { entered: None, release: None, delay: Duration::from_millis(20) };
                rt.invoke(&ctx(&format!("tx{i}")), RUN, &[op::GET], backend).await.outcome
            })
        })
        .collect();
    for call in calls {
        let invocation = call.await.unwrap().unwrap();
        assert_eq!(invocation.result, Ok(b"test-pool".to_vec()));
    }
}

#[tokio::test]
async fn swap_never_waits_for_calls() {
    // Single-threaded executor, one call slot, taken by a call parked in the backend: a swap
    // from this very thread must still complete (verification has its own pool slot).
    let rt = Runtime::new(RuntimeConfig { max_instances: 1, ..config() }, &test_component("test-busy")).unwrap();
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let backend = Gated { entered: Some(entered_tx), release: Some(release_rx), delay: Duration::ZERO };
    let in_flight = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.invoke(&ctx("tx"), RUN, &[op::GET], backend).await.outcome })
    };
    entered_rx.await.unwrap();
    let info = rt.swap(&test_component("test-busy-2")).unwrap();
    assert_eq!(info.version, "test-busy-2");
    release_tx.send(()).unwrap();
    let invocation = in_flight.await.unwrap().unwrap();
    assert_eq!(invocation.result, Ok(b"test-busy".to_vec()));
}
