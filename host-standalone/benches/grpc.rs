//! The standalone orchestrator over gRPC against the real PostgreSQL, each figure next to its
//! floor: the same rows written (or read) with plain SQL in one transaction, no gRPC, no wasm.
//!
//! `cargo bench -p orchestrator-host-standalone --bench grpc`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{DM_KEY, TestServer, percentile, uuid};
use orchestrator_proto::data_manager_service_client::DataManagerServiceClient;
use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
use orchestrator_proto::{GetDataManagerParam, NewDataSample, RegisterDataSamplesParam};
use prost::Message;

const ORG: &str = "MyOrg1MSP";
const CHANNEL: &str = "mychannel";
const SAMPLES_PER_CALL: usize = 1_000;
const REGISTER_CALLS: usize = 20;
const GET_CALLS: usize = 2_000;
const CONCURRENT_CLIENTS: usize = 8;

fn samples(next: &mut u64) -> Vec<NewDataSample> {
    (0..SAMPLES_PER_CALL)
        .map(|_| {
            *next += 1;
            NewDataSample {
                key: uuid(*next),
                data_manager_keys: vec![DM_KEY.to_owned()],
                test_only: false,
                checksum: "b".repeat(64),
            }
        })
        .collect()
}

fn per_call(total: Duration, calls: usize) -> Duration {
    total / calls as u32
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = TestServer::start_with(|c| {
        c.channel_config = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/channels.yaml").into());
    })
    .await;
    let client = server.client(ORG, CHANNEL).await;
    common::register_org_and_data_manager(client.clone()).await;
    let mut dms = DataManagerServiceClient::new(client.clone());

    // RegisterDataSamples, 1,000 samples per call.
    let mut next = 1u64 << 20;
    let mut ds = DataSampleServiceClient::new(client.clone());
    ds.register_data_samples(RegisterDataSamplesParam { samples: samples(&mut next) }).await.unwrap(); // warm-up
    let mut latencies = Vec::with_capacity(REGISTER_CALLS);
    let start = Instant::now();
    for _ in 0..REGISTER_CALLS {
        let batch = samples(&mut next);
        let t = Instant::now();
        let resp = ds.register_data_samples(RegisterDataSamplesParam { samples: batch }).await.unwrap();
        latencies.push(t.elapsed());
        assert_eq!(resp.into_inner().data_samples.len(), SAMPLES_PER_CALL);
    }
    let register_total = start.elapsed();
    latencies.sort();
    let register = per_call(latencies.iter().sum(), REGISTER_CALLS);

    // Floor: the same rows (per sample: record, creation index, dataset index; one event row)
    // inserted with plain SQL in one SERIALIZABLE transaction.
    let mut floor_latencies = Vec::with_capacity(REGISTER_CALLS);
    let record_size = orchestrator_proto::DataSample {
        key: uuid(1),
        data_manager_keys: vec![DM_KEY.to_owned()],
        owner: ORG.to_owned(),
        test_only: false,
        checksum: "b".repeat(64),
        creation_date: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
    }
    .encoded_len();
    for call in 0..REGISTER_CALLS {
        let mut keys = Vec::with_capacity(3 * SAMPLES_PER_CALL);
        let mut values = Vec::with_capacity(3 * SAMPLES_PER_CALL);
        let mut event_ids = Vec::with_capacity(SAMPLES_PER_CALL);
        let mut payloads = Vec::with_capacity(SAMPLES_PER_CALL);
        for i in 0..SAMPLES_PER_CALL {
            let key = uuid(((call as u64) << 32) | i as u64);
            keys.push(format!("floor/datasample/{key}"));
            values.push(vec![7u8; record_size]);
            keys.push(format!("floor/idx/datasample/created/{call:020}/{key}"));
            values.push(Vec::new());
            keys.push(format!("floor/idx/datasample/datamanager/{DM_KEY}/{call:020}/{key}"));
            values.push(Vec::new());
            event_ids.push(key);
            payloads.push(vec![9u8; record_size + 120]);
        }
        let t = Instant::now();
        let mut tx = server.pool.begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut *tx).await.unwrap();
        sqlx::query(
            "INSERT INTO state (channel, key, value) SELECT $1, k, v FROM UNNEST($2::text[], $3::bytea[]) AS t(k, v)",
        )
        .bind(CHANNEL)
        .bind(&keys)
        .bind(&values)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO events (channel, event_id, payload) SELECT $1, i, p FROM UNNEST($2::text[], $3::bytea[]) AS t(i, p)",
        )
        .bind(CHANNEL)
        .bind(&event_ids)
        .bind(&payloads)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        floor_latencies.push(t.elapsed());
    }
    let floor_register = per_call(floor_latencies.iter().sum(), REGISTER_CALLS);

    // GetDataManager, sequential.
    let param = GetDataManagerParam { key: DM_KEY.to_owned() };
    let mut get_latencies = Vec::with_capacity(GET_CALLS);
    for _ in 0..GET_CALLS {
        let t = Instant::now();
        dms.get_data_manager(param.clone()).await.unwrap();
        get_latencies.push(t.elapsed());
    }
    get_latencies.sort();
    let get = per_call(get_latencies.iter().sum(), GET_CALLS);

    // Floor: the one-row read in a read-only transaction.
    let key = format!("datamanager/{DM_KEY}");
    let t = Instant::now();
    for _ in 0..GET_CALLS {
        let mut tx = server.pool.begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await.unwrap();
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM state WHERE channel = $1 AND key = $2")
            .bind(CHANNEL)
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        assert!(row.is_some());
        tx.commit().await.unwrap();
    }
    let floor_get = per_call(t.elapsed(), GET_CALLS);

    // GetDataManager, 8 concurrent clients.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        let mut c = DataManagerServiceClient::new(server.client(ORG, CHANNEL).await);
        let p = param.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..GET_CALLS / CONCURRENT_CLIENTS {
                c.get_data_manager(p.clone()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent_rate = GET_CALLS as f64 / t.elapsed().as_secs_f64();

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("standalone orchestrator over gRPC, PostgreSQL on 127.0.0.1 (2 cores):");
    println!(
        "  RegisterDataSamples x{SAMPLES_PER_CALL}: mean {register:>9.2?}  p50 {:>9.2?}  p95 {:>9.2?}  {:>7.0} samples/s  ({REGISTER_CALLS} calls in {register_total:.2?})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        SAMPLES_PER_CALL as f64 / register.as_secs_f64()
    );
    println!(
        "    floor (same rows, plain SQL, one tx): {floor_register:>9.2?}   ratio {:.2}x",
        ratio(register, floor_register)
    );
    println!(
        "  GetDataManager (sequential):   mean {get:>9.2?}  p50 {:>9.2?}  p95 {:>9.2?}  {:>7.0} calls/s",
        percentile(&get_latencies, 0.5),
        percentile(&get_latencies, 0.95),
        1.0 / get.as_secs_f64()
    );
    println!("    floor (one-row SELECT in a read-only tx): {floor_get:>9.2?}   ratio {:.2}x", ratio(get, floor_get));
    println!("  GetDataManager ({CONCURRENT_CLIENTS} concurrent clients): {concurrent_rate:>7.0} calls/s");
    server.stop().await;
}
