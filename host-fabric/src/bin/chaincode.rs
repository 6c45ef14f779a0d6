//! The orchestrator chaincode server (Fabric chaincode-as-a-service): the peer dials it.

use std::process::ExitCode;

use orchestrator_host_fabric::ChaincodeService;
use orchestrator_host_fabric::config::Config;
use orchestrator_runtime::{Runtime, RuntimeConfig};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] orchestrator_host_fabric::config::ConfigError),
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Runtime(#[from] orchestrator_runtime::RuntimeError),
    #[error("loading the component: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("listening for SIGTERM/SIGINT: {0}")]
    #[cfg_attr(not(unix), allow(dead_code))]
    Signal(std::io::Error),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Read { path: path.display().to_string(), source })
}

async fn run() -> Result<(), StartError> {
    let config = Config::from_env()?;
    let runtime_config = RuntimeConfig { cache_dir: config.cache_dir.clone(), ..RuntimeConfig::default() };
    let component = config.component.clone();
    // Compiling the component takes seconds: off the async threads.
    let runtime = tokio::task::spawn_blocking(move || match component {
        Some(path) => Runtime::from_path(runtime_config, &path),
        None => Runtime::new(runtime_config, orchestrator_logic_component::COMPONENT),
    })
    .await??;
    let info = runtime.info();
    tracing::info!(
        sha256 = %info.sha256,
        version = %info.version,
        world = %info.world,
        package_id = %config.package_id,
        "logic loaded"
    );

    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        let mut tls_config = ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder.tls_config(tls_config)?;
    }
    // Listening for the signals before serving: a signal from then on drains, never kills.
    let mut signals = Signals::install()?;
    let service = ChaincodeService::new(runtime, config.package_id.clone());
    let shutdown = service.shutdown();
    tracing::info!(address = %config.address, tls = config.tls.is_some(), "serving protos.Chaincode");
    // Once `begin` is called the server stops accepting connections, then returns when every
    // connection is closed, which the drain of the streams brings about.
    let server = builder.add_service(service.into_server()).serve_with_shutdown(config.address, shutdown.begun());
    let mut server = std::pin::pin!(server);
    let signal = tokio::select! {
        result = &mut server => return result.map_err(StartError::from),
        signal = signals.recv() => signal,
    };
    let (streams, in_flight) = (shutdown.open_streams(), shutdown.in_flight());
    // Before the log line: whoever reads it can rely on new transactions being refused.
    shutdown.begin();
    let grace = config.shutdown_grace;
    tracing::info!(
        signal,
        grace_ms = grace.as_millis(),
        streams,
        in_flight,
        "shutting down: closing the listener, finishing the transactions in flight, then closing the peer streams"
    );
    let stopped_early = tokio::select! {
        result = tokio::time::timeout(grace, &mut server) => match result {
            Ok(result) => {
                result?;
                tracing::info!(
                    finished = shutdown.finished_while_stopping(),
                    refused = shutdown.refused(),
                    "shut down: every peer stream closed"
                );
                return Ok(());
            }
            Err(_) => "grace period over",
        },
        // A second Ctrl-C means now.
        signal = signals.recv() => signal,
    };
    // Dropping the server and leaving main closes the remaining connections: the peer fails
    // those transactions with "chaincode stream terminated".
    tracing::warn!(
        abandoned = shutdown.in_flight(),
        streams = shutdown.open_streams(),
        finished = shutdown.finished_while_stopping(),
        refused = shutdown.refused(),
        grace_ms = grace.as_millis(),
        "shut down ({stopped_early}): transactions abandoned"
    );
    Ok(())
}

/// SIGTERM (what container runtimes send) and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers: from now on these signals no longer kill the process.
    fn install() -> Result<Self, StartError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).map_err(StartError::Signal)?,
                interrupt: signal(SignalKind::interrupt()).map_err(StartError::Signal)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "chaincode stopped");
            ExitCode::FAILURE
        }
    }
}
