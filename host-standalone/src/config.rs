//! Configuration: command-line flags, each backed by an `ORCHESTRATOR_*` environment variable
//! (the reference server's names where it has one), with defaults that make a bare
//! `orchestrator` run against the local PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use orchestrator_runtime::settings::{parse_go_bool, parse_go_duration};

/// Default PostgreSQL URL: the local server, trust authentication, database `orchestrator`
/// (created on startup if missing).
/// No TLS on the loopback default (as the reference's own setup): it protects nothing there and
/// costs both ends CPU on every row, a few milliseconds on a large QueryTasks page.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orchestrator?sslmode=disable";
/// Default listen address (the reference's fixed gRPC port).
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:9000";
/// Default maximum size of one gRPC message, in both directions: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Default budget of request bytes in flight: four messages of the maximum size, sized for a
/// service of 2 cores and a few GB (each byte received is held about three times while decoded).
pub const DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// Default listen address of the metrics endpoint (the reference's `:8484`).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:8484";

/// Default AMQP broker: the local RabbitMQ, guest/guest, default vhost.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default exchange events are published to (the reference's name).
pub const DEFAULT_AMQP_EXCHANGE: &str = "orchestrator";

/// Where the business logic runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// In this process, state in PostgreSQL.
    Standalone,
    /// On a Hyperledger Fabric network, as a chaincode: this process forwards calls through a
    /// peer's Gateway and keeps only the events, read from the ledger, in PostgreSQL.
    Distributed,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the reference logs JSON too).
    Json,
    /// Human-readable lines.
    Text,
}

/// What to do instead of serving.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// The logic component, without starting a server.
    Logic {
        /// What to do with it.
        #[command(subcommand)]
        command: LogicCommand,
    },
}

/// `orchestrator logic ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum LogicCommand {
    /// Loads and verifies a component, then prints its sha256, logic version, WIT world and
    /// method table (each method read-only or read-write). Opens no socket, database or cache.
    Inspect {
        /// The component (.wasm). Unset: the one embedded in this binary.
        file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: InspectFormat,
    },
    /// Distributed mode: makes a component the logic version of the channels, in one admin
    /// transaction per channel through the peer's Gateway (docs/modes.md §3.7), signed by the
    /// admin of `ORCHESTRATOR_MSPID` from `ORCHESTRATOR_FABRIC_ADMIN_WALLET`. Every endorser
    /// verifies it first; once the transaction commits, every peer runs it. Prints its sha256,
    /// then one line per channel.
    Activate {
        /// The component (.wasm), verified here before it is sent.
        file: PathBuf,
        /// A channel to activate it on (repeatable). Unset: every channel of the channel
        /// configuration.
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
    /// Distributed mode: the logic version each channel runs (who activated it, in which
    /// transaction), read through the peer's Gateway with the facade's wallet.
    Active {
        /// A channel to read (repeatable). Unset: every channel of the channel configuration.
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
}

/// Output of `orchestrator logic inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    /// Aligned lines, one per method.
    Text,
    /// One JSON object.
    Json,
}

/// The standalone orchestrator: gRPC server, business logic in a WebAssembly component,
/// state and events in PostgreSQL.
///
/// Without a subcommand, serves (every flag below applies); `orchestrator logic inspect [FILE]`
/// describes a logic component instead, and in distributed mode `orchestrator logic activate
/// FILE` makes one the channels' logic version (`orchestrator logic active` reads it).
#[derive(Debug, Clone, Parser)]
#[command(name = "orchestrator", version, about)]
pub struct Config {
    /// Instead of serving: see `orchestrator help logic`.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where the logic runs: here on PostgreSQL, or on Fabric through a peer's Gateway.
    #[arg(long, env = "ORCHESTRATOR_MODE", value_enum, default_value = "standalone", ignore_case = true)]
    pub mode: Mode,

    /// Distributed mode: the peer whose Gateway serves the calls (`host:port`).
    #[arg(long, env = "ORCHESTRATOR_FABRIC_PEER_ADDRESS")]
    pub fabric_peer_address: Option<String>,

    /// Distributed mode: the peer's TLS CA (PEM). Unset: plaintext.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_TLS_CA_CERT")]
    pub fabric_tls_ca_cert: Option<PathBuf>,

    /// Distributed mode: the name the peer's TLS certificate is checked against. Unset: the
    /// host of the peer address.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_TLS_SERVER_NAME")]
    pub fabric_tls_server_name: Option<String>,

