//! Events after commit, against the real PostgreSQL and RabbitMQ: per-channel positions, the
//! relay (order, content, broker outage, killed process), queue isolation per organization,
//! and SubscribeToEvents (replay then live, no gap, no duplicate).
//!
//! Each test has its own database, and on the broker its own exchange and queue prefix, deleted
//! at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use lapin::options::{BasicConsumeOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use orchestrator_host_standalone::Config;
use orchestrator_host_standalone::channels::ChannelConfig;
use orchestrator_host_standalone::events::json::EventJson;
use orchestrator_host_standalone::events::topology::Topology;
use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
use orchestrator_proto::event_service_client::EventServiceClient;
use orchestrator_proto::organization_service_client::OrganizationServiceClient;
use orchestrator_proto::{RegisterOrganizationParam, SubscribeToEventsParam};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
use common::{Client, Orchestrator, register_org_and_data_manager};

async fn register_samples(
    client: &mut DataSampleServiceClient<Client>,
    first: u64,
    count: u64,
) -> Result<(), tonic::Status> {
    client.register_data_samples(common::new_samples(first, count)).await.map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// The database side: what was committed, in channel order.

/// Every committed event of `channel`, by position.
async fn committed_events(pool: &PgPool, channel: &str) -> Vec<(String, Vec<u8>)> {
    let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT channel_position, event_id, payload FROM events WHERE channel = $1 ORDER BY channel_position",
    )
    .bind(channel)
    .fetch_all(pool)
    .await
    .expect("events");
    // Gap-free: 1, 2, 3, ...
    for (i, (position, _, _)) in rows.iter().enumerate() {
        assert_eq!(*position, i as i64 + 1, "positions of {channel} have a gap");
    }
    rows.into_iter().map(|(_, id, payload)| (id, payload)).collect()
}

// ---------------------------------------------------------------------------------------------
// The broker side.

/// An exchange and queues of this test's own on the local RabbitMQ.
struct Broker {
    connection: Connection,
    channel: lapin::Channel,
    topology: Topology,
    prefix: String,
}

/// One message as a consumer saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    routing_key: String,
    body: serde_json::Value,
}

