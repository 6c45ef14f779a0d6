//! Shutdown of the `chaincode` binary while a peer holds its `Connect` streams: SIGTERM or
//! SIGINT drains the streams (in-flight transactions answered, new ones refused), ends them,
//! and the process exits within its grace period, so a new server can take the address.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use orchestrator_fabric_testing::{ChaincodeConnection, Identity, IssueIdentity, Peer, SimProposal, ValidationCode};
use orchestrator_host_fabric::fabric::protos::chaincode_client::ChaincodeClient;
use orchestrator_host_fabric::fabric::protos::chaincode_message::Type;
use orchestrator_host_fabric::fabric::protos::{ChaincodeId, ChaincodeMessage, Response};
use orchestrator_host_fabric::shim::SHUTTING_DOWN;
use orchestrator_proto::RegisterOrganizationParam;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

const PACKAGE_ID: &str = "orchestrator_1.0:0123456789abcdef";
const CHANNEL: &str = "mychannel";
const REGISTER_ORGANIZATION: &str = "orchestrator.OrganizationService/RegisterOrganization";
/// How long a step may take before the test calls it a hang (the machine is slow and shared).
const STEP: Duration = Duration::from_secs(30);

/// A `chaincode` process, killed when dropped (even when the test fails), with its log lines.
struct Chaincode {
    child: std::process::Child,
    logs: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    endpoint: String,
}

