//! Shared test support: the logic's [`Driver`] over the peer simulator, as a Fabric client
//! (Gateway) would use a channel: endorse, then submit a one-transaction block for methods that
//! write, evaluate only for read-only methods.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use orchestrator_fabric_testing::{
    ChaincodeConnection, Endorsement, Identity, IssueIdentity, Peer, SimProposal, StateRequests, ValidationCode,
    spawn_chaincode,
};
use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::protos::Response;
use orchestrator_logic::testing::Driver;
use orchestrator_logic::{ErrorKind, LogicError};
use orchestrator_proto::Event;
use orchestrator_runtime::{Runtime, RuntimeConfig};
use prost::Message;
use sha2::{Digest, Sha256};

pub const CHAINCODE: &str = "orchestrator";
pub const PACKAGE_ID: &str = "orchestrator_1.0:0123456789abcdef";
/// The channels of the scenarios (host-standalone's `scenario_channels.yaml`): every scenario
/// organization is a member of both. The simulator enforces no ACL, so only the channel names
/// matter here.
pub const CHANNELS: [&str; 2] = ["mychannel", "yourchannel"];
/// Transaction time of the first call (as the native harness: 2023-11-14), 1 ms per call.
const FIRST_TX_MICROS: i64 = 1_700_000_000_000_000;

/// One compiled component for the whole test binary.
pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeConfig::default(), orchestrator_logic_component::COMPONENT).expect("runtime")
        })
        .clone()
}

/// Serves `runtime` as a chaincode and dials it as a peer.
pub async fn chaincode(runtime: Runtime) -> ChaincodeConnection {
    let (endpoint, _server) = spawn_chaincode(runtime, PACKAGE_ID).await.expect("serve");
    ChaincodeConnection::connect(endpoint).await.expect("connect")
}

/// Recovers the logic's error from a failed COMPLETED, as a Fabric client sees it (the contract's
/// [`ErrorKind::from_fabric`]), and asserts that the status is the one of its table.
pub fn to_logic_error(response: &Response) -> LogicError {
    let message = response.message.clone();
    let kind = ErrorKind::from_fabric(response.status, &message);
    assert_eq!(response.status, kind.fabric_status(), "status of {message:?}");
    assert!(response.payload.is_empty(), "a failed call carries no payload");
    LogicError { kind, message }
}

/// Decodes a `chaincode-updates` payload into the orchestrator events.
pub fn decode_events(payload: &[u8]) -> Vec<Event> {
    encoding::decode_events_payload(payload)
        .expect("chaincode-updates payload")
        .iter()
        .map(|bytes| Event::decode(bytes.as_slice()).expect("event"))
        .collect()
}

/// A fresh deterministic proposal: nonce from a counter, time from a ticking clock.
pub struct ProposalFactory {
    calls: u64,
}

impl Default for ProposalFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl ProposalFactory {
    pub fn new() -> Self {
        Self { calls: 0 }
    }

    pub fn next(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> SimProposal {
        self.calls += 1;
        let micros = FIRST_TX_MICROS + i64::try_from(self.calls).expect("calls") * 1_000;
        let timestamp = prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).expect("nanos"),
        };
        let nonce = format!("nonce-{:018}", self.calls).into_bytes();
        SimProposal::with_nonce(
            channel,
            CHAINCODE,
            &Identity::new(msp).expect("identity"),
            encoding::call_args(method, request),
            timestamp,
            nonce,
        )
    }
}

/// One simulated peer joined to the scenario channels (one ledger per channel, as a real peer)
/// and one chaincode instance serving them all over one stream.
pub struct FabricDriver {
    pub rt: tokio::runtime::Runtime,
    pub runtime: Runtime,
    pub cc: ChaincodeConnection,
    /// A second chaincode instance: when set, every proposal is endorsed on both and the two
    /// endorsements must be identical (rwset, response, event, proposal response payload).
    pub twin: Option<ChaincodeConnection>,
    /// SHA-256 over every endorsement's proposal response payload (or failure) and every
    /// validation code, in call order: equal across runs of the same calls.
    pub transcript: Sha256,
    pub peers: BTreeMap<String, Peer>,
    pub proposals: ProposalFactory,
    /// Committed events, in commit order across channels.
    events: Vec<Event>,
    /// Per channel: how many delivered chaincode events were already taken into `events`.
    delivered: BTreeMap<String, usize>,
    /// State requests of every endorsement so far.
    pub requests: StateRequests,
    /// Endorsements so far.
    pub endorsements: u64,
}