    /// Distributed mode: signing identities, `<dir>/<msp id>/cert.pem` and `key.pem`: a call is
    /// signed by the identity of its `mspid` header.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_WALLET")]
    pub fabric_wallet: Option<PathBuf>,

    /// Distributed mode, as the reference: one certificate (PEM) signing every call, under the
    /// MSP id of the call's `mspid` header. With a wallet, used for MSP ids it lacks.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_CERT")]
    pub fabric_cert: Option<PathBuf>,

    /// Distributed mode: the private key (PEM) of `ORCHESTRATOR_FABRIC_CERT`.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_KEY")]
    pub fabric_key: Option<PathBuf>,

    /// Distributed mode: the MSP id whose identity reads the ledger's events (and whose admin
    /// signs `orchestrator logic activate`). Unset: the wallet's only identity (required with
    /// several, or with `ORCHESTRATOR_FABRIC_CERT` alone).
    #[arg(long, env = "ORCHESTRATOR_MSPID")]
    pub msp_id: Option<String>,

    /// Distributed mode, `orchestrator logic activate`: organization admins' identities, laid out
    /// as the wallet (`<dir>/<msp id>/cert.pem` and `key.pem`); the admin of `ORCHESTRATOR_MSPID`
    /// (unset: the admin wallet's only one) signs the activation. The server never reads it.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_ADMIN_WALLET")]
    pub fabric_admin_wallet: Option<PathBuf>,

    /// Distributed mode: the chaincode name; a call's `chaincode` header overrides it.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_CHAINCODE", default_value = "orchestrator")]
    pub fabric_chaincode: String,

    /// Distributed mode: longest wait for a transaction's commit after it was submitted (Go
    /// duration); the outcome is then asked of the peer, never guessed.
    #[arg(long, env = "ORCHESTRATOR_FABRIC_GATEWAY_TIMEOUT", default_value = "20s", value_parser = parse_positive_go_duration)]
    pub fabric_gateway_timeout: Duration,

    /// PostgreSQL URL. The database is created if it does not exist, then migrated.
    #[arg(long, env = "ORCHESTRATOR_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Maximum number of pooled PostgreSQL connections.
    #[arg(long, env = "ORCHESTRATOR_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Channel configuration YAML (`channels: {<channel>: [<msp id>, ...]}`). Unset: ./config/channels.yaml
    /// if present, else the built-in default (mychannel and yourchannel, each MyOrg1MSP and MyOrg2MSP).
    #[arg(long, env = "ORCHESTRATOR_CHANNEL_CONFIG")]
    pub channel_config: Option<PathBuf>,

    /// How long a call may keep retrying after serialization failures (Go duration: 500ms, 2s, 1m30s).
    #[arg(long, env = "ORCHESTRATOR_TX_RETRY_BUDGET", default_value = "2s", value_parser = parse_go_duration)]
    pub tx_retry_budget: Duration,

    /// gRPC listen address.
    #[arg(long, env = "ORCHESTRATOR_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,

    /// Maximum size in bytes of one gRPC message, received or sent (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "ORCHESTRATOR_GRPC_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub grpc_max_message_bytes: usize,

    /// Budget of request bytes in flight, all calls together: a call whose message does not fit
    /// waits (reading nothing) until earlier calls end. At least the maximum message size.
    #[arg(long, env = "ORCHESTRATOR_GRPC_MAX_REQUEST_BYTES_IN_FLIGHT", default_value_t = DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT)]
    pub grpc_max_request_bytes_in_flight: usize,

    /// Longest wait of a call for room in the request budget, then RESOURCE_EXHAUSTED (Go duration).
    #[arg(long, env = "ORCHESTRATOR_GRPC_REQUEST_BUDGET_WAIT", default_value = "30s", value_parser = parse_positive_go_duration)]
    pub grpc_request_budget_wait: Duration,

    /// Keepalive enforcement: least time between client pings; a client pinging more often is
    /// sent GOAWAY `too_many_pings` (Go duration).
    #[arg(long, env = "ORCHESTRATOR_GRPC_KEEPALIVE_POLICY_MIN_TIME", default_value = "30s", value_parser = parse_go_duration)]
    pub grpc_keepalive_policy_min_time: Duration,

    /// Keepalive enforcement: allow client pings while no call is open.
    #[arg(long, env = "ORCHESTRATOR_GRPC_KEEPALIVE_POLICY_PERMIT_WITHOUT_STREAM", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub grpc_keepalive_policy_permit_without_stream: bool,

    /// A connection with no call open for this long is sent GOAWAY and closed; 0: never (Go duration).
    #[arg(long, env = "ORCHESTRATOR_GRPC_MAX_CONNECTION_IDLE", default_value = "2m", value_parser = parse_go_duration)]
    pub grpc_max_connection_idle: Duration,

