//! A `Driver` for the logic's scenarios that runs every call on the compiled component over
//! in-memory state (shared by the component scenario tests, the fuzz test and the benchmarks),
//! and the fuzzer's `Target` on the component.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use orchestrator_logic::LogicError;
use orchestrator_logic::testing::fuzz::{Outcome, Target};
use orchestrator_logic::testing::{Driver, Harness};
use orchestrator_proto::Event;
use orchestrator_runtime::{Context, MemoryBackend, Runtime, RuntimeConfig, RuntimeError};
use prost::Message;

fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let config = RuntimeConfig { cache_dir: Some(cache_dir()), ..RuntimeConfig::default() };
            Runtime::new(config, orchestrator_logic_component::COMPONENT).expect("load the component")
        })
        .clone()
}

/// Precompiled components are shared by every test binary of the build.
fn cache_dir() -> std::path::PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("component-cache")
}

/// Runs calls on the component over in-memory state, committing on success.
pub struct ComponentDriver {
    runtime: Runtime,
    tokio: tokio::runtime::Runtime,
    channels: BTreeMap<String, MemoryBackend>,
    events: Vec<Event>,
    calls: u64,
    clock_micros: i64,
}

impl ComponentDriver {
    pub fn new() -> Self {
        ComponentDriver {
            runtime: runtime(),
            tokio: tokio::runtime::Builder::new_current_thread().build().expect("tokio"),
            channels: BTreeMap::new(),
            events: Vec::new(),
            calls: 0,
            clock_micros: 1_700_000_000_000_000,
        }
    }

    /// The method names of the loaded component's table, in its order.
    pub fn method_names(&self) -> Vec<String> {
        self.runtime.info().methods.iter().map(|m| m.name.clone()).collect()
    }

    /// Runs one call in `ctx`, committing on success. The outer error is the runtime's (a trap
    /// among them), the inner one the logic's answer.
    pub fn invoke_in(
        &mut self,
        ctx: &orchestrator_logic::Context,
        method: &str,
        request: &[u8],
    ) -> Result<Result<Vec<u8>, LogicError>, RuntimeError> {
        let ctx = Context {
            msp_id: ctx.msp_id.clone(),
            channel: ctx.channel.clone(),
            tx_id: ctx.tx_id.clone(),
            tx_time_micros: ctx.tx_time_micros,
        };
        // A method the component does not export never reaches it in a host (the gRPC layer
        // answers UNIMPLEMENTED); the native dispatcher does the same.
        if self.runtime.is_read_only(method).is_none() {
            return Ok(Err(LogicError::unimplemented(format!("unknown method {method:?}"))));
        }
        let backend = self.channels.entry(ctx.channel.clone()).or_default();
        let invocation = self.tokio.block_on(self.runtime.invoke(&ctx, method, request, backend.clone())).outcome?;
        let response = match invocation.result {
            Ok(response) => response,
            Err(e) => return Ok(Err(e)),
        };
        backend.apply(&invocation.writes);
        for bytes in invocation.events {
            match Event::decode(bytes.as_slice()) {
                Ok(event) => self.events.push(event),
                Err(e) => return Ok(Err(LogicError::internal(format!("bad event: {e}")))),
            }
        }
        Ok(Ok(response))
    }
}

impl Target for ComponentDriver {
    fn load(&mut self, world: &Harness) {
        self.channels = world
            .channels()
            .map(|(name, state)| (name.to_owned(), MemoryBackend::from_entries(state.entries.clone())))
            .collect();
        self.events.clear();
    }

    fn invoke(&mut self, ctx: &orchestrator_logic::Context, method: &str, request: &[u8]) -> Outcome {
        match self.invoke_in(ctx, method, request) {
            Ok(Ok(response)) => Outcome::Ok(response),
            Ok(Err(err)) => Outcome::Err(err),
            Err(RuntimeError::Trap(message)) => Outcome::Trap(message),
            Err(other) => Outcome::Fault(other.to_string()),
        }
    }
}

impl Driver for ComponentDriver {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        self.calls += 1;
        self.clock_micros += 1_000;
        let ctx = orchestrator_logic::Context {
            msp_id: msp.to_owned(),
            channel: channel.to_owned(),
            tx_id: format!("component-tx-{}", self.calls),
            tx_time_micros: self.clock_micros,
        };
        self.invoke_in(&ctx, method, request)
            .map_err(|e: RuntimeError| LogicError::internal(format!("runtime: {e}")))?
    }

    fn events(&self) -> Vec<Event> {
        self.events.clone()
    }
}
