//! Stream-level behaviour of the shim and of the `chaincode` binary.

use std::time::Duration;

use orchestrator_fabric_testing::{
    ChaincodeConnection, Identity, IssueIdentity, Peer, ValidationCode, spawn_chaincode,
};
use orchestrator_host_fabric::fabric::protos::chaincode_client::ChaincodeClient;
use orchestrator_host_fabric::fabric::protos::chaincode_message::Type;
use orchestrator_host_fabric::fabric::protos::{ChaincodeId, ChaincodeMessage};
use orchestrator_proto::RegisterOrganizationParam;
use orchestrator_runtime::{Runtime, RuntimeConfig};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

const PACKAGE_ID: &str = "orchestrator_1.0:0123456789abcdef";

async fn raw_stream() -> (mpsc::Sender<ChaincodeMessage>, Streaming<ChaincodeMessage>) {
    let runtime = Runtime::new(RuntimeConfig::default(), orchestrator_logic_component::COMPONENT).expect("runtime");
    let (endpoint, _server) = spawn_chaincode(runtime, PACKAGE_ID).await.expect("serve");
    let channel = Endpoint::from_shared(endpoint).expect("endpoint").connect().await.expect("dial");
    let (out, receiver) = mpsc::channel(8);
    let inbound = ChaincodeClient::new(channel).connect(ReceiverStream::new(receiver)).await.expect("connect");
    (out, inbound.into_inner())
}

fn message(kind: Type) -> ChaincodeMessage {
    ChaincodeMessage { r#type: kind as i32, ..Default::default() }
}

async fn next(inbound: &mut Streaming<ChaincodeMessage>) -> Result<Option<ChaincodeMessage>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(30), inbound.message()).await.expect("no answer in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn register_first_then_keepalives_are_echoed() {
    let (out, mut inbound) = raw_stream().await;
    let register = next(&mut inbound).await.expect("message").expect("REGISTER");
    assert_eq!(register.r#type, Type::Register as i32);
    assert_eq!(ChaincodeId::decode(register.payload.as_slice()).expect("id").name, PACKAGE_ID);
    for kind in [Type::Registered, Type::Ready] {
        out.send(message(kind)).await.expect("send");
    }
    let keepalive = ChaincodeMessage { payload: b"ping".to_vec(), ..message(Type::Keepalive) };
    out.send(keepalive.clone()).await.expect("send");
    assert_eq!(next(&mut inbound).await.expect("message"), Some(keepalive));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_before_ready_ends_the_stream() {
    let (out, mut inbound) = raw_stream().await;
    next(&mut inbound).await.expect("message").expect("REGISTER");
    out.send(message(Type::Transaction)).await.expect("send");
    let status = next(&mut inbound).await.expect_err("protocol error");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

/// Kills the child process even when the test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_from_the_ccaas_environment() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_chaincode"))
            .env("CHAINCODE_ID", PACKAGE_ID)
            .env("CHAINCODE_SERVER_ADDRESS", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut connection = None;
    for _ in 0..600 {
        match ChaincodeConnection::connect(endpoint.clone()).await {
            Ok(connected) => {
                connection = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let cc = connection.expect("the chaincode binary did not come up");
    assert_eq!(cc.package_id(), PACKAGE_ID);
    let peer = Peer::new("mychannel", "orchestrator");
    let proposal = peer.proposal(
        &Identity::new("MyOrg1MSP").expect("identity"),
        "orchestrator.OrganizationService/RegisterOrganization",
        &RegisterOrganizationParam::default().encode_to_vec(),
    );
    let (endorsement, code) = peer.submit(&cc, &proposal).await.expect("submit");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    assert_eq!(code, ValidationCode::Valid);
}
