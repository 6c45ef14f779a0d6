//! The cost of a hot swap in standalone mode, on the release `orchestrator` binary against the
//! real PostgreSQL: the time from SIGHUP to the new version serving (as the server logs it,
//! and as a client polling QueryVersion sees it), and call latencies under load with and
//! without swaps.
//!
//! `cargo bench -p orchestrator-host-standalone --bench hot_swap`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, DM_KEY, Orchestrator, PG_SERVER, new_samples, percentile, replace_file, sha256_of};
use orchestrator_proto::data_manager_service_client::DataManagerServiceClient;
use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
use orchestrator_proto::info_service_client::InfoServiceClient;
use orchestrator_proto::{GetDataManagerParam, QueryVersionParam};

const WRITERS: usize = 8;
const READERS: usize = 2;
const SAMPLES_PER_CALL: u64 = 4;
/// Each phase of load.
const PHASE: Duration = Duration::from_secs(10);
/// Time between two swaps in the swapping phase.
const SWAP_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Latencies {
    writes: Vec<Duration>,
    reads: Vec<Duration>,
    seconds: f64,
}

/// RegisterDataSamples calls of writer `w` until `stop` (keys from `base`).
async fn write_load(client: Client, w: usize, base: u64, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut samples = DataSampleServiceClient::new(client);
    let mut latencies = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let param = new_samples(base + ((w as u64) << 24) + n * SAMPLES_PER_CALL, SAMPLES_PER_CALL);
        let started = Instant::now();
        samples.register_data_samples(param).await.expect("RegisterDataSamples");
        latencies.push(started.elapsed());
        n += 1;
    }
    latencies
}

/// GetDataManager calls until `stop`.
async fn read_load(client: Client, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut managers = DataManagerServiceClient::new(client);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        managers.get_data_manager(GetDataManagerParam { key: DM_KEY.to_owned() }).await.expect("GetDataManager");
        latencies.push(started.elapsed());
    }
    latencies
}

/// Runs the load until `phase` completes.
async fn under_load<F: std::future::Future<Output = T>, T>(client: &Client, base: u64, phase: F) -> (Latencies, T) {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(write_load(client.clone(), w, base, Arc::clone(&stop)))).collect();
    let readers: Vec<_> = (0..READERS).map(|_| tokio::spawn(read_load(client.clone(), Arc::clone(&stop)))).collect();
    let out = phase.await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Latencies::default();
    for task in writers {
        latencies.writes.extend(task.await.expect("writer"));
    }
    for task in readers {
        latencies.reads.extend(task.await.expect("reader"));
    }
    latencies.writes.sort();
    latencies.reads.sort();
    latencies.seconds = started.elapsed().as_secs_f64();
    (latencies, out)
}

/// Writes `bytes` as the logic file, sends SIGHUP, polls QueryVersion until it names `sha256`:
/// the time from the signal to the first answer of the new version, as a client sees it.
async fn swap(
    server: &Orchestrator,
    info: &mut InfoServiceClient<Client>,
    logic: &Path,
    bytes: &[u8],
    sha256: &str,
) -> Duration {
    replace_file(logic, bytes);
    let signaled = Instant::now();
    server.hangup();
    loop {
        let answer = info.query_version(QueryVersionParam {}).await.expect("QueryVersion").into_inner();
        if answer.logic_sha256 == sha256 {
            return signaled.elapsed();
        }
        assert!(signaled.elapsed() < Duration::from_secs(120), "the swap to {sha256} did not show");
    }
}

