//! A Fabric Gateway client (docs/fabric-encoding.md §4): the `gateway.Gateway` service of a Fabric
//! 2.5 peer, called with proposals built and signed here, for a facade that forwards the
//! orchestrator's calls to a real network.
//!
//! - [`SigningIdentity`]: an MSP id, its certificate and private key (PEM files,
//!   docs/fabric-encoding.md §4.1);
//! - [`GatewayClient`]: one gRPC channel to one peer, shared by any number of tasks (`Clone`,
//!   `&self` methods): [`evaluate`](GatewayClient::evaluate) for queries,
//!   [`submit`](GatewayClient::submit) (Endorse → Submit → CommitStatus) for updates,
//!   [`commit_status`](GatewayClient::commit_status) and
//!   [`chaincode_events`](GatewayClient::chaincode_events);
//! - [`RoundTrips`]: how many of those calls this process has made (benches).
//!
//! The chaincode's arguments are the crate's calling convention ([`crate::encoding::call_args`]).
//!
//! # How chaincode errors arrive
//!
//! The chaincode answers a business error with `Response{status ≥ 400, message = "OE…: …"}`
//! (`ErrorKind::fabric_status`). The peer does not endorse it and the Gateway turns it
//! into a gRPC error. Observed on a 2.5.16 peer (`tests/gateway_network.rs`), identical for
//! 409, 500 and 501:
//!
//! | RPC | gRPC code | `grpc-message` | `gateway.ErrorDetail.message` |
//! |---|---|---|---|
//! | Evaluate | `UNKNOWN` | `evaluate call to endorser returned error: chaincode response <status>, <message>` | `chaincode response <status>, <message>` |
//! | Endorse | `ABORTED` | `failed to endorse transaction, see attached details for more info` | `chaincode response <status>, <message>` |
//!
//! The details are the `google.rpc.Status.details` of the `grpc-status-details-bin` trailer,
//! each an `Any{type_url: "type.googleapis.com/gateway.ErrorDetail"}` naming the endorser
//! (`address` as the peer advertises it, `msp_id`); an Endorse tried on several peers of the
//! organization has one detail per peer. `<status>` is the decimal `Response.status` and
//! `<message>` the chaincode's `Response.message` verbatim (quotes, commas and all), so both
//! are recovered exactly: from the first detail starting with `chaincode response `, else from
//! the Evaluate `grpc-message`, as [`GatewayError::Chaincode`]. Everything else is
//! [`GatewayError::Gateway`] with the details appended to its message (per the 2.5 Gateway
//! source; not all exercised): a proposal refused before execution, the chaincode answering
//! ERROR (`error in simulation: …`), and a `500` whose `ProposalResponse` has no payload,
//! which the Gateway takes for the peer's own failure (ABORTED, retried on other peers, the
//! bare message in the detail). The peer adds that payload to every chaincode response of
//! status ≥ 500, so this chaincode's `500`s are chaincode errors, as observed.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::fabric::common::{ChannelHeader, Header, Payload, SignatureHeader};
use crate::fabric::gateway::gateway_client::GatewayClient as RawClient;
use crate::fabric::gateway::{
    ChaincodeEventsRequest, ChaincodeEventsResponse, CommitStatusRequest, EndorseRequest, ErrorDetail, EvaluateRequest,
    SignedChaincodeEventsRequest, SignedCommitStatusRequest, SubmitRequest,
};
use crate::fabric::google::rpc::Status as RpcStatus;
use crate::fabric::orderer::{SeekNextCommit, SeekPosition, SeekSpecified, seek_position};
use crate::fabric::protos::{
    ChaincodeAction, ChaincodeActionPayload, ChaincodeHeaderExtension, ChaincodeId, ChaincodeInput,
    ChaincodeInvocationSpec, ChaincodeProposalPayload, ChaincodeSpec, Proposal, ProposalResponsePayload, Response,
    SignedProposal, Transaction, TxValidationCode, chaincode_spec,
};
use crate::proposal::ENDORSER_TRANSACTION;
use crate::signing::Identity;

/// Nonce length of a proposal (what Fabric's SDKs use; any non-empty length is accepted).
const NONCE_LEN: usize = 24;
/// Bound of Evaluate, Endorse and Submit: above the Gateway's own 30 s endorsement and
/// broadcast timeouts, so that its more precise error comes first.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Connection establishment (TCP + TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PINGs while calls are open, to notice a dead peer under a long ChaincodeEvents
/// stream or CommitStatus wait. Well above the peer's enforced minimum (60 s): closer pings
/// earn GOAWAY `too_many_pings`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(120);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The peer's default gRPC message limit both ways (100 MiB); tonic's 4 MiB decoding default
/// would refuse large query results.
const MAX_MESSAGE_SIZE: usize = 100 * 1024 * 1024;
/// `type_url` of a `gateway.ErrorDetail` inside `google.rpc.Status.details`.
const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/gateway.ErrorDetail";
/// How the Gateway writes a chaincode's error response (`responseStatus` in the 2.5 peer).
const CHAINCODE_RESPONSE: &str = "chaincode response ";
/// The Gateway's prefix of a failed Evaluate's message.
const EVALUATE_ERROR: &str = "evaluate call to endorser returned error: ";

/// A failed Gateway call.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The chaincode answered an error: its response status (as
    /// `ErrorKind::fabric_status` set it) and message, both exactly as the chaincode
    /// returned them (see the module documentation for where they come from).
    #[error("chaincode error {status}: {message}")]
    Chaincode {
        /// `Response.status` (≥ 400).
        status: i32,
        /// `Response.message`: the logic's full `OE…` message.
        message: String,
    },
    /// The transaction committed but invalid (MVCC_READ_CONFLICT = 11,
    /// PHANTOM_READ_CONFLICT = 12, ...): no state change, no event.
    #[error("transaction {txid} committed as invalid: {} ({code})", validation_code_name(*.code))]
    Invalid {
        /// The transaction id.
        txid: String,
        /// Its `protos.TxValidationCode`.
        code: i32,
    },
    /// A gRPC status from the Gateway that is not a chaincode error; its message has the
    /// `ErrorDetail`s appended (`<message> [<msp_id>@<address>: <detail>; ...]`), its details
    /// are the original trailer.
    #[error("gateway error {:?}: {}", .0.code(), .0.message())]
    Gateway(tonic::Status),
    /// The outcome of a submitted transaction is unknown: the wait for its commit timed out or
    /// lost the connection. Resolve it with [`GatewayClient::commit_status`].
    #[error("no commit status for transaction {txid} in time")]
    CommitTimeout {
        /// The transaction id.
        txid: String,
        /// The endorsed response payload: the call's answer if the transaction commits VALID.
        payload: Vec<u8>,
    },
    /// The identity files cannot be used, or signing failed.
    #[error("identity: {0}")]
    Identity(String),
    /// The peer cannot be reached (address, TLS, connection).
    #[error("transport: {0}")]
    Transport(String),
    /// A Gateway answer does not decode or lacks a field.
    #[error("malformed gateway response: {0}")]
    Decode(String),
}

