//! The event pipeline after commit: outbox rows → per-channel positions → consumers.
//!
//! - The channel's writer inserts a call's events into `events` in the call's transaction,
//!   numbered 1, 2, 3, ... per channel at insert (gap-free: the channel's writes are serial), and
//!   NOTIFYs `orchestrator_events_committed` with the new head, delivered only at commit.
//! - [`hub`] holds the one LISTEN connection of the process and tells every waiter (each
//!   SubscribeToEvents stream, the relay) what changed.
//! - [`relay`] publishes to RabbitMQ in position order with publisher confirms and records the
//!   confirmed position per channel; [`subscribe`] serves SubscribeToEvents from the same rows.

pub mod hub;
pub mod json;
pub mod relay;
pub mod subscribe;
pub mod topology;

pub use hub::EventHub;
pub use relay::{RelayConfig, RelayStats};
