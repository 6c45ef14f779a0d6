//! Assembly: configuration → channel config, logic runtime, database, TLS → a bound gRPC
//! server with health and reflection, shut down gracefully on SIGTERM or SIGINT; SIGHUP swaps
//! the logic component in again from its file ([`crate::reload`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use orchestrator_runtime::{Runtime, RuntimeConfig, RuntimeError};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::channels::{self, ChannelConfig};
use crate::config::Config;
use crate::config::Mode;
use crate::distributed::FabricBackend;
use crate::distributed::listener::Listener;
use crate::distributed::wallet::Wallet;
use crate::events::hub::HubTasks;
use crate::events::relay::{Relay, RelayConfig, RelayStats};
use crate::events::topology::Topology;
use crate::events::{self, EventHub};
use crate::grpc::{self, CallBackend, Handler};
use crate::metrics::Metrics;
use crate::mspid::{self, ClientCas, MspVerifier};
use crate::postgres::{self, Executor};
use crate::reload::Reloader;
use crate::transport::{self, ConnectionPolicy, RequestBudget};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Channel configuration.
    #[error(transparent)]
    Channels(#[from] channels::LoadError),
    /// The logic component.
    #[error("cannot load the logic component: {0:?}")]
    Runtime(RuntimeError),
    /// The database.
    #[error(transparent)]
    Database(#[from] postgres::SetupError),
    /// The client CA directory.
    #[error(transparent)]
    ClientCas(#[from] mspid::LoadError),
    /// TLS settings.
    #[error("TLS configuration: {0}")]
    Tls(#[from] transport::tls::TlsError),
    /// Settings that contradict each other.
    #[error("configuration: {0}")]
    Settings(String),
    /// The descriptor set of the API.
    #[error(transparent)]
    Descriptor(#[from] grpc::DescriptorError),
    /// The event relay.
    #[error("event relay: {0}")]
    Relay(#[from] events::json::JsonError),
    /// Reflection service.
    #[error("reflection service: {0}")]
    Reflection(String),
    /// Distributed mode: the Fabric settings or the peer.
    #[error("distributed mode: {0}")]
    Fabric(String),
    /// The listen socket.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The transport failed while serving.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Loads the logic component: the file of `ORCHESTRATOR_LOGIC`, else the embedded one.
pub fn load_runtime(config: &Config) -> Result<Runtime, ServerError> {
    let defaults = RuntimeConfig::default();
    let runtime_config = RuntimeConfig {
        fuel_per_call: config.fuel_per_call.unwrap_or(defaults.fuel_per_call),
        cache_dir: if config.component_cache.as_os_str().is_empty() {
            None
        } else {
            Some(config.component_cache.clone())
        },
        ..defaults
    };
    let load = |runtime_config: RuntimeConfig| match &config.logic {
        Some(path) => Runtime::from_path(runtime_config, path),
        None => Runtime::new(runtime_config, orchestrator_logic_component::COMPONENT),
    };
    match load(runtime_config.clone()) {
        // An unusable cache directory (read-only working directory, ...) only costs start-up time.
        Err(RuntimeError::Cache(err)) => {
            tracing::warn!(
                dir = %config.component_cache.display(),
                error = %err,
                "component cache unusable: running without it"
            );
            load(RuntimeConfig { cache_dir: None, ..runtime_config }).map_err(ServerError::Runtime)
        }
        other => other.map_err(ServerError::Runtime),
    }
}

/// A server bound to its address, ready to serve.
pub struct Server {
    listener: TcpListener,
    handler: Arc<Handler>,
    pool: PgPool,
    tls: Option<TlsAcceptor>,
    policy: Arc<ConnectionPolicy>,
    budget: RequestBudget,
    health: HealthReporter,
    hub: Arc<EventHub>,
    hub_tasks: HubTasks,
    relay: Option<Relay>,
    listeners: Vec<Listener>,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    reloader: Reloader,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads everything the configuration names, prepares the database and binds the socket.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        if config.grpc_max_request_bytes_in_flight < config.grpc_max_message_bytes {
            return Err(ServerError::Settings(format!(
                "ORCHESTRATOR_GRPC_MAX_REQUEST_BYTES_IN_FLIGHT ({}) is less than ORCHESTRATOR_GRPC_MAX_MESSAGE_BYTES ({}): \
                 a message of the maximum size could never be received",
                config.grpc_max_request_bytes_in_flight, config.grpc_max_message_bytes
            )));
        }
        let (channels, origin) = ChannelConfig::resolve(config.channel_config.as_deref())?;
        tracing::info!(config = %origin, channels = ?channels.channels(), "channel configuration loaded");

        let runtime = load_runtime(config)?;
        let info = runtime.info();
        tracing::info!(
            sha256 = %info.sha256,
            version = %info.version,
            world = %info.world,
            methods = info.methods.len(),
            source = %config.logic.as_ref().map_or_else(|| "embedded".to_owned(), |path| path.display().to_string()),
            "logic component loaded"
        );

        let cas = match &config.tls_client_ca_cert_dir {
            Some(dir) if config.mtls_enabled || config.verify_client_msp_id => Some(ClientCas::load(dir)?),
            _ => None,
        };
        let tls = if config.tls_enabled { Some(transport::tls::acceptor(config, cas.as_ref())?) } else { None };
        let verifier = config.verify_client_msp_id.then(|| MspVerifier::new(cas.clone().unwrap_or_default()));

        let pool = postgres::connect(&config.database_url, config.database_max_connections).await?;
        tracing::info!("database ready");

        let hub = EventHub::new(pool.clone());
        let hub_tasks = hub.start();
        let (health, _) = tonic_health::server::health_reporter();
        let relay = if config.amqp_enabled {
            let relay_config = RelayConfig {
                url: config.amqp_url.clone(),
                reconnect_delay: config.amqp_reconnect_delay,
                confirm_timeout: config.amqp_confirm_timeout,
                heartbeat: config.amqp_heartbeat,
                ..RelayConfig::default()
            };
            let topology = Topology::new(
                &config.amqp_exchange,
                &channels,
                config.amqp_declare_queues.then_some(config.amqp_queue_prefix.as_str()),
            );
            Some(Relay::new(Arc::clone(&hub), relay_config, topology, Some(health.clone()))?)
        } else {
            tracing::info!("event relay disabled (ORCHESTRATOR_AMQP_ENABLED=false)");
            None
        };

        let budget = RequestBudget::new(
            config.grpc_max_request_bytes_in_flight,
            config.grpc_max_message_bytes,
            config.grpc_request_budget_wait,
        );
        let policy = Arc::new(ConnectionPolicy {
            handshake_timeout: config.grpc_handshake_timeout,
            idle_timeout: (!config.grpc_max_connection_idle.is_zero()).then_some(config.grpc_max_connection_idle),
            ping_min_time: config.grpc_keepalive_policy_min_time,
            ping_without_stream: config.grpc_keepalive_policy_permit_without_stream,
        });
        let metrics = Arc::new(Metrics::new(
            &info,
            relay.as_ref().map(|relay| (relay.stats(), Arc::clone(&hub))),
            Some(budget.clone()),
        ));
        let declared = grpc::declared_methods(orchestrator_proto::FILE_DESCRIPTOR_SET)?;
        let (backend, listeners) = match config.mode {
            Mode::Standalone => (
                CallBackend::Postgres(Executor::new(
                    pool.clone(),
                    runtime.clone(),
                    config.tx_retry_budget,
                    Arc::clone(&hub),
                )),
                Vec::new(),
            ),
            Mode::Distributed => {
                let (fabric, listeners) = distributed_backend(config, &channels, &pool).await?;
                (CallBackend::Fabric { fabric, pool: pool.clone() }, listeners)
            }
        };
        let handler = Arc::new(Handler::new(
            runtime.clone(),
            channels,
            verifier,
            backend,
            declared,
            config.grpc_max_message_bytes,
            Arc::clone(&hub),
            config.replay_events_batch_size,
            Arc::clone(&metrics),
        ));
        let metrics_listener = if config.metrics_enabled {
            let addr = config.metrics_addr;
            Some(TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })?)
        } else {
            None
        };

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| ServerError::Listen { addr: config.grpc_addr, source })?;
        let reloader = Reloader::new(runtime.clone(), config.logic.clone(), config.mode, Arc::clone(&metrics));
        Ok(Self {
            listener,
            handler,
            pool,
            tls,
            policy,
            budget,
            health,
            hub,
            hub_tasks,
            relay,
            listeners,
            metrics,
            metrics_listener,
            reloader,
        })
    }

    /// What SIGHUP does: reload the logic file into the runtime, to call without a signal.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The bound address of the metrics endpoint, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The relay's counters, when the relay is enabled.
    pub fn relay_stats(&self) -> Option<Arc<RelayStats>> {
        self.relay.as_ref().map(Relay::stats)
    }

    /// Serves until `shutdown` completes, then drains the calls in flight.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let Self {
            listener,
            handler,
            pool,
            tls,
            policy,
            budget,
            health,
            hub,
            hub_tasks,
            relay,
            listeners,
            metrics,
            metrics_listener,
            reloader,
        } = self;
        let reload_task = reload_on_sighup(reloader);
        let relay_task = relay.map(|relay| tokio::spawn(relay.run()));
        let listener_tasks: Vec<_> = listeners.into_iter().map(|listener| tokio::spawn(listener.run())).collect();
        let metrics_task = metrics_listener.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics on /metrics");
            tokio::spawn(crate::metrics::serve(listener, metrics))
        });
        let addr = listener.local_addr().map_or_else(|err| err.to_string(), |addr| addr.to_string());

        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(orchestrator_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|err| ServerError::Reflection(err.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(orchestrator_proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|err| ServerError::Reflection(err.to_string()))?;

        let router = tonic::transport::Server::builder()
            .initial_stream_window_size(transport::STREAM_WINDOW)
            .initial_connection_window_size(transport::CONNECTION_WINDOW)
            .max_concurrent_streams(transport::MAX_CONCURRENT_STREAMS)
            .layer(budget)
            .add_routes(grpc::routes(&handler))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let reporter = health.clone();
        let signal_hub = Arc::clone(&hub);
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining calls in flight, ending event streams");
            reporter.set_service_status("", ServingStatus::NotServing).await;
            signal_hub.close();
        };
        tracing::info!(
            addr = %addr,
            tls = tls.is_some(),
            logic_sha256 = %handler.runtime().info().sha256,
            "serving gRPC"
        );
        let served = match tls {
            Some(acceptor) => {
                let incoming = transport::incoming(listener, policy, move |tcp| {
                    let acceptor = acceptor.clone();
                    async move { acceptor.accept(tcp).await }
                });
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            None => {
                let incoming = transport::incoming(listener, policy, |tcp| std::future::ready(Ok(tcp)));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        // Unconfirmed events are republished by the next relay (at least once).
        if let Some(task) = relay_task {
            task.abort();
            let _ = task.await;
        }
        // A block is stored in one transaction with its checkpoint: stopping anywhere is safe.
        for task in listener_tasks {
            task.abort();
        }
        if let Some(task) = metrics_task {
            task.abort();
        }
        if let Some(task) = reload_task {
            task.abort();
        }
        drop(hub_tasks);
        pool.close().await;
        tracing::info!("stopped");
        served.map_err(ServerError::from)
    }
}

/// The Gateway client, the wallet and one ledger listener per channel of the configuration.
async fn distributed_backend(
    config: &Config,
    channels: &ChannelConfig,
    pool: &PgPool,
) -> Result<(FabricBackend, Vec<Listener>), ServerError> {
    use orchestrator_host_fabric::gateway::GatewayClient;
    let fail = |what: &str| ServerError::Fabric(what.to_owned());
    let address =
        config.fabric_peer_address.as_deref().ok_or_else(|| fail("ORCHESTRATOR_FABRIC_PEER_ADDRESS is required"))?;
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|err| ServerError::Fabric(format!("{what} {}: {err}", path.display())))
    };
    let tls_ca = match &config.fabric_tls_ca_cert {
        Some(path) => Some(read(path, "ORCHESTRATOR_FABRIC_TLS_CA_CERT")?),
        None => None,
    };
    let single = match (&config.fabric_cert, &config.fabric_key) {
        (Some(cert), Some(key)) => {
            Some((read(cert, "ORCHESTRATOR_FABRIC_CERT")?, read(key, "ORCHESTRATOR_FABRIC_KEY")?))
        }
        (None, None) => None,
        _ => return Err(fail("ORCHESTRATOR_FABRIC_CERT and ORCHESTRATOR_FABRIC_KEY go together")),
    };
    if config.fabric_wallet.is_none() && single.is_none() {
        return Err(fail(
            "a signing identity is required: ORCHESTRATOR_FABRIC_WALLET, or ORCHESTRATOR_FABRIC_CERT and _KEY",
        ));
    }
    let wallet = Arc::new(Wallet::new(config.fabric_wallet.clone(), single));
    let reader = match &config.msp_id {
        Some(msp_id) => msp_id.clone(),
        None => match wallet.msp_ids().as_slice() {
            [only] => only.clone(),
            [] => return Err(fail("ORCHESTRATOR_MSPID is required: which MSP id reads the ledger's events")),
            several => {
                return Err(ServerError::Fabric(format!(
                    "ORCHESTRATOR_MSPID is required: the wallet holds {several:?}; which one reads the ledger's events?"
                )));
            }
        },
    };
    let identity = wallet.identity(&reader).map_err(|err| ServerError::Fabric(err.to_string()))?;
    let gateway = GatewayClient::connect(address, tls_ca.as_deref(), config.fabric_tls_server_name.as_deref())
        .await
        .map_err(|err| ServerError::Fabric(format!("peer {address}: {err}")))?;
    tracing::info!(peer = address, reader = %reader, chaincode = %config.fabric_chaincode, "distributed mode: calls go through the peer's Gateway");
    let listeners = channels
        .channels()
        .into_iter()
        .map(|channel| Listener {
            gateway: gateway.clone(),
            identity: Arc::clone(&identity),
            channel: channel.to_owned(),
            chaincode: config.fabric_chaincode.clone(),
            pool: pool.clone(),
        })
        .collect();
    let fabric = FabricBackend::new(
        gateway,
        wallet,
        config.fabric_chaincode.clone(),
        config.fabric_gateway_timeout,
        config.tx_retry_budget,
    );
    Ok((fabric, listeners))
}

/// Listens for SIGHUP and reloads the logic on each, in a task of its own. The listener is in
/// place when this returns, before the server serves: from then on SIGHUP no longer terminates
/// the process.
fn reload_on_sighup(reloader: Reloader) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => Some(tokio::spawn(crate::reload::on_sighup(reloader, hangup))),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGHUP: the logic component cannot be reloaded");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        drop(reloader);
        None
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Runs the server of `config` until SIGTERM or SIGINT.
pub async fn run(config: &Config) -> Result<(), ServerError> {
    let server = Server::bind(config).await?;
    server.serve(shutdown_signal()).await
}
