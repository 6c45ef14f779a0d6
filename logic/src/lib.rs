//! The orchestrator's business logic: every validation, permission, state machine and key
//! layout of the Substra orchestrator API, and nothing about where state or events go.
//!
//! Built for `wasm32-unknown-unknown` it is the component every host runs (`guest.rs` binds it
//! to the WIT world); built natively it is a library for tests and benchmarks (`testing.rs`
//! provides an in-memory host with the same semantics).

pub mod api;
pub mod asset;
pub mod call;
pub mod error;
pub mod imports;
pub mod keys;
pub mod pagination;
pub mod permissions;
pub mod validation;

// One module per asset.
pub mod computeplan;
pub mod computetask;
pub mod datamanager;
pub mod datasample;
pub mod dataset;
pub mod failurereport;
pub mod function;
pub mod info;
pub mod model;
pub mod organization;
pub mod performance;
pub mod profiling;

#[cfg(target_arch = "wasm32")]
mod guest;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use api::{METHODS, invoke, version};
pub use call::{Call, Context};
pub use error::{ErrorKind, LogicError};
pub use imports::{Imports, ScanPage, StateError};
