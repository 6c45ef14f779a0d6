//! Structured logs on stderr: JSON lines by default, text on request.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// The filter of `LOG_LEVEL`: a level name in any case (`INFO`, `debug`) or a tracing
/// directive list; anything unparsable falls back to `info` (as the reference does).
pub fn filter(level: &str) -> EnvFilter {
    let trimmed = level.trim();
    let directive = if trimmed.chars().all(|c| c.is_ascii_alphabetic()) {
        match trimmed.to_ascii_lowercase().as_str() {
            // zerolog names the reference accepts
            "warning" => "warn".to_owned(),
            "fatal" | "panic" => "error".to_owned(),
            "disabled" | "off" => "off".to_owned(),
            other => other.to_owned(),
        }
    } else {
        trimmed.to_owned()
    };
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. Returns false if one was already installed.
pub fn init(config: &Config) -> bool {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(&config.log_level)).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    }
}
