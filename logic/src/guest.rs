//! The component side of the WIT world: state and events through the host's imports, the API
//! exported over [`crate::api`].

#![allow(unsafe_code)] // generated bindings

use crate::host::{Host, ScanPage, StateError};
use crate::{ErrorKind, api, tx};

wit_bindgen::generate!({
    world: "orchestrator",
    path: "../wit",
});

use exports::substra::orchestrator::api::{Guest, MethodInfo};
use substra::orchestrator::{events, state, types};

/// The host behind the WIT imports.
struct WitHost;

fn state_error(err: state::StateError) -> StateError {
    match err {
        state::StateError::InvalidKey(key) => StateError::InvalidKey(key),
        state::StateError::ValueTooLarge(size) => StateError::ValueTooLarge(size),
        state::StateError::Backend(msg) => StateError::Backend(msg),
    }
}

impl Host for WitHost {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        state::get(key).map_err(state_error)
    }
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        state::get_many(keys).map_err(state_error)
    }
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        state::put(key, &value).map_err(state_error)
    }
    fn delete(&mut self, key: &str) -> Result<(), StateError> {
        state::delete(key).map_err(state_error)
    }
    fn scan(&mut self, start: &str, end: &str, limit: u32, cursor: Option<&str>) -> Result<ScanPage, StateError> {
        let page = state::scan(start, end, limit, cursor).map_err(state_error)?;
        Ok(ScanPage {
            entries: page.entries.into_iter().map(|e| (e.key, e.value)).collect(),
            next_cursor: page.next_cursor,
        })
    }
    fn emit(&mut self, event: Vec<u8>) {
        events::emit(&event);
    }
}

fn wit_kind(kind: ErrorKind) -> types::ErrorKind {
    use types::ErrorKind as W;
    match kind {
        ErrorKind::NotFound => W::NotFound,
        ErrorKind::BadRequest => W::BadRequest,
        ErrorKind::Conflict => W::Conflict,
        ErrorKind::Internal => W::Internal,
        ErrorKind::Unimplemented => W::Unimplemented,
        ErrorKind::InvalidAsset => W::InvalidAsset,
        ErrorKind::PermissionDenied => W::PermissionDenied,
        ErrorKind::IncompatibleTaskStatus => W::IncompatibleTaskStatus,
        ErrorKind::CannotDisableModel => W::CannotDisableModel,
        ErrorKind::MissingTaskOutput => W::MissingTaskOutput,
        ErrorKind::IncompatibleKind => W::IncompatibleKind,
        ErrorKind::CannotDisableOutput => W::CannotDisableOutput,
        ErrorKind::TerminatedComputePlan => W::TerminatedComputePlan,
        ErrorKind::TerminatedComputeTask => W::TerminatedComputeTask,
        ErrorKind::Unknown => W::Unknown,
        ErrorKind::MalformedRequest => W::MalformedRequest,
    }
}

struct Component;

impl Guest for Component {
    fn version() -> String {
        api::version().to_owned()
    }

    fn methods() -> Vec<MethodInfo> {
        api::METHODS.iter().map(|m| MethodInfo { name: m.name.to_owned(), read_only: m.read_only }).collect()
    }

    fn invoke(ctx: types::Context, method: String, request: Vec<u8>) -> Result<Vec<u8>, types::Error> {
        let ctx = tx::Context {
            msp_id: ctx.msp_id,
            channel: ctx.channel,
            tx_id: ctx.tx_id,
            tx_time_micros: ctx.tx_time_micros,
        };
        api::invoke(&ctx, &mut WitHost, &method, &request)
            .map_err(|e| types::Error { kind: wit_kind(e.kind), message: e.message })
    }
}

export!(Component);
