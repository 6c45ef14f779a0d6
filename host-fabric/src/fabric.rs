//! Types generated from the Fabric .proto subset in `proto/` (one module per protobuf package).

#![allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]

/// `protos`: shim messages, proposals and the `Chaincode` service.
pub mod protos {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

/// `common`: proposal headers.
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
