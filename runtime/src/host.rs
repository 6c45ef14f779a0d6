//! The component's imports: `state` over the overlay, `events` into a buffer.

use wasmtime::{StoreLimits, StoreLimitsBuilder};

use crate::overlay::{Overlay, OwnedBackend, StateError};
use crate::{BackendError, Context, ErrorKind, LogicError, StateWrite};

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

/// Host state of one call's store.
pub(crate) struct HostState {
    pub overlay: Overlay,
    pub events: Vec<Vec<u8>>,
    pub limits: StoreLimits,
}

impl HostState {
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

    /// Ends the call: net writes, events, the first backend failure and the backend.
    pub fn finish(self) -> CallOutput {
        let (writes, failure, backend) = self.overlay.finish();
        CallOutput { writes, events: self.events, failure, backend }
    }
}

/// What a call leaves behind in its host state.
pub(crate) struct CallOutput {
    pub writes: Vec<StateWrite>,
    pub events: Vec<Vec<u8>>,
    pub failure: Option<BackendError>,
    pub backend: Box<dyn OwnedBackend>,
}

impl From<StateError> for state::StateError {
    fn from(error: StateError) -> Self {
        match error {
            StateError::InvalidKey(message) => state::StateError::InvalidKey(message),
            StateError::ValueTooLarge(size) => state::StateError::ValueTooLarge(size),
            StateError::Backend(message) => state::StateError::Backend(message),
        }
    }
}

impl state::Host for HostState {
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
        let page = self.overlay.scan(&start, &end, limit, cursor.as_deref()).await?;
        Ok(state::ScanPage {
            entries: page.entries.into_iter().map(|(key, value)| state::Entry { key, value }).collect(),
            next_cursor: page.next_cursor,
        })
    }
}

impl events::Host for HostState {
    async fn emit(&mut self, event: Vec<u8>) {
        self.events.push(event);
    }
}

impl types::Host for HostState {}

impl From<&Context> for types::Context {
    fn from(ctx: &Context) -> Self {
        types::Context {
            msp_id: ctx.msp_id.clone(),
            channel: ctx.channel.clone(),
            tx_id: ctx.tx_id.clone(),
            tx_time_micros: ctx.tx_time_micros,
        }
    }
}

impl From<types::ErrorKind> for ErrorKind {
    fn from(kind: types::ErrorKind) -> Self {
        use types::ErrorKind as W;
        match kind {
            W::NotFound => ErrorKind::NotFound,
            W::BadRequest => ErrorKind::BadRequest,
            W::Conflict => ErrorKind::Conflict,
            W::Internal => ErrorKind::Internal,
            W::Unimplemented => ErrorKind::Unimplemented,
            W::InvalidAsset => ErrorKind::InvalidAsset,
            W::PermissionDenied => ErrorKind::PermissionDenied,
            W::IncompatibleTaskStatus => ErrorKind::IncompatibleTaskStatus,
            W::CannotDisableModel => ErrorKind::CannotDisableModel,
            W::MissingTaskOutput => ErrorKind::MissingTaskOutput,
            W::IncompatibleKind => ErrorKind::IncompatibleKind,
            W::CannotDisableOutput => ErrorKind::CannotDisableOutput,
            W::TerminatedComputePlan => ErrorKind::TerminatedComputePlan,
            W::TerminatedComputeTask => ErrorKind::TerminatedComputeTask,
            W::Unknown => ErrorKind::Unknown,
            W::MalformedRequest => ErrorKind::MalformedRequest,
        }
    }
}

impl From<types::Error> for LogicError {
    fn from(error: types::Error) -> Self {
        LogicError { kind: error.kind.into(), message: error.message }
    }
}