/// Codes of a failed call that may still have taken effect (timed out, connection lost).
fn outcome_unknown(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
    )
}

/// The name of a `TxValidationCode` (`UNKNOWN` for a number Fabric does not define).
pub fn validation_code_name(code: i32) -> &'static str {
    TxValidationCode::try_from(code).map_or("UNKNOWN", |code| code.as_str_name())
}

impl GatewayError {
    /// Classifies a Gateway status: a chaincode error response becomes
    /// [`GatewayError::Chaincode`]; anything else [`GatewayError::Gateway`], with the
    /// `ErrorDetail` messages appended to its message.
    pub fn from_status(status: tonic::Status) -> Self {
        let details = error_details(status.details());
        let chaincode = details
            .iter()
            .find_map(|detail| detail.message.strip_prefix(CHAINCODE_RESPONSE).and_then(parse_chaincode_response))
            .or_else(|| {
                status
                    .message()
                    .strip_prefix(EVALUATE_ERROR)
                    .and_then(|rest| rest.strip_prefix(CHAINCODE_RESPONSE))
                    .and_then(parse_chaincode_response)
            });
        if let Some((code, message)) = chaincode {
            return Self::Chaincode { status: code, message };
        }
        if details.is_empty() {
            return Self::Gateway(status);
        }
        let listed: Vec<String> =
            details.iter().map(|detail| format!("{}@{}: {}", detail.msp_id, detail.address, detail.message)).collect();
        let message = format!("{} [{}]", status.message(), listed.join("; "));
        Self::Gateway(tonic::Status::with_details_and_metadata(
            status.code(),
            message,
            status.details().to_vec().into(),
            status.metadata().clone(),
        ))
    }
}

/// The `gateway.ErrorDetail`s of an encoded `google.rpc.Status` (none if it does not decode).
pub fn error_details(status_details: &[u8]) -> Vec<ErrorDetail> {
    let Ok(status) = RpcStatus::decode(status_details) else {
        return Vec::new();
    };
    status
        .details
        .iter()
        .filter(|any| any.type_url == ERROR_DETAIL_TYPE)
        .filter_map(|any| ErrorDetail::decode(any.value.as_slice()).ok())
        .collect()
}

/// `<status>, <message>` (the text after `chaincode response `) → (status, message), for
/// error statuses only.
fn parse_chaincode_response(text: &str) -> Option<(i32, String)> {
    let (number, message) = text.split_once(", ")?;
    let status: i32 = number.parse().ok()?;
    (status >= 400).then(|| (status, message.to_owned()))
}

fn sign_error(error: crate::signing::IdentityError) -> GatewayError {
    GatewayError::Identity(error.to_string())
}

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, GatewayError> {
    M::decode(bytes).map_err(|error| GatewayError::Decode(format!("{what}: {error}")))
}

/// An error and its sources (tonic's transport errors say little at the top level).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A client identity: MSP id, X.509 certificate (PEM) and its P-256 private key. The creator
/// of every proposal and the signer of every request built with it.
#[derive(Clone)]
pub struct SigningIdentity {
    identity: Identity,
    /// `msp.SerializedIdentity` bytes, the same everywhere (txid, headers, requests).
    creator: Vec<u8>,
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningIdentity").field("msp_id", &self.identity.msp_id).finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// `cert.pem` + `key.pem` (PKCS#8 EC P-256 PEM as cryptogen writes it, `priv_sk` files too;
    /// SEC1 `EC PRIVATE KEY` also accepted) of `msp_id`. The certificate bytes are kept as they
    /// are: the peer compares them with the MSP's.
    pub fn from_pem(msp_id: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, GatewayError> {
        let identity = Identity::from_pem(msp_id, cert_pem, key_pem).map_err(sign_error)?;
        Ok(Self::from_identity(identity))
    }

    /// A wallet directory laid out `<dir>/<mspid>/cert.pem`, `<dir>/<mspid>/key.pem`.
    pub fn from_wallet(dir: &Path, msp_id: &str) -> Result<Self, GatewayError> {
        let read = |name: &str| {
            let path = dir.join(msp_id).join(name);
            std::fs::read(&path).map_err(|error| GatewayError::Identity(format!("{}: {error}", path.display())))
        };
        Self::from_pem(msp_id, &read("cert.pem")?, &read("key.pem")?)
    }

    /// An identity already in memory (e.g. one the simulator issued).
    pub fn from_identity(identity: Identity) -> Self {
        let creator = identity.serialized();
        Self { identity, creator }
    }

    /// The MSP id.
    pub fn msp_id(&self) -> &str {
        &self.identity.msp_id
    }

    /// The certificate PEM.
    pub fn certificate(&self) -> &[u8] {
        &self.identity.certificate
    }

    /// The uncompressed public key point of the certificate.
    pub fn public_key(&self) -> &[u8] {
        self.identity.public_key()
    }

    /// `msp.SerializedIdentity{mspid, id_bytes = certificate}` bytes.
    pub fn creator(&self) -> &[u8] {
        &self.creator
    }

    /// ECDSA P-256 / SHA-256 of `message`, DER, low-S (docs/fabric-encoding.md §4.3).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, GatewayError> {
        self.identity.sign(message).map_err(sign_error)
    }
}

/// lowercase hex(SHA-256(nonce ‖ creator)): the transaction id the peer recomputes
/// (docs/fabric-encoding.md §4.2).
pub fn transaction_id(nonce: &[u8], creator: &[u8]) -> String {
    hex::encode(Sha256::new().chain_update(nonce).chain_update(creator).finalize())
}

/// A signed proposal and its transaction id.
#[derive(Debug, Clone)]
pub struct SignedTransaction {
    /// lowercase hex(SHA-256(nonce ‖ creator)).
    pub txid: String,
    /// The proposal bytes and their signature.
    pub signed: SignedProposal,
}

