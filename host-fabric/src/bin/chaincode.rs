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
    tracing::info!(sha256 = %info.sha256, version = %info.version, package_id = %config.package_id, "logic loaded");

    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        let mut tls_config = ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder.tls_config(tls_config)?;
    }
    let service = ChaincodeService::new(runtime, config.package_id.clone()).into_server();
    tracing::info!(address = %config.address, tls = config.tls.is_some(), "serving protos.Chaincode");
    builder.add_service(service).serve_with_shutdown(config.address, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what container runtimes send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
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