impl Broker {
    async fn new(channel_config: &Path) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let exchange = format!("test.orchestrator.{id}");
        let prefix = format!("test.{id}.");
        let config = ChannelConfig::from_file(channel_config).expect("channel config");
        let topology = Topology::new(&exchange, &config, Some(&prefix));
        let connection =
            Connection::connect(AMQP, ConnectionProperties::default()).await.expect("RabbitMQ on 127.0.0.1:5672");
        let channel = connection.create_channel().await.expect("AMQP channel");
        // Declared before the server starts, so consumers can attach at once; the relay's own
        // declaration is then a no-op.
        topology.declare(&channel).await.expect("declare");
        Self { connection, channel, topology, prefix }
    }

    fn configure(&self, config: &mut Config, url: &str) {
        config.amqp_enabled = true;
        config.amqp_url = url.to_owned();
        config.amqp_exchange = self.topology.exchange.clone();
        config.amqp_queue_prefix = self.prefix.clone();
        config.amqp_reconnect_delay = Duration::from_millis(200);
    }

    async fn consumer(&self, org: &str) -> Consumer {
        let inner = self
            .channel
            .basic_consume(
                format!("{}{org}", self.prefix).as_str().into(),
                format!("test-{org}").as_str().into(),
                BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Consumer { inner, received: Vec::new() }
    }

    async fn cleanup(self) {
        for queue in &self.topology.queues {
            self.channel
                .queue_delete(queue.queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .expect("delete queue");
        }
        self.channel
            .exchange_delete(self.topology.exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete exchange");
        self.connection.close(200, "done".into()).await.ok();
    }
}

struct Consumer {
    inner: lapin::Consumer,
    received: Vec<Received>,
}

impl Consumer {
    /// Receives until `done` holds or `timeout` passes; returns whether `done` held.
    async fn until(&mut self, timeout: Duration, mut done: impl FnMut(&[Received]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.received) {
            let Ok(next) = tokio::time::timeout_at(deadline, self.inner.next()).await else {
                return false;
            };
            let delivery = next.expect("consumer open").expect("delivery");
            assert_eq!(
                delivery.properties.content_type().as_ref().map(|c| c.as_str().to_owned()).as_deref(),
                Some("application/json")
            );
            assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
            let id = delivery.properties.message_id().as_ref().expect("message id").as_str().to_owned();
            let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("JSON body");
            assert_eq!(body["id"], id.as_str(), "message id is the event id");
            self.received.push(Received { id, routing_key: delivery.routing_key.as_str().to_owned(), body });
        }
        true
    }

    /// Receives every committed event (duplicates allowed), within `timeout`.
    async fn all_of(&mut self, committed: &[(String, Vec<u8>)], timeout: Duration) {
        let wanted: HashSet<&str> = committed.iter().map(|(id, _)| id.as_str()).collect();
        let complete = self
            .until(timeout, |received| {
                let got: HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
                wanted.is_subset(&got)
            })
            .await;
        let got: HashSet<&str> = self.received.iter().map(|r| r.id.as_str()).collect();
        assert!(complete, "{} of {} events received", wanted.intersection(&got).count(), wanted.len());
    }
}

/// The received messages, deduplicated by id, are exactly the committed events in order, with
/// the reference's JSON body. Returns the number of duplicates.
fn assert_delivered(received: &[Received], committed: &[(String, Vec<u8>)], channel: &str) -> usize {
    let json = EventJson::new(orchestrator_proto::FILE_DESCRIPTOR_SET).expect("descriptor");
    let mut seen = HashSet::new();
    let firsts: Vec<&Received> = received.iter().filter(|r| seen.insert(r.id.clone())).collect();
    let received_ids: Vec<&str> = firsts.iter().map(|r| r.id.as_str()).collect();
    let committed_ids: Vec<&str> = committed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(received_ids, committed_ids, "events of {channel}: same events, same order");
    for (message, (_, payload)) in firsts.iter().zip(committed) {
        let expected: serde_json::Value = serde_json::from_slice(&json.encode(payload).expect("encode")).expect("json");
        assert_eq!(message.body, expected);
        assert_eq!(message.routing_key, channel);
        assert_eq!(message.body["channel"], channel);
    }
    received.len() - firsts.len()
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of the broker, to cut the relay's connection.

#[derive(Clone)]
struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    /// While set, bytes from the broker are held back: publishes get through, confirms do not.
    hold_replies: Arc<AtomicBool>,
}

#[derive(Default)]
struct ProxyState {
    open: bool,
    links: Vec<JoinHandle<()>>,
    /// One per link: while set, the link holds every byte, both ways, and stays open.
    stalls: Vec<Arc<AtomicBool>>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState { open: true, ..ProxyState::default() }));
        let accept_state = Arc::clone(&state);
        let hold_replies = Arc::new(AtomicBool::new(false));
        let hold = Arc::clone(&hold_replies);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = accept_state.lock().unwrap();
                if !state.open {
                    drop(inbound); // refused while cut
                    continue;
                }
                let hold = Arc::clone(&hold);
                let stall = Arc::new(AtomicBool::new(false));
                state.stalls.push(Arc::clone(&stall));
                state.links.push(tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else { return };
                    let (mut from_client, mut to_client) = inbound.split();
                    let (mut from_broker, mut to_broker) = outbound.into_split();
                    let never = AtomicBool::new(false);
                    let up = forward(&mut from_client, &mut to_broker, &never, &stall);
                    let down = forward(&mut from_broker, &mut to_client, &hold, &stall);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                }));
            }
        });
        Self { addr, state, hold_replies }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.open = false;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.state.lock().unwrap().open = true;
    }

    /// The connections open now stop passing bytes but stay open (a stalled or half-open
    /// broker); new connections pass as before.
    fn stall_existing(&self) {
        for stall in &self.state.lock().unwrap().stalls {
            stall.store(true, Ordering::Relaxed);
        }
    }
}

/// Copies `from` to `to`, holding each chunk while `hold` or `stall` is set.
async fn forward(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    hold: &AtomicBool,
    stall: &AtomicBool,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        while hold.load(Ordering::Relaxed) || stall.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

async fn relay_health(server: &TestServer) -> (i32, i32) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut health = HealthClient::new(server.channel().await);
    let api = health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner().status;
    let relay = health
        .check(HealthCheckRequest { service: orchestrator_host_standalone::events::relay::HEALTH_SERVICE.to_owned() })
        .await
        .expect("relay health")
        .into_inner()
        .status;
    (api, relay)
}

