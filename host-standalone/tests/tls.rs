//! TLS, mutual TLS and `ORCHESTRATOR_VERIFY_CLIENT_MSP_ID` (fixtures: tests/fixtures/tls/gen.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{Headers, TestServer};
use orchestrator_proto::QueryVersionParam;
use orchestrator_proto::info_service_client::InfoServiceClient;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls")).join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

async fn start_mtls(verify: bool) -> TestServer {
    TestServer::start_with(|config| {
        config.tls_enabled = true;
        config.tls_cert_path = Some(fixture("server.pem"));
        config.tls_key_path = Some(fixture("server-key.pem"));
        config.mtls_enabled = true;
        config.tls_server_ca_cert = Some(fixture("server-ca.pem"));
        config.tls_client_ca_cert_dir = Some(fixture("clientcas"));
        config.verify_client_msp_id = verify;
    })
    .await
}

/// A TLS channel presenting the client certificate `client` (`<client>.pem`, `<client>-key.pem`).
async fn tls_channel(server: &TestServer, client: &str) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("server-ca.pem")))
        .domain_name("localhost")
        .identity(Identity::from_pem(read(&format!("{client}.pem")), read(&format!("{client}-key.pem"))));
    Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connection")
}

async fn query_version(
    channel: Channel,
    msp_id: &str,
) -> Result<orchestrator_proto::QueryVersionResponse, tonic::Status> {
    let headers = Headers::new(&[("mspid", msp_id), ("channel", "mychannel")]);
    let mut info = InfoServiceClient::new(InterceptedService::new(channel, headers));
    info.query_version(QueryVersionParam {}).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn mtls_with_msp_id_verification() {
    let server = start_mtls(true).await;

    let org1 = tls_channel(&server, "org1-client").await;
    let version = query_version(org1.clone(), "MyOrg1MSP").await.expect("MyOrg1MSP with its own certificate");
    assert!(!version.orchestrator.is_empty());

    let cases = [
        (
            org1,
            "MyOrg2MSP",
            "OE0102: invalid MSPID: cannot find MSPID \"MyOrg2MSP\" in client TLS certificate Subject Organizations",
        ),
        (
            tls_channel(&server, "org2-by-org1").await,
            "MyOrg2MSP",
            "OE0102: invalid MSPID: invalid issuer for MSPID \"MyOrg2MSP\"",
        ),
        (
            tls_channel(&server, "org3-client").await,
            "Org3MSP",
            "OE0102: invalid MSPID: cannot find MSPID \"Org3MSP\" in allowed organizations",
        ),
    ];
    for (channel, msp_id, message) in cases {
        let status = query_version(channel, msp_id).await.expect_err("refused caller");
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, message));
    }
    server.stop().await;
}

#[tokio::test]
async fn mtls_without_verification_trusts_the_header() {
    let server = start_mtls(false).await;
    let org1 = tls_channel(&server, "org1-client").await;
    query_version(org1, "MyOrg2MSP").await.expect("no verification: the header is the identity");
    server.stop().await;
}

#[tokio::test]
async fn verification_over_plaintext_is_internal() {
    let server = TestServer::start_with(|config| config.verify_client_msp_id = true).await;
    let status = query_version(server.channel().await, "MyOrg1MSP").await.expect_err("no TLS context");
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "OE0007: invalid MSPID: failed to extract MSP ID from TLS context")
    );
    server.stop().await;
}
