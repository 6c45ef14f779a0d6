//! `orchestrator`: the standalone orchestrator server; `orchestrator logic inspect [FILE]`
//! describes a logic component instead, `orchestrator logic activate FILE` and `orchestrator
//! logic active` set and read the channels' logic version in distributed mode.

use std::process::ExitCode;

use clap::Parser;
use orchestrator_host_standalone::config::{Command, LogicCommand};
use orchestrator_host_standalone::{Config, activate, inspect, logging, server};

fn main() -> ExitCode {
    let config = Config::parse();
    match &config.command {
        Some(Command::Logic { command: LogicCommand::Inspect { file, format } }) => {
            // No logging: stdout is the report, and an error is said on stderr below.
            match inspect::inspect(file.as_deref()).and_then(|inspection| inspection.render(*format)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("orchestrator logic inspect: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Logic { command: LogicCommand::Activate { file, channels } }) => {
            let result = block_on(activate::activate(&config, file, channels));
            report("activate", result.map(|activation| activation.render()))
        }
        Some(Command::Logic { command: LogicCommand::Active { channels } }) => {
            let result = block_on(activate::active(&config, channels));
            report("active", result.map(|versions| activate::render_active(&versions)))
        }
        None => serve(&config),
    }
}

/// Runs a command's future (no logging: stdout is the report).
fn block_on<T>(future: impl Future<Output = Result<T, activate::ActivateError>>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    runtime.block_on(future).map_err(|err| err.to_string())
}

/// Prints the report, or the error on stderr.
fn report(command: &str, result: Result<String, String>) -> ExitCode {
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("orchestrator logic {command}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: &Config) -> ExitCode {
    logging::init(config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("orchestrator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "orchestrator failed");
            eprintln!("orchestrator: {err}");
            ExitCode::FAILURE
        }
    }
}