    /// Time a new connection has to finish its TLS and HTTP/2 handshakes (Go duration).
    #[arg(long, env = "ORCHESTRATOR_GRPC_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_go_duration)]
    pub grpc_handshake_timeout: Duration,

    /// Path of the logic component (.wasm). Unset: the component embedded in the binary. On
    /// SIGHUP the server reads the file again and swaps the new component in once verified
    /// (standalone mode).
    #[arg(long, env = "ORCHESTRATOR_LOGIC")]
    pub logic: Option<PathBuf>,

    /// Directory for precompiled components (keyed by their sha256). Empty: no cache.
    #[arg(long, env = "ORCHESTRATOR_COMPONENT_CACHE", default_value = "target/component-cache")]
    pub component_cache: PathBuf,

    /// Fuel (wasm instruction budget) per call. Unset: the runtime's default.
    #[arg(long, env = "ORCHESTRATOR_FUEL_PER_CALL")]
    pub fuel_per_call: Option<u64>,

    /// Serve TLS.
    #[arg(long, env = "ORCHESTRATOR_TLS_ENABLED", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub tls_enabled: bool,

    /// Server certificate (PEM), when TLS is enabled.
    #[arg(long, env = "ORCHESTRATOR_TLS_CERT_PATH")]
    pub tls_cert_path: Option<PathBuf>,

    /// Server private key (PEM), when TLS is enabled.
    #[arg(long, env = "ORCHESTRATOR_TLS_KEY_PATH")]
    pub tls_key_path: Option<PathBuf>,

    /// Require and verify client certificates (mutual TLS).
    #[arg(long, env = "ORCHESTRATOR_MTLS_ENABLED", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub mtls_enabled: bool,

    /// The server's own CA (PEM); trusted for client certificates too, under mTLS.
    #[arg(long, env = "ORCHESTRATOR_TLS_SERVER_CA_CERT")]
    pub tls_server_ca_cert: Option<PathBuf>,

    /// Client CA directory, laid out `<dir>/<msp id>/<PEM files>`: trusted client CAs under mTLS,
    /// and the per-organization CAs checked by MSP id verification.
    #[arg(long, env = "ORCHESTRATOR_TLS_CLIENT_CA_CERT_DIR")]
    pub tls_client_ca_cert_dir: Option<PathBuf>,

    /// Check the `mspid` header against the client certificate (Subject O and issuing CA).
    #[arg(long, env = "ORCHESTRATOR_VERIFY_CLIENT_MSP_ID", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub verify_client_msp_id: bool,

    /// Publish events to RabbitMQ. Off: events are still kept, queried and streamed.
    #[arg(long, env = "ORCHESTRATOR_AMQP_ENABLED", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub amqp_enabled: bool,

    /// AMQP URL of the broker the events are relayed to.
    #[arg(long, env = "ORCHESTRATOR_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,

    /// Topic exchange the events are published to (routing key = channel).
    #[arg(long, env = "ORCHESTRATOR_AMQP_EXCHANGE", default_value = DEFAULT_AMQP_EXCHANGE)]
    pub amqp_exchange: String,

    /// Declare one durable queue per organization (named by its MSP id), bound to its channels.
    #[arg(long, env = "ORCHESTRATOR_AMQP_DECLARE_QUEUES", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub amqp_declare_queues: bool,

    /// Pause before the relay reconnects to the broker after a failure (Go duration).
    #[arg(long, env = "ORCHESTRATOR_AMQP_RECONNECT_DELAY", default_value = "1s", value_parser = parse_go_duration)]
    pub amqp_reconnect_delay: Duration,

    /// Longest wait for the broker: a publish unconfirmed for this long (or a connection not set
    /// up within it) marks the relay NOT_SERVING and makes it reconnect (Go duration).
    #[arg(long, env = "ORCHESTRATOR_AMQP_CONFIRM_TIMEOUT", default_value = "10s", value_parser = parse_positive_go_duration)]
    pub amqp_confirm_timeout: Duration,

    /// AMQP heartbeat interval asked of the broker (whole seconds; a `heartbeat` in the URL wins):
    /// how soon an idle relay notices a dead connection (Go duration).
    #[arg(long, env = "ORCHESTRATOR_AMQP_HEARTBEAT", default_value = "30s", value_parser = parse_positive_go_duration)]
    pub amqp_heartbeat: Duration,

