//! A Fabric 2.5 peer simulator for tests (docs/fabric-encoding.md §5): it dials a chaincode like a
//! CCaaS peer, endorses proposals against a snapshot of an in-memory versioned store (read
//! sets with versions, range queries in batches of 100 with one look-ahead, **no**
//! read-your-writes), validates blocks (duplicate txid, MVCC, phantoms), commits them in order
//! and delivers the chaincode events of valid transactions only.
//!
//! Proposals are signed (ECDSA P-256, low-S, by the [`Identity`] of the creator's MSP) and checked
//! before the chaincode runs (docs/fabric-encoding.md §5.1 step 1, [`Peer::check_proposal`]).
//!
//! Simplifications: no ACLs beyond channel membership, no endorsement policy beyond
//! "status < 400", no endorser signature on the response, no envelopes/orderer (a block is
//! the list of endorsements), no private data, pagination, rich queries or history, no
//! `_lifecycle` read.

use std::collections::btree_map::Range;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orchestrator_runtime::Runtime;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use crate::ChaincodeService;
use crate::encoding;
use crate::fabric::common::{ChannelHeader, Header, SignatureHeader};
use crate::fabric::kvrwset::range_query_info::ReadsInfo;
use crate::fabric::kvrwset::{KvRead, KvWrite, KvrwSet, QueryReads, RangeQueryInfo, Version};
use crate::fabric::msp::SerializedIdentity;
use crate::fabric::protos::chaincode_client::ChaincodeClient;
use crate::fabric::protos::chaincode_message::Type;
use crate::fabric::protos::{
    ChaincodeAction, ChaincodeEvent, ChaincodeHeaderExtension, ChaincodeId, ChaincodeInput, ChaincodeInvocationSpec,
    ChaincodeMessage, ChaincodeProposalPayload, ChaincodeSpec, DelState, GetState, GetStateByRange, Proposal,
    ProposalResponsePayload, PutState, QueryResponse, QueryResultBytes, QueryStateClose, QueryStateNext, Response,
    SignedProposal,
};
use crate::fabric::queryresult::Kv;
use crate::fabric::rwset::{NsReadWriteSet, TxReadWriteSet};
use crate::identity;
pub use crate::identity::Identity;
use crate::proposal::ENDORSER_TRANSACTION;
use crate::shim::MAX_MESSAGE_BYTES;

/// Results per QueryResponse (the peer's `MaxResultLimit`).
pub const MAX_RESULTS_PER_BATCH: usize = 100;
/// How long the peer waits for COMPLETED/ERROR (`chaincode.executetimeout`).
pub const EXECUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Version of the simulated chaincode definition (in `ChaincodeAction.chaincode_id`).
pub const CHAINCODE_VERSION: &str = "1.0";

/// A committed version: (block number, transaction number in the block).
pub type Height = (u64, u64);
/// Committed state: key → (value, version).
pub type State = BTreeMap<String, (Vec<u8>, Height)>;

/// Peer round trips of one simulation: the chaincode's state requests, by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateRequests {
    /// GET_STATE
    pub get_state: u64,
    /// GET_STATE_BY_RANGE
    pub get_state_by_range: u64,
    /// QUERY_STATE_NEXT
    pub query_state_next: u64,
    /// QUERY_STATE_CLOSE
    pub query_state_close: u64,
    /// PUT_STATE
    pub put_state: u64,
    /// DEL_STATE
    pub del_state: u64,
    /// Any other request (refused by the simulated peer).
    pub other: u64,
}

impl std::ops::AddAssign for StateRequests {
    fn add_assign(&mut self, r: Self) {
        self.get_state += r.get_state;
        self.get_state_by_range += r.get_state_by_range;
        self.query_state_next += r.query_state_next;
        self.query_state_close += r.query_state_close;
        self.put_state += r.put_state;
        self.del_state += r.del_state;
        self.other += r.other;
    }
}

impl StateRequests {
    /// All state requests (each one a peer round trip).
    pub fn total(&self) -> u64 {
        self.get_state
            + self.get_state_by_range
            + self.query_state_next
            + self.query_state_close
            + self.put_state
            + self.del_state
            + self.other
    }

    /// Reads only (GET_STATE, GET_STATE_BY_RANGE, QUERY_STATE_NEXT, QUERY_STATE_CLOSE).
    pub fn reads(&self) -> u64 {
        self.get_state + self.get_state_by_range + self.query_state_next + self.query_state_close
    }

    /// Writes only (PUT_STATE, DEL_STATE).
    pub fn writes(&self) -> u64 {
        self.put_state + self.del_state
    }

