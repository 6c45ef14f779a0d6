//! Requests the API cannot run: undecodable bytes, unknown and not yet written methods; and
//! QueryVersion.

use orchestrator_proto::{QueryVersionParam, QueryVersionResponse};
use prost::Message;

use super::{
    CHANNEL, ORG1, UNREGISTERED, assert_no_event_since, get_data_manager, method, new_data_manager, new_function,
    organization_ids, query_data_managers, register_data_manager, setup_organizations,
};
use crate::error::ErrorKind;
use crate::testing::{Driver, call};

/// Contract methods without a handler yet. Update this list as handlers land (api.rs).
pub fn bad_requests(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);
    let dm = register_data_manager(d, ORG1, CHANNEL, &new_data_manager(1)).expect("register data manager");
    let before = d.events().len();

    // Bytes that are not a protobuf message (a truncated varint).
    let garbage = [0xff_u8, 0xff, 0xff];
    for m in [
        method::REGISTER_ORGANIZATION,
        method::REGISTER_DATA_MANAGER,
        method::GET_DATA_MANAGER,
        method::QUERY_DATA_MANAGERS,
        method::UPDATE_DATA_MANAGER,
        method::REGISTER_DATA_SAMPLES,
        method::UPDATE_DATA_SAMPLES,
        method::REGISTER_FUNCTION,
        method::UPDATE_FUNCTION,
        method::APPLY_FUNCTION_ACTION,
        method::GET_DATASET,
        method::QUERY_VERSION,
    ] {
        let err = d.call_raw(UNREGISTERED, CHANNEL, m, &garbage).expect_err(m);
        assert_eq!(err.kind, ErrorKind::MalformedRequest, "{m}: {}", err.message);
    }
    // A valid message cut short (inside a length-delimited field).
    for (m, bytes) in [
        (method::REGISTER_DATA_MANAGER, new_data_manager(2).encode_to_vec()),
        (method::REGISTER_FUNCTION, new_function(2).encode_to_vec()),
    ] {
        let truncated = &bytes[..bytes.len() - 5];
        let err = d.call_raw(ORG1, CHANNEL, m, truncated).expect_err(m);
        assert_eq!(err.kind, ErrorKind::MalformedRequest, "{m}: {}", err.message);
    }
    // Nothing was registered nor emitted.
    assert_no_event_since(d, before);
    assert!(!organization_ids(d, CHANNEL).contains(&UNREGISTERED.to_owned()));
    let all = query_data_managers(d, CHANNEL, "", 0).expect("query");
    assert_eq!(all.data_managers, vec![dm.clone()]);
    assert_eq!(get_data_manager(d, ORG1, CHANNEL, &dm.key).expect("get"), dm);

    // Unknown methods.
    for m in [
        "orchestrator.NoSuchService/Register",
        "orchestrator.DataManagerService/DeleteDataManager",
        "DataManagerService/GetDataManager",
        "",
    ] {
        let err = d.call_raw(ORG1, CHANNEL, m, &[]).expect_err(m);
        assert_eq!(err.kind, ErrorKind::Unimplemented, "{m:?}: {}", err.message);
    }
    // SubscribeToEvents is the host's stream, absent from the logic's method table (api.rs tests
    // it); a unary call to it is a client error no driver can answer the same way.

    assert_no_event_since(d, before);

    // QueryVersion answers the logic's version, for anyone, without writing anything.
    for msp in [ORG1, UNREGISTERED] {
        let version: QueryVersionResponse =
            call(d, msp, CHANNEL, method::QUERY_VERSION, &QueryVersionParam {}).expect("QueryVersion");
        assert_eq!(version.orchestrator, crate::api::version());
        assert_eq!(version.orchestrator, env!("CARGO_PKG_VERSION"));
    }
    assert_no_event_since(d, before);
}
