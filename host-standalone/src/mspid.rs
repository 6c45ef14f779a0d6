//! `ORCHESTRATOR_VERIFY_CLIENT_MSP_ID`: the `mspid` header must match the client certificate.
//!
//! As the reference: (a) the header value is one of the leaf certificate's Subject O values;
//! (b) the organization has CA certificates under `<client CA dir>/<mspid>/`; (c) some
//! certificate of the presented chain has an Authority Key Identifier equal to the Subject Key
//! Identifier of one of those CA certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::x509;

/// A refused caller. Messages are the reference's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The connection carries no client certificate (plaintext, or TLS without one).
    #[error("OE0007: invalid MSPID: failed to extract MSP ID from TLS context")]
    NoTlsInfo,
    /// The header is not among the leaf certificate's Subject O values.
    #[error("OE0102: invalid MSPID: cannot find MSPID \"{0}\" in client TLS certificate Subject Organizations")]
    NotInCertificate(String),
    /// No CA is configured for the organization.
    #[error("OE0102: invalid MSPID: cannot find MSPID \"{0}\" in allowed organizations")]
    UnknownOrganization(String),
    /// No certificate of the chain was issued by one of the organization's CAs.
    #[error("OE0102: invalid MSPID: invalid issuer for MSPID \"{0}\"")]
    InvalidIssuer(String),
}

/// Failure to load the client CA directory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A directory or file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no readable PEM certificate.
    #[error("invalid certificate file {path}: {reason}")]
    Certificate {
        /// What.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The client CA directory: organization → its CA certificates.
#[derive(Debug, Clone, Default)]
pub struct ClientCas {
    /// PEM text of every CA file, concatenated (the mTLS trust pool).
    pub pem: Vec<u8>,
    /// Organization → Subject Key Identifiers of its CA certificates.
    key_ids: BTreeMap<String, Vec<Vec<u8>>>,
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Read { path: path.to_owned(), source }
}

impl ClientCas {
    /// Loads `<dir>/<org>/<files>`: every file of every immediate subdirectory (symlinks
    /// followed); files at the top level are ignored.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let mut cas = Self::default();
        let mut orgs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_error(dir))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect();
        orgs.sort();
        for org_dir in orgs {
            let Some(org) = org_dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if org.starts_with("..") {
                // Kubernetes projected-volume bookkeeping (`..data`, `..2024_...`).
                continue;
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(&org_dir)
                .map_err(read_error(&org_dir))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                .collect();
            files.sort();
            for file in files {
                let pem = std::fs::read(&file).map_err(read_error(&file))?;
                let mut found = false;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert =
                        cert.map_err(|err| LoadError::Certificate { path: file.clone(), reason: err.to_string() })?;
                    let info = x509::parse_certificate(&cert)
                        .map_err(|err| LoadError::Certificate { path: file.clone(), reason: err.to_string() })?;
                    found = true;
                    let ids = cas.key_ids.entry(org.clone()).or_default();
                    if let Some(ski) = info.subject_key_id {
                        ids.push(ski);
                    }
                }
                if !found {
                    return Err(LoadError::Certificate { path: file.clone(), reason: "no PEM certificate".to_owned() });
                }
                cas.pem.extend_from_slice(&pem);
                cas.pem.push(b'\n');
            }
        }
        Ok(cas)
    }
}

/// Checks `mspid` headers against client certificates.
#[derive(Debug, Clone, Default)]
pub struct MspVerifier {
    cas: ClientCas,
}

impl MspVerifier {
    /// A verifier trusting the organizations' CAs of `cas`.
    pub fn new(cas: ClientCas) -> Self {
        Self { cas }
    }

    /// Verifies `msp_id` against the presented chain (leaf first), if any.
    pub fn verify(&self, msp_id: &str, peer_certs: Option<&[CertificateDer<'static>]>) -> Result<(), VerifyError> {
        let chain = match peer_certs {
            Some(chain) if !chain.is_empty() => chain,
            _ => return Err(VerifyError::NoTlsInfo),
        };
        let infos: Vec<x509::CertInfo> = chain
            .iter()
            .map(|cert| x509::parse_certificate(cert))
            .collect::<Result<_, _>>()
            .map_err(|_| VerifyError::NoTlsInfo)?;
        let leaf_has_org = infos.first().is_some_and(|leaf| leaf.organizations.iter().any(|o| o == msp_id));
        if !leaf_has_org {
            return Err(VerifyError::NotInCertificate(msp_id.to_owned()));
        }
        let Some(ca_ids) = self.cas.key_ids.get(msp_id) else {
            return Err(VerifyError::UnknownOrganization(msp_id.to_owned()));
        };
        let issued = infos.iter().any(|info| info.authority_key_id.as_ref().is_some_and(|aki| ca_ids.contains(aki)));
        if issued { Ok(()) } else { Err(VerifyError::InvalidIssuer(msp_id.to_owned())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_internal() {
        let verifier = MspVerifier::default();
        assert_eq!(verifier.verify("MyOrg1MSP", None), Err(VerifyError::NoTlsInfo));
        assert_eq!(verifier.verify("MyOrg1MSP", Some(&[])), Err(VerifyError::NoTlsInfo));
        assert_eq!(
            VerifyError::NotInCertificate("X".to_owned()).to_string(),
            "OE0102: invalid MSPID: cannot find MSPID \"X\" in client TLS certificate Subject Organizations"
        );
    }
}
