//! One transaction's simulation on the peer side: the chaincode's state requests answered from
//! a snapshot of the committed state (reads recorded with versions, no read-your-writes), and
//! what the peer answers to the proposal ([`Endorsement`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::kvrwset::{KvWrite, KvrwSet};
use orchestrator_host_fabric::fabric::protos::chaincode_message::Type;
use orchestrator_host_fabric::fabric::protos::{
    ChaincodeEvent, DelState, GetState, GetStateByRange, GetStateMetadata, PutState, QueryResponse, QueryResultBytes,
    QueryStateClose, QueryStateNext, Response, StateMetadataResult,
};
use orchestrator_host_fabric::fabric::queryresult::Kv;
use prost::Message;

use crate::MAX_RESULTS_PER_BATCH;
use crate::store::{Height, RangeScan, State, kv_read};

/// Peer round trips of one simulation: the chaincode's state requests, by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateRequests {
    /// GET_STATE
    pub get_state: u64,
    /// GET_STATE_METADATA
    pub get_state_metadata: u64,
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
        self.get_state_metadata += r.get_state_metadata;
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
            + self.get_state_metadata
            + self.get_state_by_range
            + self.query_state_next
            + self.query_state_close
            + self.put_state
            + self.del_state
            + self.other
    }

    /// Reads only (GET_STATE, GET_STATE_METADATA, GET_STATE_BY_RANGE, QUERY_STATE_NEXT,
    /// QUERY_STATE_CLOSE).
    pub fn reads(&self) -> u64 {
        self.get_state
            + self.get_state_metadata
            + self.get_state_by_range
            + self.query_state_next
            + self.query_state_close
    }

    /// Writes only (PUT_STATE, DEL_STATE).
    pub fn writes(&self) -> u64 {
        self.put_state + self.del_state
    }

    fn count(&mut self, kind: Type) {
        let counter = match kind {
            Type::GetState => &mut self.get_state,
            Type::GetStateMetadata => &mut self.get_state_metadata,
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

/// The peer side of one transaction's simulation: committed reads only, recorded.
#[derive(Debug)]
pub(crate) struct TxSimulator {
    namespace: String,
    state: Arc<State>,
    reads: BTreeMap<String, Option<Height>>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    ranges: Vec<RangeScan>,
    iterators: HashMap<String, usize>,
    next_iterator: u64,
    pub(crate) requests: StateRequests,
}

fn decode<M: Message + Default>(payload: &[u8], kind: Type) -> Result<M, String> {
    M::decode(payload).map_err(|e| format!("{} failed: malformed payload: {e}", kind.as_str_name()))
}

fn public_only(collection: &str) -> Result<(), String> {
    if collection.is_empty() { Ok(()) } else { Err("private data is not simulated".to_owned()) }
}

impl TxSimulator {
    pub(crate) fn new(namespace: &str, state: Arc<State>) -> Self {
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
    pub(crate) fn handle(&mut self, kind: Type, payload: &[u8]) -> Result<Vec<u8>, String> {
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
            Type::GetStateMetadata => {
                let request: GetStateMetadata = decode(payload, kind)?;
                public_only(&request.collection)?;
                // Recorded as a read, as the peer's simulator does; no metadata is simulated.
                let height = self.state.get(&request.key).map(|(_, height)| *height);
                self.reads.entry(request.key).or_insert(height);
                Ok(StateMetadataResult::default().encode_to_vec())
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
    pub(crate) fn rwset(&self) -> KvrwSet {
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
