//! Events after commit, against the real PostgreSQL and RabbitMQ:
//! - relay throughput (outbox → broker, publisher confirms, pipelined) next to a plain lapin
//!   publisher sending the same bodies with the same confirm window (the ratio);
//! - commit-to-consumer latency through the broker while writers run;
//! - 1,000 live events fanned out to 10 SubscribeToEvents streams.
//!
//! `cargo bench -p orchestrator-host-standalone --bench events`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, DM_KEY, TestServer, new_samples as samples, percentile, uuid};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use orchestrator_host_standalone::channels::ChannelConfig;
use orchestrator_host_standalone::events::EventHub;
use orchestrator_host_standalone::events::json::EventJson;
use orchestrator_host_standalone::events::relay::{Relay, RelayConfig};
use orchestrator_host_standalone::events::topology::Topology;
use orchestrator_host_standalone::postgres;
use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
use orchestrator_proto::event_service_client::EventServiceClient;
use orchestrator_proto::{AssetKind, DataSample, Event, EventKind, SubscribeToEventsParam, event};
use prost::Message;
use tokio_stream::StreamExt;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const ORG: &str = "MyOrg1MSP";
const CHANNEL: &str = "mychannel";
const RELAY_EVENTS: usize = 20_000;
const LOAD_WRITERS: usize = 4;
const LOAD_SECONDS: u64 = 5;
const SUBSCRIBERS: usize = 10;
const LIVE_EVENTS: usize = 1_000;

fn sample_event(n: u64) -> Event {
    let key = uuid(n);
    Event {
        id: uuid(n | (1 << 60)),
        asset_key: key.clone(),
        asset_kind: AssetKind::AssetDataSample as i32,
        event_kind: EventKind::EventAssetCreated as i32,
        channel: CHANNEL.to_owned(),
        timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        metadata: Default::default(),
        asset: Some(event::Asset::DataSample(DataSample {
            key,
            data_manager_keys: vec![DM_KEY.to_owned()],
            owner: ORG.to_owned(),
            test_only: false,
            checksum: "b".repeat(64),
            creation_date: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        })),
    }
}

struct Broker {
    connection: Connection,
    channel: lapin::Channel,
    topology: Topology,
    prefix: String,
}

impl Broker {
    async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("bench.{id}.");
        let config = ChannelConfig::from_yaml(&format!("channels:\n  {CHANNEL}: [{ORG}]\n"), "bench").unwrap();
        let topology = Topology::new(&format!("bench.orchestrator.{id}"), &config, Some(&prefix));
        let connection = Connection::connect(AMQP, ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        Self { connection, channel, topology, prefix }
    }

    fn queue(&self) -> String {
        format!("{}{ORG}", self.prefix)
    }

    async fn purge(&self) {
        self.channel.queue_purge(self.queue().as_str().into(), QueuePurgeOptions::default()).await.unwrap();
    }

