//! The CCaaS environment of the `chaincode` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orchestrator_runtime::settings::{parse_go_bool, parse_go_duration};

/// Default of `CHAINCODE_SHUTDOWN_GRACE`: well under Kubernetes' 30 s before SIGKILL, and
/// under the peer's 30 s `chaincode.executetimeout`, so a finishing transaction still counts.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `CHAINCODE_ID`: the package id (`<label>:<sha256>`) sent in REGISTER.
    pub package_id: String,
    /// `CHAINCODE_SERVER_ADDRESS`: where to listen, e.g. `0.0.0.0:9999`.
    pub address: SocketAddr,
    /// TLS when `CHAINCODE_TLS_DISABLED=false`: `CHAINCODE_TLS_CERT` + `CHAINCODE_TLS_KEY`
    /// (PEM files), the variables of Fabric's external-chaincode samples.
    pub tls: Option<TlsFiles>,
    /// `ORCHESTRATOR_COMPONENT`: a component file to run instead of the embedded one.
    pub component: Option<PathBuf>,
    /// `ORCHESTRATOR_CACHE_DIR`: directory of precompiled components.
    pub cache_dir: Option<PathBuf>,
    /// `CHAINCODE_SHUTDOWN_GRACE` (Go duration, e.g. `10s`, `1m30s`, `0`): after SIGTERM or
    /// SIGINT, how long in-flight transactions may take to finish before the process exits
    /// anyway.
    pub shutdown_grace: Duration,
}

/// TLS files of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// `CHAINCODE_CLIENT_CA_CERT`: when set, peers must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// A bad or missing setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A variable does not parse.
    #[error("{name}: {message}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why.
        message: String,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (empty values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let package_id = get("CHAINCODE_ID").ok_or(ConfigError::Missing("CHAINCODE_ID"))?;
        let address = get("CHAINCODE_SERVER_ADDRESS")
            .ok_or(ConfigError::Missing("CHAINCODE_SERVER_ADDRESS"))?
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                name: "CHAINCODE_SERVER_ADDRESS",
                message: e.to_string(),
            })?;
        // As in Fabric's samples, TLS is off unless CHAINCODE_TLS_DISABLED says otherwise.
        let tls_disabled = match get("CHAINCODE_TLS_DISABLED") {
            None => true,
            Some(text) => parse_go_bool(&text)
                .map_err(|message| ConfigError::Invalid { name: "CHAINCODE_TLS_DISABLED", message })?,
        };
        let tls = if tls_disabled {
            None
        } else {
            Some(TlsFiles {
                cert: get("CHAINCODE_TLS_CERT").ok_or(ConfigError::Missing("CHAINCODE_TLS_CERT"))?.into(),
                key: get("CHAINCODE_TLS_KEY").ok_or(ConfigError::Missing("CHAINCODE_TLS_KEY"))?.into(),
                client_ca: get("CHAINCODE_CLIENT_CA_CERT").map(PathBuf::from),
            })
        };
        Ok(Self {
            package_id,
            address,
            tls,
            component: get("ORCHESTRATOR_COMPONENT").map(PathBuf::from),
            cache_dir: get("ORCHESTRATOR_CACHE_DIR").map(PathBuf::from),
            shutdown_grace: match get("CHAINCODE_SHUTDOWN_GRACE") {
                None => DEFAULT_SHUTDOWN_GRACE,
                Some(text) => parse_go_duration(&text)
                    .map_err(|message| ConfigError::Invalid { name: "CHAINCODE_SHUTDOWN_GRACE", message })?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn reads_the_ccaas_environment() {
        let config = Config::from_lookup(lookup(&[
            ("CHAINCODE_ID", "orc_1.0:abcd"),
            ("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:9999"),
            ("CHAINCODE_TLS_DISABLED", "false"),
            ("CHAINCODE_TLS_CERT", "/c.pem"),
            ("CHAINCODE_TLS_KEY", "/k.pem"),
        ]));
        let config = config.expect("valid");
        assert_eq!(config.package_id, "orc_1.0:abcd");
        assert_eq!(config.address.port(), 9999);
        assert_eq!(config.tls.map(|t| t.client_ca), Some(None));
        assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(
            Config::from_lookup(lookup(&[("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1")])),
            Err(ConfigError::Missing("CHAINCODE_ID"))
        );
        // TLS files alone do not turn TLS on: CHAINCODE_TLS_DISABLED defaults to true.
        let plain = Config::from_lookup(lookup(&[
            ("CHAINCODE_ID", "x"),
            ("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1"),
            ("CHAINCODE_TLS_CERT", "/c.pem"),
        ]));
        assert_eq!(plain.map(|c| c.tls), Ok(None));
        assert_eq!(
            Config::from_lookup(lookup(&[
                ("CHAINCODE_ID", "x"),
                ("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1"),
                ("CHAINCODE_TLS_DISABLED", "false"),
                ("CHAINCODE_TLS_CERT", "/c.pem"),
            ])),
            Err(ConfigError::Missing("CHAINCODE_TLS_KEY"))
        );
        assert!(matches!(
            Config::from_lookup(lookup(&[
                ("CHAINCODE_ID", "x"),
                ("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1"),
                ("CHAINCODE_TLS_DISABLED", "maybe"),
            ])),
            Err(ConfigError::Invalid { name: "CHAINCODE_TLS_DISABLED", .. })
        ));
    }

    #[test]
    fn shutdown_grace_is_a_go_duration() {
        let grace = |value| {
            Config::from_lookup(lookup(&[
                ("CHAINCODE_ID", "x"),
                ("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1"),
                ("CHAINCODE_SHUTDOWN_GRACE", value),
            ]))
            .map(|config| config.shutdown_grace)
        };
        assert_eq!(grace("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(grace("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(grace("0"), Ok(Duration::ZERO));
        assert_eq!(grace(""), Ok(DEFAULT_SHUTDOWN_GRACE));
        assert!(matches!(grace("10"), Err(ConfigError::Invalid { name: "CHAINCODE_SHUTDOWN_GRACE", .. })));
    }
}
