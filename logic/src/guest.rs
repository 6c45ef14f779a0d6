//! The component side of the WIT world: state and events through the host's imports, the API
//! exported over [`crate::api`].

#![allow(unsafe_code)] // generated bindings

use crate::imports::{Imports, ScanPage, StateError};
use crate::{api, call};

wit_bindgen::generate!({
    world: "orchestrator",
    path: "../wit",
});

use exports::substra::orchestrator::api::{Guest, MethodInfo};
use substra::orchestrator::{events, state, types};

orchestrator_contract::wit_conversions!(types: substra::orchestrator::types, state: substra::orchestrator::state);

/// The host behind the WIT imports.
struct WitImports;

impl Imports for WitImports {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(state::get(key)?)
    }
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        Ok(state::get_many(keys)?)
    }
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        Ok(state::put(key, &value)?)
    }
    fn delete(&mut self, key: &str) -> Result<(), StateError> {
        Ok(state::delete(key)?)
    }
    fn scan(&mut self, start: &str, end: &str, limit: u32, cursor: Option<&str>) -> Result<ScanPage, StateError> {
        Ok(state::scan(start, end, limit, cursor)?.into())
    }
    fn emit(&mut self, event: Vec<u8>) {
        events::emit(&event);
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
        let ctx = call::Context::from(ctx);
        api::invoke(&ctx, &mut WitImports, &method, &request).map_err(types::Error::from)
    }
}

export!(Component);
