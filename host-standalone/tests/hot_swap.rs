//! Hot swap in standalone mode, on the real binary: SIGHUP makes the server read its
//! `ORCHESTRATOR_LOGIC` file again and swap the component in once the runtime has verified it.
//!
//! Two different components without a second build: the embedded one (A) and the same bytes
//! with a custom section appended (B, see `common::variant_component`): other bytes, another
//! sha256, which QueryVersion's `logic_sha256` and each call's log line report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, EMPTY_COMPONENT, Orchestrator, PG_SERVER, new_samples, replace_file, sha256_of};
use orchestrator_host_standalone::config::Mode;
use orchestrator_host_standalone::metrics::Metrics;
use orchestrator_host_standalone::reload::{ReloadError, Reloaded, Reloader};
use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
use orchestrator_proto::event_service_client::EventServiceClient;
use orchestrator_proto::info_service_client::InfoServiceClient;
use orchestrator_proto::{QueryVersionParam, SubscribeToEventsParam};
use orchestrator_runtime::{Runtime, RuntimeConfig, RuntimeError};

const WRITERS: usize = 8;
const STREAMS: usize = 2;
const SWAPS: usize = 20;
const SAMPLES_PER_CALL: u64 = 4;
/// How long each version serves the load before the next swap.
const DWELL: Duration = Duration::from_millis(400);
/// Longest wait for a swap to show (the first one compiles B when the cache lacks it).
const SWAP_WAIT: Duration = Duration::from_secs(180);

/// One finished call of the load: what the client saw.
#[derive(Debug, Clone)]
struct Record {
    request_id: String,
    started: Instant,
    ended: Instant,
    /// `Ok(QueryVersion's logic_sha256)` (empty for writes), or the error status.
    result: Result<String, String>,
}

/// One swap, as the test drove it.
#[derive(Debug, Clone)]
struct Swap {
    /// SIGHUP sent.
    signaled: Instant,
    /// A QueryVersion started after this answered `target`.
    observed: Instant,
    target: String,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hot-swap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("port").port()
}

fn with_request_id<T>(message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("reqid", request_id.parse().expect("ascii"));
    request
}