/// Builds and signs the proposal of calling `chaincode` with `args` on `channel`
/// (docs/fabric-encoding.md §4.2): the chaincode name in both the header extension (read by the
/// peer) and the invocation spec (read by the Gateway), epoch 0, no transient data.
pub fn build_proposal(
    id: &SigningIdentity,
    channel: &str,
    chaincode: &str,
    args: Vec<Vec<u8>>,
    nonce: Vec<u8>,
    timestamp: prost_types::Timestamp,
) -> Result<SignedTransaction, GatewayError> {
    let txid = transaction_id(&nonce, &id.creator);
    let chaincode_id = ChaincodeId { name: chaincode.to_owned(), ..Default::default() };
    let channel_header = ChannelHeader {
        r#type: ENDORSER_TRANSACTION,
        version: 0,
        timestamp: Some(timestamp),
        channel_id: channel.to_owned(),
        tx_id: txid.clone(),
        epoch: 0,
        extension: ChaincodeHeaderExtension { chaincode_id: Some(chaincode_id.clone()) }.encode_to_vec(),
        tls_cert_hash: Vec::new(),
    };
    let header = Header {
        channel_header: channel_header.encode_to_vec(),
        signature_header: SignatureHeader { creator: id.creator.clone(), nonce }.encode_to_vec(),
    };
    let spec = ChaincodeInvocationSpec {
        chaincode_spec: Some(ChaincodeSpec {
            // Not checked by the peer; what Fabric's SDKs send.
            r#type: chaincode_spec::Type::Golang as i32,
            chaincode_id: Some(chaincode_id),
            input: Some(ChaincodeInput { args, ..Default::default() }),
            timeout: 0,
        }),
    };
    let payload = ChaincodeProposalPayload { input: spec.encode_to_vec(), ..Default::default() };
    let proposal_bytes =
        Proposal { header: header.encode_to_vec(), payload: payload.encode_to_vec(), extension: Vec::new() }
            .encode_to_vec();
    let signature = id.sign(&proposal_bytes)?;
    Ok(SignedTransaction { txid, signed: SignedProposal { proposal_bytes, signature } })
}

fn new_nonce() -> Result<Vec<u8>, GatewayError> {
    let mut nonce = vec![0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| GatewayError::Identity("no system randomness".to_owned()))?;
    Ok(nonce)
}

fn now() -> prost_types::Timestamp {
    // A clock before 1970 gives the epoch: the peer does not check proposal times.
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

/// The chaincode's `Response` inside an endorsed transaction's `Payload` bytes
/// (docs/fabric-encoding.md §4.5 step 2), after checking that the envelope is the one of `txid`.
pub fn endorsed_response(envelope_payload: &[u8], txid: &str) -> Result<Response, GatewayError> {
    let payload: Payload = decode(envelope_payload, "Payload")?;
    let header = payload.header.ok_or_else(|| GatewayError::Decode("Payload without header".to_owned()))?;
    let channel_header: ChannelHeader = decode(&header.channel_header, "ChannelHeader")?;
    // Signing the envelope commits us to it: it must be the transaction we proposed.
    if channel_header.tx_id != txid {
        return Err(GatewayError::Decode(format!(
            "the prepared transaction is {:?}, not the proposed {txid:?}",
            channel_header.tx_id
        )));
    }
    let transaction: Transaction = decode(&payload.data, "Transaction")?;
    let action =
        transaction.actions.first().ok_or_else(|| GatewayError::Decode("Transaction without actions".to_owned()))?;
    let action_payload: ChaincodeActionPayload = decode(&action.payload, "ChaincodeActionPayload")?;
    let endorsed = action_payload
        .action
        .ok_or_else(|| GatewayError::Decode("ChaincodeActionPayload without action".to_owned()))?;
    let response_payload: ProposalResponsePayload =
        decode(&endorsed.proposal_response_payload, "ProposalResponsePayload")?;
    let chaincode_action: ChaincodeAction = decode(&response_payload.extension, "ChaincodeAction")?;
    chaincode_action.response.ok_or_else(|| GatewayError::Decode("ChaincodeAction without response".to_owned()))
}

/// The payload of a successful response, or the chaincode's error (an error status should
/// have come as a gRPC error already; kept as a guard).
fn response_payload(response: Response) -> Result<Vec<u8>, GatewayError> {
    if response.status >= 400 {
        return Err(GatewayError::Chaincode { status: response.status, message: response.message });
    }
    Ok(response.payload)
}

/// A transaction committed as VALID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Its transaction id.
    pub txid: String,
    /// The chaincode's response payload (from the endorsement).
    pub payload: Vec<u8>,
    /// The block it committed in.
    pub block_number: u64,
}

/// The validation outcome of a committed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStatus {
    /// `protos.TxValidationCode` (0 = VALID).
    pub code: i32,
    /// The block holding the transaction.
    pub block_number: u64,
}

/// The events of one block emitted by the chaincode's VALID transactions, in transaction order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaincodeEvents {
    /// The block number.
    pub block_number: u64,
    /// At least one event.
    pub events: Vec<ChaincodeEvent>,
}

/// One chaincode event (for this crate's chaincode, `chaincode-updates`, payload decoded by
/// [`crate::encoding::decode_events_payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaincodeEvent {
    /// The emitting transaction.
    pub txid: String,
    /// The event name.
    pub event_name: String,
    /// The payload.
    pub payload: Vec<u8>,
}

impl From<ChaincodeEventsResponse> for ChaincodeEvents {
    fn from(response: ChaincodeEventsResponse) -> Self {
        Self {
            block_number: response.block_number,
            events: response
                .events
                .into_iter()
                .map(|event| ChaincodeEvent { txid: event.tx_id, event_name: event.event_name, payload: event.payload })
                .collect(),
        }
    }
}

/// The Gateway calls made so far by every [`GatewayClient`] of this process, by RPC: each one
/// is a round trip to a peer, counted when sent, whatever its outcome. Process-wide rather
/// than per client, so that a bench reaches the client a server builds for itself; an
/// uncontended atomic increment is nothing beside a network round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundTrips {
    /// Evaluate calls (read-only methods).
    pub evaluate: u64,
    /// Endorse calls (the first step of a submit).
    pub endorse: u64,
    /// Submit calls (the endorsed transaction sent to ordering).
    pub submit: u64,
    /// CommitStatus calls (waiting for a submitted transaction's commit, or settling one).
    pub commit_status: u64,
    /// ChaincodeEvents streams opened.
    pub chaincode_events: u64,
    /// Blocks' events received on those streams (one message each).
    pub event_blocks: u64,
}

impl RoundTrips {
    /// The counts now.
    pub fn now() -> Self {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Self {
            evaluate: load(&COUNTERS.evaluate),
            endorse: load(&COUNTERS.endorse),
            submit: load(&COUNTERS.submit),
            commit_status: load(&COUNTERS.commit_status),
            chaincode_events: load(&COUNTERS.chaincode_events),
            event_blocks: load(&COUNTERS.event_blocks),
        }
    }

    /// The unary calls (Evaluate, Endorse, Submit, CommitStatus): what calls cost, the event
    /// streams aside.
    pub fn calls(&self) -> u64 {
        self.evaluate + self.endorse + self.submit + self.commit_status
    }

