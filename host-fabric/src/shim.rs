//! The chaincode side of `protos.Chaincode/Connect` (docs/fabric-encoding.md §3).
//!
//! Each stream: REGISTER → REGISTERED → READY, then one task per TRANSACTION/INIT. A task runs
//! the component over a [`PeerBackend`] whose reads become GET_STATE / GET_STATE_BY_RANGE /
//! QUERY_STATE_NEXT / QUERY_STATE_CLOSE requests, then sends the call's net writes as
//! PUT_STATE / DEL_STATE and finishes with COMPLETED (or ERROR). All writes to the stream go
//! through one channel, so they are serialized.
//!
//! [`Shutdown`] drains the streams: a long-lived `Connect` stream never ends by itself, so a
//! server's graceful stop alone would wait for it forever while the peer keeps using it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use orchestrator_runtime::{BackendError, BoxFuture, Runtime, RuntimeError, StateBackend, StateEntry, identity};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response as GrpcResponse, Status, Streaming};

use crate::encoding::{self, EVENT_NAME, STATUS_INTERNAL, STATUS_OK, STATUS_UNKNOWN_METHOD};
use crate::fabric::protos::chaincode_message::Type;
use crate::fabric::protos::chaincode_server::{Chaincode, ChaincodeServer};
use crate::fabric::protos::{
    ChaincodeEvent, ChaincodeId, ChaincodeInput, ChaincodeMessage, DelState, GetState, GetStateByRange,
    GetStateMetadata, PutState, QueryResponse, QueryStateClose, QueryStateNext, Response,
};
use crate::fabric::queryresult::Kv;
use crate::versions::{self, LogicVersions};
use crate::{admin, proposal};

/// Largest message either way (the peer's limit).
pub const MAX_MESSAGE_BYTES: usize = 100 << 20;
/// Messages queued towards the peer before senders wait.
const OUTBOUND_QUEUE: usize = 256;

type Outbound = mpsc::Sender<Result<ChaincodeMessage, Status>>;
/// The in-flight transactions of a stream, by (channel id, tx id): where to deliver the
/// peer's RESPONSE/ERROR to that transaction's single outstanding request.
type Routes = Arc<Mutex<HashMap<(String, String), mpsc::UnboundedSender<ChaincodeMessage>>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn message_type(message: &ChaincodeMessage) -> Type {
    Type::try_from(message.r#type).unwrap_or(Type::Undefined)
}

/// What a transaction refused during shutdown is answered (an ERROR: the peer fails the
/// proposal at once instead of waiting for its execute timeout).
pub const SHUTTING_DOWN: &str = "the chaincode is shutting down: transaction not started";

/// Graceful stop of the streams of a [`ChaincodeService`] and its clones.
///
/// After [`Shutdown::begin`], each stream answers new TRANSACTION/INIT messages with an ERROR
/// ([`SHUTTING_DOWN`]), keeps serving the state requests of the transactions already running
/// until each has sent its COMPLETED/ERROR, then ends (the peer reads the end of the stream
/// and dials again on its next transaction). New `Connect` calls are refused.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<ShutdownState>,
}

#[derive(Debug)]
struct ShutdownState {
    stopping: watch::Sender<bool>,
    streams: AtomicUsize,
    in_flight: AtomicUsize,
    finished_while_stopping: AtomicUsize,
    refused: AtomicUsize,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            inner: Arc::new(ShutdownState {
                stopping: watch::Sender::new(false),
                streams: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                finished_while_stopping: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
            }),
        }
    }
}