/// `elapsed_ms` of the server's swap lines: from SIGHUP to the new version serving, measured
/// in the server.
fn logged_swaps(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .expect("the server's log")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "logic component swapped: new calls run on the new version")
        .filter_map(|line| line["elapsed_ms"].as_f64())
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, sorted: &[Duration], seconds: f64) {
    println!(
        "  {name:<28} {:>6} calls {:>7.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        sorted.len(),
        sorted.len() as f64 / seconds,
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        ms(*sorted.last().expect("calls")),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = orchestrator_logic_component::COMPONENT.to_vec();
    let b = common::variant_component();
    let (sha_a, sha_b) = (sha256_of(&a), sha256_of(&b));
    let dir = std::env::temp_dir().join(format!("orchestrator-bench-hot-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).expect("bench dir");
    let logic = dir.join("logic.wasm");
    replace_file(&logic, &a);
    let log = dir.join("server.log");
    let db_url = format!("{PG_SERVER}/orch_bench_{}", uuid::Uuid::new_v4().simple());
    // A fresh cache: the first swap to B compiles it.
    let server = Orchestrator::spawn_with(
        &db_url,
        None,
        &[
            ("ORCHESTRATOR_LOGIC", logic.to_str().expect("UTF-8 path")),
            ("ORCHESTRATOR_COMPONENT_CACHE", cache.to_str().expect("UTF-8 path")),
            ("ORCHESTRATOR_AMQP_ENABLED", "false"),
            ("LOG_LEVEL", "warn,orchestrator_host_standalone::reload=info"),
        ],
        Some(&log),
    )
    .await;
    let client = server.client().await;
    common::register_org_and_data_manager(client.clone()).await;
    let mut info = InfoServiceClient::new(client.clone());

    println!(
        "hot swap, standalone: release binary, {WRITERS} writers ({SAMPLES_PER_CALL} samples per call) and {READERS} readers"
    );
    println!("component: {} bytes; A = embedded, B = A + a custom section", a.len());
    let cold = swap(&server, &mut info, &logic, &b, &sha_b).await;
    let back = swap(&server, &mut info, &logic, &a, &sha_a).await;
    let logged = logged_swaps(&log);
    println!(
        "first swap to B (compiled, no cache): {:.1} ms to serving in the server, {:.1} ms until a client sees it",
        logged[0],
        ms(cold)
    );
    println!(
        "back to A (compiled in this process): {:.2} ms in the server, {:.2} ms until a client sees it",
        logged[1],
        ms(back)
    );

    // Idle swaps between the two compiled versions.
    let mut idle = Vec::new();
    for i in 0..20 {
        let (bytes, sha) = if i % 2 == 0 { (&b, &sha_b) } else { (&a, &sha_a) };
        idle.push(swap(&server, &mut info, &logic, bytes, sha).await);
    }
    idle.sort();
    let logged = logged_swaps(&log);
    let mut idle_logged: Vec<f64> = logged[2..].to_vec();
    idle_logged.sort_by(f64::total_cmp);
    println!(
        "20 swaps, idle: server p50 {:.2} ms, max {:.2} ms; client p50 {:.2} ms, max {:.2} ms",
        idle_logged[idle_logged.len() / 2],
        idle_logged[idle_logged.len() - 1],
        ms(percentile(&idle, 0.5)),
        ms(*idle.last().expect("swaps"))
    );

    let (steady, ()) = under_load(&client, 1 << 40, tokio::time::sleep(PHASE)).await;
    let already = logged_swaps(&log).len();
    let (swapping, swaps) = under_load(&client, 1 << 44, async {
        let mut times = Vec::new();
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < PHASE {
            let (bytes, sha) = if i % 2 == 0 { (&b, &sha_b) } else { (&a, &sha_a) };
            times.push(swap(&server, &mut info, &logic, bytes, sha).await);
            i += 1;
            tokio::time::sleep(SWAP_EVERY).await;
        }
        times
    })
    .await;
    let mut loaded: Vec<f64> = logged_swaps(&log)[already..].to_vec();
    loaded.sort_by(f64::total_cmp);
    let mut client_seen = swaps;
    client_seen.sort();
    println!(
        "{} swaps under load: server p50 {:.2} ms, max {:.2} ms; client p50 {:.2} ms, max {:.2} ms",
        loaded.len(),
        loaded[loaded.len() / 2],
        loaded[loaded.len() - 1],
        ms(percentile(&client_seen, 0.5)),
        ms(*client_seen.last().expect("swaps"))
    );
    println!("calls, {:.1} s without swaps:", steady.seconds);
    summary("RegisterDataSamples", &steady.writes, steady.seconds);
    summary("GetDataManager", &steady.reads, steady.seconds);
    println!("calls, {:.1} s with a swap every {} ms:", swapping.seconds, SWAP_EVERY.as_millis());
    summary("RegisterDataSamples", &swapping.writes, swapping.seconds);
    summary("GetDataManager", &swapping.reads, swapping.seconds);

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    orchestrator_host_standalone::postgres::drop_database(&db_url).await.expect("drop the database");
}