    fn count(&mut self, kind: Type) {
        let counter = match kind {
            Type::GetState => &mut self.get_state,
            Type::GetStateByRange => &mut self.get_state_by_range,
            Type::QueryStateNext => &mut self.query_state_next,
            Type::QueryStateClose => &mut self.query_state_close,
            Type::PutState => &mut self.put_state,
            Type::DelState => &mut self.del_state,
            _ => &mut self.other,
        };
        *counter += 1;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn message_type(message: &ChaincodeMessage) -> Type {
    Type::try_from(message.r#type).unwrap_or(Type::Undefined)
}

/// Failure of the simulator itself (not of a transaction).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Dialing or serving failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The Connect call failed.
    #[error("gRPC: {0}")]
    Status(#[from] tonic::Status),
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The chaincode broke the handshake.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The proposal's txid is already in the ledger (the peer refuses to endorse it).
    #[error("duplicate transaction found: {0}")]
    DuplicateTxid(String),
    /// The proposal targets another channel.
    #[error("channel {0} is not served by this peer")]
    WrongChannel(String),
    /// The proposal failed the peer's checks (docs/fabric-encoding.md §5.1 step 1): malformed
    /// header, bad txid, bad or high-S signature, unknown creator or MSP not a member. The
    /// chaincode was not called.
    #[error("proposal refused: {0}")]
    BadProposal(String),
}

/// Serves `runtime` as a chaincode on a random local port; returns the endpoint to dial.
pub async fn spawn_chaincode(runtime: Runtime, package_id: &str) -> Result<(String, JoinHandle<()>), SimError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let router = Server::builder().add_service(ChaincodeService::new(runtime, package_id).into_server());
    let handle = tokio::spawn(async move {
        if let Err(error) = router.serve_with_incoming(TcpIncoming::from(listener)).await {
            tracing::warn!(%error, "simulated chaincode server stopped");
        }
    });
    Ok((format!("http://{address}"), handle))
}

/// A signed proposal and the parts the peer needs (docs/fabric-encoding.md §4.2).
#[derive(Clone, Debug)]
pub struct SimProposal {
    /// lowercase hex SHA-256(nonce ‖ creator).
    pub txid: String,
    /// Channel of the proposal.
    pub channel_id: String,
    /// What the peer receives from the client.
    pub signed: SignedProposal,
    /// The chaincode input (args).
    pub input: ChaincodeInput,
    channel_header: Vec<u8>,
    signature_header: Vec<u8>,
    /// `ChaincodeProposalPayload` without TransientMap (the proposal hash's last part).
    payload_without_transient: Vec<u8>,
}

impl SimProposal {
    /// A proposal with a random 24-byte nonce, timestamped now.
    pub fn new(channel_id: &str, chaincode_name: &str, identity: &Identity, args: Vec<Vec<u8>>) -> Self {
        let random = [uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat();
        let nonce = random.get(..24).map(<[u8]>::to_vec).unwrap_or(random);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = prost_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
        };
        Self::with_nonce(channel_id, chaincode_name, identity, args, timestamp, nonce)
    }

    /// A proposal with the given timestamp and nonce (deterministic bytes).
    pub fn with_nonce(
        channel_id: &str,
        chaincode_name: &str,
        identity: &Identity,
        args: Vec<Vec<u8>>,
        timestamp: prost_types::Timestamp,
        nonce: Vec<u8>,
    ) -> Self {
        let creator = identity.serialized();
        let txid = hex::encode(Sha256::new().chain_update(&nonce).chain_update(&creator).finalize());
        let chaincode_id = ChaincodeId { name: chaincode_name.to_owned(), ..Default::default() };
        let extension = ChaincodeHeaderExtension { chaincode_id: Some(chaincode_id.clone()) }.encode_to_vec();
        let channel_header = ChannelHeader {
            r#type: ENDORSER_TRANSACTION,
            version: 0,
            timestamp: Some(timestamp),
            channel_id: channel_id.to_owned(),
            tx_id: txid.clone(),
            epoch: 0,
            extension,
            tls_cert_hash: Vec::new(),
        }
        .encode_to_vec();
        let signature_header = SignatureHeader { creator, nonce }.encode_to_vec();
        let header = Header { channel_header: channel_header.clone(), signature_header: signature_header.clone() };
        let input = ChaincodeInput { args, decorations: BTreeMap::new(), is_init: false };
        let spec = ChaincodeInvocationSpec {
            chaincode_spec: Some(ChaincodeSpec {
                r#type: crate::fabric::protos::chaincode_spec::Type::Golang as i32,
                chaincode_id: Some(chaincode_id),
                input: Some(input.clone()),
                timeout: 0,
            }),
        };
        let payload = ChaincodeProposalPayload { input: spec.encode_to_vec(), transient_map: BTreeMap::new() };
        let payload_without_transient = payload.encode_to_vec();
        let proposal_bytes =
            Proposal { header: header.encode_to_vec(), payload: payload.encode_to_vec(), extension: Vec::new() }
                .encode_to_vec();
        // An empty signature (refused by the peer) only if the system has no randomness.
        let signature = identity.sign(&proposal_bytes).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot sign the proposal");
            Vec::new()
        });
        Self {
            txid,
            channel_id: channel_id.to_owned(),
            signed: SignedProposal { proposal_bytes, signature },
            input,
            channel_header,
            signature_header,
            payload_without_transient,
        }
    }

    /// SHA-256(channel header ‖ signature header ‖ payload without TransientMap).
    pub fn proposal_hash(&self) -> Vec<u8> {
        Sha256::new()
            .chain_update(&self.channel_header)
            .chain_update(&self.signature_header)
            .chain_update(&self.payload_without_transient)
            .finalize()
            .to_vec()
    }
}

/// Per-transaction routes of a connection, by (channel id, tx id).
type Routes = Arc<Mutex<HashMap<(String, String), mpsc::UnboundedSender<ChaincodeMessage>>>>;

/// One peer→chaincode stream, after the handshake.
#[derive(Debug)]
pub struct ChaincodeConnection {
    package_id: String,
    out: mpsc::Sender<ChaincodeMessage>,
    routes: Routes,
    reader: JoinHandle<()>,
    /// TRANSACTION messages sent so far.
    transactions: AtomicU64,
}

