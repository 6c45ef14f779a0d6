//! Channel configuration (docs/api-contract.md §6.3): which organizations may call on which
//! channel.
//!
//! The YAML maps each channel to its allowed MSP ids; it is inverted at load time into
//! organization → channels, and every call's (mspid, channel) pair is checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in configuration, identical to the bundled `config/channels.yaml`.
pub const DEFAULT_CHANNEL_CONFIG: &str = "\
channels:
  mychannel: [MyOrg1MSP, MyOrg2MSP]
  yourchannel: [MyOrg1MSP, MyOrg2MSP]
";

/// Where the configuration is looked for when none is given.
pub const BUNDLED_CHANNEL_CONFIG: &str = "config/channels.yaml";

/// Failure to load the channel configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read channel config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid channel configuration.
    #[error("invalid channel config {origin}: {source}")]
    Parse {
        /// The file, or "built-in".
        origin: String,
        /// Why.
        source: serde_yaml::Error,
    },
}

/// A refused (mspid, channel) pair. The messages are the reference's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The organization is on no channel.
    #[error("organization \"{0}\" is unknown")]
    UnknownOrganization(String),
    /// The organization is not allowed on that channel.
    #[error("organization \"{org}\" has not access to channel \"{channel}\"")]
    NoAccess {
        /// The caller's MSP id.
        org: String,
        /// The requested channel.
        channel: String,
    },
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    channels: BTreeMap<String, Option<Vec<String>>>,
}

/// The loaded configuration: organization → channels it may use.
#[derive(Debug, Clone, Default)]
pub struct ChannelConfig {
    org_channels: BTreeMap<String, BTreeSet<String>>,
}

impl ChannelConfig {
    /// Parses the YAML text. Unknown top-level keys are ignored, as the reference does.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, LoadError> {
        let file: File =
            serde_yaml::from_str(text).map_err(|source| LoadError::Parse { origin: origin.to_owned(), source })?;
        let mut org_channels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (channel, orgs) in file.channels {
            for org in orgs.unwrap_or_default() {
                org_channels.entry(org).or_default().insert(channel.clone());
            }
        }
        Ok(Self { org_channels })
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The built-in default.
    pub fn builtin() -> Self {
        // The constant is valid YAML (a unit test proves it); fall back to empty rather than panic.
        Self::from_yaml(DEFAULT_CHANNEL_CONFIG, "built-in").unwrap_or_default()
    }

    /// Resolves the configuration to use: the given file; else `./config/channels.yaml` if it
    /// exists; else the built-in default. Returns where it came from, for the startup log.
    pub fn resolve(path: Option<&Path>) -> Result<(Self, String), LoadError> {
        if let Some(path) = path {
            return Ok((Self::from_file(path)?, path.display().to_string()));
        }
        let bundled = Path::new(BUNDLED_CHANNEL_CONFIG);
        if bundled.is_file() {
            return Ok((Self::from_file(bundled)?, BUNDLED_CHANNEL_CONFIG.to_owned()));
        }
        Ok((Self::builtin(), "built-in".to_owned()))
    }

    /// Checks that `org` may call on `channel`.
    pub fn check(&self, org: &str, channel: &str) -> Result<(), AccessError> {
        match self.org_channels.get(org) {
            None => Err(AccessError::UnknownOrganization(org.to_owned())),
            Some(channels) if channels.contains(channel) => Ok(()),
            Some(_) => Err(AccessError::NoAccess { org: org.to_owned(), channel: channel.to_owned() }),
        }
    }

    /// Each organization with the channels it may use.
    pub fn organizations(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.org_channels.iter().map(|(org, channels)| (org.as_str(), channels))
    }

    /// Every channel of the configuration.
    pub fn channels(&self) -> BTreeSet<&str> {
        self.org_channels.values().flat_map(|channels| channels.iter().map(String::as_str)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matches_bundled_file() {
        let builtin = ChannelConfig::from_yaml(DEFAULT_CHANNEL_CONFIG, "built-in");
        assert!(builtin.is_ok());
        let bundled = include_str!("../../config/channels.yaml");
        let bundled = ChannelConfig::from_yaml(bundled, "bundled");
        match (builtin, bundled) {
            (Ok(a), Ok(b)) => assert_eq!(a.org_channels, b.org_channels),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checks() {
        let config = ChannelConfig::from_yaml(
            "channels:\n  mychannel: [MyOrg1MSP, MyOrg2MSP]\n  yourchannel: [MyOrg1MSP]\nextra: 1\n",
            "test",
        );
        let Ok(config) = config else { panic!("parse failed") };
        assert_eq!(config.check("MyOrg1MSP", "yourchannel"), Ok(()));
        assert_eq!(config.check("MyOrg2MSP", "mychannel"), Ok(()));
        assert_eq!(
            config.check("MyOrg2MSP", "yourchannel").map_err(|e| e.to_string()),
            Err("organization \"MyOrg2MSP\" has not access to channel \"yourchannel\"".to_owned())
        );
        assert_eq!(
            config.check("Nope", "mychannel").map_err(|e| e.to_string()),
            Err("organization \"Nope\" is unknown".to_owned())
        );
    }

    #[test]
    fn bad_yaml() {
        assert!(ChannelConfig::from_yaml("channels: [a, b", "t").is_err());
        assert!(ChannelConfig::from_yaml("channels: 3", "t").is_err());
    }
}
