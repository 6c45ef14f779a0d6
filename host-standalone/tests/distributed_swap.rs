//! Hot swap in distributed mode, against a REAL Fabric 2.5 network (`scripts/fabric-net.sh`):
//! the logic version is named by each channel's ledger (docs/modes.md §3.7).
//!
//! Writers of both organizations register data samples through their own facades while
//! `orchestrator logic activate` (the binary, as an operator runs it) makes another component
//! (the embedded one with a custom section: another sha256, the same code) the version of
//! `mychannel`. A write endorsed on the old version and submitted only once the activation has
//! committed is invalid (MVCC_READ_CONFLICT): every peer switches at the activation's block.
//! Then: every writer call succeeded (a write of theirs endorsed before the activation and
//! ordered after it fails the same way, and the facade runs it again within its retry
//! budget); every sample is on the ledger; QueryVersion readers through each facade saw the
//! old version, then only the new one; once each peer has committed the activation's block
//! (CommitStatus asked of that peer), QueryVersion on it names the new version; `yourchannel`
//! still runs the chaincode's own component; `orchestrator logic active` says so; and an
//! activation signed by a user (not an admin) is refused and changes nothing.
//!
//! Needs `FABRIC_BIN_DIR` (the `bin/` of a Fabric 2.5 release) and the `chaincode` and
//! `orchestrator` binaries; without `FABRIC_BIN_DIR` the test says it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::network::Network;
use common::{TestServer, facade};
use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::common::Envelope;
use orchestrator_host_fabric::fabric::gateway::gateway_client::GatewayClient as RawClient;
use orchestrator_host_fabric::fabric::gateway::{EndorseRequest, SubmitRequest};
use orchestrator_host_fabric::gateway::{GatewayClient, SigningIdentity, build_proposal};
use orchestrator_proto::{
    NewDataSample, QueryDataSamplesParam, QueryDataSamplesResponse, QueryVersionParam, QueryVersionResponse,
    RegisterDataSamplesParam, RegisterOrganizationParam,
};
use prost::Message;

const CHANNEL: &str = "mychannel";
const OTHER_CHANNEL: &str = "yourchannel";
const QUERY_VERSION: &str = "/orchestrator.InfoService/QueryVersion";
const REGISTER_DATA_SAMPLES: &str = "/orchestrator.DataSampleService/RegisterDataSamples";
const QUERY_DATA_SAMPLES: &str = "/orchestrator.DataSampleService/QueryDataSamples";
/// Writer calls each writer makes once the activation has committed.
const CALLS_AFTER: usize = 3;
/// Writers per organization.
const WRITERS: usize = 2;

/// The data manager of organization `org`.
fn dm_key(org: u8) -> String {
    common::uuid(0xd000 + u64::from(org))
}

fn msp(org: u8) -> String {
    format!("MyOrg{org}MSP")
}

async fn call(
    server: &TestServer,
    org: u8,
    channel: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let msp = msp(org);
    server.raw_call(path, body, &[("mspid", msp.as_str()), ("channel", channel)]).await.map(|b| b.to_vec())
}

async fn logic_sha256(server: &TestServer, org: u8, channel: &str) -> String {
    let answer = call(server, org, channel, QUERY_VERSION, QueryVersionParam {}.encode_to_vec()).await;
    QueryVersionResponse::decode(answer.expect("QueryVersion").as_slice()).expect("QueryVersionResponse").logic_sha256
}

