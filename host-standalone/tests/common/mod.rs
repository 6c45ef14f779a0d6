//! Test harness: a fresh PostgreSQL database per server, the real server in-process on an
//! ephemeral port, and gRPC clients that carry (or deliberately omit) the headers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use orchestrator_host_standalone::codec::RawCodec;
use orchestrator_host_standalone::{Config, Server, postgres};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub mod facade;
/// The local Fabric network of `scripts/fabric-net.sh` (shared with host-fabric's tests).
#[path = "../../../host-fabric/tests/support/network.rs"]
pub mod network;

/// PostgreSQL server of the tests (trust authentication).
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Channel configuration of the tests: mychannel has MyOrg1MSP, MyOrg2MSP and Org3MSP..Org8MSP;
/// yourchannel has MyOrg1MSP only.
pub fn channel_config_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/channels.yaml"))
}

/// The configuration of a test server on database `db_url`.
pub fn test_config(db_url: &str) -> Config {
    let mut config = Config::defaults();
    config.database_url = db_url.to_owned();
    config.channel_config = Some(channel_config_path());
    config.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.component_cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
    config.database_max_connections = 8;
    // Tests that exercise the broker enable the relay with an exchange and queues of their own;
    // the others must not fill the local broker's queues.
    config.amqp_enabled = false;
    config
}

/// One row of the `events` table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub position: i64,
    pub channel: String,
    pub event_id: String,
    pub payload: Vec<u8>,
}

/// A running server on its own database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db_url: String,
    /// A pool of the test's own, to inspect the database.
    pub pool: PgPool,
    /// The event relay's counters, when the test enabled it.
    pub relay_stats: Option<std::sync::Arc<orchestrator_host_standalone::events::RelayStats>>,
    /// The metrics endpoint, when the test enabled it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), orchestrator_host_standalone::ServerError>>>,
}

impl TestServer {
    /// Starts a server with the test configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with the test configuration, adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let name = format!("orch_test_{}", uuid::Uuid::new_v4().simple());
        let db_url = format!("{PG_SERVER}/{name}");
        let mut config = test_config(&db_url);
        adjust(&mut config);
        // TEST_LOG=<filter> shows the server's logs (text) in the test output.
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let mut log_config = config.clone();
            log_config.log_level = filter;
            log_config.log_format = orchestrator_host_standalone::config::LogFormat::Text;
            orchestrator_host_standalone::logging::init(&log_config);
        }
        let server = Server::bind(&config).await.expect("server starts");
        let addr = server.local_addr().expect("bound address");
        let relay_stats = server.relay_stats();
        let metrics_addr = server.metrics_addr();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&db_url).await.expect("test pool");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Self { addr, db_url, pool, relay_stats, metrics_addr, shutdown: Some(tx), task: Some(task) }
    }

    /// A channel without any header.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    /// A channel whose every request carries `mspid` and `channel`.
    pub async fn client(&self, msp_id: &str, channel: &str) -> InterceptedService<Channel, Headers> {
        InterceptedService::new(self.channel().await, Headers::new(&[("mspid", msp_id), ("channel", channel)]))
    }

    /// Sends `body` as is to `path` with exactly the given headers (repeats allowed).
    pub async fn raw_call(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Result<Bytes, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel().await);
        grpc.ready().await.expect("ready");
        let mut request = Request::new(body);
        append_headers(request.metadata_mut(), headers);
        let path = http::uri::PathAndQuery::try_from(path).expect("path");
        grpc.unary(request, path, RawCodec).await.map(tonic::Response::into_inner)
    }

    /// Sends `message` to `method` (`Service/Method` of package `orchestrator`) as `msp_id` on
    /// `channel`; panics on an error status (fixtures and benches).
    pub async fn call<M: prost::Message>(&self, msp_id: &str, channel: &str, method: &str, message: &M) {
        self.raw_call(
            &format!("/orchestrator.{method}"),
            message.encode_to_vec(),
            &[("mspid", msp_id), ("channel", channel)],
        )
        .await
        .unwrap_or_else(|status| panic!("{method}: {status:?}"));
    }

    /// Every row of `events`, by position.
    pub async fn events(&self) -> Vec<EventRow> {
        sqlx::query_as("SELECT position, channel, event_id, payload FROM events ORDER BY position")
            .fetch_all(&self.pool)
            .await
            .expect("events")
    }

    /// Number of rows of `state`.
    pub async fn state_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM state").fetch_one(&self.pool).await.expect("state count")
    }

    /// Stops the server (graceful) and drops its database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(10), task).await;
            assert!(matches!(stopped, Ok(Ok(Ok(())))), "server stopped cleanly: {stopped:?}");
        }
        self.pool.close().await;
        postgres::drop_database(&self.db_url).await.expect("drop database");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that panicked before `stop`: stop the server and drop the database anyway.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
            if let Some(task) = self.task.take() {
                task.abort();
            }
            let url = self.db_url.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    let _ = rt.block_on(postgres::drop_database(&url));
                }
            })
            .join();
        }
    }
}

