//! Connection policy and request budget, seen from a client speaking raw HTTP/2: keepalive
//! enforcement (GOAWAY `too_many_pings`), the idle timeout, the handshake timeout, and the
//! budget of request bytes in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, test_config};
use orchestrator_host_standalone::codec::RawCodec;
use orchestrator_host_standalone::{Server, ServerError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::Code;
use tonic::transport::Channel;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const NO_ERROR: u32 = 0x0;

/// How long a test waits for something the server should do at once.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

/// A client writing HTTP/2 frames by hand.
struct RawH2<S> {
    io: S,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// HPACK "literal header field without indexing, new name" for each pair (names and values
/// under 127 bytes).
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawH2<S> {
    /// Sends the preface and empty SETTINGS.
    async fn handshake(mut io: S) -> Self {
        io.write_all(PREFACE).await.unwrap();
        io.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        io.flush().await.unwrap();
        Self { io }
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.io.write_all(&frame(kind, flags, stream, payload)).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn ping(&mut self, n: u64) {
        self.send(PING, 0, 0, &n.to_be_bytes()).await;
    }

    /// Opens stream `stream` on `path` with the orchestrator's headers.
    async fn open_call(&mut self, stream: u32, path: &str) {
        let block = header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("mspid", "MyOrg1MSP"),
            ("channel", "mychannel"),
        ]);
        self.send(HEADERS, END_HEADERS, stream, &block).await;
    }

    /// The next frame (SETTINGS are acknowledged on the way); `None` at the end of the
    /// connection.
    async fn next_frame(&mut self) -> Option<Frame> {
        let mut header = [0u8; 9];
        match tokio::time::timeout(PATIENCE, self.io.read_exact(&mut header)).await {
            Err(_) => panic!("nothing from the server within {PATIENCE:?}"),
            Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
        let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0; len];
        if self.io.read_exact(&mut payload).await.is_err() {
            return None;
        }
        let frame = Frame { kind: header[3], flags: header[4], payload };
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            self.send(SETTINGS, ACK, 0, &[]).await;
        }
        Some(frame)
    }

    /// Reads until a GOAWAY: its error code and debug data.
    async fn goaway(&mut self) -> (u32, Vec<u8>) {
        while let Some(frame) = self.next_frame().await {
            if frame.kind == GOAWAY {
                let code = u32::from_be_bytes(frame.payload[4..8].try_into().unwrap());
                return (code, frame.payload[8..].to_vec());
            }
        }
        panic!("the connection ended without a GOAWAY");
    }

    /// Reads until the connection ends.
    async fn until_closed(&mut self) {
        while self.next_frame().await.is_some() {}
    }

    /// Reads until the acknowledgement of ping `n`.
    async fn pong(&mut self, n: u64) {
        while let Some(frame) = self.next_frame().await {
            assert_ne!(frame.kind, GOAWAY, "GOAWAY instead of the PING ACK: {frame:?}");
            if frame.kind == PING && frame.flags & ACK != 0 && frame.payload == n.to_be_bytes() {
                return;
            }
        }
        panic!("the connection ended before the PING ACK");
    }
}

/// Reads (and drops) whatever comes until the connection ends.
async fn closed_within_patience(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection is still open after {PATIENCE:?}");
}

async fn raw(server: &TestServer) -> RawH2<TcpStream> {
    RawH2::handshake(TcpStream::connect(server.addr).await.unwrap()).await
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls")).join(name)
}

async fn tls_server(adjust: impl FnOnce(&mut orchestrator_host_standalone::Config)) -> TestServer {
    TestServer::start_with(|config| {
        config.tls_enabled = true;
        config.tls_cert_path = Some(fixture("server.pem"));
        config.tls_key_path = Some(fixture("server-key.pem"));
        adjust(config);
    })
    .await
}

async fn tls_connect(server: &TestServer) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    let ca = std::fs::read(fixture("server-ca.pem")).unwrap();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&ca).map(Result::unwrap));
    let mut config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

async fn query_version(server: &TestServer) -> Result<(), tonic::Status> {
    server
        .raw_call(
            "/orchestrator.InfoService/QueryVersion",
            Vec::new(),
            &[("mspid", "MyOrg1MSP"), ("channel", "mychannel")],
        )
        .await
        .map(drop)
}

