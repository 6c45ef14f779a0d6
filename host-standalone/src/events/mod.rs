//! The event pipeline after commit: outbox rows → per-channel positions → consumers.
//!
//! - The executor writes a call's events into `events` in the call's own transaction; a
//!   statement trigger NOTIFYs `orchestrator_events_written` with the channel, delivered only if
//!   the transaction commits.
//! - [`sequencer`] numbers the committed rows of a channel 1, 2, 3, ... (gap-free, never
//!   reordered once visible) and NOTIFYs `orchestrator_events_sequenced`.
//! - [`hub`] holds the one LISTEN connection of the process and tells every waiter (each
//!   SubscribeToEvents stream, the relay, the sequencer) what changed.
//! - [`relay`] publishes to RabbitMQ in position order with publisher confirms and records the
//!   confirmed position per channel; [`subscribe`] serves SubscribeToEvents from the same rows.

pub mod hub;
pub mod json;
pub mod relay;
pub mod sequencer;
pub mod subscribe;
pub mod topology;

pub use hub::EventHub;
pub use relay::{RelayConfig, RelayStats};