fn append_headers(metadata: &mut MetadataMap, headers: &[(&str, &str)]) {
    for (name, value) in headers {
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes()).expect("key");
        metadata.append(key, AsciiMetadataValue::try_from(*value).expect("value"));
    }
}

/// Adds fixed headers to every request.
#[derive(Clone, Debug)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new(headers: &[(&str, &str)]) -> Self {
        Self(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

impl Interceptor for Headers {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let pairs: Vec<(&str, &str)> = self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        append_headers(request.metadata_mut(), &pairs);
        Ok(request)
    }
}

/// The real `orchestrator` binary on database `db_url` and a free port (the test channel
/// configuration, relay on unless `extra_env` says otherwise); killed when dropped.
pub struct Orchestrator {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Orchestrator {
    /// Starts the binary and waits until it serves.
    pub async fn spawn(db_url: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::spawn_with(db_url, None, extra_env, None).await
    }

    /// [`Orchestrator::spawn`] on `addr` (None: a free port; e.g. the address of a process
    /// killed before, to restart it where its clients reconnect), its log (standard error)
    /// appended to `log` when given.
    pub async fn spawn_with(
        db_url: &str,
        addr: Option<SocketAddr>,
        extra_env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let addr = addr.unwrap_or_else(|| {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("port").port();
            SocketAddr::from(([127, 0, 0, 1], port))
        });
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        command
            .env("ORCHESTRATOR_DATABASE_URL", db_url)
            .env("ORCHESTRATOR_CHANNEL_CONFIG", channel_config_path())
            .env("ORCHESTRATOR_GRPC_ADDR", addr.to_string())
            .env("ORCHESTRATOR_COMPONENT_CACHE", cache)
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null());
        if let Some(path) = log {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
            command.stderr(file);
        }
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn orchestrator");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("orchestrator exited before serving: {status}");
            }
            if let Ok(channel) = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok() {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "orchestrator did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, addr }
    }

    /// A client of MyOrg1MSP on mychannel.
    pub async fn client(&self) -> Client {
        let channel =
            Channel::from_shared(format!("http://{}", self.addr)).expect("uri").connect().await.expect("connect");
        InterceptedService::new(channel, Headers::new(&[("mspid", "MyOrg1MSP"), ("channel", "mychannel")]))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it may exit on a fatal error).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGHUP (the server reloads its `ORCHESTRATOR_LOGIC` file), through kill(1): a real
    /// signal, as an operator sends it.
    pub fn hangup(&self) {
        let status =
            std::process::Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -HUP: {status}");
    }

    /// SIGKILL, no shutdown.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        std::mem::forget(self);
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        // A failed test must not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures shared by tests and benches: an organization, a data manager, data samples.

/// The data manager the fixtures register.
pub const DM_KEY: &str = "00000000-0000-4000-8000-0000000000d1";

/// A valid asset key (UUID layout) made from a number.
pub fn uuid(n: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", n >> 48, n & 0xffff_ffff_ffff)
}

/// A valid public data manager with key `key`.
pub fn new_data_manager(key: &str) -> orchestrator_proto::NewDataManager {
    use orchestrator_proto::{Addressable, NewDataManager, NewPermissions};
    let addressable = |n: u32| Addressable {
        checksum: "a".repeat(64),
        storage_address: format!("http://backend.org-1:8000/api/datamanager/{n}/"),
    };
    NewDataManager {
        key: key.to_owned(),
        name: "fixture".to_owned(),
        new_permissions: Some(NewPermissions { public: true, authorized_ids: vec![] }),
        description: Some(addressable(1)),
        opener: Some(addressable(2)),
        logs_permission: Some(NewPermissions { public: true, authorized_ids: vec![] }),
        ..Default::default()
    }
}

/// Samples `uuid(first)` .. `uuid(first + count - 1)` of [`DM_KEY`].
pub fn new_samples(first: u64, count: u64) -> orchestrator_proto::RegisterDataSamplesParam {
    orchestrator_proto::RegisterDataSamplesParam {
        samples: (first..first + count)
            .map(|n| orchestrator_proto::NewDataSample {
                key: uuid(n),
                data_manager_keys: vec![DM_KEY.to_owned()],
                test_only: false,
                checksum: "b".repeat(64),
            })
            .collect(),
    }
}

/// A client whose requests carry `mspid` and `channel`.
pub type Client = InterceptedService<Channel, Headers>;

/// A connection that sends message bytes as they are, whose requests carry `mspid` and
/// `channel` (the benchmarks send the same bytes to every orchestrator they compare).
#[derive(Clone)]
pub struct RawCaller {
    /// Which orchestrator it calls, for panic messages.
    side: &'static str,
    grpc: tonic::client::Grpc<Client>,
}

impl RawCaller {
    /// Largest response it decodes (a QueryTasks page of 5,000 tasks is a few MiB).
    pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

