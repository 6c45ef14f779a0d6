//! The CCaaS environment of the `chaincode` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `CHAINCODE_ID`: the package id (`<label>:<sha256>`) sent in REGISTER.
    pub package_id: String,
    /// `CHAINCODE_SERVER_ADDRESS`: where to listen, e.g. `0.0.0.0:9999`.
    pub address: SocketAddr,
    /// `CHAINCODE_TLS_CERT_FILE` + `CHAINCODE_TLS_KEY_FILE` (PEM): TLS when both are set.
    pub tls: Option<TlsFiles>,
    /// `ORCHESTRATOR_COMPONENT`: a component file to run instead of the embedded one.
    pub component: Option<PathBuf>,
    /// `ORCHESTRATOR_CACHE_DIR`: directory of precompiled components.
    pub cache_dir: Option<PathBuf>,
}

/// TLS files of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// `CHAINCODE_TLS_CLIENT_CA_FILE`: when set, peers must present a certificate it signed.
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
        let tls = match (get("CHAINCODE_TLS_CERT_FILE"), get("CHAINCODE_TLS_KEY_FILE")) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca: get("CHAINCODE_TLS_CLIENT_CA_FILE").map(PathBuf::from),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing("CHAINCODE_TLS_KEY_FILE")),
            (None, Some(_)) => return Err(ConfigError::Missing("CHAINCODE_TLS_CERT_FILE")),
        };
        Ok(Self {
            package_id,
            address,
            tls,
            component: get("ORCHESTRATOR_COMPONENT").map(PathBuf::from),
            cache_dir: get("ORCHESTRATOR_CACHE_DIR").map(PathBuf::from),
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
            ("CHAINCODE_TLS_CERT_FILE", "/c.pem"),
            ("CHAINCODE_TLS_KEY_FILE", "/k.pem"),
        ]));
        let config = config.expect("valid");
        assert_eq!(config.package_id, "orc_1.0:abcd");
        assert_eq!(config.address.port(), 9999);
        assert_eq!(config.tls.map(|t| t.client_ca), Some(None));
        assert_eq!(
            Config::from_lookup(lookup(&[("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1")])),
            Err(ConfigError::Missing("CHAINCODE_ID"))
        );
        assert_eq!(
            Config::from_lookup(lookup(&[
                ("CHAINCODE_ID", "x"),
                ("CHAINCODE_SERVER_ADDRESS", "0.0.0.0:1"),
                ("CHAINCODE_TLS_CERT_FILE", "/c.pem"),
            ])),
            Err(ConfigError::Missing("CHAINCODE_TLS_KEY_FILE"))
        );
    }
}