#[tokio::test]
async fn pinging_too_often_gets_goaway_too_many_pings() {
    let server = TestServer::start().await;
    let mut client = raw(&server).await;
    // The reference's policy (MinTime 30 s, no pings without a stream): the first ping is
    // free, the next three are strikes, the third strike ends the connection.
    for n in 0..4 {
        client.ping(n).await;
    }
    let (code, debug) = client.goaway().await;
    assert_eq!(code, ENHANCE_YOUR_CALM);
    assert_eq!(debug, b"too_many_pings");
    client.until_closed().await;
    // Only that connection is gone.
    query_version(&server).await.expect("a new connection is served");
    server.stop().await;
}

#[tokio::test]
async fn pinging_over_tls_is_policed_too() {
    let server = tls_server(|_| {}).await;
    let mut client = RawH2::handshake(tls_connect(&server).await).await;
    for n in 0..4 {
        client.ping(n).await;
    }
    assert_eq!(client.goaway().await, (ENHANCE_YOUR_CALM, b"too_many_pings".to_vec()));
    client.until_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn pings_the_policy_permits_are_answered() {
    let server = TestServer::start_with(|config| {
        config.grpc_keepalive_policy_min_time = Duration::from_millis(100);
        config.grpc_keepalive_policy_permit_without_stream = true;
    })
    .await;
    let mut client = raw(&server).await;
    for n in 0..6 {
        let sent = Instant::now();
        client.ping(n).await;
        client.pong(n).await;
        tokio::time::sleep(Duration::from_millis(150).saturating_sub(sent.elapsed())).await;
    }
    // A graceful stop waits for clients to acknowledge its GOAWAY ping; this one never reads.
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_and_is_closed() {
    let server = TestServer::start_with(|config| config.grpc_max_connection_idle = Duration::from_millis(300)).await;
    let mut client = raw(&server).await;
    assert_eq!(client.goaway().await, (NO_ERROR, b"max_idle".to_vec()));
    client.until_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn an_open_call_keeps_its_connection_past_the_idle_timeout() {
    let server = TestServer::start_with(|config| config.grpc_max_connection_idle = Duration::from_millis(300)).await;
    let mut client = raw(&server).await;
    // A call whose request never ends: the connection is busy, not idle.
    client.open_call(1, "/orchestrator.InfoService/QueryVersion").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    client.ping(1).await;
    client.pong(1).await;
    // Once the call is cancelled, the idle timeout runs again.
    client.send(RST_STREAM, 0, 1, &8u32.to_be_bytes()).await;
    assert_eq!(client.goaway().await, (NO_ERROR, b"max_idle".to_vec()));
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_handshakes_is_closed() {
    let server = TestServer::start_with(|config| config.grpc_handshake_timeout = Duration::from_millis(300)).await;
    // Nothing sent at all.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Half a preface.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(&PREFACE[..10]).await.unwrap();
    closed_within_patience(&mut silent).await;
    closed_within_patience(&mut half).await;
    // A client that completes its handshake in time is served.
    query_version(&server).await.expect("a prompt client is served");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_starts_tls_is_closed() {
    let server = tls_server(|config| config.grpc_handshake_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_within_patience(&mut silent).await;
    // The TLS handshake alone within the timeout is not enough: HTTP/2 must follow.
    let mut tls = tls_connect(&server).await;
    closed_within_patience(&mut tls).await;
    server.stop().await;
}

const MIB: usize = 1024 * 1024;

/// The first bytes of a gRPC message announcing `len` bytes.
fn message_start(len: usize, sent: usize) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    bytes.resize(5 + sent, 0x0a);
    bytes
}

async fn scrape(server: &TestServer, metric: &str) -> u64 {
    let addr = server.metrics_addr.expect("metrics enabled");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{metric} "))).unwrap_or_else(|| panic!("{text}"));
    line[metric.len() + 1..].parse().unwrap()
}

/// A QueryVersion of about `len` bytes on a connection of its own.
async fn call_of(addr: SocketAddr, len: usize) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    call_on(channel, len).await
}

/// A QueryVersion of about `len` bytes on `channel` (one HTTP/2 connection, shared by its
/// clones): one unknown field (number 15), which the logic skips.
async fn call_on(channel: Channel, len: usize) -> Result<(), tonic::Status> {
    let mut body = vec![0x7a_u8];
    let mut n = len;
    while n >= 0x80 {
        body.push((n as u8) | 0x80);
        n >>= 7;
    }
    body.push(n as u8);
    body.resize(body.len() + len, b'x');
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert("mspid", "MyOrg1MSP".parse().unwrap());
    request.metadata_mut().insert("channel", "mychannel".parse().unwrap());
    let path = http::uri::PathAndQuery::from_static("/orchestrator.InfoService/QueryVersion");
    grpc.unary(request, path, RawCodec).await.map(drop)
}

#[tokio::test]
async fn large_calls_wait_for_room_in_the_request_budget() {
    let server = TestServer::start_with(|config| {
        config.grpc_max_message_bytes = 4 * MIB;
        config.grpc_max_request_bytes_in_flight = 6 * MIB;
        config.grpc_request_budget_wait = Duration::from_secs(1);
        config.metrics_enabled = true;
        config.metrics_addr = ([127, 0, 0, 1], 0).into();
    })
    .await;
    assert_eq!(scrape(&server, "orc_grpc_request_bytes_budget").await, 6 * MIB as u64);

    // A slow client announces a message of 4 MiB and sends 1 KiB of it.
    let mut slow = raw(&server).await;
    slow.open_call(1, "/orchestrator.InfoService/QueryVersion").await;
    slow.send(DATA, 0, 1, &message_start(4 * MIB, 1024)).await;
    let held = (4 * MIB + 5) as u64;
    let deadline = Instant::now() + PATIENCE;
    while scrape(&server, "orc_grpc_request_bytes_in_flight").await != held {
        assert!(Instant::now() < deadline, "the announced bytes were never taken from the budget");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What still fits is served at once; what does not waits, then is refused.
    call_of(server.addr, MIB).await.expect("1 MiB fits beside the slow call");
    let refused = call_of(server.addr, 3 * MIB).await.expect_err("no room for 3 MiB");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("ORCHESTRATOR_GRPC_MAX_REQUEST_BYTES_IN_FLIGHT"), "{refused:?}");
    assert!(refused.message().contains("retrying later is safe"), "{refused:?}");

    // A call waiting when room frees up goes through.
    let waiting = tokio::spawn(call_of(server.addr, 3 * MIB));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a 3 MiB call was read while only 2 MiB were free");
    slow.send(RST_STREAM, 0, 1, &8u32.to_be_bytes()).await;
    waiting.await.unwrap().expect("served once the slow call is gone");
    let deadline = Instant::now() + PATIENCE;
    while scrape(&server, "orc_grpc_request_bytes_in_flight").await != 0 {
        assert!(Instant::now() < deadline, "the budget was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(slow);
    server.stop().await;
}

#[tokio::test]
async fn a_call_waiting_for_the_budget_does_not_stall_its_connection() {
    let server = TestServer::start_with(|config| {
        config.grpc_max_message_bytes = 4 * MIB;
        config.grpc_max_request_bytes_in_flight = 4 * MIB;
        config.grpc_request_budget_wait = Duration::from_secs(5);
    })
    .await;
    // Calls on one connection, room for one at a time: one gets the budget, the others wait with their first window of
    // data unread, and the first must still be able to send the rest of its message.
    let channel = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        calls.spawn(call_on(channel.clone(), 3 * MIB));
    }
    while let Some(answer) = calls.join_next().await {
        answer.unwrap().expect("every call on the shared connection is served in turn");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_budget_smaller_than_one_message_is_refused_at_start() {
    let mut config = test_config(&format!("{}/postgres", common::PG_SERVER));
    config.grpc_max_message_bytes = 4 * MIB;
    config.grpc_max_request_bytes_in_flight = 2 * MIB;
    match Server::bind(&config).await {
        Err(ServerError::Settings(message)) => {
            assert!(message.contains("ORCHESTRATOR_GRPC_MAX_REQUEST_BYTES_IN_FLIGHT"), "{message}");
        }
        other => panic!("expected a settings error, got {other:?}"),
    }
}