impl Drop for Chaincode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chaincode {
    /// Starts the binary on `port` and waits until it accepts connections.
    async fn start(port: u16, package_id: &str, grace: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chaincode"));
        command
            .env("CHAINCODE_ID", package_id)
            .env("CHAINCODE_SERVER_ADDRESS", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // Shared by every process of the tests: only the first compiles the component.
            .env("ORCHESTRATOR_CACHE_DIR", concat!(env!("CARGO_TARGET_TMPDIR"), "/chaincode-component-cache"))
            .env_remove("CHAINCODE_SHUTDOWN_GRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(grace) = grace {
            command.env("CHAINCODE_SHUTDOWN_GRACE", grace);
        }
        let mut child = command.spawn().expect("spawn the chaincode");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, logs) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("chaincode: {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut chaincode = Self { child, logs, seen: Vec::new(), endpoint: format!("http://127.0.0.1:{port}") };
        chaincode.wait_for_log("serving protos.Chaincode", Duration::from_secs(180)).await;
        // That line comes just before the bind: wait until the port answers.
        let deadline = Instant::now() + STEP;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "the chaincode does not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        chaincode
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits for a log line containing `text`; panics after `within`.
    async fn wait_for_log(&mut self, text: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.logs.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Ok(None) => panic!("the chaincode's output ended before {text:?}: {:#?}", self.seen),
                Err(_) => panic!("no log line {text:?} within {within:?}: {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid()).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Polls the process until it exits; panics after `within`.
    async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the chaincode still runs {within:?} after the signal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A peer's side of one `Connect` stream, handshake done (REGISTER received, REGISTERED and
/// READY sent), on its own connection.
struct PeerStream {
    out: mpsc::Sender<ChaincodeMessage>,
    inbound: Streaming<ChaincodeMessage>,
}

impl PeerStream {
    async fn open(endpoint: &str, package_id: &str) -> Self {
        let channel = Endpoint::from_shared(endpoint.to_owned()).expect("endpoint").connect().await.expect("dial");
        let (out, receiver) = mpsc::channel(16);
        let inbound =
            ChaincodeClient::new(channel).connect(ReceiverStream::new(receiver)).await.expect("connect").into_inner();
        let mut stream = Self { out, inbound };
        let register = stream.next().await.expect("stream").expect("REGISTER");
        assert_eq!(register.r#type, Type::Register as i32);
        assert_eq!(ChaincodeId::decode(register.payload.as_slice()).expect("id").name, package_id);
        for kind in [Type::Registered, Type::Ready] {
            stream.send(ChaincodeMessage { r#type: kind as i32, ..Default::default() }).await;
        }
        // An echoed KEEPALIVE: the stream is READY and served.
        let keepalive =
            ChaincodeMessage { r#type: Type::Keepalive as i32, payload: b"ping".to_vec(), ..Default::default() };
        stream.send(keepalive.clone()).await;
        assert_eq!(stream.next().await.expect("stream"), Some(keepalive));
        stream
    }

    async fn send(&self, message: ChaincodeMessage) {
        self.out.send(message).await.expect("send to the chaincode");
    }

    /// The chaincode's next message, `None` once the stream ended cleanly; panics after
    /// [`STEP`] (the bug: a stream served forever after the signal).
    async fn next(&mut self) -> Result<Option<ChaincodeMessage>, tonic::Status> {
        tokio::time::timeout(STEP, self.inbound.message())
            .await
            .expect("the chaincode stream neither answered nor ended")
    }

    /// Sends a TRANSACTION registering the organization of `msp_id`; returns its txid.
    async fn send_transaction(&self, msp_id: &str) -> String {
        let identity = Identity::new(msp_id).expect("identity");
        let request = RegisterOrganizationParam::default().encode_to_vec();
        let proposal = SimProposal::new(
            CHANNEL,
            "orchestrator",
            &identity,
            vec![REGISTER_ORGANIZATION.as_bytes().to_vec(), request],
        );
        self.send(ChaincodeMessage {
            r#type: Type::Transaction as i32,
            payload: proposal.input.encode_to_vec(),
            txid: proposal.txid.clone(),
            channel_id: CHANNEL.to_owned(),
            proposal: Some(proposal.signed),
            ..Default::default()
        })
        .await;
        proposal.txid
    }

    /// Answers `txid`'s state requests as an empty ledger would (an empty RESPONSE: nothing
    /// found, empty range, write accepted) until it ends; returns its COMPLETED response.
    async fn complete(&mut self, txid: &str, mut pending: Option<ChaincodeMessage>) -> Response {
        loop {
            let message = match pending.take() {
                Some(message) => message,
                None => self.next().await.expect("stream").expect("the stream ended before COMPLETED"),
            };
            assert_eq!(message.txid, txid, "a message of another transaction: {message:?}");
            match Type::try_from(message.r#type).expect("type") {
                Type::Completed => return Response::decode(message.payload.as_slice()).expect("response"),
                Type::Error => panic!("ERROR: {}", String::from_utf8_lossy(&message.payload)),
                _ => {
                    let answer = ChaincodeMessage {
                        r#type: Type::Response as i32,
                        txid: message.txid,
                        channel_id: message.channel_id,
                        ..Default::default()
                    };
                    self.send(answer).await;
                }
            }
        }
    }
}

/// After `signal`: both peer streams end cleanly, the process exits with success, and a new
/// chaincode on the same address serves the peer.
async fn a_signal_ends_the_streams_and_frees_the_address(signal: &str) {
    let port = free_port();
    let mut chaincode = Chaincode::start(port, PACKAGE_ID, None).await;
    let mut first = PeerStream::open(&chaincode.endpoint, PACKAGE_ID).await;
    let mut second = PeerStream::open(&chaincode.endpoint, PACKAGE_ID).await;

    let signalled = Instant::now();
    chaincode.signal(signal);
    for stream in [&mut first, &mut second] {
        let end = stream.next().await;
        assert!(matches!(end, Ok(None)), "expected the stream to end cleanly, got {end:?}");
    }
    // Well within the default 10 s grace: nothing was in flight.
    let status = chaincode.exit_status(Duration::from_secs(9)).await;
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(9));
    chaincode.wait_for_log("shut down: every peer stream closed", STEP).await;
    drop(chaincode);

    // Another package id: what answers now is the new process.
    let restarted_id = "orchestrator_2.0:fedcba9876543210";
    let restarted = Chaincode::start(port, restarted_id, None).await;
    let cc = ChaincodeConnection::connect(restarted.endpoint.clone()).await.expect("connect to the new chaincode");
    assert_eq!(cc.package_id(), restarted_id);
    let peer = Peer::new(CHANNEL, "orchestrator");
    let proposal = peer.proposal(
        &Identity::new("MyOrg1MSP").expect("identity"),
        REGISTER_ORGANIZATION,
        &RegisterOrganizationParam::default().encode_to_vec(),
    );
    let (endorsement, code) = peer.submit(&cc, &proposal).await.expect("submit");
    assert_eq!((endorsement.response.status, code), (200, ValidationCode::Valid), "{}", endorsement.response.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_peer_streams_and_a_new_server_takes_the_address() {
    a_signal_ends_the_streams_and_frees_the_address("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_ends_the_peer_streams_and_a_new_server_takes_the_address() {
    a_signal_ends_the_streams_and_frees_the_address("INT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_in_flight_at_sigterm_is_answered_before_the_stream_ends() {
    let mut chaincode = Chaincode::start(free_port(), PACKAGE_ID, None).await;
    let mut stream = PeerStream::open(&chaincode.endpoint, PACKAGE_ID).await;
    let running = stream.send_transaction("MyOrg1MSP").await;
    // Its first state request, left unanswered: the transaction is in flight for sure.
    let request = stream.next().await.expect("stream").expect("a state request");
    assert_eq!((request.r#type, request.txid.as_str()), (Type::GetState as i32, running.as_str()));

    chaincode.signal("TERM");
    chaincode.wait_for_log("shutting down", STEP).await;
    // A transaction arriving during the drain is refused at once.
    let late = stream.send_transaction("MyOrg2MSP").await;
    let refusal = stream.next().await.expect("stream").expect("the refusal");
    assert_eq!(refusal.txid, late);
    assert_eq!(refusal.r#type, Type::Error as i32, "{refusal:?}");
    assert_eq!(String::from_utf8_lossy(&refusal.payload), SHUTTING_DOWN);

    // The running one is still served to its end, then the stream ends.
    let response = stream.complete(&running, Some(request)).await;
    assert_eq!(response.status, 200, "{}", response.message);
    let end = stream.next().await;
    assert!(matches!(end, Ok(None)), "expected the stream to end cleanly, got {end:?}");
    let status = chaincode.exit_status(Duration::from_secs(9)).await;
    assert!(status.success(), "{status}");
    let summary = chaincode.wait_for_log("shut down: every peer stream closed", STEP).await;
    assert!(summary.contains("finished=1") && summary.contains("refused=1"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_grace_period_the_chaincode_exits_anyway() {
    let mut chaincode = Chaincode::start(free_port(), PACKAGE_ID, Some("1s")).await;
    let mut stream = PeerStream::open(&chaincode.endpoint, PACKAGE_ID).await;
    let stuck = stream.send_transaction("MyOrg1MSP").await;
    let request = stream.next().await.expect("stream").expect("a state request");
    assert_eq!(request.txid, stuck);

    // The peer never answers: the transaction cannot finish.
    let signalled = Instant::now();
    chaincode.signal("TERM");
    let status = chaincode.exit_status(STEP).await;
    let waited = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(waited >= Duration::from_millis(900), "exited after {waited:?}, before the 1 s grace period");
    let summary = chaincode.wait_for_log("transactions abandoned", STEP).await;
    assert!(summary.contains("abandoned=1"), "{summary}");
    // The process is gone: the stream ends (reset, as a killed process's would).
    assert!(!matches!(stream.next().await, Ok(Some(_))));
}