impl Drop for ChaincodeConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl ChaincodeConnection {
    /// Dials `endpoint` (e.g. `http://127.0.0.1:9999`) and runs the handshake: expects
    /// REGISTER, answers REGISTERED then READY.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, SimError> {
        let channel: Channel = Endpoint::from_shared(endpoint.into())?.connect().await?;
        let mut client = ChaincodeClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (out, receiver) = mpsc::channel(256);
        let mut inbound = client.connect(ReceiverStream::new(receiver)).await?.into_inner();
        let register = inbound
            .message()
            .await?
            .ok_or_else(|| SimError::Handshake("the stream ended before REGISTER".to_owned()))?;
        if message_type(&register) != Type::Register {
            return Err(SimError::Handshake(format!(
                "expected REGISTER, got {}",
                message_type(&register).as_str_name()
            )));
        }
        let id = ChaincodeId::decode(register.payload.as_slice())
            .map_err(|e| SimError::Handshake(format!("malformed REGISTER payload: {e}")))?;
        for kind in [Type::Registered, Type::Ready] {
            let message = ChaincodeMessage { r#type: kind as i32, ..Default::default() };
            out.send(message).await.map_err(|_| SimError::Handshake("the stream closed".to_owned()))?;
        }
        let routes: Routes = Arc::default();
        let reader = tokio::spawn(read_loop(inbound, Arc::clone(&routes)));
        Ok(Self { package_id: id.name, out, routes, reader, transactions: AtomicU64::new(0) })
    }

    /// The package id the chaincode registered with.
    pub fn package_id(&self) -> &str {
        &self.package_id
    }

    /// Sends a raw message on the stream (for protocol tests).
    pub async fn send_raw(&self, message: ChaincodeMessage) -> Result<(), SimError> {
        self.out.send(message).await.map_err(|_| SimError::Handshake("the stream is closed".to_owned()))
    }

    /// How many transactions the peer sent on this stream (endorsements and raw transactions).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Sends TRANSACTION and serves the chaincode's state requests from `simulator` until
    /// COMPLETED or ERROR. `Ok` = COMPLETED's Response and event, `Err` = the failure text.
    async fn execute(
        &self,
        txid: &str,
        channel_id: &str,
        payload: Vec<u8>,
        proposal: Option<SignedProposal>,
        simulator: &mut TxSimulator,
    ) -> Result<(Response, Option<ChaincodeEvent>), String> {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let key = (channel_id.to_owned(), txid.to_owned());
        let (sender, mut inbox) = mpsc::unbounded_channel();
        lock(&self.routes).insert(key.clone(), sender);
        let outcome = self.drive(txid, channel_id, payload, proposal, simulator, &mut inbox).await;
        // All iterators and the route die with the transaction.
        lock(&self.routes).remove(&key);
        outcome
    }

    async fn drive(
        &self,
        txid: &str,
        channel_id: &str,
        payload: Vec<u8>,
        proposal: Option<SignedProposal>,
        simulator: &mut TxSimulator,
        inbox: &mut mpsc::UnboundedReceiver<ChaincodeMessage>,
    ) -> Result<(Response, Option<ChaincodeEvent>), String> {
        let header =
            ChaincodeMessage { txid: txid.to_owned(), channel_id: channel_id.to_owned(), ..Default::default() };
        let transaction = ChaincodeMessage { r#type: Type::Transaction as i32, payload, proposal, ..header.clone() };
        self.out.send(transaction).await.map_err(|_| "chaincode stream terminated".to_owned())?;
        loop {
            let message = match tokio::time::timeout(EXECUTE_TIMEOUT, inbox.recv()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err("chaincode stream terminated".to_owned()),
                Err(_) => return Err("timeout expired while executing transaction".to_owned()),
            };
            match message_type(&message) {
                Type::Completed => {
                    let response = Response::decode(message.payload.as_slice())
                        .map_err(|e| format!("malformed COMPLETED payload: {e}"))?;
                    return Ok((response, message.chaincode_event));
                }
                Type::Error => {
                    return Err(format!(
                        "transaction returned with failure: {}",
                        String::from_utf8_lossy(&message.payload)
                    ));
                }
                kind => {
                    let reply = match simulator.handle(kind, &message.payload) {
                        Ok(payload) => ChaincodeMessage { r#type: Type::Response as i32, payload, ..header.clone() },
                        Err(error) => ChaincodeMessage {
                            r#type: Type::Error as i32,
                            payload: error.into_bytes(),
                            ..header.clone()
                        },
                    };
                    self.out.send(reply).await.map_err(|_| "chaincode stream terminated".to_owned())?;
                }
            }
        }
    }

    /// Sends a TRANSACTION with arbitrary payload/proposal and returns how it ended, over an
    /// empty state (for protocol tests: malformed proposals).
    pub async fn raw_transaction(
        &self,
        txid: &str,
        channel_id: &str,
        payload: Vec<u8>,
        proposal: Option<SignedProposal>,
    ) -> Result<(Response, Option<ChaincodeEvent>), String> {
        let mut simulator = TxSimulator::new("raw", Arc::new(State::new()));
        self.execute(txid, channel_id, payload, proposal, &mut simulator).await
    }
}

async fn read_loop(mut inbound: tonic::Streaming<ChaincodeMessage>, routes: Routes) {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "chaincode stream failed");
                break;
            }
        };
        if message_type(&message) == Type::Keepalive {
            continue;
        }
        let key = (message.channel_id.clone(), message.txid.clone());
        let route = lock(&routes).get(&key).cloned();
        match route {
            Some(route) => {
                let _ = route.send(message);
            }
            // The 2.5 peer logs and drops messages for unknown transactions.
            None => tracing::warn!(txid = %key.1, "message for no transaction in flight: dropped"),
        }
    }
    // Stream over: every waiting transaction sees "stream terminated".
    lock(&routes).clear();
}

