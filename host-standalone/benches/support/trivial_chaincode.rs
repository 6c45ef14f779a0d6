//! A trivial chaincode as a service, served from the bench's process and deployed on a running
//! `fabric-net.sh` network beside the orchestrator's: what the network itself allows, with a
//! chaincode that costs (almost) nothing.
//!
//! Each transaction writes one key (its txid, no read: blind writes never conflict) and
//! answers 200 with an empty payload: TRANSACTION → PUT_STATE → (RESPONSE) → COMPLETED, the
//! least a transaction that changes the ledger can do. The same shim protocol as the
//! orchestrator's chaincode (`host-fabric/src/shim.rs`), without the component.
//!
//! `fabric-net.sh` defines one package (the orchestrator's) under every name it deploys, so this
//! one is packaged and defined here with the peer CLI, as the script does it: a CCaaS package
//! whose `connection.json` points at this server, installed on both peers, approved by both
//! organizations and committed on one channel.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use orchestrator_host_fabric::fabric::protos::chaincode_message::Type;
use orchestrator_host_fabric::fabric::protos::chaincode_server::{Chaincode, ChaincodeServer};
use orchestrator_host_fabric::fabric::protos::{ChaincodeId, ChaincodeMessage, PutState, Response};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use crate::common::network::Network;

/// Version and sequence of the definition (the only one).
const VERSION: &str = "1.0";
/// One organization's peer endorses, as for the orchestrator's chaincode.
const POLICY: &str = "OR('MyOrg1MSP.peer','MyOrg2MSP.peer')";

/// The `protos.Chaincode` service: registers as `package_id`, then one PUT_STATE per
/// transaction.
#[derive(Clone)]
struct Trivial {
    package_id: String,
}

#[tonic::async_trait]
impl Chaincode for Trivial {
    type ConnectStream = ReceiverStream<Result<ChaincodeMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ChaincodeMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, receiver) = mpsc::channel(1024);
        // The chaincode speaks first.
        let register = ChaincodeMessage {
            r#type: Type::Register as i32,
            payload: ChaincodeId { name: self.package_id.clone(), ..Default::default() }.encode_to_vec(),
            ..Default::default()
        };
        out.send(Ok(register)).await.map_err(|_| Status::internal("the stream closed before REGISTER"))?;
        tokio::spawn(async move {
            // A transaction has one message in flight at a time (its PUT_STATE), so the reader
            // alone can answer each: no per-transaction task, no routing table.
            while let Ok(Some(message)) = inbound.message().await {
                let header = |r#type: Type, payload: Vec<u8>| ChaincodeMessage {
                    r#type: r#type as i32,
                    payload,
                    txid: message.txid.clone(),
                    channel_id: message.channel_id.clone(),
                    ..Default::default()
                };
                let reply = match Type::try_from(message.r#type).unwrap_or(Type::Undefined) {
                    Type::Registered | Type::Ready => continue,
                    Type::Keepalive => message.clone(),
                    Type::Transaction | Type::Init => {
                        let put =
                            PutState { key: message.txid.clone(), value: b"1".to_vec(), collection: String::new() };
                        header(Type::PutState, put.encode_to_vec())
                    }
                    Type::Response => {
                        let response = Response { status: 200, message: String::new(), payload: Vec::new() };
                        header(Type::Completed, response.encode_to_vec())
                    }
                    Type::Error => header(Type::Error, message.payload.clone()),
                    other => header(Type::Error, format!("unexpected {}", other.as_str_name()).into_bytes()),
                };
                if out.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }
}

