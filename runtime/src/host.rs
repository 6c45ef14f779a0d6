//! The component's imports: `state` over the overlay, `events` into a buffer.

use wasmtime::{StoreLimits, StoreLimitsBuilder};

use crate::overlay::{Overlay, OwnedBackend};
use crate::{BackendError, StateWrite};

/// Generated bindings of the `orchestrator` world (private: the crate's API mirrors them).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "orchestrator",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::substra::orchestrator::{events, state, types};

orchestrator_contract::wit_conversions!(types: bindings::substra::orchestrator::types, state: bindings::substra::orchestrator::state);

/// One call's state in its wasmtime store: the overlay over the backend, the events emitted,
/// the memory limit.
pub(crate) struct CallState {
    pub overlay: Overlay,
    pub events: Vec<Vec<u8>>,
    pub limits: StoreLimits,
}

impl CallState {
    pub fn new(backend: Box<dyn OwnedBackend>, max_memory_bytes: usize) -> Self {
        Self {
            overlay: Overlay::new(backend),
            events: Vec::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                // A failed `memory.grow` traps at once with a clear message instead of
                // letting the guest's allocator abort.
                .trap_on_grow_failure(true)
                .build(),
        }
    }

    /// Ends the call: what it left behind, and the backend to hand back.
    pub fn finish(self) -> (Effects, Box<dyn OwnedBackend>) {
        let (writes, failure, backend) = self.overlay.finish();
        (Effects { writes, events: self.events, failure }, backend)
    }
}

/// What a call leaves behind: its net writes, events and first backend failure (the runtime
/// turns them into an `Invocation`).
pub(crate) struct Effects {
    pub writes: Vec<StateWrite>,
    pub events: Vec<Vec<u8>>,
    pub failure: Option<BackendError>,
}

impl state::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, state::StateError> {
        Ok(self.overlay.get(&key).await?)
    }

    async fn get_many(&mut self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, state::StateError> {
        Ok(self.overlay.get_many(&keys).await?)
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        Ok(self.overlay.put(key, value)?)
    }

    async fn delete(&mut self, key: String) -> Result<(), state::StateError> {
        Ok(self.overlay.delete(key)?)
    }

    async fn scan(
        &mut self,
        start: String,
        end: String,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<state::ScanPage, state::StateError> {
        Ok(self.overlay.scan(&start, &end, limit, cursor.as_deref()).await?.into())
    }
}

impl events::Host for CallState {
    async fn emit(&mut self, event: Vec<u8>) {
        self.events.push(event);
    }
}

impl types::Host for CallState {}