/// One range scan of a simulation.
#[derive(Debug)]
struct RangeScan {
    start: String,
    end: String,
    /// Last key pulled from the state.
    cursor: Option<String>,
    pulled: Vec<(String, Height)>,
    lookahead: Option<(String, Vec<u8>)>,
    exhausted: bool,
}

/// A range of `state`, `None` when empty (BTreeMap::range panics on inverted bounds).
fn state_range<'a>(
    state: &'a State,
    lower: Bound<&str>,
    upper: Bound<&str>,
) -> Option<Range<'a, String, (Vec<u8>, Height)>> {
    let (low, low_included) = match lower {
        Bound::Included(key) => (key, true),
        Bound::Excluded(key) => (key, false),
        Bound::Unbounded => ("", true),
    };
    let empty = match upper {
        Bound::Unbounded => false,
        Bound::Included(high) => low > high || (low == high && !low_included),
        Bound::Excluded(high) => low >= high,
    };
    (!empty).then(|| state.range::<str, _>((lower, upper)))
}

/// `end = ""` means "to the end of the namespace".
fn end_bound(end: &str) -> Bound<&str> {
    if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) }
}

impl RangeScan {
    fn pull(&mut self, state: &State) -> Option<(String, Vec<u8>)> {
        let lower = match &self.cursor {
            Some(cursor) => Bound::Excluded(cursor.as_str()),
            None => Bound::Included(self.start.as_str()),
        };
        let next = state_range(state, lower, end_bound(&self.end)).and_then(|mut range| range.next());
        match next {
            Some((key, (value, height))) => {
                self.pulled.push((key.clone(), *height));
                self.cursor = Some(key.clone());
                Some((key.clone(), value.clone()))
            }
            None => {
                self.exhausted = true;
                None
            }
        }
    }

    fn info(&self) -> RangeQueryInfo {
        let end_key = match (&self.pulled.last(), self.exhausted) {
            (Some((last, _)), false) => last.clone(),
            _ => self.end.clone(),
        };
        RangeQueryInfo {
            start_key: self.start.clone(),
            end_key,
            itr_exhausted: self.exhausted,
            reads_info: Some(ReadsInfo::RawReads(QueryReads {
                kv_reads: self.pulled.iter().map(|(key, height)| kv_read(key, Some(*height))).collect(),
            })),
        }
    }
}

fn kv_read(key: &str, height: Option<Height>) -> KvRead {
    KvRead { key: key.to_owned(), version: height.map(|(block_num, tx_num)| Version { block_num, tx_num }) }
}

/// The peer side of one transaction's simulation: committed reads only, recorded.
#[derive(Debug)]
struct TxSimulator {
    namespace: String,
    state: Arc<State>,
    reads: BTreeMap<String, Option<Height>>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    ranges: Vec<RangeScan>,
    iterators: HashMap<String, usize>,
    next_iterator: u64,
    requests: StateRequests,
}

fn decode<M: Message + Default>(payload: &[u8], kind: Type) -> Result<M, String> {
    M::decode(payload).map_err(|e| format!("{} failed: malformed payload: {e}", kind.as_str_name()))
}

fn public_only(collection: &str) -> Result<(), String> {
    if collection.is_empty() { Ok(()) } else { Err("private data is not simulated".to_owned()) }
}

