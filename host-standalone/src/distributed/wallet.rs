//! The identities that sign calls in distributed mode: one per MSP id, from the wallet
//! directory (`<dir>/<msp id>/cert.pem`, `key.pem`), else the one certificate and key given as
//! the reference's `FABRIC_CERT`/`FABRIC_KEY`, under the call's MSP id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use orchestrator_host_fabric::gateway::{GatewayError, SigningIdentity};

/// Why no identity can sign for an MSP id.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Neither the wallet nor the single certificate covers it.
    #[error("no signing identity for MSP id {0:?}: add <wallet>/{0}/cert.pem and key.pem (ORCHESTRATOR_FABRIC_WALLET)")]
    Missing(String),
    /// The files exist but do not load.
    #[error("signing identity of {msp_id:?}: {message}")]
    Unusable {
        /// The MSP id.
        msp_id: String,
        /// Why.
        message: String,
    },
}

/// Signing identities, loaded once per MSP id.
#[derive(Debug, Default)]
pub struct Wallet {
    dir: Option<PathBuf>,
    /// The reference's single pair: certificate and key PEM.
    single: Option<(Vec<u8>, Vec<u8>)>,
    loaded: Mutex<HashMap<String, Arc<SigningIdentity>>>,
}

impl Wallet {
    /// A wallet over `dir` and the single pair, either optional.
    pub fn new(dir: Option<PathBuf>, single: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { dir, single, loaded: Mutex::default() }
    }

    /// MSP ids of the wallet directory (sorted), for choosing the listener's identity.
    pub fn msp_ids(&self) -> Vec<String> {
        let Some(dir) = &self.dir else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().join("cert.pem").is_file())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// The identity signing for `msp_id`.
    pub fn identity(&self, msp_id: &str) -> Result<Arc<SigningIdentity>, WalletError> {
        if let Some(identity) = self.loaded.lock().unwrap_or_else(PoisonError::into_inner).get(msp_id) {
            return Ok(Arc::clone(identity));
        }
        let unusable =
            |err: GatewayError| WalletError::Unusable { msp_id: msp_id.to_owned(), message: err.to_string() };
        // An MSP id is a directory name only if it is one path component.
        let in_dir = self.dir.as_ref().filter(|_| is_plain_name(msp_id)).map(|dir| dir.join(msp_id));
        let identity = match (in_dir, &self.single) {
            (Some(dir), _) if dir.join("cert.pem").is_file() => {
                SigningIdentity::from_wallet(self.dir.as_deref().unwrap_or(&dir), msp_id).map_err(unusable)?
            }
            (_, Some((cert, key))) => SigningIdentity::from_pem(msp_id, cert, key).map_err(unusable)?,
            _ => return Err(WalletError::Missing(msp_id.to_owned())),
        };
        let identity = Arc::new(identity);
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner).insert(msp_id.to_owned(), Arc::clone(&identity));
        Ok(identity)
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}
