//! The logic's shared scenarios through the Fabric chaincode host: every call is a proposal
//! endorsed by the peer simulator over the chaincode stream (committed reads only, read sets
//! with versions, range queries in batches); methods that write are committed as a
//! one-transaction block and count only when valid; events are the delivered
//! `chaincode-updates` payloads of valid transactions. Business errors come back as COMPLETED
//! with a status >= 400 and the OE message, checked against the status mapping.

mod common;

use common::FabricDriver;

orchestrator_logic::scenario_tests!(FabricDriver::new());

/// Differential check: each scenario commits, through Fabric, exactly the events the logic's
/// native harness commits (same transaction times: both start at the same instant and tick
/// 1 ms per call). Only the event ids differ: they derive from the transaction id.
mod native_parity {
    use std::collections::BTreeSet;

    use orchestrator_logic::testing::{Driver, Harness};
    use orchestrator_proto::Event;

    use super::FabricDriver;

    fn without_ids(events: Vec<Event>) -> Vec<Event> {
        events.into_iter().map(|event| Event { id: String::new(), ..event }).collect()
    }

    fn same_events(scenario: fn(&mut dyn Driver)) {
        let mut native = Harness::new();
        scenario(&mut native);
        let mut fabric = FabricDriver::new();
        scenario(&mut fabric);
        let events = fabric.events();
        let ids: BTreeSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
        assert!(!ids.contains(""), "every event has an id");
        assert_eq!(ids.len(), events.len(), "event ids are unique");
        assert_eq!(without_ids(events), without_ids(native.events()));
    }

    orchestrator_logic::scenario_tests!(with same_events);
}