impl TxSimulator {
    fn new(namespace: &str, state: Arc<State>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            state,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            ranges: Vec::new(),
            iterators: HashMap::new(),
            next_iterator: 0,
            requests: StateRequests::default(),
        }
    }

    /// Answers one state request: `Ok` = RESPONSE payload, `Err` = ERROR text.
    fn handle(&mut self, kind: Type, payload: &[u8]) -> Result<Vec<u8>, String> {
        self.requests.count(kind);
        match kind {
            Type::GetState => {
                let request: GetState = decode(payload, kind)?;
                public_only(&request.collection)?;
                // Committed value even after this transaction's own write (no RYW).
                let entry = self.state.get(&request.key);
                self.reads.entry(request.key).or_insert(entry.map(|(_, height)| *height));
                Ok(entry.map(|(value, _)| value.clone()).unwrap_or_default())
            }
            Type::PutState => {
                let request: PutState = decode(payload, kind)?;
                public_only(&request.collection)?;
                let value = (!request.value.is_empty()).then_some(request.value);
                self.writes.insert(request.key, value);
                Ok(Vec::new())
            }
            Type::DelState => {
                let request: DelState = decode(payload, kind)?;
                public_only(&request.collection)?;
                self.writes.insert(request.key, None);
                Ok(Vec::new())
            }
            Type::GetStateByRange => {
                let request: GetStateByRange = decode(payload, kind)?;
                public_only(&request.collection)?;
                if !request.metadata.is_empty() {
                    return Err("paginated range queries are not simulated".to_owned());
                }
                self.next_iterator += 1;
                let id = format!("iterator-{}", self.next_iterator);
                self.ranges.push(RangeScan {
                    start: request.start_key,
                    end: request.end_key,
                    cursor: None,
                    pulled: Vec::new(),
                    lookahead: None,
                    exhausted: false,
                });
                self.iterators.insert(id.clone(), self.ranges.len() - 1);
                self.batch(id)
            }
            Type::QueryStateNext => {
                let request: QueryStateNext = decode(payload, kind)?;
                self.batch(request.id)
            }
            Type::QueryStateClose => {
                let request: QueryStateClose = decode(payload, kind)?;
                self.iterators.remove(&request.id);
                Ok(QueryResponse { results: Vec::new(), has_more: false, id: request.id, metadata: Vec::new() }
                    .encode_to_vec())
            }
            other => Err(format!("{} is not supported by the simulated peer", other.as_str_name())),
        }
    }

    /// The next batch of iterator `id`: up to 100 results, reading one ahead.
    fn batch(&mut self, id: String) -> Result<Vec<u8>, String> {
        let not_found = || format!("QUERY_STATE_NEXT failed: query iterator not found: {id}");
        let index = *self.iterators.get(&id).ok_or_else(not_found)?;
        let state = Arc::clone(&self.state);
        let scan = self.ranges.get_mut(index).ok_or_else(not_found)?;
        let mut results = Vec::new();
        if let Some(entry) = scan.lookahead.take() {
            results.push(entry);
        }
        while results.len() < MAX_RESULTS_PER_BATCH {
            match scan.pull(&state) {
                Some(entry) => results.push(entry),
                None => break,
            }
        }
        if results.len() == MAX_RESULTS_PER_BATCH && !scan.exhausted {
            scan.lookahead = scan.pull(&state);
        }
        let has_more = scan.lookahead.is_some();
        if !has_more {
            // The peer releases an exhausted iterator at once.
            self.iterators.remove(&id);
        }
        let results = results
            .into_iter()
            .map(|(key, value)| QueryResultBytes {
                result_bytes: Kv { namespace: self.namespace.clone(), key, value }.encode_to_vec(),
            })
            .collect();
        Ok(QueryResponse { results, has_more, id, metadata: Vec::new() }.encode_to_vec())
    }

    /// The namespace's read-write set, serialized as the peer does (reads and writes sorted by
    /// key, range queries in execution order).
    fn rwset(&self) -> KvrwSet {
        KvrwSet {
            reads: self.reads.iter().map(|(key, height)| kv_read(key, *height)).collect(),
            range_queries_info: self.ranges.iter().map(RangeScan::info).collect(),
            writes: self
                .writes
                .iter()
                .map(|(key, value)| KvWrite {
                    key: key.clone(),
                    is_delete: value.is_none(),
                    value: value.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// What one peer answered to a proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct Endorsement {
    /// The proposal's txid.
    pub txid: String,
    /// The chaincode's response (or `500 error in simulation: …`).
    pub response: Response,
    /// The namespace read-write set.
    pub rwset: KvrwSet,
    /// `rwset.TxReadWriteSet` bytes (`ChaincodeAction.results`).
    pub results: Vec<u8>,
    /// The chaincode event, with chaincode name and txid filled as the peer does.
    pub event: Option<ChaincodeEvent>,
    /// `ProposalResponsePayload` bytes (what the Gateway compares across endorsers); `None`
    /// when the chaincode failed with ERROR.
    pub payload: Option<Vec<u8>>,
    /// The chaincode's state requests during the simulation (peer round trips).
    pub state_requests: StateRequests,
}

impl Endorsement {
    /// Whether the peer would endorse (status < 400).
    pub fn is_endorsed(&self) -> bool {
        self.payload.is_some() && self.response.status < 400
    }

    /// The events of the chaincode event payload (encoded `orchestrator.Event`s).
    pub fn events(&self) -> Vec<Vec<u8>> {
        self.event.as_ref().and_then(|event| encoding::decode_events_payload(&event.payload).ok()).unwrap_or_default()
    }
}

/// `protos.TxValidationCode` values the simulator produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationCode {
    /// 0
    Valid = 0,
    /// 9
    DuplicateTxid = 9,
    /// 10: not endorsed (status >= 400 or chaincode ERROR).
    EndorsementPolicyFailure = 10,
    /// 11
    MvccReadConflict = 11,
    /// 12
    PhantomReadConflict = 12,
    /// 22
    BadRwset = 22,
}

/// A chaincode event delivered after its block committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredEvent {
    /// Block number.
    pub block: u64,
    /// The event (all four fields set).
    pub event: ChaincodeEvent,
}

#[derive(Debug)]
struct Ledger {
    state: Arc<State>,
    /// Next block number (block 0 is the genesis block).
    height: u64,
    txids: HashSet<String>,
    events: Vec<DeliveredEvent>,
}

/// A single simulated peer of one channel, with one chaincode namespace.
#[derive(Debug)]
pub struct Peer {
    channel_id: String,
    chaincode_name: String,
    /// MSPs whose members may write on the channel; `None`: every MSP the simulator issued an
    /// identity for.
    members: Option<HashSet<String>>,
    ledger: Mutex<Ledger>,
}

impl Peer {
    /// An empty ledger (genesis block only).
    pub fn new(channel_id: impl Into<String>, chaincode_name: impl Into<String>) -> Self {
        Self {
            channel_id: channel_id.into(),
            chaincode_name: chaincode_name.into(),
            members: None,
            ledger: Mutex::new(Ledger {
                state: Arc::new(State::new()),
                height: 1,
                txids: HashSet::new(),
                events: Vec::new(),
            }),
        }
    }

    /// Restricts the channel's writers to the members of `msp_ids`.
    pub fn with_members(mut self, msp_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.members = Some(msp_ids.into_iter().map(Into::into).collect());
        self
    }

    /// The peer's proposal checks (docs/fabric-encoding.md §5.1 step 1), on the signed bytes:
    /// header type ENDORSER_TRANSACTION, epoch 0, this channel, non-empty nonce and creator, txid =
    /// hex SHA-256(nonce ‖ creator), the creator's certificate issued for its MSP, a low-S
    /// signature of `proposal_bytes` by that certificate's key, the MSP a member of the channel,
    /// and the txid not in the ledger.
    pub fn check_proposal(&self, proposal: &SimProposal) -> Result<(), SimError> {
        let refuse = |reason: String| SimError::BadProposal(reason);
        let signed = &proposal.signed;
        let decoded = Proposal::decode(signed.proposal_bytes.as_slice())
            .map_err(|e| refuse(format!("malformed proposal: {e}")))?;
        let header = Header::decode(decoded.header.as_slice()).map_err(|e| refuse(format!("malformed header: {e}")))?;
        let channel_header = ChannelHeader::decode(header.channel_header.as_slice())
            .map_err(|e| refuse(format!("malformed channel header: {e}")))?;
        let signature_header = SignatureHeader::decode(header.signature_header.as_slice())
            .map_err(|e| refuse(format!("malformed signature header: {e}")))?;
        if channel_header.r#type != ENDORSER_TRANSACTION {
            return Err(refuse(format!("invalid header type {}", channel_header.r#type)));
        }
        if channel_header.epoch != 0 {
            return Err(refuse(format!("invalid epoch {}, expected 0", channel_header.epoch)));
        }
        if channel_header.channel_id != self.channel_id || proposal.channel_id != self.channel_id {
            return Err(SimError::WrongChannel(channel_header.channel_id));
        }
        if signature_header.nonce.is_empty() {
            return Err(refuse("nonce is empty".to_owned()));
        }
        if signature_header.creator.is_empty() {
            return Err(refuse("creator is empty".to_owned()));
        }
        let expected = hex::encode(
            Sha256::new().chain_update(&signature_header.nonce).chain_update(&signature_header.creator).finalize(),
        );
        if channel_header.tx_id != expected || proposal.txid != channel_header.tx_id {
            return Err(refuse(format!("incorrect txid {}, expected {expected}", channel_header.tx_id)));
        }
        let creator = SerializedIdentity::decode(signature_header.creator.as_slice())
            .map_err(|e| refuse(format!("malformed creator: {e}")))?;
        let denied = || refuse(format!("access denied: channel [{}] creator org [{}]", self.channel_id, creator.mspid));
        let issued = identity::issued(&creator.mspid).ok_or_else(denied)?;
        if issued.certificate != creator.id_bytes {
            return Err(denied());
        }
        if let Err(error) = identity::verify(issued.public_key(), &signed.proposal_bytes, &signed.signature) {
            tracing::debug!(%error, "creator signature refused");
            return Err(denied());
        }
        if self.members.as_ref().is_some_and(|members| !members.contains(&creator.mspid)) {
            return Err(denied());
        }
        if lock(&self.ledger).txids.contains(&channel_header.tx_id) {
            return Err(SimError::DuplicateTxid(channel_header.tx_id));
        }
        Ok(())
    }

    /// A proposal calling `method` with `request` as `identity`.
    pub fn proposal(&self, identity: &Identity, method: &str, request: &[u8]) -> SimProposal {
        SimProposal::new(&self.channel_id, &self.chaincode_name, identity, encoding::call_args(method, request))
    }

    /// Simulates `proposal` on `chaincode` against the current committed state.
    pub async fn endorse(
        &self,
        chaincode: &ChaincodeConnection,
        proposal: &SimProposal,
    ) -> Result<Endorsement, SimError> {
        if proposal.channel_id != self.channel_id {
            return Err(SimError::WrongChannel(proposal.channel_id.clone()));
        }
        self.check_proposal(proposal)?;
        let snapshot = {
            let ledger = lock(&self.ledger);
            if ledger.txids.contains(&proposal.txid) {
                return Err(SimError::DuplicateTxid(proposal.txid.clone()));
            }
            Arc::clone(&ledger.state)
        };
        let mut simulator = TxSimulator::new(&self.chaincode_name, snapshot);
        let outcome = chaincode
            .execute(
                &proposal.txid,
                &proposal.channel_id,
                proposal.input.encode_to_vec(),
                Some(proposal.signed.clone()),
                &mut simulator,
            )
            .await;
        let rwset = simulator.rwset();
        let results = TxReadWriteSet {
            data_model: 0,
            ns_rwset: vec![NsReadWriteSet { namespace: self.chaincode_name.clone(), rwset: rwset.encode_to_vec() }],
        }
        .encode_to_vec();
        let (response, event, payload) = match outcome {
            Ok((response, event)) => {
                let event = event.map(|event| ChaincodeEvent {
                    chaincode_id: self.chaincode_name.clone(),
                    tx_id: proposal.txid.clone(),
                    ..event
                });
                let action = ChaincodeAction {
                    results: results.clone(),
                    events: event.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
                    response: Some(response.clone()),
                    chaincode_id: Some(ChaincodeId {
                        name: self.chaincode_name.clone(),
                        version: CHAINCODE_VERSION.to_owned(),
                        ..Default::default()
                    }),
                };
                let payload = ProposalResponsePayload {
                    proposal_hash: proposal.proposal_hash(),
                    extension: action.encode_to_vec(),
                }
                .encode_to_vec();
                (response, event, Some(payload))
            }
            Err(error) => {
                let response =
                    Response { status: 500, message: format!("error in simulation: {error}"), payload: Vec::new() };
                (response, None, None)
            }
        };
        let state_requests = simulator.requests;
        Ok(Endorsement { txid: proposal.txid.clone(), response, rwset, results, event, payload, state_requests })
    }

    /// Simulates and discards the rwset (Evaluate): nothing is committed nor emitted.
    pub async fn evaluate(
        &self,
        chaincode: &ChaincodeConnection,
        proposal: &SimProposal,
    ) -> Result<Response, SimError> {
        Ok(self.endorse(chaincode, proposal).await?.response)
    }

    /// Endorses `proposal` and commits it alone in a block.
    pub async fn submit(
        &self,
        chaincode: &ChaincodeConnection,
        proposal: &SimProposal,
    ) -> Result<(Endorsement, ValidationCode), SimError> {
        let endorsement = self.endorse(chaincode, proposal).await?;
        let code = self.commit_block(std::slice::from_ref(&endorsement)).pop().unwrap_or(ValidationCode::BadRwset);
        Ok((endorsement, code))
    }

    /// Validates and commits one block: transactions in order, each checked against the
    /// committed state plus the writes of the earlier valid transactions of the block.
    pub fn commit_block(&self, transactions: &[Endorsement]) -> Vec<ValidationCode> {
        let mut ledger = lock(&self.ledger);
        let block = ledger.height;
        let mut state: State = (*ledger.state).clone();
        let mut written: HashSet<String> = HashSet::new();
        let mut in_block: HashSet<&str> = HashSet::new();
        let mut codes = Vec::with_capacity(transactions.len());
        for (tx_num, tx) in (0u64..).zip(transactions) {
            let code = if ledger.txids.contains(&tx.txid) || !in_block.insert(tx.txid.as_str()) {
                ValidationCode::DuplicateTxid
            } else if !tx.is_endorsed() {
                ValidationCode::EndorsementPolicyFailure
            } else {
                match self.namespace_rwset(&tx.results) {
                    Some(rwset) => {
                        let code = validate(&rwset, &state, &written);
                        if code == ValidationCode::Valid {
                            for write in rwset.writes {
                                if write.is_delete {
                                    state.remove(&write.key);
                                } else {
                                    state.insert(write.key.clone(), (write.value, (block, tx_num)));
                                }
                                written.insert(write.key);
                            }
                            if let Some(event) = &tx.event {
                                ledger.events.push(DeliveredEvent { block, event: event.clone() });
                            }
                        }
                        code
                    }
                    None => ValidationCode::BadRwset,
                }
            };
            codes.push(code);
        }
        for tx in transactions {
            ledger.txids.insert(tx.txid.clone());
        }
        ledger.state = Arc::new(state);
        ledger.height += 1;
        codes
    }

    fn namespace_rwset(&self, results: &[u8]) -> Option<KvrwSet> {
        let tx = TxReadWriteSet::decode(results).ok()?;
        match tx.ns_rwset.as_slice() {
            [ns] if ns.namespace == self.chaincode_name => KvrwSet::decode(ns.rwset.as_slice()).ok(),
            [] => Some(KvrwSet::default()),
            _ => None,
        }
    }

    /// Chaincode events delivered so far (valid transactions only), in block and tx order.
    pub fn events(&self) -> Vec<DeliveredEvent> {
        lock(&self.ledger).events.clone()
    }

    /// Number of blocks, genesis included.
    pub fn height(&self) -> u64 {
        lock(&self.ledger).height
    }

    /// The committed state.
    pub fn state(&self) -> State {
        (*lock(&self.ledger).state).clone()
    }
}

/// MVCC then phantom checks of one transaction (docs/fabric-encoding.md §5.4).
fn validate(rwset: &KvrwSet, state: &State, written: &HashSet<String>) -> ValidationCode {
    let height = |version: &Option<Version>| version.as_ref().map(|v| (v.block_num, v.tx_num));
    for read in &rwset.reads {
        let current = state.get(&read.key).map(|(_, h)| *h);
        if written.contains(&read.key) || current != height(&read.version) {
            return ValidationCode::MvccReadConflict;
        }
    }
    for range in &rwset.range_queries_info {
        let recorded: Vec<(&str, Option<Height>)> = match &range.reads_info {
            Some(ReadsInfo::RawReads(reads)) => {
                reads.kv_reads.iter().map(|read| (read.key.as_str(), height(&read.version))).collect()
            }
            None => Vec::new(),
        };
        let upper =
            if range.itr_exhausted { end_bound(&range.end_key) } else { Bound::Included(range.end_key.as_str()) };
        let current: Vec<(&str, Option<Height>)> = state_range(state, Bound::Included(range.start_key.as_str()), upper)
            .map(|entries| entries.map(|(key, (_, h))| (key.as_str(), Some(*h))).collect())
            .unwrap_or_default();
        if current != recorded {
            return ValidationCode::PhantomReadConflict;
        }
    }
    ValidationCode::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: impl IntoIterator<Item = usize>) -> Arc<State> {
        Arc::new(keys.into_iter().map(|i| (format!("k{i:04}"), (vec![1], (1, 0)))).collect())
    }

    fn range(sim: &mut TxSimulator, start: &str, end: &str) -> QueryResponse {
        let request = GetStateByRange { start_key: start.into(), end_key: end.into(), ..Default::default() };
        let bytes = sim.handle(Type::GetStateByRange, &request.encode_to_vec()).expect("range");
        QueryResponse::decode(bytes.as_slice()).expect("response")
    }

    #[test]
    fn range_batches_of_100_with_look_ahead() {
        let mut sim = TxSimulator::new("cc", state(0..250));
        let first = range(&mut sim, "k", "");
        assert_eq!((first.results.len(), first.has_more), (100, true));
        let next = |sim: &mut TxSimulator, id: &str| {
            let bytes = sim.handle(Type::QueryStateNext, &QueryStateNext { id: id.into() }.encode_to_vec());
            QueryResponse::decode(bytes.expect("next").as_slice()).expect("response")
        };
        let second = next(&mut sim, &first.id);
        assert_eq!((second.results.len(), second.has_more), (100, true));
        let third = next(&mut sim, &first.id);
        assert_eq!((third.results.len(), third.has_more), (50, false));
        assert!(sim.handle(Type::QueryStateNext, &QueryStateNext { id: first.id }.encode_to_vec()).is_err());
        let info = &sim.rwset().range_queries_info[0];
        assert!(info.itr_exhausted);
        // Every request is one round trip, refused ones included.
        let expected = StateRequests { get_state_by_range: 1, query_state_next: 3, ..Default::default() };
        assert_eq!((sim.requests, sim.requests.total(), sim.requests.reads()), (expected, 4, 4));

        // Closed early: the range ends at the look-ahead key (the 101st).
        let mut sim = TxSimulator::new("cc", state(0..250));
        let first = range(&mut sim, "k", "l");
        sim.handle(Type::QueryStateClose, &QueryStateClose { id: first.id }.encode_to_vec()).expect("close");
        let info = &sim.rwset().range_queries_info[0];
        assert_eq!((info.itr_exhausted, info.end_key.as_str()), (false, "k0100"));
    }

    fn blind_write(txid: &str, key: &str) -> Endorsement {
        let rwset = KvrwSet {
            writes: vec![KvWrite { key: key.into(), is_delete: false, value: vec![1] }],
            ..Default::default()
        };
        let results = TxReadWriteSet {
            data_model: 0,
            ns_rwset: vec![NsReadWriteSet { namespace: "cc".into(), rwset: rwset.encode_to_vec() }],
        }
        .encode_to_vec();
        Endorsement {
            txid: txid.into(),
            response: Response { status: 200, ..Default::default() },
            rwset,
            results,
            event: Some(ChaincodeEvent { tx_id: txid.into(), event_name: "e".into(), ..Default::default() }),
            payload: Some(Vec::new()),
            state_requests: StateRequests::default(),
        }
    }

    #[test]
    fn blocks_version_writes_and_refuse_duplicate_txids() {
        let peer = Peer::new("ch", "cc");
        let codes = peer.commit_block(&[blind_write("t1", "a"), blind_write("t1", "b"), blind_write("t2", "a")]);
        assert_eq!(codes, vec![ValidationCode::Valid, ValidationCode::DuplicateTxid, ValidationCode::Valid]);
        // Blind writes never conflict: the last valid one wins, versioned (block, tx index).
        assert_eq!(peer.state().get("a"), Some(&(vec![1], (1, 2))));
        assert!(!peer.state().contains_key("b"));
        let codes = peer.commit_block(&[blind_write("t2", "c")]);
        assert_eq!(codes, vec![ValidationCode::DuplicateTxid]);
        let delivered: Vec<(u64, String)> = peer.events().into_iter().map(|d| (d.block, d.event.tx_id)).collect();
        assert_eq!(delivered, vec![(1, "t1".to_owned()), (1, "t2".to_owned())]);
        assert_eq!(peer.height(), 3);
    }

    #[test]
    fn no_read_your_writes_and_phantoms() {
        let base = state([1, 3]);
        let mut sim = TxSimulator::new("cc", Arc::clone(&base));
        let put = PutState { key: "k0001".into(), value: vec![9], collection: String::new() };
        sim.handle(Type::PutState, &put.encode_to_vec()).expect("put");
        let got =
            sim.handle(Type::GetState, &GetState { key: "k0001".into(), collection: String::new() }.encode_to_vec());
        assert_eq!(got, Ok(vec![1]));
        let empty = range(&mut sim, "x", "y");
        assert!(empty.results.is_empty() && !empty.has_more);
        range(&mut sim, "k0000", "k0005");
        let rwset = sim.rwset();
        assert_eq!(validate(&rwset, &base, &HashSet::new()), ValidationCode::Valid);
        let mut inserted = (*base).clone();
        inserted.insert("k0002".into(), (vec![2], (2, 0)));
        // k0001 unchanged, but a key appeared inside the scanned range.
        assert_eq!(validate(&rwset, &inserted, &HashSet::new()), ValidationCode::PhantomReadConflict);
        let written = HashSet::from(["k0001".to_owned()]);
        assert_eq!(validate(&rwset, &base, &written), ValidationCode::MvccReadConflict);
    }
}
