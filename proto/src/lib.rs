//! The Substra orchestrator 1.0 wire contract: the Rust types generated from `proto/*.proto`
//! (package `orchestrator`), at the crate root.
//!
//! * messages and enums: `orchestrator_proto::DataManager`, `orchestrator_proto::AssetKind`, …
//! * oneofs: `orchestrator_proto::event::Asset`, `orchestrator_proto::compute_task_input::Ref`,
//!   `orchestrator_proto::compute_task_input_asset::Asset`
//! * with the `client` feature: `orchestrator_proto::<service>_client::<Service>Client`, e.g.
//!   `orchestrator_proto::data_manager_service_client::DataManagerServiceClient`
//! * with the `server` feature: `orchestrator_proto::<service>_server::{<Service>, <Service>Server}`
//!
//! Every map field is a `BTreeMap` so that encoding is deterministic.

pub use prost;
pub use prost_types;

#[allow(clippy::all, clippy::pedantic, clippy::nursery, clippy::unwrap_used, missing_docs, rustdoc::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/orchestrator.rs"));
}

pub use generated::*;

pub mod event_query;

/// Encoded `google.protobuf.FileDescriptorSet` of the 14 contract files plus their
/// `google/protobuf` imports (no source info), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orchestrator_descriptor.bin"));