    /// Prefix of the per-organization queue names (`<prefix><MSP id>`), for shared brokers.
    #[arg(long, env = "ORCHESTRATOR_AMQP_QUEUE_PREFIX", default_value = "")]
    pub amqp_queue_prefix: String,

    /// Events read per query when SubscribeToEvents replays history.
    #[arg(long, env = "ORCHESTRATOR_REPLAY_EVENTS_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub replay_events_batch_size: u32,

    /// Serve Prometheus metrics on `metrics_addr` (`/metrics`).
    #[arg(long, env = "METRICS_ENABLED", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub metrics_enabled: bool,

    /// Listen address of the metrics endpoint (the reference's port).
    #[arg(long, env = "ORCHESTRATOR_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,

    /// Log level or tracing filter (error, warn, info, debug, trace, or a directive list).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "ORCHESTRATOR_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

impl Config {
    /// The defaults, as if run without flags and without environment variables: the clap
    /// attributes above are their one definition.
    ///
    /// Tests use it, then set what they need.
    pub fn defaults() -> Self {
        let command = <Self as clap::CommandFactory>::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["orchestrator"]);
        match <Self as clap::FromArgMatches>::from_arg_matches(&matches) {
            Ok(config) => config,
            // Every default above parses (the `defaults_parse` test).
            Err(err) => panic!("the default configuration does not parse: {err}"),
        }
    }
}

/// A Go duration that must not be zero (a timeout of nothing would fail every wait).
pub fn parse_positive_go_duration(text: &str) -> Result<Duration, String> {
    match parse_go_duration(text)? {
        Duration::ZERO => Err(format!("duration {text:?} must be more than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_ignore_the_environment() {
        let config = Config::defaults();
        assert_eq!(config.mode, Mode::Standalone);
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.tx_retry_budget, Duration::from_secs(2));
        assert_eq!(config.grpc_max_connection_idle, Duration::from_secs(120));
        assert_eq!(config.amqp_confirm_timeout, crate::events::relay::DEFAULT_CONFIRM_TIMEOUT);
        assert_eq!(config.amqp_heartbeat, crate::events::relay::DEFAULT_HEARTBEAT);
        assert_eq!(config.fabric_chaincode, "orchestrator");
        assert!(config.amqp_enabled);
    }

    #[test]
    fn flags_parse() {
        let config = Config::try_parse_from([
            "orchestrator",
            "--tx-retry-budget",
            "500ms",
            "--grpc-addr",
            "127.0.0.1:0",
            "--tls-enabled",
            "false",
            "--log-format",
            "text",
        ]);
        let config = match config {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(config.tx_retry_budget, Duration::from_millis(500));
        assert_eq!(config.grpc_addr.port(), 0);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.command, None, "no subcommand: serve");
    }

    #[test]
    fn logic_inspect_parses() {
        let parse = |args: &[&str]| match Config::try_parse_from(args) {
            Ok(config) => config.command,
            Err(err) => panic!("{args:?}: {err}"),
        };
        let inspect = |file: Option<&str>, format| {
            Some(Command::Logic { command: LogicCommand::Inspect { file: file.map(PathBuf::from), format } })
        };
        assert_eq!(parse(&["orchestrator", "logic", "inspect"]), inspect(None, InspectFormat::Text));
        assert_eq!(
            parse(&["orchestrator", "logic", "inspect", "x.wasm", "--format", "json"]),
            inspect(Some("x.wasm"), InspectFormat::Json)
        );
        // Server flags still go before the subcommand, as without one.
        assert_eq!(
            parse(&["orchestrator", "--log-format", "text", "logic", "inspect"]),
            inspect(None, InspectFormat::Text)
        );
        assert!(Config::try_parse_from(["orchestrator", "logic"]).is_err(), "logic needs a subcommand");
    }

    #[test]
    fn logic_activate_and_active_parse() {
        let parse = |args: &[&str]| match Config::try_parse_from(args) {
            Ok(config) => config.command,
            Err(err) => panic!("{args:?}: {err}"),
        };
        let channels = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse(&["orchestrator", "logic", "activate", "x.wasm", "--channel", "a", "--channel", "b"]),
            Some(Command::Logic {
                command: LogicCommand::Activate { file: PathBuf::from("x.wasm"), channels: channels(&["a", "b"]) }
            })
        );
        assert_eq!(
            parse(&["orchestrator", "logic", "active"]),
            Some(Command::Logic { command: LogicCommand::Active { channels: Vec::new() } })
        );
        assert!(Config::try_parse_from(["orchestrator", "logic", "activate"]).is_err(), "activate needs a file");
    }
}
