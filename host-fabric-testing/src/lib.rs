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
//!
//! Test support only, kept out of `orchestrator-host-fabric` (as fabric-chaincode-go keeps
//! `shimtest` apart from `shim`):
//! - [`identity`]: the simulator's client identities (a user and an admin per MSP id,
//!   self-signed);
//! - [`proposal`]: signed proposals ([`SimProposal`]);
//! - [`connection`]: the peer side of the chaincode stream ([`ChaincodeConnection`]);
//! - [`store`]: the versioned state, range scans and MVCC/phantom validation;
//! - [`endorsement`]: one transaction's simulation and what the peer answers ([`Endorsement`]);
//! - [`peer`]: one peer of one channel: proposal checks, endorsement, blocks, events ([`Peer`]);
//! - [`component`]: variants of the embedded component (other bytes, the same code) for
//!   hot-swap tests, the standalone host's included.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use orchestrator_host_fabric::fabric::protos::ChaincodeMessage;
use orchestrator_host_fabric::fabric::protos::chaincode_message::Type;

pub mod component;
pub mod connection;
pub mod endorsement;
pub mod identity;
pub mod peer;
pub mod proposal;
pub mod store;

pub use connection::{ChaincodeConnection, spawn_chaincode, spawn_service};
pub use endorsement::{Endorsement, StateRequests};
pub use identity::IssueIdentity;
pub use orchestrator_host_fabric::signing::Identity;
pub use peer::{DeliveredEvent, Peer};
pub use proposal::SimProposal;
pub use store::{Height, State, ValidationCode};

/// Results per QueryResponse (the peer's `MaxResultLimit`).
pub const MAX_RESULTS_PER_BATCH: usize = 100;
/// How long the peer waits for COMPLETED/ERROR (`chaincode.executetimeout`).
pub const EXECUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Version of the simulated chaincode definition (in `ChaincodeAction.chaincode_id`).
pub const CHAINCODE_VERSION: &str = "1.0";

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn message_type(message: &ChaincodeMessage) -> Type {
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use orchestrator_host_fabric::fabric::kvrwset::{KvWrite, KvrwSet};
    use orchestrator_host_fabric::fabric::protos::{
        ChaincodeEvent, GetState, GetStateByRange, PutState, QueryResponse, QueryStateClose, QueryStateNext, Response,
    };
    use orchestrator_host_fabric::fabric::rwset::{NsReadWriteSet, TxReadWriteSet};
    use prost::Message;

    use super::*;
    use crate::endorsement::TxSimulator;
    use crate::store::validate;

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