/// The server's JSON log lines.
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("the server's log")
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits for a log line with `message` after the first `skip` lines; returns it and the new
/// count of lines.
async fn next_line(path: &Path, skip: usize, message: &str) -> (serde_json::Value, usize) {
    let deadline = Instant::now() + SWAP_WAIT;
    loop {
        let lines = log_lines(path);
        if let Some(line) = lines.iter().skip(skip).find(|line| line["message"] == message) {
            return (line.clone(), lines.len());
        }
        assert!(Instant::now() < deadline, "no {message:?} line after line {skip}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn query_version(info: &mut InfoServiceClient<Client>, request_id: &str) -> Result<String, String> {
    info.query_version(with_request_id(QueryVersionParam {}, request_id))
        .await
        .map(|answer| answer.into_inner().logic_sha256)
        .map_err(|status| format!("{status:?}"))
}

/// Polls QueryVersion until it names `target`.
async fn wait_for_version(info: &mut InfoServiceClient<Client>, target: &str) -> Instant {
    let deadline = Instant::now() + SWAP_WAIT;
    let mut n = 0;
    loop {
        n += 1;
        let sha = query_version(info, &format!("poll-{n}")).await.expect("QueryVersion while polling");
        if sha == target {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "QueryVersion still answers {sha}, not {target}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("scrape");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("metrics");
    response
}

/// Write calls of writer `w` until `stop`: RegisterDataSamples of fresh keys.
async fn writer(client: Client, w: usize, stop: Arc<AtomicBool>) -> Vec<Record> {
    let mut samples = DataSampleServiceClient::new(client);
    let mut records = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let param = new_samples((1 << 40) + ((w as u64) << 24) + n * SAMPLES_PER_CALL, SAMPLES_PER_CALL);
        let request_id = format!("hs-w{w}-{n}");
        let started = Instant::now();
        let result = samples
            .register_data_samples(with_request_id(param, &request_id))
            .await
            .map(|_| String::new())
            .map_err(|status| format!("{status:?}"));
        records.push(Record { request_id, started, ended: Instant::now(), result });
        n += 1;
    }
    records
}

/// QueryVersion calls until `stop`.
async fn reader(client: Client, stop: Arc<AtomicBool>) -> Vec<Record> {
    let mut info = InfoServiceClient::new(client);
    let mut records = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let request_id = format!("hs-q-{n}");
        let started = Instant::now();
        let result = query_version(&mut info, &request_id).await;
        records.push(Record { request_id, started, ended: Instant::now(), result });
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    records
}

/// The one version's time a call lies wholly in, if any: `Some(0)` before the first swap was
/// asked for, `Some(i + 1)` after swap `i` showed (a QueryVersion answered its target) and
/// before swap `i + 1` was asked for. Calls that overlap a swap may run on either version.
fn span(record: &Record, swaps: &[Swap]) -> Option<usize> {
    if swaps.first().is_none_or(|s| record.ended < s.signaled) {
        return Some(0);
    }
    swaps.iter().enumerate().find_map(|(i, swap)| {
        let before_next = swaps.get(i + 1).is_none_or(|next| record.ended < next.signaled);
        (record.started > swap.observed && before_next).then_some(i + 1)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_sighup_swaps_under_load_lose_no_call_and_a_refused_component_changes_nothing() {
    let a = orchestrator_logic_component::COMPONENT.to_vec();
    let b = common::variant_component();
    let (sha_a, sha_b) = (sha256_of(&a), sha256_of(&b));
    assert_ne!(sha_a, sha_b);

    let dir = temp_dir("load");
    let logic = dir.join("logic.wasm");
    replace_file(&logic, &a);
    let log = dir.join("server.log");
    let db_url = format!("{PG_SERVER}/orch_test_{}", uuid::Uuid::new_v4().simple());
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = Orchestrator::spawn_with(
        &db_url,
        None,
        &[
            ("ORCHESTRATOR_LOGIC", logic.to_str().expect("UTF-8 path")),
            ("LOG_LEVEL", "info"),
            ("ORCHESTRATOR_AMQP_ENABLED", "false"),
            ("METRICS_ENABLED", "true"),
            ("ORCHESTRATOR_METRICS_ADDR", &metrics_addr),
        ],
        Some(&log),
    )
    .await;
    let client = server.client().await;
    common::register_org_and_data_manager(client.clone()).await;
    let mut info = InfoServiceClient::new(client.clone());
    assert_eq!(query_version(&mut info, "start").await, Ok(sha_a.clone()));

    // Streams from the first event, open through every swap.
    let streamed: Vec<Arc<Mutex<Vec<String>>>> = (0..STREAMS).map(|_| Arc::default()).collect();
    let mut stream_tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
    for ids in &streamed {
        let mut stream = EventServiceClient::new(client.clone())
            .subscribe_to_events(SubscribeToEventsParam { start_event_id: String::new() })
            .await
            .expect("subscribe")
            .into_inner();
        let ids = Arc::clone(ids);
        stream_tasks.push(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(event)) => ids.lock().expect("ids").push(event.id),
                    Ok(None) => return Err("the stream ended".to_owned()),
                    Err(status) => return Err(format!("{status:?}")),
                }
            }
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(client.clone(), w, Arc::clone(&stop)))).collect();
    let reader_task = tokio::spawn(reader(client.clone(), Arc::clone(&stop)));

    tokio::time::sleep(DWELL).await;
    let mut swaps = Vec::with_capacity(SWAPS);
    for i in 0..SWAPS {
        let (bytes, target) = if i % 2 == 0 { (&b, &sha_b) } else { (&a, &sha_a) };
        replace_file(&logic, bytes);
        let signaled = Instant::now();
        server.hangup();
        let observed = wait_for_version(&mut info, target).await;
        swaps.push(Swap { signaled, observed, target: target.clone() });
        tokio::time::sleep(DWELL).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for task in writers {
        writes.extend(task.await.expect("writer"));
    }
    let queries = reader_task.await.expect("reader");
    let final_sha = swaps.last().expect("swaps").target.clone();
    assert_eq!(final_sha, sha_a, "an even number of swaps ends on A");

    // 0 failed calls.
    let failed: Vec<&Record> = writes.iter().chain(&queries).filter(|r| r.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed, first: {:?}",
        failed.len(),
        writes.len() + queries.len(),
        failed.first()
    );

    // Every call ran on exactly one version, A or B: one log line per call, naming one of them;
    // QueryVersion answers name the same one as its log line.
    let mut ran_on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in log_lines(&log) {
        if line["message"] == "call"
            && let Some(id) = line["request_id"].as_str().filter(|id| id.starts_with("hs-"))
        {
            let sha = line["logic_sha256"].as_str().unwrap_or_default().to_owned();
            ran_on.entry(id.to_owned()).or_default().push(sha);
        }
    }
    let mut on = BTreeMap::<&str, usize>::new();
    for record in writes.iter().chain(&queries) {
        let versions = ran_on.get(&record.request_id).map(Vec::as_slice).unwrap_or_default();
        let [sha] = versions else {
            panic!("{}: {} log lines, not 1: {versions:?}", record.request_id, versions.len())
        };
        assert!(*sha == sha_a || *sha == sha_b, "{}: ran on {sha:?}", record.request_id);
        if let Ok(answered) = &record.result
            && !answered.is_empty()
        {
            assert_eq!(answered, sha, "{}: QueryVersion answered another version than it ran on", record.request_id);
        }
        *on.entry(if *sha == sha_a { "A" } else { "B" }).or_default() += 1;
        // A call that began after a swap showed and ended before the next one was asked for ran
        // on that version: calls in flight finish on the old one, new calls run on the new one.
        if let Some(span) = span(record, &swaps) {
            let expected = if span == 0 { &sha_a } else { &swaps[span - 1].target };
            assert_eq!(sha, expected, "{} ran on the wrong version", record.request_id);
        }
    }
    assert_eq!(ran_on.len(), writes.len() + queries.len(), "no call line without a call");
    eprintln!("{} writes and {} QueryVersion calls through {SWAPS} swaps; ran on: {on:?}", writes.len(), queries.len());
    assert!(on.get("A").is_some_and(|n| *n > 0) && on.get("B").is_some_and(|n| *n > 0), "{on:?}");
    // The load kept running on every version: writes lie wholly in each swap's span.
    for i in 0..SWAPS {
        let inside = writes.iter().filter(|r| span(r, &swaps) == Some(i + 1)).count();
        assert!(inside > 0, "no write ran wholly between swap {i} and the next");
    }

    // The streams saw every event, once, in order, through the swaps.
    let committed: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM events WHERE channel = 'mychannel' ORDER BY position")
            .fetch_all(&sqlx::PgPool::connect(&db_url).await.expect("test pool"))
            .await
            .expect("events");
    assert_eq!(committed.len() as u64, 2 + writes.len() as u64 * SAMPLES_PER_CALL);
    let deadline = Instant::now() + Duration::from_secs(30);
    for ids in &streamed {
        while ids.lock().expect("ids").len() < committed.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*ids.lock().expect("ids"), committed, "a stream missed, doubled or reordered events");
    }
    for task in &stream_tasks {
        assert!(!task.is_finished(), "a stream ended during the swaps");
    }

    // The swap lines and the metrics follow.
    let lines = log_lines(&log);
    let swapped: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["message"] == "logic component swapped: new calls run on the new version").collect();
    assert_eq!(swapped.len(), SWAPS);
    for (line, swap) in swapped.iter().zip(&swaps) {
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["to_sha256"], swap.target.as_str());
        assert_ne!(line["from_sha256"], swap.target.as_str());
        assert_eq!(line["file"], logic.to_str().expect("UTF-8 path"));
    }
    let metrics = scrape(metrics_port).await;
    assert!(metrics.contains(&format!("orc_logic_swaps_total{{outcome=\"accepted\"}} {SWAPS}\n")), "{metrics}");
    let info_lines: Vec<&str> = metrics.lines().filter(|l| l.starts_with("orc_logic_component_info{")).collect();
    assert_eq!(info_lines.len(), 1, "{metrics}");
    assert!(info_lines[0].contains(&format!("sha256=\"{final_sha}\"")) && info_lines[0].ends_with(" 1"));

    // Refused: a file that is not a component, a component of no world, a missing file. Each
    // gets one WARN line naming the file, its sha256 (when read) and the reason; A serves on.
    let mut seen = log_lines(&log).len();
    let mut samples = DataSampleServiceClient::new(client.clone());
    let bad: [(&str, Option<&[u8]>, &str); 3] = [
        ("not wasm", Some(b"definitely not a component"), "compiling"),
        ("no world", Some(&EMPTY_COMPONENT), "does not export the orchestrator world"),
        ("missing", None, "cannot read"),
    ];
    for (n, (what, bytes, reason)) in bad.into_iter().enumerate() {
        match bytes {
            Some(bytes) => replace_file(&logic, bytes),
            None => std::fs::remove_file(&logic).expect("remove the logic file"),
        }
        server.hangup();
        let (line, count) = next_line(&log, seen, "logic component refused: the current one keeps serving").await;
        seen = count;
        assert_eq!(line["level"], "WARN", "{what}: {line}");
        assert_eq!(line["file"], logic.to_str().expect("UTF-8 path"), "{what}: {line}");
        assert_eq!(line["serving_sha256"], sha_a.as_str(), "{what}: {line}");
        if let Some(bytes) = bytes {
            assert_eq!(line["sha256"], sha256_of(bytes).as_str(), "{what}: {line}");
        }
        assert!(line["error"].as_str().is_some_and(|e| e.contains(reason)), "{what}: {line}");
        assert_eq!(query_version(&mut info, &format!("after-refusal-{n}")).await, Ok(sha_a.clone()), "{what}");
        let first = (1 << 44) + n as u64 * SAMPLES_PER_CALL;
        samples
            .register_data_samples(common::new_samples(first, SAMPLES_PER_CALL))
            .await
            .expect("a write still succeeds");
    }
    // The serving version's file again: nothing to swap.
    replace_file(&logic, &a);
    server.hangup();
    let (line, _) = next_line(&log, seen, "logic component unchanged: the file holds the version serving").await;
    assert_eq!(line["sha256"], sha_a.as_str());
    let metrics = scrape(metrics_port).await;
    for (outcome, n) in [("accepted", SWAPS), ("refused", 3), ("unchanged", 1)] {
        assert!(metrics.contains(&format!("orc_logic_swaps_total{{outcome=\"{outcome}\"}} {n}\n")), "{metrics}");
    }
    assert!(metrics.contains(&format!("orc_logic_component_info{{sha256=\"{sha_a}\"")), "{metrics}");

    let mut server = server;
    assert!(server.running());
    for task in stream_tasks {
        task.abort();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    orchestrator_host_standalone::postgres::drop_database(&db_url).await.expect("drop the database");
}

#[tokio::test]
async fn sighup_without_a_logic_file_says_there_is_nothing_to_reload() {
    let dir = temp_dir("embedded");
    let log = dir.join("server.log");
    let db_url = format!("{PG_SERVER}/orch_test_{}", uuid::Uuid::new_v4().simple());
    let mut server = Orchestrator::spawn_with(
        &db_url,
        None,
        &[("LOG_LEVEL", "info"), ("ORCHESTRATOR_AMQP_ENABLED", "false")],
        Some(&log),
    )
    .await;
    server.hangup();
    let message =
        "nothing to reload: no logic file is configured (ORCHESTRATOR_LOGIC); the embedded component serves on";
    let (line, _) = next_line(&log, 0, message).await;
    assert_eq!(line["level"], "WARN");
    let embedded = sha256_of(orchestrator_logic_component::COMPONENT);
    assert_eq!(line["serving_sha256"], embedded.as_str());
    // SIGHUP did not end the process, which still answers with the embedded component.
    assert!(server.running());
    let mut info = InfoServiceClient::new(server.client().await);
    assert_eq!(query_version(&mut info, "after").await, Ok(embedded));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    orchestrator_host_standalone::postgres::drop_database(&db_url).await.expect("drop the database");
}

/// The reload path without a signal or a database: each outcome, what serves after it, and
/// the counters.
#[tokio::test]
async fn the_reloader_swaps_verified_components_and_refuses_the_others() {
    let dir = temp_dir("reloader");
    let logic = dir.join("logic.wasm");
    let a = orchestrator_logic_component::COMPONENT.to_vec();
    let b = common::variant_component();
    replace_file(&logic, &a);
    let config = RuntimeConfig { cache_dir: Some(dir.join("cache")), ..RuntimeConfig::default() };
    let runtime = Runtime::from_path(config, &logic).expect("A loads");
    let metrics = Arc::new(Metrics::new(&runtime.info(), None, None));
    let reloader = Reloader::new(runtime.clone(), Some(logic.clone()), Mode::Standalone, Arc::clone(&metrics));

    replace_file(&logic, &b);
    match reloader.reload().await {
        Ok(Reloaded::Swapped { from, to }) => {
            assert_eq!((from.sha256.as_str(), to.sha256.as_str()), (sha256_of(&a).as_str(), sha256_of(&b).as_str()));
        }
        other => panic!("A to B: {other:?}"),
    }
    assert_eq!(runtime.info().sha256, sha256_of(&b));
    assert!(matches!(reloader.reload().await, Ok(Reloaded::Unchanged(info)) if info.sha256 == sha256_of(&b)));

    replace_file(&logic, &EMPTY_COMPONENT);
    match reloader.reload().await {
        Err(ReloadError::Refused { sha256, source: RuntimeError::Component(reason), .. }) => {
            assert_eq!(sha256, sha256_of(&EMPTY_COMPONENT));
            assert!(reason.contains("does not export the orchestrator world"), "{reason}");
        }
        other => panic!("a component of no world: {other:?}"),
    }
    std::fs::remove_file(&logic).expect("remove the file");
    assert!(matches!(reloader.reload().await, Err(ReloadError::Read { .. })));
    assert_eq!(runtime.info().sha256, sha256_of(&b), "B serves on after each refusal");

    let embedded = Reloader::new(runtime.clone(), None, Mode::Standalone, Arc::clone(&metrics));
    assert!(matches!(embedded.reload().await, Err(ReloadError::NoFile)));
    let distributed = Reloader::new(runtime.clone(), Some(logic), Mode::Distributed, Arc::clone(&metrics));
    assert!(matches!(distributed.reload().await, Err(ReloadError::Distributed)));

    let text = metrics.render();
    for (outcome, n) in [("accepted", 1), ("unchanged", 1), ("refused", 2)] {
        assert!(text.contains(&format!("orc_logic_swaps_total{{outcome=\"{outcome}\"}} {n}\n")), "{text}");
    }
    assert!(text.contains(&format!("orc_logic_component_info{{sha256=\"{}\"", sha256_of(&b))), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
