//! The standalone orchestrator: a gRPC server whose business logic runs in the WebAssembly
//! logic component, with state and events in PostgreSQL.
//!
//! Modules by role:
//! - [`config`]: flags and `ORCHESTRATOR_*` environment variables;
//! - [`channels`]: the channel configuration (which organization may call on which channel);
//! - [`headers`]: `mspid` / `channel` / `reqid` metadata checks;
//! - [`mspid`] and [`x509`]: optional verification of the MSP id against the client certificate;
//! - [`codec`]: the raw-bytes gRPC codec;
//! - [`grpc`]: the router of the 13 services and the per-call handler;
//! - [`postgres`]: pool, migrations, state backend, transaction executor with retries;
//! - [`distributed`]: distributed mode: calls forwarded through a Fabric peer's Gateway, the
//!   ledger's events copied into the event store;
//! - [`events`]: after commit: per-channel event positions, the RabbitMQ relay,
//!   SubscribeToEvents;
//! - [`transport`]: accepting connections, TLS, the per-connection policy (handshake and idle
//!   timeouts, keepalive enforcement) and the budget of request bytes in flight;
//! - [`server`]: assembly, health, reflection, graceful shutdown;
//! - [`reload`]: swapping the logic component on SIGHUP;
//! - [`logging`]: the log subscriber;
//! - [`metrics`]: Prometheus metrics on `/metrics` when `METRICS_ENABLED`;
//! - [`inspect`]: `orchestrator logic inspect`, a component's identity and method table;
//! - [`activate`]: `orchestrator logic activate` and `active`, the logic version a
//!   distributed deployment's ledger names.

pub mod activate;
pub mod channels;
pub mod codec;
pub mod config;
pub mod distributed;
pub mod events;
pub mod grpc;
pub mod headers;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod mspid;
pub mod postgres;
pub mod quote;
pub mod reload;
pub mod server;
pub mod transport;
pub mod x509;

pub use config::Config;
pub use server::{Server, ServerError};