    /// A new connection to `addr`, as `msp` on `channel`; each call fails after `timeout`.
    pub async fn connect(side: &'static str, addr: SocketAddr, msp: &str, channel: &str, timeout: Duration) -> Self {
        let endpoint = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{side}: connect to {addr}: {e}"));
        let service = InterceptedService::new(endpoint, Headers::new(&[("mspid", msp), ("channel", channel)]));
        Self { side, grpc: tonic::client::Grpc::new(service).max_decoding_message_size(Self::MAX_MESSAGE) }
    }

    /// Sends `body` to `orchestrator.<method>`.
    pub async fn call(&mut self, method: &str, body: Vec<u8>) -> Result<Bytes, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(format!("client not ready: {e}")))?;
        let path = http::uri::PathAndQuery::try_from(format!("/orchestrator.{method}")).expect("path");
        self.grpc.unary(Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
    }

    /// Sends `message` to `orchestrator.<method>`; a failure is fatal (setup calls).
    pub async fn must<M: prost::Message>(&mut self, method: &str, message: &M) -> Bytes {
        let side = self.side;
        self.call(method, message.encode_to_vec()).await.unwrap_or_else(|s| panic!("{side}: {method}: {s:?}"))
    }

    /// Opens a SubscribeToEvents stream that starts after event `start`.
    pub async fn subscribe(&mut self, start: &str) -> Result<tonic::Streaming<Bytes>, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(format!("client not ready: {e}")))?;
        let body = prost::Message::encode_to_vec(&orchestrator_proto::SubscribeToEventsParam {
            start_event_id: start.to_owned(),
        });
        let path = http::uri::PathAndQuery::from_static("/orchestrator.EventService/SubscribeToEvents");
        self.grpc.server_streaming(Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
    }
}

/// Registers the client's organization and the data manager [`DM_KEY`].
pub async fn register_org_and_data_manager(client: Client) {
    use orchestrator_proto::data_manager_service_client::DataManagerServiceClient;
    use orchestrator_proto::organization_service_client::OrganizationServiceClient;
    OrganizationServiceClient::new(client.clone())
        .register_organization(orchestrator_proto::RegisterOrganizationParam { address: String::new() })
        .await
        .expect("RegisterOrganization");
    DataManagerServiceClient::new(client)
        .register_data_manager(new_data_manager(DM_KEY))
        .await
        .expect("RegisterDataManager");
}

/// The `p` quantile (0..=1) of sorted durations (benches).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The `chaincode` binary next to the running test's directory (`target/<profile>/chaincode`),
/// for the tests on a real Fabric network (`cargo test --workspace` builds it).
pub fn chaincode_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let binary = profile_dir.join("chaincode");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p orchestrator-host-fabric --bin chaincode` (cargo test --workspace builds it)",
        binary.display()
    );
    binary
}

// ---------------------------------------------------------------------------------------------
// Logic components for the hot-swap tests and bench.

/// A valid component of no world (the 8-byte header of an empty component): it compiles and
/// instantiates, but exports nothing.
pub const EMPTY_COMPONENT: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// The embedded component made a second, different one without a second build: a custom
/// section changes its sha256 and nothing it does. Always the same bytes, so the precompiled
/// cache serves it after its first compilation.
pub fn variant_component() -> Vec<u8> {
    orchestrator_fabric_testing::component::variant(b"B")
}

/// Lowercase hex sha256 of `bytes`, as QueryVersion's `logic_sha256` names a component.
pub fn sha256_of(bytes: &[u8]) -> String {
    orchestrator_runtime::identity::sha256_hex(bytes)
}

/// Writes `bytes` to `path` as a deploy should: a new file renamed over the old one, so a
/// reader sees the old bytes or the new ones, never a mix.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, bytes).expect("write the staged file");
    std::fs::rename(&staged, path).expect("rename it into place");
}

/// A duration as the benchmarks print it: seconds from 1 s, milliseconds below it (two
/// decimals under 10 ms).
pub fn fmt_duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}