impl FabricDriver {
    pub fn new() -> Self {
        Self::with_runtime(runtime())
    }

    pub fn with_runtime(runtime: Runtime) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let cc = rt.block_on(chaincode(runtime.clone()));
        let peers = CHANNELS.iter().map(|channel| ((*channel).to_owned(), Peer::new(*channel, CHAINCODE))).collect();
        Self {
            rt,
            runtime,
            cc,
            twin: None,
            transcript: Sha256::new(),
            peers,
            proposals: ProposalFactory::new(),
            events: Vec::new(),
            delivered: BTreeMap::new(),
            requests: StateRequests::default(),
            endorsements: 0,
        }
    }

    pub fn peer(&self, channel: &str) -> &Peer {
        self.peers.get(channel).unwrap_or_else(|| panic!("the peer has not joined channel {channel}"))
    }

    fn tally(&mut self, endorsement: &Endorsement) {
        self.requests += endorsement.state_requests;
        self.endorsements += 1;
    }

    /// Endorses, and for a method that writes commits the endorsement alone in a block.
    /// Returns the endorsement and the validation code (`None` = evaluated, not committed).
    pub fn transact(
        &mut self,
        msp: &str,
        channel: &str,
        method: &str,
        request: &[u8],
    ) -> (Endorsement, Option<ValidationCode>) {
        let proposal = self.proposals.next(msp, channel, method, request);
        let peer = self.peer(channel);
        let endorsement = match &self.twin {
            None => self.rt.block_on(peer.endorse(&self.cc, &proposal)).expect("endorse"),
            Some(twin) => {
                let (a, b) = self
                    .rt
                    .block_on(async { tokio::join!(peer.endorse(&self.cc, &proposal), peer.endorse(twin, &proposal)) });
                let (a, b) = (a.expect("endorse"), b.expect("endorse on the twin"));
                assert_eq!(a.payload, b.payload, "proposal response payloads of {method}");
                assert_eq!(a.results, b.results, "read/write sets of {method}");
                assert_eq!(a.response, b.response, "responses of {method}");
                assert_eq!(a.event, b.event, "events of {method}");
                assert_eq!(a, b, "endorsements of {method}");
                a
            }
        };
        self.tally(&endorsement);
        self.transcript.update(endorsement.payload.as_deref().unwrap_or_default());
        self.transcript.update(endorsement.response.encode_to_vec());
        assert!(
            endorsement.payload.is_some(),
            "the chaincode failed the transaction (ERROR): {}",
            endorsement.response.message
        );
        // Evaluate semantics for read-only methods (and unknown ones: they fail anyway).
        let writes = self.runtime.is_read_only(method) == Some(false);
        if !writes || !endorsement.is_endorsed() {
            if self.runtime.is_read_only(method) == Some(true) {
                assert!(endorsement.rwset.writes.is_empty() && endorsement.event.is_none(), "{method} wrote");
            }
            return (endorsement, None);
        }
        let code = self.peer(channel).commit_block(std::slice::from_ref(&endorsement)).pop().expect("one code");
        self.transcript.update([code as u8]);
        assert_eq!(code, ValidationCode::Valid, "a sequential driver never conflicts ({method})");
        let delivered = self.peer(channel).events();
        let seen = self.delivered.entry(channel.to_owned()).or_default();
        // The logic's events only (a `logic-activated` event is the shim's: docs/modes.md §3.7).
        for d in
            delivered.get(*seen..).unwrap_or_default().iter().filter(|d| d.event.event_name == encoding::EVENT_NAME)
        {
            assert_eq!(d.event.tx_id, proposal.txid);
            self.events.extend(decode_events(&d.event.payload));
        }
        *seen = delivered.len();
        (endorsement, Some(code))
    }
}

impl Default for FabricDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver for FabricDriver {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        let (endorsement, _) = self.transact(msp, channel, method, request);
        if endorsement.response.status == encoding::STATUS_OK {
            Ok(endorsement.response.payload)
        } else {
            Err(to_logic_error(&endorsement.response))
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.clone()
    }
}
