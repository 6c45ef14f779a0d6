//! `orchestrator`: the standalone orchestrator server.

use std::process::ExitCode;

use clap::Parser;
use orchestrator_host_standalone::{Config, logging, server};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    logging::init(&config);
    match server::run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "orchestrator failed");
            eprintln!("orchestrator: {err}");
            ExitCode::FAILURE
        }
    }
}