/// The trivial chaincode, defined as `name` on `channel` and served by this process.
pub struct TrivialChaincode {
    pub name: String,
    pub channel: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TrivialChaincode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `output`'s text, for a failure message.
fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs the peer CLI as `org`'s admin; retries for a while (approvals may race the channel's
/// setup), panics with its output if it keeps failing.
fn cli(network: &Network, org: u8, what: &str, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = network.admin_cli(org, args);
        if output.status.success() {
            return output;
        }
        assert!(Instant::now() < deadline, "peer {what} as MyOrg{org}MSP's admin failed: {}", text(&output));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs `step(org)` for both organizations at once.
fn both(step: impl Fn(u8) + Sync) {
    std::thread::scope(|scope| {
        let step = &step;
        let handles: Vec<_> = [1, 2].map(|org| scope.spawn(move || step(org))).into_iter().collect();
        for handle in handles {
            handle.join().expect("a peer CLI step");
        }
    });
}

/// A CCaaS package pointing at `address`: `metadata.json` and `code.tar.gz` holding
/// `connection.json`, as `fabric-net.sh` writes its own.
fn package(dir: &Path, name: &str, address: &str) -> std::path::PathBuf {
    let (src, pkg) = (dir.join("src"), dir.join("pkg"));
    std::fs::create_dir_all(&src).expect("package source directory");
    std::fs::create_dir_all(&pkg).expect("package directory");
    let connection = format!(r#"{{"address":"{address}","dial_timeout":"10s","tls_required":false}}"#);
    std::fs::write(src.join("connection.json"), connection).expect("connection.json");
    std::fs::write(pkg.join("metadata.json"), format!(r#"{{"type":"ccaas","label":"{name}_{VERSION}"}}"#))
        .expect("metadata.json");
    let tar = |dir: &Path, archive: &Path, files: &[&str]| {
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-czf")
            .arg(archive)
            .args(files)
            .status()
            .expect("run tar");
        assert!(status.success(), "tar {}: {status}", archive.display());
    };
    tar(&src, &pkg.join("code.tar.gz"), &["connection.json"]);
    let file = dir.join(format!("{name}.tar.gz"));
    tar(&pkg, &file, &["metadata.json", "code.tar.gz"]);
    file
}

/// Serves the trivial chaincode on a free port and defines it as `name` on `channel` of
/// `network` (about 5 s: install on both peers, both approvals, commit).
pub async fn deploy(network: &Network, name: &str, channel: &str) -> TrivialChaincode {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the trivial chaincode");
    let address = listener.local_addr().expect("its address").to_string();
    let dir = network.dir().join("trivial-chaincode");
    let file = package(&dir, name, &address);
    let file = file.to_string_lossy().into_owned();
    let package_id = tokio::task::block_in_place(|| {
        let output = cli(network, 1, "calculatepackageid", &["lifecycle", "chaincode", "calculatepackageid", &file]);
        String::from_utf8(output.stdout).expect("a package id").trim().to_owned()
    });
    assert!(package_id.starts_with(&format!("{name}_{VERSION}:")), "package id {package_id:?}");
    let service = ChaincodeServer::new(Trivial { package_id: package_id.clone() });
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(async move {
        if let Err(error) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await
        {
            eprintln!("trivial chaincode server: {error}");
        }
    });

    let orderer = network.var("FABRIC_ORDERER_ADDRESS").to_owned();
    let orderer_ca = network.var("FABRIC_ORDERER_TLS_CA_CERT").to_owned();
    let definition = |package: Option<&str>| {
        let mut args: Vec<String> = [
            "-o",
            orderer.as_str(),
            "--tls",
            "--cafile",
            orderer_ca.as_str(),
            "--channelID",
            channel,
            "--name",
            name,
            "--version",
            VERSION,
            "--sequence",
            "1",
            "--signature-policy",
            POLICY,
            "--waitForEvent",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(package) = package {
            args.extend(["--package-id".to_owned(), package.to_owned()]);
        }
        args
    };
    let started = Instant::now();
    tokio::task::block_in_place(|| {
        both(|org| {
            cli(network, org, "lifecycle chaincode install", &["lifecycle", "chaincode", "install", &file]);
        });
        let approve = definition(Some(package_id.as_str()));
        both(|org| {
            let mut args = vec!["lifecycle", "chaincode", "approveformyorg"];
            args.extend(approve.iter().map(String::as_str));
            cli(network, org, "lifecycle chaincode approveformyorg", &args);
        });
        let mut args: Vec<String> = ["lifecycle", "chaincode", "commit"].map(str::to_owned).to_vec();
        args.extend(definition(None));
        for org in [1, 2] {
            let peer = network.peer(org);
            args.extend([
                "--peerAddresses".to_owned(),
                peer.address,
                "--tlsRootCertFiles".to_owned(),
                peer.tls_ca_cert.to_string_lossy().into_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(network, 1, "lifecycle chaincode commit", &args);
    });
    println!("trivial chaincode {package_id} defined as {name} on {channel} in {:.1?}", started.elapsed());
    TrivialChaincode { name: name.to_owned(), channel: channel.to_owned(), server }
}