    /// The counts since `earlier` (a snapshot taken before).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            evaluate: self.evaluate.saturating_sub(earlier.evaluate),
            endorse: self.endorse.saturating_sub(earlier.endorse),
            submit: self.submit.saturating_sub(earlier.submit),
            commit_status: self.commit_status.saturating_sub(earlier.commit_status),
            chaincode_events: self.chaincode_events.saturating_sub(earlier.chaincode_events),
            event_blocks: self.event_blocks.saturating_sub(earlier.event_blocks),
        }
    }
}

struct Counters {
    evaluate: AtomicU64,
    endorse: AtomicU64,
    submit: AtomicU64,
    commit_status: AtomicU64,
    chaincode_events: AtomicU64,
    event_blocks: AtomicU64,
}

static COUNTERS: Counters = Counters {
    evaluate: AtomicU64::new(0),
    endorse: AtomicU64::new(0),
    submit: AtomicU64::new(0),
    commit_status: AtomicU64::new(0),
    chaincode_events: AtomicU64::new(0),
    event_blocks: AtomicU64::new(0),
};

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    // Sent as `grpc-timeout` (the Gateway stops working on it) and enforced by the channel.
    request.set_timeout(timeout);
    request
}

/// A Gateway client of one peer: one HTTP/2 connection (re-established by tonic after a
/// failure) multiplexing the calls of every clone.
#[derive(Clone)]
pub struct GatewayClient {
    inner: RawClient<Channel>,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient").finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// Connects to the peer at `address` (`host:port`). `tls_ca`: PEM of the peer's TLS CA
    /// (None: plaintext); `server_name`: the name its TLS certificate is checked against and
    /// sent as SNI (None: the host of `address`), e.g. `peer0.org1.example.com` when the
    /// address is an IP. No client certificate (the peer's default).
    pub async fn connect(
        address: &str,
        tls_ca: Option<&[u8]>,
        server_name: Option<&str>,
    ) -> Result<Self, GatewayError> {
        let transport =
            |error: &dyn std::error::Error| GatewayError::Transport(format!("{address}: {}", error_chain(error)));
        let scheme = if tls_ca.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|error| transport(&error))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        if let Some(ca) = tls_ca {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(name) = server_name {
                tls = tls.domain_name(name);
            }
            endpoint = endpoint.tls_config(tls).map_err(|error| transport(&error))?;
        }
        let channel = endpoint.connect().await.map_err(|error| transport(&error))?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        let inner = RawClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Self { inner }
    }

    fn proposal(
        id: &SigningIdentity,
        channel: &str,
        chaincode: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<SignedTransaction, GatewayError> {
        build_proposal(id, channel, chaincode, args, new_nonce()?, now())
    }

    /// Evaluate: runs the call on one peer without ordering it (no commit, no event) and
    /// returns the chaincode's response payload. A chaincode error is
    /// [`GatewayError::Chaincode`].
    pub async fn evaluate(
        &self,
        id: &SigningIdentity,
        channel: &str,
        chaincode: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<Vec<u8>, GatewayError> {
        let proposal = Self::proposal(id, channel, chaincode, args)?;
        let request = EvaluateRequest {
            transaction_id: proposal.txid,
            channel_id: channel.to_owned(),
            proposed_transaction: Some(proposal.signed),
            target_organizations: Vec::new(),
        };
        count(&COUNTERS.evaluate);
        let response = self
            .inner
            .clone()
            .evaluate(with_timeout(request, CALL_TIMEOUT))
            .await
            .map_err(GatewayError::from_status)?
            .into_inner();
        let result =
            response.result.ok_or_else(|| GatewayError::Decode("EvaluateResponse without result".to_owned()))?;
        response_payload(result)
    }

    /// Endorse, Submit, then wait with CommitStatus (bounded by `timeout`); Ok when VALID, with
    /// the payload and the txid. A chaincode error (nothing was ordered) is
    /// [`GatewayError::Chaincode`]; a transaction committed invalid is
    /// [`GatewayError::Invalid`]; no commit status within `timeout` (or the connection lost
    /// while waiting) is [`GatewayError::CommitTimeout`]: the transaction may still commit.
    /// Endorse and Submit are bounded by the Gateway's own timeouts (30 s by default).
    pub async fn submit(
        &self,
        id: &SigningIdentity,
        channel: &str,
        chaincode: &str,
        args: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Submitted, GatewayError> {
        let proposal = Self::proposal(id, channel, chaincode, args)?;
        let txid = proposal.txid;
        let mut client = self.inner.clone();
        let request = EndorseRequest {
            transaction_id: txid.clone(),
            channel_id: channel.to_owned(),
            proposed_transaction: Some(proposal.signed),
            endorsing_organizations: Vec::new(),
        };
        count(&COUNTERS.endorse);
        let endorsed =
            client.endorse(with_timeout(request, CALL_TIMEOUT)).await.map_err(GatewayError::from_status)?.into_inner();
        let mut envelope = endorsed
            .prepared_transaction
            .ok_or_else(|| GatewayError::Decode("EndorseResponse without prepared transaction".to_owned()))?;
        let payload = response_payload(endorsed_response(&envelope.payload, &txid)?)?;
        envelope.signature = id.sign(&envelope.payload)?;
        let request = SubmitRequest {
            transaction_id: txid.clone(),
            channel_id: channel.to_owned(),
            prepared_transaction: Some(envelope),
        };
        count(&COUNTERS.submit);
        // A Submit that timed out or lost its connection may have reached the orderer.
        match client.submit(with_timeout(request, CALL_TIMEOUT)).await {
            Ok(_) => {}
            Err(status) if outcome_unknown(status.code()) => {
                tracing::warn!(%txid, code = ?status.code(), message = status.message(), "submit outcome unknown");
                return Err(GatewayError::CommitTimeout { txid, payload });
            }
            Err(status) => return Err(GatewayError::from_status(status)),
        }

        let status =
            match tokio::time::timeout(timeout, self.commit_status_within(id, channel, &txid, Some(timeout))).await {
                Err(_elapsed) => return Err(GatewayError::CommitTimeout { txid, payload }),
                Ok(Err(GatewayError::Gateway(status))) if outcome_unknown(status.code()) => {
                    tracing::warn!(%txid, code = ?status.code(), message = status.message(), "commit status unknown");
                    return Err(GatewayError::CommitTimeout { txid, payload });
                }
                Ok(result) => result?,
            };
        if status.code != TxValidationCode::Valid as i32 {
            return Err(GatewayError::Invalid { txid, code: status.code });
        }
        Ok(Submitted { txid, payload, block_number: status.block_number })
    }

    /// CommitStatus of a txid already submitted (for resolving a timeout after submission).
    /// The Gateway answers at once for a committed transaction and otherwise waits for its
    /// commit without limit: bound the call (e.g. `tokio::time::timeout`) if the transaction
    /// may never have reached the orderer. Any channel Reader may ask, not only the creator.
    pub async fn commit_status(
        &self,
        id: &SigningIdentity,
        channel: &str,
        txid: &str,
    ) -> Result<CommitStatus, GatewayError> {
        self.commit_status_within(id, channel, txid, None).await
    }

    async fn commit_status_within(
        &self,
        id: &SigningIdentity,
        channel: &str,
        txid: &str,
        timeout: Option<Duration>,
    ) -> Result<CommitStatus, GatewayError> {
        let request = CommitStatusRequest {
            transaction_id: txid.to_owned(),
            channel_id: channel.to_owned(),
            identity: id.creator.clone(),
        }
        .encode_to_vec();
        let signature = id.sign(&request)?;
        let signed = SignedCommitStatusRequest { request, signature };
        let request = match timeout {
            Some(timeout) => with_timeout(signed, timeout),
            None => tonic::Request::new(signed),
        };
        count(&COUNTERS.commit_status);
        let response = self.inner.clone().commit_status(request).await.map_err(GatewayError::from_status)?.into_inner();
        Ok(CommitStatus { code: response.result, block_number: response.block_number })
    }

    /// ChaincodeEvents from `start_block` (None: next block), as a stream of blocks' events:
    /// one item per block holding events of `chaincode` from VALID transactions, ascending.
    ///
    /// The stream is lazy: the call starts at its first poll, because the peer sends nothing
    /// (not even headers) before the first matching block, so waiting for the call here could
    /// block indefinitely. A refused request (e.g. PERMISSION_DENIED for a non-Reader) is
    /// therefore the stream's first item; an error ends the stream.
    pub async fn chaincode_events(
        &self,
        id: &SigningIdentity,
        channel: &str,
        chaincode: &str,
        start_block: Option<u64>,
    ) -> Result<impl Stream<Item = Result<ChaincodeEvents, GatewayError>> + Send + 'static, GatewayError> {
        self.chaincode_events_after(id, channel, chaincode, start_block, None).await
    }

    /// [`chaincode_events`](Self::chaincode_events) resuming after a checkpoint
    /// (docs/fabric-encoding.md §4.6): if the ledger holds `after_txid` the replay starts at its
    /// block, and events are skipped up to and including that transaction's. Pass the txid of an
    /// event actually received: a txid without an event suppresses every event (2.5 behaviour).
    pub async fn chaincode_events_after(
        &self,
        id: &SigningIdentity,
        channel: &str,
        chaincode: &str,
        start_block: Option<u64>,
        after_txid: Option<&str>,
    ) -> Result<impl Stream<Item = Result<ChaincodeEvents, GatewayError>> + Send + 'static, GatewayError> {
        let position = match start_block {
            Some(number) => seek_position::Type::Specified(SeekSpecified { number }),
            None => seek_position::Type::NextCommit(SeekNextCommit {}),
        };
        let request = ChaincodeEventsRequest {
            channel_id: channel.to_owned(),
            chaincode_id: chaincode.to_owned(),
            identity: id.creator.clone(),
            start_position: Some(SeekPosition { r#type: Some(position) }),
            after_transaction_id: after_txid.unwrap_or_default().to_owned(),
        }
        .encode_to_vec();
        let signature = id.sign(&request)?;
        let mut client = self.inner.clone();
        let call = async move {
            count(&COUNTERS.chaincode_events);
            client.chaincode_events(SignedChaincodeEventsRequest { request, signature }).await.map(|r| r.into_inner())
        };
        Ok(EventStream { state: EventState::Calling(Box::pin(call)) })
    }
}

type EventsCall =
    Pin<Box<dyn Future<Output = Result<tonic::Streaming<ChaincodeEventsResponse>, tonic::Status>> + Send>>;

/// The ChaincodeEvents call, then its messages.
struct EventStream {
    state: EventState,
}

enum EventState {
    Calling(EventsCall),
    // Boxed: the decoder state is large beside the other variants.
    Streaming(Box<tonic::Streaming<ChaincodeEventsResponse>>),
    Done,
}

impl Stream for EventStream {
    type Item = Result<ChaincodeEvents, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                EventState::Calling(call) => match call.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(stream)) => this.state = EventState::Streaming(Box::new(stream)),
                    Poll::Ready(Err(status)) => {
                        this.state = EventState::Done;
                        return Poll::Ready(Some(Err(GatewayError::from_status(status))));
                    }
                },
                EventState::Streaming(stream) => {
                    return match Pin::new(stream.as_mut()).poll_next(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(Ok(response))) => {
                            count(&COUNTERS.event_blocks);
                            Poll::Ready(Some(Ok(response.into())))
                        }
                        Poll::Ready(Some(Err(status))) => {
                            this.state = EventState::Done;
                            Poll::Ready(Some(Err(GatewayError::from_status(status))))
                        }
                        Poll::Ready(None) => {
                            this.state = EventState::Done;
                            Poll::Ready(None)
                        }
                    };
                }
                EventState::Done => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::fabric::common::Envelope;
    use crate::fabric::protos::{ChaincodeEndorsedAction, TransactionAction};
    use crate::signing::{P256_HALF_ORDER, verify};

    /// The simulator's identity of `msp_id`, as PEM files (the testing crate links its own copy
    /// of this crate).
    fn issued(msp_id: &str) -> SigningIdentity {
        let (cert, key) = orchestrator_fabric_testing::identity::issued_pem(msp_id).expect("identity");
        SigningIdentity::from_pem(msp_id, &cert, &key).expect("issued identity")
    }

    fn identity() -> SigningIdentity {
        issued("GatewayTestMSP")
    }

    fn timestamp() -> prost_types::Timestamp {
        prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }
    }

    /// s of a DER signature, as 32 big-endian bytes.
    fn s_of(signature: &[u8]) -> [u8; 32] {
        // SEQUENCE{INTEGER r, INTEGER s}, short lengths for P-256.
        let r_len = usize::from(signature[3]);
        let s = &signature[4 + r_len + 2..];
        let s = s.strip_prefix(&[0]).unwrap_or(s);
        let mut out = [0u8; 32];
        out[32 - s.len()..].copy_from_slice(s);
        out
    }

    #[test]
    fn proposal_fields_txid_and_signature() {
        let id = identity();
        let args = crate::encoding::call_args("orchestrator.InfoService/QueryVersion", b"");
        let nonce = vec![9u8; NONCE_LEN];
        let tx = build_proposal(&id, "mychannel", "orchestrator", args.clone(), nonce.clone(), timestamp())
            .expect("proposal");

        // txid = hex(SHA-256(nonce ‖ creator)), the creator being the serialized identity.
        let mut hasher = Sha256::new();
        hasher.update(&nonce);
        hasher.update(id.creator());
        assert_eq!(tx.txid, hex::encode(hasher.finalize()));
        assert_eq!(tx.txid.len(), 64);
        let creator: crate::fabric::msp::SerializedIdentity = decode(id.creator(), "creator").unwrap();
        assert_eq!(creator.mspid, "GatewayTestMSP");
        assert_eq!(creator.id_bytes, id.certificate());

        let proposal: Proposal = decode(&tx.signed.proposal_bytes, "Proposal").unwrap();
        assert!(proposal.extension.is_empty());
        let header: Header = decode(&proposal.header, "Header").unwrap();
        let channel_header: ChannelHeader = decode(&header.channel_header, "ChannelHeader").unwrap();
        assert_eq!(channel_header.r#type, 3);
        assert_eq!(channel_header.version, 0);
        assert_eq!(channel_header.epoch, 0);
        assert_eq!(channel_header.channel_id, "mychannel");
        assert_eq!(channel_header.tx_id, tx.txid);
        assert_eq!(channel_header.timestamp, Some(timestamp()));
        let extension: ChaincodeHeaderExtension = decode(&channel_header.extension, "extension").unwrap();
        assert_eq!(extension.chaincode_id.unwrap().name, "orchestrator");
        let signature_header: SignatureHeader = decode(&header.signature_header, "SignatureHeader").unwrap();
        assert_eq!(signature_header.creator, id.creator());
        assert_eq!(signature_header.nonce, nonce);

        let payload: ChaincodeProposalPayload = decode(&proposal.payload, "payload").unwrap();
        assert!(payload.transient_map.is_empty());
        let spec: ChaincodeInvocationSpec = decode(&payload.input, "spec").unwrap();
        let spec = spec.chaincode_spec.unwrap();
        assert_eq!(spec.chaincode_id.unwrap().name, "orchestrator", "the Gateway reads the name here");
        let input = spec.input.unwrap();
        assert_eq!(input.args, args);
        assert!(!input.is_init);

        // The proposal context the chaincode derives agrees.
        let ctx = crate::proposal::context("mychannel", &tx.txid, Some(&tx.signed)).expect("context");
        assert_eq!(ctx.msp_id, "GatewayTestMSP");

        verify(id.public_key(), &tx.signed.proposal_bytes, &tx.signed.signature).expect("low-S and valid");
        assert!(s_of(&tx.signed.signature) <= P256_HALF_ORDER);
    }

    #[test]
    fn fresh_nonces_give_distinct_txids() {
        let id = identity();
        let mut txids = std::collections::HashSet::new();
        for _ in 0..64 {
            let nonce = new_nonce().expect("nonce");
            assert_eq!(nonce.len(), NONCE_LEN);
            let tx = build_proposal(&id, "c", "cc", vec![], nonce, now()).expect("proposal");
            verify(id.public_key(), &tx.signed.proposal_bytes, &tx.signed.signature).expect("low-S and valid");
            assert!(txids.insert(tx.txid));
        }
    }

    fn status_with_details(code: tonic::Code, message: &str, details: &[ErrorDetail]) -> tonic::Status {
        let status = RpcStatus {
            code: code as i32,
            message: message.to_owned(),
            details: details
                .iter()
                .map(|detail| prost_types::Any {
                    type_url: ERROR_DETAIL_TYPE.to_owned(),
                    value: detail.encode_to_vec(),
                })
                .collect(),
        };
        tonic::Status::with_details(code, message, status.encode_to_vec().into())
    }

    fn detail(message: &str) -> ErrorDetail {
        ErrorDetail { address: "peer0.org1:7051".to_owned(), msp_id: "Org1MSP".to_owned(), message: message.to_owned() }
    }

    #[test]
    fn chaincode_errors_are_recovered_from_error_details() {
        let oe = "OE0003: organization \"MyOrg1MSP\" already exists, with a comma";
        // Endorse: ABORTED, generic message, the response in the detail.
        let status = status_with_details(
            tonic::Code::Aborted,
            "failed to endorse transaction, see attached details for more info",
            &[detail(&format!("chaincode response 409, {oe}"))],
        );
        match GatewayError::from_status(status) {
            GatewayError::Chaincode { status, message } => {
                assert_eq!(status, 409);
                assert_eq!(message, oe);
            }
            other => panic!("{other:?}"),
        }
        // Evaluate: UNKNOWN, the response in both.
        let status = status_with_details(
            tonic::Code::Unknown,
            &format!("evaluate call to endorser returned error: chaincode response 404, {oe}"),
            &[detail(&format!("chaincode response 404, {oe}"))],
        );
        assert!(matches!(
            GatewayError::from_status(status),
            GatewayError::Chaincode { status: 404, message } if message == oe
        ));
        // Without details, from the message; an empty chaincode message stays empty.
        let status = tonic::Status::unknown("evaluate call to endorser returned error: chaincode response 500, ");
        assert!(matches!(
            GatewayError::from_status(status),
            GatewayError::Chaincode { status: 500, message } if message.is_empty()
        ));
    }

    #[test]
    fn other_gateway_errors_keep_their_code_with_details_appended() {
        let status = status_with_details(
            tonic::Code::Aborted,
            "failed to endorse transaction, see attached details for more info",
            &[detail("error in simulation: transaction returned with failure: bad args")],
        );
        let original_details = status.details().to_vec();
        match GatewayError::from_status(status) {
            GatewayError::Gateway(status) => {
                assert_eq!(status.code(), tonic::Code::Aborted);
                assert_eq!(
                    status.message(),
                    "failed to endorse transaction, see attached details for more info \
                     [Org1MSP@peer0.org1:7051: error in simulation: transaction returned with failure: bad args]"
                );
                assert_eq!(status.details(), original_details.as_slice());
            }
            other => panic!("{other:?}"),
        }
        // Not an error status, garbage details, other detail types: a plain Gateway error.
        for status in [
            tonic::Status::unknown("evaluate call to endorser returned error: chaincode response 200, fine"),
            tonic::Status::aborted("error in simulation: chaincode response 500, not at the start"),
            status_with_details(
                tonic::Code::Aborted,
                "failed",
                &[detail("error in simulation: chaincode response 500, x")],
            ),
            tonic::Status::with_details(tonic::Code::Unavailable, "down", vec![0xff, 0x01].into()),
            tonic::Status::permission_denied("access denied: channel [mychannel] creator org [X]"),
        ] {
            let code = status.code();
            assert!(matches!(GatewayError::from_status(status), GatewayError::Gateway(s) if s.code() == code));
        }
        let other_type = RpcStatus {
            code: 10,
            message: "m".to_owned(),
            details: vec![prost_types::Any { type_url: "type.googleapis.com/other".to_owned(), value: vec![] }],
        };
        assert!(error_details(&other_type.encode_to_vec()).is_empty());
    }

    #[test]
    fn the_response_is_read_from_the_prepared_envelope() {
        let response = Response { status: 200, message: String::new(), payload: b"result".to_vec() };
        let extension = ChaincodeAction { response: Some(response.clone()), ..Default::default() }.encode_to_vec();
        let proposal_response_payload =
            ProposalResponsePayload { proposal_hash: vec![1; 32], extension }.encode_to_vec();
        let action_payload = ChaincodeActionPayload {
            chaincode_proposal_payload: Vec::new(),
            action: Some(ChaincodeEndorsedAction { proposal_response_payload, endorsements: Vec::new() }),
        };
        let transaction = Transaction {
            actions: vec![TransactionAction { header: Vec::new(), payload: action_payload.encode_to_vec() }],
        };
        let channel_header = ChannelHeader { tx_id: "abc".to_owned(), ..Default::default() }.encode_to_vec();
        let envelope = Envelope {
            payload: Payload {
                header: Some(Header { channel_header, signature_header: Vec::new() }),
                data: transaction.encode_to_vec(),
            }
            .encode_to_vec(),
            signature: Vec::new(),
        };
        assert_eq!(endorsed_response(&envelope.payload, "abc").expect("response"), response);
        assert!(matches!(endorsed_response(&envelope.payload, "other"), Err(GatewayError::Decode(_))));
        assert!(matches!(endorsed_response(b"\xff", "abc"), Err(GatewayError::Decode(_))));
        assert!(matches!(
            response_payload(Response { status: 409, message: "OE".to_owned(), payload: vec![] }),
            Err(GatewayError::Chaincode { status: 409, .. })
        ));
    }

    #[test]
    fn validation_code_names() {
        assert_eq!(validation_code_name(0), "VALID");
        assert_eq!(validation_code_name(11), "MVCC_READ_CONFLICT");
        assert_eq!(validation_code_name(12), "PHANTOM_READ_CONFLICT");
        assert_eq!(validation_code_name(254), "NOT_VALIDATED");
        assert_eq!(validation_code_name(77), "UNKNOWN");
        let error = GatewayError::Invalid { txid: "t".to_owned(), code: 11 };
        assert_eq!(error.to_string(), "transaction t committed as invalid: MVCC_READ_CONFLICT (11)");
    }

    /// A Gateway over real gRPC that checks signatures like the peer and answers from the
    /// arguments: `[b"fail", ..]` is a chaincode error, `[method, payload]` returns `payload`.
    mod fake {
        use super::*;
        use crate::fabric::common::Envelope;
        use crate::fabric::gateway::gateway_server::{Gateway, GatewayServer};
        use crate::fabric::gateway::{CommitStatusResponse, EndorseResponse, EvaluateResponse, SubmitResponse};
        use crate::fabric::protos::{ChaincodeEndorsedAction, ChaincodeEvent as RawEvent, TransactionAction};

        pub(super) const OE: &str = "OE0003: organization already exists";

        pub(super) struct FakeGateway {
            pub(super) public_key: Vec<u8>,
            /// None: CommitStatus never answers.
            pub(super) commit_code: Option<i32>,
        }

        impl FakeGateway {
            fn args(&self, signed: Option<&SignedProposal>) -> Result<(String, Vec<Vec<u8>>), tonic::Status> {
                let signed = signed.ok_or_else(|| tonic::Status::invalid_argument("no proposal"))?;
                verify(&self.public_key, &signed.proposal_bytes, &signed.signature)
                    .map_err(|_| tonic::Status::failed_precondition("access denied"))?;
                let proposal = Proposal::decode(signed.proposal_bytes.as_slice()).unwrap();
                let header = Header::decode(proposal.header.as_slice()).unwrap();
                let txid = ChannelHeader::decode(header.channel_header.as_slice()).unwrap().tx_id;
                let payload = ChaincodeProposalPayload::decode(proposal.payload.as_slice()).unwrap();
                let spec = ChaincodeInvocationSpec::decode(payload.input.as_slice()).unwrap();
                let args = spec.chaincode_spec.unwrap().input.unwrap().args;
                if args.first().is_some_and(|method| method == b"fail") {
                    return Err(status_with_details(
                        tonic::Code::Aborted,
                        "failed to endorse transaction, see attached details for more info",
                        &[detail(&format!("chaincode response 409, {OE}"))],
                    ));
                }
                Ok((txid, args))
            }
        }

        #[tonic::async_trait]
        impl Gateway for FakeGateway {
            async fn endorse(
                &self,
                request: tonic::Request<EndorseRequest>,
            ) -> Result<tonic::Response<EndorseResponse>, tonic::Status> {
                let request = request.into_inner();
                let (txid, args) = self.args(request.proposed_transaction.as_ref())?;
                assert_eq!(txid, request.transaction_id);
                let response = Response { status: 200, message: String::new(), payload: args[1].clone() };
                let extension = ChaincodeAction { response: Some(response), ..Default::default() }.encode_to_vec();
                let proposal_response_payload =
                    ProposalResponsePayload { proposal_hash: vec![], extension }.encode_to_vec();
                let action = ChaincodeActionPayload {
                    chaincode_proposal_payload: vec![],
                    action: Some(ChaincodeEndorsedAction { proposal_response_payload, endorsements: vec![] }),
                };
                let data = Transaction {
                    actions: vec![TransactionAction { header: vec![], payload: action.encode_to_vec() }],
                }
                .encode_to_vec();
                let channel_header = ChannelHeader { tx_id: txid, ..Default::default() }.encode_to_vec();
                let payload =
                    Payload { header: Some(Header { channel_header, signature_header: vec![] }), data }.encode_to_vec();
                Ok(tonic::Response::new(EndorseResponse {
                    prepared_transaction: Some(Envelope { payload, signature: vec![] }),
                }))
            }

            async fn submit(
                &self,
                request: tonic::Request<SubmitRequest>,
            ) -> Result<tonic::Response<SubmitResponse>, tonic::Status> {
                let envelope = request.into_inner().prepared_transaction.unwrap();
                verify(&self.public_key, &envelope.payload, &envelope.signature)
                    .map_err(|_| tonic::Status::invalid_argument("bad envelope signature"))?;
                Ok(tonic::Response::new(SubmitResponse {}))
            }

            async fn commit_status(
                &self,
                request: tonic::Request<SignedCommitStatusRequest>,
            ) -> Result<tonic::Response<CommitStatusResponse>, tonic::Status> {
                let signed = request.into_inner();
                verify(&self.public_key, &signed.request, &signed.signature)
                    .map_err(|_| tonic::Status::permission_denied("bad signature"))?;
                let request = CommitStatusRequest::decode(signed.request.as_slice()).unwrap();
                let Some(result) = self.commit_code.filter(|_| request.transaction_id != "never") else {
                    return std::future::pending().await;
                };
                Ok(tonic::Response::new(CommitStatusResponse { result, block_number: 7 }))
            }

            async fn evaluate(
                &self,
                request: tonic::Request<EvaluateRequest>,
            ) -> Result<tonic::Response<EvaluateResponse>, tonic::Status> {
                let request = request.into_inner();
                let (_, args) = self.args(request.proposed_transaction.as_ref())?;
                Ok(tonic::Response::new(EvaluateResponse {
                    result: Some(Response { status: 200, message: String::new(), payload: args[1].clone() }),
                }))
            }

            type ChaincodeEventsStream =
                tokio_stream::Iter<std::vec::IntoIter<Result<ChaincodeEventsResponse, tonic::Status>>>;

            async fn chaincode_events(
                &self,
                request: tonic::Request<SignedChaincodeEventsRequest>,
            ) -> Result<tonic::Response<Self::ChaincodeEventsStream>, tonic::Status> {
                let signed = request.into_inner();
                verify(&self.public_key, &signed.request, &signed.signature)
                    .map_err(|_| tonic::Status::permission_denied("bad signature"))?;
                let request = ChaincodeEventsRequest::decode(signed.request.as_slice()).unwrap();
                let Some(seek_position::Type::Specified(SeekSpecified { number })) =
                    request.start_position.and_then(|position| position.r#type)
                else {
                    return Err(tonic::Status::invalid_argument("only specified positions here"));
                };
                let event = RawEvent {
                    chaincode_id: request.chaincode_id,
                    tx_id: "t1".to_owned(),
                    event_name: "chaincode-updates".to_owned(),
                    payload: b"p".to_vec(),
                };
                Ok(tonic::Response::new(tokio_stream::iter(vec![Ok(ChaincodeEventsResponse {
                    events: vec![event],
                    block_number: number,
                })])))
            }
        }

        pub(super) async fn serve(gateway: FakeGateway) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let router = tonic::transport::Server::builder().add_service(GatewayServer::new(gateway));
            tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
            address
        }
    }

    #[tokio::test]
    async fn calls_through_a_fake_gateway() {
        use tokio_stream::StreamExt;

        let id = identity();
        let address =
            fake::serve(fake::FakeGateway { public_key: id.public_key().to_vec(), commit_code: Some(0) }).await;
        let client = GatewayClient::connect(&address, None, None).await.expect("connect");
        let before = RoundTrips::now();

        let payload = client.evaluate(&id, "ch", "cc", vec![b"m".to_vec(), b"out".to_vec()]).await.expect("evaluate");
        assert_eq!(payload, b"out");
        let error = client.evaluate(&id, "ch", "cc", vec![b"fail".to_vec()]).await.unwrap_err();
        assert!(matches!(&error, GatewayError::Chaincode { status: 409, message } if message == fake::OE), "{error:?}");

        let submitted = client
            .submit(&id, "ch", "cc", vec![b"m".to_vec(), b"written".to_vec()], Duration::from_secs(5))
            .await
            .expect("submit");
        assert_eq!(submitted.payload, b"written");
        assert_eq!(submitted.block_number, 7);
        assert_eq!(submitted.txid.len(), 64);
        let error = client.submit(&id, "ch", "cc", vec![b"fail".to_vec()], Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, GatewayError::Chaincode { status: 409, .. }), "{error:?}");

        let status = client.commit_status(&id, "ch", &submitted.txid).await.expect("status");
        assert_eq!(status, CommitStatus { code: 0, block_number: 7 });
        let waiting = tokio::time::timeout(Duration::from_millis(200), client.commit_status(&id, "ch", "never")).await;
        assert!(waiting.is_err(), "CommitStatus waits for the commit");

        let mut events = client.chaincode_events(&id, "ch", "cc", Some(3)).await.expect("events");
        let first = events.next().await.expect("an item").expect("events");
        assert_eq!(first.block_number, 3);
        assert_eq!(
            first.events,
            vec![ChaincodeEvent {
                txid: "t1".to_owned(),
                event_name: "chaincode-updates".to_owned(),
                payload: b"p".to_vec()
            }]
        );
        assert!(events.next().await.is_none());
        // A refused request is the stream's first item.
        let mut refused = client.chaincode_events(&id, "ch", "cc", None).await.expect("lazy");
        let error = refused.next().await.expect("an item").unwrap_err();
        assert!(matches!(&error, GatewayError::Gateway(s) if s.code() == tonic::Code::InvalidArgument), "{error:?}");
        assert!(refused.next().await.is_none());

        // Someone else's key: refused before anything runs.
        let other = issued("GatewayOtherMSP");
        let error = client.evaluate(&other, "ch", "cc", vec![b"m".to_vec(), vec![]]).await.unwrap_err();
        assert!(matches!(&error, GatewayError::Gateway(s) if s.code() == tonic::Code::FailedPrecondition), "{error:?}");

        // Every call above was counted (other tests of this process may add theirs).
        let counted = RoundTrips::now().since(&before);
        assert!(counted.evaluate >= 3, "{counted:?}");
        assert!(counted.endorse >= 2, "{counted:?}");
        assert!(counted.submit >= 1, "{counted:?}");
        assert!(counted.commit_status >= 3, "{counted:?}");
        assert!(counted.chaincode_events >= 2, "{counted:?}");
        assert!(counted.event_blocks >= 1, "{counted:?}");
        assert_eq!(counted.calls(), counted.evaluate + counted.endorse + counted.submit + counted.commit_status);
    }

    #[tokio::test]
    async fn invalid_commits_and_commit_timeouts() {
        let id = identity();
        let address =
            fake::serve(fake::FakeGateway { public_key: id.public_key().to_vec(), commit_code: Some(11) }).await;
        let client = GatewayClient::connect(&address, None, None).await.expect("connect");
        let error =
            client.submit(&id, "ch", "cc", vec![b"m".to_vec(), vec![]], Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(&error, GatewayError::Invalid { code: 11, txid } if txid.len() == 64), "{error:?}");

        let address = fake::serve(fake::FakeGateway { public_key: id.public_key().to_vec(), commit_code: None }).await;
        let client = GatewayClient::connect(&address, None, None).await.expect("connect");
        let started = std::time::Instant::now();
        let error =
            client.submit(&id, "ch", "cc", vec![b"m".to_vec(), vec![]], Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(&error, GatewayError::CommitTimeout { txid, .. } if txid.len() == 64), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(GatewayClient::connect("127.0.0.1:1", None, None).await, Err(GatewayError::Transport(_))));
    }
}
