//! The server's TLS settings: its identity, and under mutual TLS the client CAs it trusts.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::config::Config;
use crate::mspid::ClientCas;

/// HTTP/2's ALPN name: gRPC clients ask for it.
const ALPN_H2: &[u8] = b"h2";

/// Why the TLS settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn read_file(path: Option<&PathBuf>, what: &str) -> Result<Vec<u8>, TlsError> {
    let path = path.ok_or_else(|| TlsError(format!("{what} is required")))?;
    std::fs::read(path).map_err(|err| TlsError(format!("{}: {err}", path.display())))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError(format!("{what}: {err}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no PEM certificate")));
    }
    Ok(certs)
}

/// The acceptor of `config`'s TLS settings; `cas` are the organizations' client CAs, trusted
/// beside the server's own CA under mutual TLS.
pub fn acceptor(config: &Config, cas: Option<&ClientCas>) -> Result<TlsAcceptor, TlsError> {
    let cert = read_file(config.tls_cert_path.as_ref(), "ORCHESTRATOR_TLS_CERT_PATH")?;
    let key = read_file(config.tls_key_path.as_ref(), "ORCHESTRATOR_TLS_KEY_PATH")?;
    let chain = certificates(&cert, "ORCHESTRATOR_TLS_CERT_PATH")?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|err| TlsError(format!("ORCHESTRATOR_TLS_KEY_PATH: no usable private key: {err}")))?;

    let builder = ServerConfig::builder();
    let builder = if config.mtls_enabled {
        let mut roots = RootCertStore::empty();
        let server_ca = read_file(config.tls_server_ca_cert.as_ref(), "ORCHESTRATOR_TLS_SERVER_CA_CERT")?;
        roots.add_parsable_certificates(certificates(&server_ca, "ORCHESTRATOR_TLS_SERVER_CA_CERT")?);
        if let Some(cas) = cas {
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&cas.pem).filter_map(Result::ok));
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|err| TlsError(format!("client CAs: {err}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut server =
        builder.with_single_cert(chain, key).map_err(|err| TlsError(format!("server certificate and key: {err}")))?;
    server.alpn_protocols.push(ALPN_H2.to_vec());
    Ok(TlsAcceptor::from(Arc::new(server)))
}
