//! `orchestrator`: the standalone orchestrator server; `orchestrator logic inspect [FILE]`
//! describes a logic component instead.

use std::process::ExitCode;

use clap::Parser;
use orchestrator_host_standalone::config::{Command, LogicCommand};
use orchestrator_host_standalone::{Config, inspect, logging, server};

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
        None => serve(&config),
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