async fn wait_relay_health(server: &TestServer, wanted: tonic_health::ServingStatus) {
    let wanted = match wanted {
        tonic_health::ServingStatus::Serving => 1,
        tonic_health::ServingStatus::NotServing => 2,
        tonic_health::ServingStatus::Unknown => 0,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (api, relay) = relay_health(server).await;
        assert_eq!(api, 1, "the API stays SERVING whatever the broker does");
        if relay == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "relay health stayed {relay}, wanted {wanted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relayed_events_match_the_committed_ones_in_order() {
    let broker = Broker::new(&common::channel_config_path()).await;
    let server = TestServer::start_with(|c| broker.configure(c, AMQP)).await;
    let mut org2 = broker.consumer("MyOrg2MSP").await;
    let client = server.client("MyOrg1MSP", "mychannel").await;
    register_org_and_data_manager(client.clone()).await;
    let mut samples = DataSampleServiceClient::new(client);
    // Concurrent writers on one channel: positions still gap-free, order = position order.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let mut samples = samples.clone();
        writers.push(tokio::spawn(async move {
            for call in 0..5u64 {
                register_samples(&mut samples, (w << 32) + call * 100, 20).await.expect("RegisterDataSamples");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    register_samples(&mut samples, 1 << 40, 1).await.expect("one more");
    let committed = committed_events(&server.pool, "mychannel").await;
    assert_eq!(committed.len(), 2 + 4 * 5 * 20 + 1);
    org2.all_of(&committed, Duration::from_secs(30)).await;
    let duplicates = assert_delivered(&org2.received, &committed, "mychannel");
    assert_eq!(duplicates, 0, "no duplicate without a failure");
    // Progress is recorded once confirmed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let confirmed: Option<i64> =
            sqlx::query_scalar("SELECT confirmed_position FROM relay_progress WHERE channel = 'mychannel'")
                .fetch_optional(&server.pool)
                .await
                .expect("progress");
        if confirmed == Some(committed.len() as i64) {
            break;
        }
        assert!(Instant::now() < deadline, "relay progress {confirmed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = server.relay_stats.clone().expect("relay on");
    assert_eq!(stats.returned.load(Ordering::Relaxed), 0);
    server.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_see_only_their_channels() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let config_path = dir.join(format!("channels-{}.yaml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config_path, "channels:\n  alpha: [AlphaMSP, SharedMSP]\n  beta: [BetaMSP, SharedMSP]\n")
        .expect("write channel config");
    let broker = Broker::new(&config_path).await;
    let server = TestServer::start_with(|c| {
        c.channel_config = Some(config_path.clone());
        broker.configure(c, AMQP);
    })
    .await;
    let mut alpha = broker.consumer("AlphaMSP").await;
    let mut beta = broker.consumer("BetaMSP").await;
    let mut shared = broker.consumer("SharedMSP").await;
    for (org, channel, first) in [("AlphaMSP", "alpha", 1_000u64), ("BetaMSP", "beta", 2_000)] {
        let client = server.client(org, channel).await;
        register_org_and_data_manager(client.clone()).await;
        register_samples(&mut DataSampleServiceClient::new(client), first, 10).await.expect("samples");
    }
    let on_alpha = committed_events(&server.pool, "alpha").await;
    let on_beta = committed_events(&server.pool, "beta").await;
    alpha.all_of(&on_alpha, Duration::from_secs(30)).await;
    beta.all_of(&on_beta, Duration::from_secs(30)).await;
    let both: Vec<(String, Vec<u8>)> = on_alpha.iter().chain(&on_beta).cloned().collect();
    shared.all_of(&both, Duration::from_secs(30)).await;
    // Nothing else arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!alpha.until(Duration::from_millis(300), |r| r.len() > on_alpha.len()).await);
    assert!(!beta.until(Duration::from_millis(300), |r| r.len() > on_beta.len()).await);
    assert_eq!(assert_delivered(&alpha.received, &on_alpha, "alpha"), 0);
    assert_eq!(assert_delivered(&beta.received, &on_beta, "beta"), 0);
    let shared_alpha: Vec<Received> = shared.received.iter().filter(|r| r.routing_key == "alpha").cloned().collect();
    let shared_beta: Vec<Received> = shared.received.iter().filter(|r| r.routing_key == "beta").cloned().collect();
    assert_delivered(&shared_alpha, &on_alpha, "alpha");
    assert_delivered(&shared_beta, &on_beta, "beta");
    server.stop().await;
    broker.cleanup().await;
    std::fs::remove_file(config_path).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_loses_nothing() {
    let broker = Broker::new(&common::channel_config_path()).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let server = TestServer::start_with(|c| broker.configure(c, &proxy.url())).await;
    let mut consumer = broker.consumer("MyOrg1MSP").await;
    let client = server.client("MyOrg1MSP", "mychannel").await;
    register_org_and_data_manager(client.clone()).await;
    wait_relay_health(&server, tonic_health::ServingStatus::Serving).await;
    let mut samples = DataSampleServiceClient::new(client);
    let mut next = 10_000u64;
    for _ in 0..10 {
        register_samples(&mut samples, next, 20).await.expect("before the outage");
        next += 100;
    }
    proxy.cut();
    // Requests keep succeeding; the relay reports itself degraded, the API does not.
    for _ in 0..10 {
        register_samples(&mut samples, next, 20).await.expect("during the outage");
        next += 100;
    }
    wait_relay_health(&server, tonic_health::ServingStatus::NotServing).await;
    for _ in 0..5 {
        register_samples(&mut samples, next, 20).await.expect("during the outage");
        next += 100;
    }
    proxy.restore();
    for _ in 0..5 {
        register_samples(&mut samples, next, 20).await.expect("after the outage");
        next += 100;
    }
    wait_relay_health(&server, tonic_health::ServingStatus::Serving).await;
    let committed = committed_events(&server.pool, "mychannel").await;
    assert_eq!(committed.len(), 2 + 30 * 20);
    consumer.all_of(&committed, Duration::from_secs(60)).await;
    let duplicates = assert_delivered(&consumer.received, &committed, "mychannel");
    let stats = server.relay_stats.clone().expect("relay on");
    assert!(stats.connects.load(Ordering::Relaxed) >= 2, "the relay reconnected");
    eprintln!("broker outage: {} events, {duplicates} duplicates", committed.len());
    server.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_broker_is_noticed_within_the_confirm_timeout() {
    const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);
    let broker = Broker::new(&common::channel_config_path()).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let server = TestServer::start_with(|c| {
        broker.configure(c, &proxy.url());
        c.amqp_confirm_timeout = CONFIRM_TIMEOUT;
        // Long enough that only the confirm timeout can catch the stall within this test.
        c.amqp_heartbeat = Duration::from_secs(120);
        c.metrics_enabled = true;
        c.metrics_addr = ([127, 0, 0, 1], 0).into();
    })
    .await;
    let mut consumer = broker.consumer("MyOrg1MSP").await;
    let client = server.client("MyOrg1MSP", "mychannel").await;
    register_org_and_data_manager(client.clone()).await;
    wait_relay_health(&server, tonic_health::ServingStatus::Serving).await;
    let mut samples = DataSampleServiceClient::new(client);
    register_samples(&mut samples, 20_000, 10).await.expect("before the stall");
    consumer.all_of(&committed_events(&server.pool, "mychannel").await, Duration::from_secs(30)).await;

    // The relay's connection stays open but nothing passes: no error, no close, no confirm.
    proxy.stall_existing();
    let stalled = Instant::now();
    register_samples(&mut samples, 20_100, 10).await.expect("requests do not wait for the broker");
    wait_relay_health(&server, tonic_health::ServingStatus::NotServing).await;
    let noticed = stalled.elapsed();
    assert!(noticed < CONFIRM_TIMEOUT * 8, "stall noticed after {noticed:?}");
    assert!(relay_lag(&server).await > 0, "events wait for the broker, the lag says so");
    // A new connection passes: the relay reconnects and delivers what waited.
    wait_relay_health(&server, tonic_health::ServingStatus::Serving).await;
    let committed = committed_events(&server.pool, "mychannel").await;
    assert_eq!(committed.len(), 2 + 20);
    consumer.all_of(&committed, Duration::from_secs(30)).await;
    assert_delivered(&consumer.received, &committed, "mychannel");
    let stats = server.relay_stats.clone().expect("relay on");
    assert!(stats.connects.load(Ordering::Relaxed) >= 2, "the relay reconnected");
    let caught_up = Instant::now() + Duration::from_secs(30);
    while relay_lag(&server).await != 0 {
        assert!(Instant::now() < caught_up, "the relay's lag never went back to 0");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("stalled broker noticed after {noticed:?}");
    server.stop().await;
    broker.cleanup().await;
}

/// `orc_event_relay_lag` of mychannel, scraped.
async fn relay_lag(server: &TestServer) -> i64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.metrics_addr.expect("metrics on")).await.expect("connect");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix("orc_event_relay_lag{channel=\"mychannel\"} "))
        .unwrap_or_else(|| panic!("no lag of mychannel in\n{text}"))
        .parse()
        .expect("a number")
}

/// The broker-confirmed position of mychannel, as the relay recorded it.
async fn confirmed_position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(confirmed_position), 0) FROM relay_progress WHERE channel = 'mychannel'")
        .fetch_one(pool)
        .await
        .expect("progress")
}

/// The real binary relaying to `amqp_url` with the broker's exchange and queues.
async fn spawn_orchestrator(db_url: &str, broker: &Broker, amqp_url: &str) -> Orchestrator {
    Orchestrator::spawn(
        db_url,
        &[
            ("ORCHESTRATOR_AMQP_URL", amqp_url),
            ("ORCHESTRATOR_AMQP_EXCHANGE", &broker.topology.exchange),
            ("ORCHESTRATOR_AMQP_QUEUE_PREFIX", &broker.prefix),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_orchestrator_republishes_the_unconfirmed_tail() {
    let broker = Broker::new(&common::channel_config_path()).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let db_url = format!("{}/orch_test_{}", common::PG_SERVER, uuid::Uuid::new_v4().simple());
    let mut consumer = broker.consumer("MyOrg2MSP").await;
    let pool_of =
        || async { sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&db_url).await.expect("pool") };

    // The first process relays through the proxy.
    let first = spawn_orchestrator(&db_url, &broker, &proxy.url()).await;
    let client = first.client().await;
    register_org_and_data_manager(client.clone()).await;
    let mut samples = DataSampleServiceClient::new(client);
    let mut next = 1u64;
    for _ in 0..5 {
        register_samples(&mut samples, next, 50).await.expect("before the hold");
        next += 100;
    }
    let pool = pool_of().await;
    let so_far = committed_events(&pool, "mychannel").await;
    consumer.all_of(&so_far, Duration::from_secs(60)).await;
    // The relay has its confirms for all of them (else it would wait for one while held).
    let deadline = Instant::now() + Duration::from_secs(30);
    while confirmed_position(&pool).await < so_far.len() as i64 {
        assert!(Instant::now() < deadline, "the relay never recorded its confirms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Publishes still reach the broker (and the consumer), confirms do not reach the relay.
    proxy.hold_replies.store(true, Ordering::Relaxed);
    let before = consumer.received.len();
    for _ in 0..10 {
        register_samples(&mut samples, next, 50).await.expect("while confirms are held");
        next += 100;
    }
    let held = committed_events(&pool, "mychannel").await;
    // The relay publishes what is numbered, then waits for its confirms: the consumer gets the
    // first held events (perhaps already while the calls ran), the relay never hears they
    // arrived.
    assert!(consumer.until(Duration::from_secs(30), |r| r.len() > before).await, "held events reach the broker");
    let confirmed = confirmed_position(&pool).await;
    assert!(confirmed < held.len() as i64, "a tail is published but unconfirmed ({confirmed} of {})", held.len());
    // SIGKILL with that tail unconfirmed.
    first.kill();
    proxy.hold_replies.store(false, Ordering::Relaxed);

    let second = spawn_orchestrator(&db_url, &broker, AMQP).await;
    let mut samples = DataSampleServiceClient::new(second.client().await);
    for _ in 0..5 {
        register_samples(&mut samples, next, 50).await.expect("after the restart");
        next += 100;
    }
    let committed = committed_events(&pool, "mychannel").await;
    assert_eq!(committed.len(), 2 + 20 * 50);
    consumer.all_of(&committed, Duration::from_secs(60)).await;
    let duplicates = assert_delivered(&consumer.received, &committed, "mychannel");
    assert!(duplicates > 0, "the unconfirmed tail was published again");
    assert!(duplicates <= held.len() - confirmed as usize, "only the unconfirmed tail is republished");
    eprintln!("killed orchestrator: {} events, {duplicates} republished", committed.len());
    second.kill();
    pool.close().await;
    orchestrator_host_standalone::postgres::drop_database(&db_url).await.expect("drop database");
    broker.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// SubscribeToEvents.

async fn next_events(stream: &mut tonic::Streaming<orchestrator_proto::Event>, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events streamed", ids.len()))
            .expect("stream")
            .expect("stream open");
        ids.push(event.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_sees_replay_then_live_without_gap() {
    let server = TestServer::start().await;
    let client = server.client("MyOrg1MSP", "mychannel").await;
    register_org_and_data_manager(client.clone()).await;
    let samples = DataSampleServiceClient::new(client.clone());
    let writer = tokio::spawn(async move {
        let mut samples = samples;
        for call in 0..40u64 {
            register_samples(&mut samples, 1 + call * 100, 10).await.expect("RegisterDataSamples");
        }
    });
    // Subscribe while the writer runs: part replay, part live.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut events = EventServiceClient::new(client.clone());
    let mut stream = events
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: String::new() })
        .await
        .expect("subscribe")
        .into_inner();
    writer.await.expect("writer");
    let committed = committed_events(&server.pool, "mychannel").await;
    assert_eq!(committed.len(), 2 + 40 * 10);
    let streamed = next_events(&mut stream, committed.len()).await;
    let expected: Vec<String> = committed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(streamed, expected, "every event once, in channel order");
    // Nothing more until something is written; then exactly that.
    assert!(tokio::time::timeout(Duration::from_millis(300), stream.message()).await.is_err(), "no extra event");
    let mut samples = DataSampleServiceClient::new(client.clone());
    register_samples(&mut samples, 1 << 40, 3).await.expect("one more call");
    let live = next_events(&mut stream, 3).await;
    let committed = committed_events(&server.pool, "mychannel").await;
    assert_eq!(live, committed[committed.len() - 3..].iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());

    // From a start event: strictly after it.
    let start = &committed[100].0;
    let mut from = EventServiceClient::new(client.clone())
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: start.clone() })
        .await
        .expect("subscribe from an event")
        .into_inner();
    let after = next_events(&mut from, committed.len() - 101).await;
    assert_eq!(after, committed[101..].iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());

    // Only the caller's channel: yourchannel's stream sees yourchannel's one event.
    let yours = server.client("MyOrg1MSP", "yourchannel").await;
    let mut on_yours = EventServiceClient::new(yours.clone())
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: String::new() })
        .await
        .expect("subscribe yourchannel")
        .into_inner();
    OrganizationServiceClient::new(yours)
        .register_organization(RegisterOrganizationParam { address: String::new() })
        .await
        .expect("register on yourchannel");
    let event = tokio::time::timeout(Duration::from_secs(10), on_yours.message()).await.expect("event").expect("ok");
    let event = event.expect("open");
    assert_eq!(event.channel, "yourchannel");
    assert!(tokio::time::timeout(Duration::from_millis(300), on_yours.message()).await.is_err(), "one event only");
    // A start event of another channel is unknown here.
    let status = EventServiceClient::new(server.client("MyOrg1MSP", "yourchannel").await)
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: start.clone() })
        .await
        .expect_err("event of mychannel");
    assert_eq!(status.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_are_gap_free_per_channel_under_concurrent_writers() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for (org, channel) in [("MyOrg1MSP", "mychannel"), ("MyOrg1MSP", "yourchannel")] {
        let client = server.client(org, channel).await;
        register_org_and_data_manager(client.clone()).await;
        for w in 0..3u64 {
            let mut samples = DataSampleServiceClient::new(client.clone());
            tasks.push(tokio::spawn(async move {
                for call in 0..10u64 {
                    register_samples(&mut samples, (w << 32) + call * 100, 5).await.expect("samples");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("writer");
    }
    // `committed` asserts 1..n on each channel; each call's events stay contiguous (a call's
    // events share its transaction time).
    for channel in ["mychannel", "yourchannel"] {
        let events = committed_events(&server.pool, channel).await;
        assert_eq!(events.len(), 2 + 3 * 10 * 5);
        let txs: Vec<i64> =
            sqlx::query_scalar("SELECT ts_micros FROM events WHERE channel = $1 ORDER BY channel_position")
                .bind(channel)
                .fetch_all(&server.pool)
                .await
                .expect("txs");
        let mut runs = txs.clone();
        runs.dedup();
        let distinct: HashSet<&i64> = txs.iter().collect();
        assert_eq!(runs.len(), distinct.len(), "a transaction's events are contiguous on {channel}");
    }
    server.stop().await;
}

/// Start ids that cannot exist (NUL, which PostgreSQL text cannot take; 1 MiB) are NOT_FOUND,
/// quoted back cut.
#[tokio::test]
async fn unknown_start_ids_are_not_found() {
    let server = TestServer::start().await;
    let client = server.client("MyOrg1MSP", "mychannel").await;
    register_org_and_data_manager(client.clone()).await;
    for start in ["a\0b".to_owned(), "e".repeat(1 << 20), "no-such-event".to_owned()] {
        let status = EventServiceClient::new(client.clone())
            .subscribe_to_events(SubscribeToEventsParam { start_event_id: start.clone() })
            .await
            .expect_err("no such event");
        assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());
        assert!(status.message().len() < 400, "quoted cut: {} bytes", status.message().len());
    }
}