    async fn cleanup(self) {
        // The latency run declares the queues of the bundled channel configuration too.
        let bundled =
            ChannelConfig::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/channels.yaml").as_ref()).unwrap();
        for queue in Topology::new("", &bundled, Some(&self.prefix)).queues {
            self.channel.queue_delete(queue.queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        }
        self.channel
            .exchange_delete(self.topology.exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        self.connection.close(200, "done".into()).await.ok();
    }
}

/// The relay alone: a filled outbox drained to the broker, next to plain lapin.
async fn relay_throughput(broker: &Broker) {
    let db_url = format!("{}/orch_bench_{}", common::PG_SERVER, uuid::Uuid::new_v4().simple());
    let pool = postgres::connect(&db_url, 8).await.unwrap();
    let hub = EventHub::new(pool.clone());
    let hub_tasks = hub.start();
    let events: Vec<Event> = (1..=RELAY_EVENTS as u64).map(sample_event).collect();
    for chunk in events.chunks(1_000) {
        let ids: Vec<String> = chunk.iter().map(|e| e.id.clone()).collect();
        let payloads: Vec<Vec<u8>> = chunk.iter().map(Message::encode_to_vec).collect();
        sqlx::query(
            "INSERT INTO events (channel, event_id, payload) SELECT $1, e.id, e.payload \
             FROM UNNEST($2::text[], $3::bytea[]) WITH ORDINALITY AS e(id, payload, n) ORDER BY e.n",
        )
        .bind(CHANNEL)
        .bind(ids)
        .bind(payloads)
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut head = hub.head(CHANNEL);
    while *head.borrow_and_update() < RELAY_EVENTS as i64 {
        head.changed().await.unwrap();
    }

    let config = RelayConfig { url: AMQP.to_owned(), ..RelayConfig::default() };
    let window = config.window;
    let relay = Relay::new(Arc::clone(&hub), config, broker.topology.clone(), None).unwrap();
    let stats = relay.stats();
    let started = Instant::now();
    let task = tokio::spawn(relay.run());
    while stats.confirmed.load(Ordering::Relaxed) < RELAY_EVENTS as u64 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let relay_time = started.elapsed();
    task.abort();
    broker.purge().await;

    // Plain lapin: the same bodies (encoded beforehand), the same confirm window.
    let json = EventJson::new(orchestrator_proto::FILE_DESCRIPTOR_SET).unwrap();
    let bodies: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| (e.id.clone(), json.encode(&e.encode_to_vec()).unwrap())).collect();
    let connection = Connection::connect(AMQP, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let started = Instant::now();
    let mut in_flight = VecDeque::new();
    for (id, body) in &bodies {
        let confirm = channel
            .basic_publish(
                broker.topology.exchange.as_str().into(),
                CHANNEL.into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into()),
            )
            .await
            .unwrap();
        in_flight.push_back(confirm);
        while in_flight.len() >= window {
            assert!(in_flight.pop_front().unwrap().await.unwrap().is_ack());
        }
    }
    while let Some(confirm) = in_flight.pop_front() {
        assert!(confirm.await.unwrap().is_ack());
    }
    let plain_time = started.elapsed();
    connection.close(200, "done".into()).await.ok();
    broker.purge().await;

    let rate = |t: Duration| RELAY_EVENTS as f64 / t.as_secs_f64();
    println!(
        "  relay, outbox → broker with confirms: {RELAY_EVENTS} events in {relay_time:.2?}  {:>8.0} events/s",
        rate(relay_time)
    );
    println!(
        "    plain lapin publisher, same bodies, same window of {window}: {plain_time:.2?}  {:>8.0} events/s   ratio {:.2}x",
        rate(plain_time),
        relay_time.as_secs_f64() / plain_time.as_secs_f64()
    );
    drop(hub_tasks);
    pool.close().await;
    postgres::drop_database(&db_url).await.unwrap();
}

async fn setup(server: &TestServer) -> Client {
    let client = server.client(ORG, CHANNEL).await;
    common::register_org_and_data_manager(client.clone()).await;
    client
}

/// When each sample's call returned (its commit, as the client saw it).
type Committed = Arc<Mutex<HashMap<String, Instant>>>;

fn latencies(committed: &Committed, received: &[(String, Instant)]) -> Vec<Duration> {
    let committed = committed.lock().unwrap();
    let mut out: Vec<Duration> =
        received.iter().filter_map(|(key, at)| committed.get(key).map(|c| at.saturating_duration_since(*c))).collect();
    out.sort();
    out
}

/// Writers on the API while a consumer reads the broker: response → consumer latency.
async fn broker_latency(broker: &Broker) {
    let server = TestServer::start_with(|c| {
        c.amqp_enabled = true;
        c.amqp_url = AMQP.to_owned();
        c.amqp_exchange = broker.topology.exchange.clone();
        c.amqp_queue_prefix = broker.prefix.clone();
        c.channel_config = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/channels.yaml").into());
    })
    .await;
    let client = setup(&server).await;
    let mut consumer = broker
        .channel
        .basic_consume(
            broker.queue().as_str().into(),
            "bench".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The consumer reads while the writers write, stamping each message as it arrives.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut received: Vec<(String, Instant)> = Vec::new();
        loop {
            let wanted = *stop_rx.borrow();
            if wanted > 0 && received.len() >= wanted {
                return received;
            }
            tokio::select! {
                delivery = consumer.next() => {
                    let delivery = delivery.unwrap().unwrap();
                    let at = Instant::now();
                    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
                    received.push((body["asset_key"].as_str().unwrap_or_default().to_owned(), at));
                }
                _ = stop_rx.changed() => {}
            }
        }
    });
    let committed: Committed = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut writers = Vec::new();
    for w in 0..LOAD_WRITERS as u64 {
        let mut ds = DataSampleServiceClient::new(client.clone());
        let committed = Arc::clone(&committed);
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut written = 0usize;
            while Instant::now() < deadline {
                let first = (w << 40) + n;
                ds.register_data_samples(samples(first, 10)).await.unwrap();
                let at = Instant::now();
                let mut committed = committed.lock().unwrap();
                for k in first..first + 10 {
                    committed.insert(uuid(k), at);
                }
                n += 10;
                written += 10;
            }
            written
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    // Every sample event, plus the organization's and the data manager's.
    stop_tx.send(total + 2).unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), reader).await.unwrap().unwrap();
    let lat = latencies(&committed, &received);
    println!(
        "  commit → broker consumer, {LOAD_WRITERS} writers x RegisterDataSamples(10) for {LOAD_SECONDS}s ({total} events, {:.0} events/s):",
        total as f64 / LOAD_SECONDS as f64
    );
    println!(
        "    latency p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    server.stop().await;
}

/// 1,000 events written while 10 streams follow the channel.
async fn stream_fanout() {
    let server = TestServer::start_with(|c| {
        c.channel_config = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/channels.yaml").into());
    })
    .await;
    let client = setup(&server).await;
    let last: String = sqlx::query_scalar("SELECT event_id FROM events ORDER BY position DESC LIMIT 1")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut events = EventServiceClient::new(client.clone());
        streams.push(
            events
                .subscribe_to_events(SubscribeToEventsParam { start_event_id: last.clone() })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let committed: Committed = Arc::default();
    let started = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut received = Vec::with_capacity(LIVE_EVENTS);
                while received.len() < LIVE_EVENTS {
                    let event = stream.message().await.unwrap().unwrap();
                    received.push((event.asset_key, Instant::now()));
                }
                received
            })
        })
        .collect();
    let mut ds = DataSampleServiceClient::new(client.clone());
    for call in 0..(LIVE_EVENTS / 100) as u64 {
        let first = 1 + call * 100;
        ds.register_data_samples(samples(first, 100)).await.unwrap();
        let at = Instant::now();
        let mut committed = committed.lock().unwrap();
        for k in first..first + 100 {
            committed.insert(uuid(k), at);
        }
    }
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await.unwrap());
    }
    let elapsed = started.elapsed();
    let lat = latencies(&committed, &all);
    println!(
        "  SubscribeToEvents: {LIVE_EVENTS} live events (10 calls x 100) to {SUBSCRIBERS} streams: all delivered {elapsed:.2?} after the first write, {:.0} deliveries/s",
        (LIVE_EVENTS * SUBSCRIBERS) as f64 / elapsed.as_secs_f64()
    );
    println!("    commit → stream latency p50 {:.2?}  p99 {:.2?}", percentile(&lat, 0.5), percentile(&lat, 0.99));
    server.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("events: PostgreSQL and RabbitMQ on 127.0.0.1 (2 cores):");
    let broker = Broker::new().await;
    relay_throughput(&broker).await;
    broker_latency(&broker).await;
    broker.cleanup().await;
    stream_fanout().await;
}