impl Shutdown {
    /// Starts draining every stream (idempotent).
    pub fn begin(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Whether [`Shutdown::begin`] was called.
    pub fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Resolves once [`Shutdown::begin`] is called (e.g. the server's shutdown signal).
    pub async fn begun(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// `Connect` streams open now.
    pub fn open_streams(&self) -> usize {
        self.inner.streams.load(Ordering::SeqCst)
    }

    /// Transactions running now, over all streams.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Transactions that ended (answer queued to the peer) after [`Shutdown::begin`].
    pub fn finished_while_stopping(&self) -> usize {
        self.inner.finished_while_stopping.load(Ordering::SeqCst)
    }

    /// Transactions refused with [`SHUTTING_DOWN`].
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    fn stream_opened(&self) -> Counted {
        self.inner.streams.fetch_add(1, Ordering::SeqCst);
        Counted { shutdown: self.clone(), what: CountedKind::Stream }
    }

    fn transaction_started(&self) -> Counted {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        Counted { shutdown: self.clone(), what: CountedKind::Transaction }
    }
}

#[derive(Debug)]
enum CountedKind {
    Stream,
    Transaction,
}

/// Decrements its counter when dropped, whatever way the stream or transaction ends.
#[derive(Debug)]
struct Counted {
    shutdown: Shutdown,
    what: CountedKind,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let state = &self.shutdown.inner;
        match self.what {
            CountedKind::Stream => {
                state.streams.fetch_sub(1, Ordering::SeqCst);
            }
            CountedKind::Transaction => {
                if self.shutdown.is_stopping() {
                    state.finished_while_stopping.fetch_add(1, Ordering::SeqCst);
                }
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The `protos.Chaincode` service: every stream registers as `package_id` and runs each call
/// on the logic version its channel names (docs/modes.md §3.7), `runtime` where none is named.
#[derive(Clone, Debug)]
pub struct ChaincodeService {
    versions: Arc<LogicVersions>,
    package_id: String,
    shutdown: Shutdown,
}

impl ChaincodeService {
    /// A service registering as `package_id` (the CCaaS `CHAINCODE_ID`).
    pub fn new(runtime: Runtime, package_id: impl Into<String>) -> Self {
        Self {
            versions: Arc::new(LogicVersions::new(runtime)),
            package_id: package_id.into(),
            shutdown: Shutdown::default(),
        }
    }

    /// The logic versions this service has compiled (shared with its clones).
    pub fn versions(&self) -> &LogicVersions {
        &self.versions
    }

    /// The handle that drains this service's streams (shared with its clones).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The tonic service, with the peer's message size limits.
    pub fn into_server(self) -> ChaincodeServer<Self> {
        ChaincodeServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl Chaincode for ChaincodeService {
    type ConnectStream = ReceiverStream<Result<ChaincodeMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ChaincodeMessage>>,
    ) -> Result<GrpcResponse<Self::ConnectStream>, Status> {
        if self.shutdown.is_stopping() {
            return Err(Status::unavailable("the chaincode is shutting down"));
        }
        let inbound = request.into_inner();
        let (out, receiver) = mpsc::channel(OUTBOUND_QUEUE);
        // The chaincode speaks first.
        let register = ChaincodeMessage {
            r#type: Type::Register as i32,
            payload: ChaincodeId { name: self.package_id.clone(), ..Default::default() }.encode_to_vec(),
            ..Default::default()
        };
        out.send(Ok(register)).await.map_err(|_| Status::internal("the stream closed before REGISTER"))?;
        tokio::spawn(serve_stream(Arc::clone(&self.versions), inbound, out, self.shutdown.clone()));
        Ok(GrpcResponse::new(ReceiverStream::new(receiver)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Created,
    Established,
    Ready,
}

/// Reads the peer's messages of one stream until it ends, breaks the protocol, or (after
/// [`Shutdown::begin`]) has no transaction left in flight. Returning drops the last `out`
/// sender once the transactions' tasks are done, which ends the response stream.
async fn serve_stream(
    versions: Arc<LogicVersions>,
    mut inbound: Streaming<ChaincodeMessage>,
    out: Outbound,
    shutdown: Shutdown,
) {
    let _open = shutdown.stream_opened();
    let mut stopping = shutdown.inner.stopping.subscribe();
    let routes: Routes = Arc::default();
    let mut transactions = JoinSet::new();
    let mut phase = Phase::Created;
    let (mut finished, mut refused) = (0_usize, 0_usize);
    loop {
        let draining = *stopping.borrow_and_update();
        if draining && transactions.is_empty() {
            tracing::info!(finished, refused, "shutting down: no transaction left, closing the peer stream");
            break;
        }
        // Each branch is cancel-safe: the loser of the race keeps its message for next time.
        let received = tokio::select! {
            received = inbound.message() => received,
            Some(ended) = transactions.join_next(), if !transactions.is_empty() => {
                if let Err(error) = ended {
                    tracing::error!(%error, "transaction task failed");
                }
                if draining {
                    finished += 1;
                }
                continue;
            }
            _ = stopping.changed(), if !draining => {
                let in_flight = transactions.len();
                if in_flight > 0 {
                    tracing::info!(in_flight, "shutting down: finishing this stream's transactions in flight");
                }
                continue;
            }
        };
        let message = match received {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "peer stream failed");
                break;
            }
        };
        let kind = message_type(&message);
        match (phase, kind) {
            (Phase::Created, Type::Registered) => phase = Phase::Established,
            // A 3.x READY payload advertises batch messages; this shim uses only 2.5 ones.
            (Phase::Established, Type::Ready) => {
                tracing::info!("registered with the peer");
                phase = Phase::Ready;
            }
            (_, Type::Keepalive) => {
                if out.send(Ok(message)).await.is_err() {
                    break;
                }
            }
            (Phase::Ready, Type::Transaction | Type::Init) if shutdown.is_stopping() => {
                tracing::info!(channel = %message.channel_id, txid = %message.txid, "shutting down: transaction refused");
                refused += 1;
                shutdown.inner.refused.fetch_add(1, Ordering::SeqCst);
                let reply = ChaincodeMessage {
                    r#type: Type::Error as i32,
                    payload: SHUTTING_DOWN.as_bytes().to_vec(),
                    txid: message.txid,
                    channel_id: message.channel_id,
                    ..Default::default()
                };
                if out.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
            (Phase::Ready, Type::Transaction | Type::Init) => {
                start_transaction(&versions, message, &out, &routes, &shutdown, &mut transactions);
            }
            (Phase::Ready, Type::Response | Type::Error) => {
                let key = (message.channel_id.clone(), message.txid.clone());
                let route = lock(&routes).get(&key).cloned();
                match route {
                    Some(route) => {
                        // A closed route means the transaction already ended: nothing to do.
                        let _ = route.send(message);
                    }
                    None => tracing::warn!(channel = %key.0, txid = %key.1, "answer for no transaction in flight"),
                }
            }
            _ => {
                let error = format!("unexpected {} message in state {phase:?}", kind.as_str_name());
                tracing::warn!(%error, "ending the peer stream");
                let _ = out.send(Err(Status::failed_precondition(error))).await;
                break;
            }
        }
    }
    // The stream is gone: transactions waiting for an answer fail; the others run to their end
    // (their answer then has nowhere to go).
    lock(&routes).clear();
    transactions.detach_all();
}

fn start_transaction(
    versions: &Arc<LogicVersions>,
    message: ChaincodeMessage,
    out: &Outbound,
    routes: &Routes,
    shutdown: &Shutdown,
    transactions: &mut JoinSet<()>,
) {
    let key = (message.channel_id.clone(), message.txid.clone());
    let (sender, inbox) = mpsc::unbounded_channel();
    {
        let mut routes = lock(routes);
        if routes.contains_key(&key) {
            // Answering would be taken for the running transaction's completion.
            tracing::warn!(channel = %key.0, txid = %key.1, "transaction already in flight: ignored");
            return;
        }
        routes.insert(key.clone(), sender);
    }
    let link = Arc::new(PeerLink {
        channel_id: key.0.clone(),
        txid: key.1.clone(),
        out: out.clone(),
        inbox: tokio::sync::Mutex::new(inbox),
    });
    let versions = Arc::clone(versions);
    let routes = Arc::clone(routes);
    let out = out.clone();
    let counted = shutdown.transaction_started();
    transactions.spawn(async move {
        let reply = match execute(&versions, &message, &link).await {
            Ok(Completed { response, event }) => ChaincodeMessage {
                r#type: Type::Completed as i32,
                payload: response.encode_to_vec(),
                chaincode_event: event,
                ..link.message_header()
            },
            Err(error) => {
                tracing::info!(channel = %link.channel_id, txid = %link.txid, %error, "transaction failed");
                ChaincodeMessage { r#type: Type::Error as i32, payload: error.into_bytes(), ..link.message_header() }
            }
        };
        lock(&routes).remove(&key);
        let _ = out.send(Ok(reply)).await;
        // Counted as finished only once its answer is queued before the stream's end.
        drop(counted);
    });
}

/// A transaction's answer: what the COMPLETED message carries.
pub(crate) struct Completed {
    response: Response,
    event: Option<ChaincodeEvent>,
}

impl Completed {
    pub(crate) fn failed(status: i32, message: String) -> Self {
        Self { response: Response { status, message, payload: Vec::new() }, event: None }
    }

    pub(crate) fn ok(payload: Vec<u8>, event: Option<ChaincodeEvent>) -> Self {
        Self { response: Response { status: STATUS_OK, message: String::new(), payload }, event }
    }
}

/// Runs one transaction. `Err` = an ERROR message (malformed transaction, peer refusal,
/// broken stream); business errors are a COMPLETED with a status >= 400.
async fn execute(
    versions: &LogicVersions,
    message: &ChaincodeMessage,
    link: &Arc<PeerLink>,
) -> Result<Completed, String> {
    let input =
        ChaincodeInput::decode(message.payload.as_slice()).map_err(|e| format!("malformed ChaincodeInput: {e}"))?;
    let ctx =
        proposal::context(&message.channel_id, &message.txid, message.proposal.as_ref()).map_err(|e| e.to_string())?;
    let (method, request) = encoding::parse_args(&input.args).map_err(|e| e.to_string())?;
    if admin::is_admin_method(method) {
        return admin::execute(versions, &ctx, method, request, message.proposal.as_ref(), link).await;
    }
    // Read first, so the version is in the transaction's read set (docs/modes.md §3.7).
    let runtime = versions.resolve(link).await?.runtime;
    let Some(read_only) = runtime.is_read_only(method) else {
        return Ok(Completed::failed(STATUS_UNKNOWN_METHOD, format!("OE0010: unknown method {method:?}")));
    };
    let backend = PeerBackend { link: Arc::clone(link) };
    let invocation = match runtime.invoke(&ctx, method, request, backend).await.outcome {
        Ok(invocation) => invocation,
        Err(RuntimeError::Trap(trap)) => {
            return Ok(Completed::failed(STATUS_INTERNAL, format!("OE0007: logic trapped: {trap}")));
        }
        Err(error) => return Err(error.to_string()),
    };
    let mut response = match invocation.result {
        Ok(response) => response,
        Err(error) => return Ok(Completed::failed(error.kind.fabric_status(), error.message)),
    };
    // QueryVersion names the component this chaincode ran; the facade passes it on.
    identity::stamp_logic_sha256(method, &mut response, &invocation.logic.sha256);
    if read_only && !(invocation.writes.is_empty() && invocation.events.is_empty()) {
        return Err(format!("read-only method {method} wrote state or emitted events"));
    }
    if let Some((key, _)) = invocation.writes.iter().find(|(key, _)| versions::is_reserved(key)) {
        return Err(format!("{method} wrote {key:?}: keys under {:?} are the shim's", versions::RESERVED_PREFIX));
    }
    // Sorted by key (the runtime's order): identical request sequences on every endorser.
    for (key, value) in invocation.writes {
        let result = match value {
            Some(value) => link.put_state(&key, &value).await,
            None => link
                .request(Type::DelState, DelState { key, collection: String::new() }.encode_to_vec())
                .await
                .map(drop),
        };
        result.map_err(|e| e.message)?;
    }
    let event = (!invocation.events.is_empty()).then(|| ChaincodeEvent {
        event_name: EVENT_NAME.to_owned(),
        payload: encoding::events_payload(&invocation.events),
        // The peer fills the chaincode name and tx id.
        ..Default::default()
    });
    Ok(Completed { response: Response { status: STATUS_OK, message: String::new(), payload: response }, event })
}

/// One transaction's side of the stream: requests out, the peer's answers in.
pub(crate) struct PeerLink {
    channel_id: String,
    txid: String,
    out: Outbound,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<ChaincodeMessage>>,
}

impl PeerLink {
    fn message_header(&self) -> ChaincodeMessage {
        ChaincodeMessage { txid: self.txid.clone(), channel_id: self.channel_id.clone(), ..Default::default() }
    }

    /// Sends one request and waits for its answer (one outstanding request per transaction:
    /// the inbox lock is held until the answer arrives).
    async fn request(&self, kind: Type, payload: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        let mut inbox = self.inbox.lock().await;
        let message = ChaincodeMessage { r#type: kind as i32, payload, ..self.message_header() };
        self.out.send(Ok(message)).await.map_err(|_| BackendError::fatal("the peer stream is closed"))?;
        match inbox.recv().await {
            Some(answer) if message_type(&answer) == Type::Response => Ok(answer.payload),
            Some(answer) if message_type(&answer) == Type::Error => Err(BackendError::fatal(format!(
                "the peer refused {}: {}",
                kind.as_str_name(),
                String::from_utf8_lossy(&answer.payload)
            ))),
            Some(answer) => Err(BackendError::fatal(format!(
                "unexpected {} answer to {}",
                message_type(&answer).as_str_name(),
                kind.as_str_name()
            ))),
            None => Err(BackendError::fatal("the peer stream is closed")),
        }
    }

    async fn query(&self, kind: Type, payload: Vec<u8>) -> Result<QueryResponse, BackendError> {
        let bytes = self.request(kind, payload).await?;
        QueryResponse::decode(bytes.as_slice())
            .map_err(|e| BackendError::fatal(format!("malformed QueryResponse to {}: {e}", kind.as_str_name())))
    }

    /// GET_STATE: the committed value of `key` (docs/fabric-encoding.md §1.5), `None` if absent.
    pub(crate) async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let payload = GetState { key: key.to_owned(), collection: String::new() }.encode_to_vec();
        Ok(encoding::decode_value(self.request(Type::GetState, payload).await?))
    }

    /// GET_STATE_METADATA: puts `key`'s committed version in the read set (the metadata, which
    /// this chaincode never sets, is not returned).
    pub(crate) async fn get_state_metadata(&self, key: &str) -> Result<(), BackendError> {
        let payload = GetStateMetadata { key: key.to_owned(), collection: String::new() }.encode_to_vec();
        self.request(Type::GetStateMetadata, payload).await.map(drop)
    }

    /// PUT_STATE of `value` (docs/fabric-encoding.md §1.5).
    pub(crate) async fn put_state(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        let value = encoding::encode_value(value);
        let payload = PutState { key: key.to_owned(), value, collection: String::new() }.encode_to_vec();
        self.request(Type::PutState, payload).await.map(drop)
    }
}

/// Committed reads served by the peer. The runtime's overlay adds read-your-writes on top.
struct PeerBackend {
    link: Arc<PeerLink>,
}

/// Shim rule for simple keys: never scan from the composite-key namespace (keys starting with
/// 0x00, e.g. the peer's own `\0\u{10FFFF}initialized`). The logic's keys hold no NUL.
const SIMPLE_KEY_FLOOR: &str = "\u{1}";

/// A read of the logic in the shim's namespace: refused (its keys never are there).
fn reserved(what: &str) -> BackendError {
    BackendError::fatal(format!(
        "the logic may not read {what}: keys under {:?} are the shim's",
        versions::RESERVED_PREFIX
    ))
}

impl PeerBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        if versions::is_reserved(key) {
            return Err(reserved(&format!("{key:?}")));
        }
        self.link.get_state(key).await
    }

    async fn scan_range(&self, start: &str, end: &str, limit: u32) -> Result<Vec<StateEntry>, BackendError> {
        if versions::overlaps_reserved(start, end) {
            return Err(reserved(&format!("the range [{start:?}, {end:?})")));
        }
        let start = if start < SIMPLE_KEY_FLOOR { SIMPLE_KEY_FLOOR } else { start };
        if end <= start {
            return Ok(Vec::new());
        }
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let request = GetStateByRange {
            start_key: start.to_owned(),
            end_key: end.to_owned(),
            collection: String::new(),
            metadata: Vec::new(),
        };
        let mut page = self.link.query(Type::GetStateByRange, request.encode_to_vec()).await?;
        let mut entries = Vec::new();
        loop {
            for result in page.results {
                if entries.len() >= limit {
                    break;
                }
                let kv = Kv::decode(result.result_bytes.as_slice())
                    .map_err(|e| BackendError::fatal(format!("malformed range result: {e}")))?;
                if let Some(value) = encoding::decode_value(kv.value) {
                    entries.push((kv.key, value));
                }
            }
            if !page.has_more {
                break;
            }
            let id = page.id;
            if entries.len() >= limit {
                // Stop early: the peer keeps the iterator open until closed.
                self.link.query(Type::QueryStateClose, QueryStateClose { id }.encode_to_vec()).await?;
                break;
            }
            page = self.link.query(Type::QueryStateNext, QueryStateNext { id }.encode_to_vec()).await?;
        }
        Ok(entries)
    }
}

impl StateBackend for PeerBackend {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        // Fabric 2.5 has no multi-get: one GET_STATE per key, in order.
        Box::pin(async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(self.get(key).await?);
            }
            Ok(values)
        })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>> {
        Box::pin(self.scan_range(start, end, limit))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A backend whose peer side is a channel, and that channel's receiving end.
    fn backend() -> (PeerBackend, mpsc::Receiver<Result<ChaincodeMessage, Status>>) {
        let (out, sent) = mpsc::channel(4);
        let (_answers, inbox) = mpsc::unbounded_channel();
        let link =
            PeerLink { channel_id: "ch".to_owned(), txid: "tx".to_owned(), out, inbox: tokio::sync::Mutex::new(inbox) };
        (PeerBackend { link: Arc::new(link) }, sent)
    }

    #[tokio::test]
    async fn the_logic_never_reaches_the_reserved_keys() {
        let (mut backend, mut sent) = backend();
        let keys = [versions::ACTIVE_KEY.to_owned()];
        let refused = backend.get_many(&keys).await.map(drop).unwrap_err();
        assert!(refused.message.contains("the shim's") && !refused.retryable, "{refused}");
        let refused = backend.scan("a", "~z", 10).await.map(drop).unwrap_err();
        assert!(refused.message.contains("range"), "{refused}");
        // Refused here: nothing reached the peer.
        assert!(sent.try_recv().is_err());
    }
}
