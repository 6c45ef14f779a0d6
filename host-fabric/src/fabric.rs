//! Types generated from the Fabric .proto subset in `proto/` (one module per protobuf package).

#![allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]

/// `protos`: shim messages, proposals, endorsed transactions and the `Chaincode` service.
pub mod protos {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

/// `common`: proposal headers and the transaction envelope.
pub mod common {
    include!(concat!(env!("OUT_DIR"), "/common.rs"));
}

/// `msp`: the serialized creator identity.
pub mod msp {
    include!(concat!(env!("OUT_DIR"), "/msp.rs"));
}

/// `rwset`: the transaction read-write set.
pub mod rwset {
    include!(concat!(env!("OUT_DIR"), "/rwset.rs"));
}

/// `kvrwset`: reads, writes and range queries of one namespace.
pub mod kvrwset {
    include!(concat!(env!("OUT_DIR"), "/kvrwset.rs"));
}

/// `queryresult`: range query results.
pub mod queryresult {
    include!(concat!(env!("OUT_DIR"), "/queryresult.rs"));
}

/// `orchestrator_fabric`: the chaincode event payload of this host.
pub mod orchestrator_fabric {
    include!(concat!(env!("OUT_DIR"), "/orchestrator_fabric.rs"));
}

/// `gateway`: the peer's Gateway service (client side used by [`crate::gateway`]).
pub mod gateway {
    include!(concat!(env!("OUT_DIR"), "/gateway.rs"));
}

/// `orderer`: the seek position of a chaincode events request.
pub mod orderer {
    include!(concat!(env!("OUT_DIR"), "/orderer.rs"));
}

/// `google.rpc`: the status in the `grpc-status-details-bin` trailer.
pub mod google {
    /// `google.rpc.Status`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