/// Runs the `orchestrator` binary with `args` and the facade settings of MyOrg1MSP, its admin
/// wallet being `admin_wallet`.
fn orchestrator(network: &Network, admin_wallet: &Path, args: &[&str]) -> Output {
    let mut env = facade::env(network, 1);
    env.push(("ORCHESTRATOR_FABRIC_ADMIN_WALLET".to_owned(), admin_wallet.to_string_lossy().into_owned()));
    env.push(("ORCHESTRATOR_CHANNEL_CONFIG".to_owned(), common::channel_config_path().to_string_lossy().into_owned()));
    std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .envs(env)
        .output()
        .expect("run orchestrator")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Registers samples of its organization's data manager through `server` until `stop` is set,
/// then [`CALLS_AFTER`] more; every call must succeed. Returns how many samples it registered.
async fn writer(server: Arc<TestServer>, org: u8, id: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut registered = 0;
    let mut after = 0;
    let mut batch = 0u64;
    while after < CALLS_AFTER {
        if stop.load(Ordering::SeqCst) {
            after += 1;
        }
        batch += 1;
        let first = (u64::from(org) << 40) | (id << 24) | (batch << 4);
        let samples = (first..first + 3)
            .map(|n| NewDataSample {
                key: common::uuid(n),
                data_manager_keys: vec![dm_key(org)],
                test_only: false,
                checksum: "b".repeat(64),
            })
            .collect();
        let request = RegisterDataSamplesParam { samples }.encode_to_vec();
        match call(&server, org, CHANNEL, REGISTER_DATA_SAMPLES, request).await {
            Ok(_) => registered += 3,
            Err(status) => panic!("writer {org}.{id}, batch {batch}: {status:?}"),
        }
    }
    registered
}

/// Reads QueryVersion through `server` until `stop` is set (and once more); the versions it saw,
/// each once, in the order first seen.
async fn version_reader(server: Arc<TestServer>, org: u8, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let sha256 = logic_sha256(&server, org, CHANNEL).await;
        if seen.last() != Some(&sha256) {
            assert!(!seen.contains(&sha256), "peer of {} went back to {sha256} after {seen:?}", msp(org));
            seen.push(sha256);
        }
        if stopping {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// QueryVersion evaluated straight on the peer of `org`, once that peer has committed `txid`.
async fn peer_version_after(network: &Network, org: u8, channel: &str, txid: &str) -> String {
    let peer = network.peer(org);
    let ca = std::fs::read(&peer.tls_ca_cert).expect("peer TLS CA");
    let gateway = GatewayClient::connect(&peer.address, Some(&ca), None).await.expect("connect to the peer");
    let user = SigningIdentity::from_wallet(&network.wallet(), &peer.msp_id).expect("wallet identity");
    let status = tokio::time::timeout(facade::GATEWAY_TIMEOUT, gateway.commit_status(&user, channel, txid))
        .await
        .expect("the peer commits the activation's block")
        .expect("CommitStatus");
    assert_eq!(status.code, 0, "the activation is VALID on the peer of {}", peer.msp_id);
    let args = encoding::call_args("orchestrator.InfoService/QueryVersion", &QueryVersionParam {}.encode_to_vec());
    let payload = gateway.evaluate(&user, channel, network.chaincode(), args).await.expect("QueryVersion");
    QueryVersionResponse::decode(payload.as_slice()).expect("QueryVersionResponse").logic_sha256
}

/// A write endorsed now and submitted later: its envelope, signed when submitted.
struct Held {
    raw: RawClient<tonic::transport::Channel>,
    gateway: GatewayClient,
    user: SigningIdentity,
    txid: String,
    envelope: Envelope,
}

/// Endorses a RegisterDataSamples of `org` on its peer (through the Gateway, as a facade would)
/// without submitting it.
async fn endorse_and_hold(network: &Network, org: u8) -> Held {
    let peer = network.peer(org);
    let ca = std::fs::read(&peer.tls_ca_cert).expect("peer TLS CA");
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", peer.address))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS")
        .connect()
        .await
        .expect("connect to the peer");
    let mut raw = RawClient::new(channel.clone());
    let gateway = GatewayClient::from_channel(channel);
    let user = SigningIdentity::from_wallet(&network.wallet(), &peer.msp_id).expect("wallet identity");
    let samples = vec![NewDataSample {
        key: common::uuid(0xfe00_0000 + u64::from(org)),
        data_manager_keys: vec![dm_key(org)],
        test_only: false,
        checksum: "c".repeat(64),
    }];
    let args = encoding::call_args(&REGISTER_DATA_SAMPLES[1..], &RegisterDataSamplesParam { samples }.encode_to_vec());
    let nonce = [uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat();
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    let tx = build_proposal(&user, CHANNEL, network.chaincode(), args, nonce, now).expect("proposal");
    let endorsed = raw
        .endorse(EndorseRequest {
            transaction_id: tx.txid.clone(),
            channel_id: CHANNEL.to_owned(),
            proposed_transaction: Some(tx.signed),
            endorsing_organizations: Vec::new(),
        })
        .await
        .expect("endorsed on the old version")
        .into_inner();
    let envelope = endorsed.prepared_transaction.expect("a prepared transaction");
    Held { raw, gateway, user, txid: tx.txid, envelope }
}

impl Held {
    /// Signs and submits the held transaction; its validation code once committed.
    async fn submit(mut self) -> i32 {
        self.envelope.signature = self.user.sign(&self.envelope.payload).expect("sign");
        let request = SubmitRequest {
            transaction_id: self.txid.clone(),
            channel_id: CHANNEL.to_owned(),
            prepared_transaction: Some(self.envelope),
        };
        self.raw.submit(request).await.expect("the orderer takes it");
        let status =
            tokio::time::timeout(facade::GATEWAY_TIMEOUT, self.gateway.commit_status(&self.user, CHANNEL, &self.txid))
                .await
                .expect("committed in time")
                .expect("CommitStatus");
        status.code
    }
}

/// The median time of `count` QueryVersion evaluations straight on the peer of `org` (printed
/// for BENCHMARKS.md, never asserted: the reads of the logic version cost a peer round trip
/// each).
async fn evaluation_median(network: &Network, org: u8, count: usize) -> Duration {
    let peer = network.peer(org);
    let ca = std::fs::read(&peer.tls_ca_cert).expect("peer TLS CA");
    let gateway = GatewayClient::connect(&peer.address, Some(&ca), None).await.expect("connect to the peer");
    let user = SigningIdentity::from_wallet(&network.wallet(), &peer.msp_id).expect("wallet identity");
    let args = encoding::call_args("orchestrator.InfoService/QueryVersion", &QueryVersionParam {}.encode_to_vec());
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        gateway.evaluate(&user, CHANNEL, network.chaincode(), args.clone()).await.expect("QueryVersion");
        times.push(started.elapsed());
    }
    times.sort();
    times[count / 2]
}

/// The `(block, txid)` of the line `<channel>  activated in block <n> (transaction <txid>)`.
fn activated_on(stdout: &str, channel: &str) -> (u64, String) {
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(channel))
        .unwrap_or_else(|| panic!("no line for {channel}:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [_, "activated", "in", "block", block, "(transaction", txid] => {
            (block.parse().expect("block number"), txid.trim_end_matches(')').to_owned())
        }
        _ => panic!("unexpected line: {line}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_swaps_the_logic_of_a_channel_under_load() {
    let Some(bin_dir) = facade::fabric_bin_dir() else { return };
    let network = Network::up(&bin_dir, &common::chaincode_binary().to_string_lossy());
    // A retry budget that outlasts a few blocks: writes endorsed before the swap are run again.
    let budget = |config: &mut orchestrator_host_standalone::Config| {
        config.tx_retry_budget = Duration::from_secs(30);
        config.metrics_enabled = true;
        config.metrics_addr = "127.0.0.1:0".parse().expect("address");
    };
    let facades =
        [Arc::new(facade::start(&network, 1, budget).await), Arc::new(facade::start(&network, 2, budget).await)];
    let base = common::sha256_of(orchestrator_logic_component::COMPONENT);
    let variant = common::variant_component();
    let variant_sha256 = common::sha256_of(&variant);
    assert_ne!(variant_sha256, base);
    let dir = TempDir::new();
    let file = dir.0.join("variant.wasm");
    std::fs::write(&file, &variant).expect("write the variant");

    for (org, server) in (1u8..).zip(&facades) {
        call(server, org, CHANNEL, "/orchestrator.OrganizationService/RegisterOrganization", {
            RegisterOrganizationParam::default().encode_to_vec()
        })
        .await
        .expect("RegisterOrganization");
        call(server, org, CHANNEL, "/orchestrator.DataManagerService/RegisterDataManager", {
            common::new_data_manager(&dm_key(org)).encode_to_vec()
        })
        .await
        .expect("RegisterDataManager");
        assert_eq!(logic_sha256(server, org, CHANNEL).await, base, "before: the chaincode's own component");
    }

    // A user's activation is refused: only an organization's admin may.
    let refused = orchestrator(&network, &network.wallet(), &["logic", "activate", &file.to_string_lossy()]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "a user activated: {}", text(&refused.stdout));
    assert!(stderr.contains("refused (403)") && stderr.contains("OU=admin"), "{stderr}");

    let before = evaluation_median(&network, 1, 100).await;

    // Writers and version readers on both organizations, then the activation in their midst.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (org, server) in (1u8..).zip(&facades) {
        for id in 0..WRITERS as u64 {
            writers.push(tokio::spawn(writer(Arc::clone(server), org, id, Arc::clone(&stop))));
        }
    }
    let readers: Vec<_> = (1u8..)
        .zip(&facades)
        .map(|(org, server)| tokio::spawn(version_reader(Arc::clone(server), org, Arc::clone(&stop))))
        .collect();
    // Writes in flight first (a progress condition, not a timing one).
    while network_samples(&facades[0], 1).await < 3 || network_samples(&facades[1], 2).await < 3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = endorse_and_hold(&network, 2).await;
    let admin_wallet = network.admin_wallet();
    let started = std::time::Instant::now();
    let activation = {
        let (network, admin_wallet, file) = (&network, admin_wallet.clone(), file.clone());
        tokio::task::block_in_place(move || {
            orchestrator(network, &admin_wallet, &["logic", "activate", &file.to_string_lossy(), "--channel", CHANNEL])
        })
    };
    let activation_time = started.elapsed();
    let stdout = text(&activation.stdout);
    assert!(activation.status.success(), "activate failed: {}{}", stdout, text(&activation.stderr));
    println!("{stdout}");
    assert_eq!(stdout.lines().next(), Some(format!("sha256   {variant_sha256}").as_str()), "{stdout}");
    let (block, txid) = activated_on(&stdout, CHANNEL);
    stop.store(true, Ordering::SeqCst);
    // Endorsed on the old version, ordered after the activation: invalid on every peer.
    assert_eq!(held.submit().await, 11, "MVCC_READ_CONFLICT");

    let mut registered = [0u64; 2];
    for (i, writer) in writers.into_iter().enumerate() {
        registered[i / WRITERS] += writer.await.expect("writer");
    }
    for (org, reader) in (1u8..).zip(readers) {
        let seen = reader.await.expect("version reader");
        assert_eq!(seen, [base.clone(), variant_sha256.clone()], "versions seen through the facade of {}", msp(org));
    }
    for (org, server) in (1u8..).zip(&facades) {
        assert_eq!(network_samples(server, org).await, registered[usize::from(org) - 1], "every sample is stored");
        assert_eq!(peer_version_after(&network, org, CHANNEL, &txid).await, variant_sha256, "peer of {}", msp(org));
        // Through each facade's own peer (only MyOrg1MSP may call on yourchannel).
        assert_eq!(logic_sha256(server, 1, OTHER_CHANNEL).await, base, "{OTHER_CHANNEL} has its own version");
    }
    println!(
        "activation in block {block}, {activation_time:.1?} for the command; {} samples registered by {} writers; \
         attempts run again: {}",
        registered.iter().sum::<u64>(),
        WRITERS * 2,
        retried(&facades).await
    );
    let after = evaluation_median(&network, 1, 100).await;
    println!("QueryVersion evaluated on the peer of MyOrg1MSP, median of 100: {before:.2?} before, {after:.2?} after");

    // The ledger says who activated what; a second non-admin attempt changes nothing.
    let again = orchestrator(&network, &network.wallet(), &["logic", "activate", &file.to_string_lossy()]);
    assert!(!again.status.success());
    let active = orchestrator(&network, &admin_wallet, &["logic", "active"]);
    let listing = text(&active.stdout);
    assert!(active.status.success(), "{listing}{}", text(&active.stderr));
    let line = |channel: &str| listing.lines().find(|l| l.starts_with(channel)).unwrap_or_default().to_owned();
    assert!(line(CHANNEL).contains(&variant_sha256) && line(CHANNEL).contains("activated by MyOrg1MSP"), "{listing}");
    assert!(line(CHANNEL).contains(&txid), "{listing}");
    assert!(line(OTHER_CHANNEL).contains(&base) && line(OTHER_CHANNEL).contains("no activation"), "{listing}");
    // Activating the active version again is a no-op that says so.
    let same =
        orchestrator(&network, &admin_wallet, &["logic", "activate", &file.to_string_lossy(), "--channel", CHANNEL]);
    assert!(same.status.success() && text(&same.stdout).contains("already active"), "{}", text(&same.stdout));
}

/// The facades' `orc_db_transaction_total{method=RegisterDataSamples, outcome="rollback"}`:
/// the attempts they ran again after a ledger conflict.
async fn retried(facades: &[Arc<TestServer>]) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let prefix =
        "orc_db_transaction_total{method=\"orchestrator.DataSampleService/RegisterDataSamples\",outcome=\"rollback\"} ";
    let mut total = 0;
    for server in facades {
        let address = server.metrics_addr.expect("metrics on");
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        total += text.lines().find_map(|line| line.strip_prefix(prefix)).map_or(0, |n| n.parse().expect("a count"));
    }
    total
}

/// Samples of organization `org`'s data manager on the ledger, through its facade.
async fn network_samples(server: &TestServer, org: u8) -> u64 {
    let mut count = 0;
    let mut token = String::new();
    loop {
        let request = QueryDataSamplesParam { page_token: token, page_size: 1_000, ..Default::default() };
        let page = call(server, org, CHANNEL, QUERY_DATA_SAMPLES, request.encode_to_vec()).await.expect("query");
        let page = QueryDataSamplesResponse::decode(page.as_slice()).expect("QueryDataSamplesResponse");
        count += page.data_samples.iter().filter(|s| s.owner == msp(org)).count() as u64;
        if page.next_page_token.is_empty() {
            return count;
        }
        token = page.next_page_token;
    }
}

/// A directory removed when the test ends (also when it panics).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("distributed-swap-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
