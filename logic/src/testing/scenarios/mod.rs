//! Scenarios of the API, written once, run natively and through the component.
//!
//! Every scenario is a `pub fn name(d: &mut dyn Driver)` that starts from an empty driver and
//! panics on the first broken expectation. They only use [`Driver`]: the protobuf bytes in,
//! the protobuf bytes (or an [`LogicError`]) out, and the committed events. Nothing here may rely
//! on how a driver stores state or on its clock beyond "one call, one transaction time".
//!
//! This module holds the shared fixtures: identities, deterministic keys, builders of valid
//! requests, typed wrappers of the methods and the error assertion.

use std::collections::BTreeMap;
use std::fmt::Debug;

use orchestrator_proto::{
    Addressable, ApplyFunctionActionParam, ApplyFunctionActionResponse, AssetKind, DataManager, DataSample,
    DataSampleQueryFilter, Dataset, Event, EventKind, Function, FunctionInput, FunctionOutput, FunctionQueryFilter,
    GetAllOrganizationsParam, GetAllOrganizationsResponse, GetDataManagerParam, GetDataSampleParam, GetDatasetParam,
    GetFunctionParam, NewDataManager, NewDataSample, NewFunction, NewPermissions, Organization, QueryDataManagersParam,
    QueryDataManagersResponse, QueryDataSamplesParam, QueryDataSamplesResponse, QueryFunctionsParam,
    QueryFunctionsResponse, RegisterDataSamplesParam, RegisterDataSamplesResponse, RegisterOrganizationParam,
    UpdateDataManagerParam, UpdateDataManagerResponse, UpdateDataSamplesParam, UpdateDataSamplesResponse,
    UpdateFunctionParam, UpdateFunctionResponse, event,
};

use crate::error::{ErrorKind, LogicError};
use crate::testing::{Driver, call};

mod bad_requests;
pub mod computeplan;
pub mod computetask;
mod datamanager;
mod datasample;
mod dataset;
mod function;
mod organization;
pub mod outputs;
mod pagination;

pub use bad_requests::bad_requests;
pub use computeplan::{compute_plans, plan_actions, plan_running};
pub use computetask::{
    hostile_inputs, task_actions, task_function_builds, task_queries, task_registration, task_registration_errors,
    task_resend,
};
pub use datamanager::data_managers;
pub use datasample::data_samples;
pub use dataset::datasets;
pub use function::{function_actions, functions};
pub use organization::organizations;
pub use outputs::{
    disable_outputs, failure_reports, models, multiple_models, performances, profiling, task_input_assets,
    two_organization_plan,
};
pub use pagination::pagination;

// ---------------------------------------------------------------------------------------------
// Identities.

/// The usual requester: owns most assets of the scenarios.
pub const ORG1: &str = "MyOrg1MSP";
/// The other organization of the channel.
pub const ORG2: &str = "MyOrg2MSP";
/// An MSP id never registered as an organization.
pub const UNREGISTERED: &str = "MyOrg3MSP";
pub const CHANNEL: &str = "mychannel";
pub const OTHER_CHANNEL: &str = "yourchannel";

/// gRPC paths of the methods the scenarios call.
pub mod method {
    pub const REGISTER_ORGANIZATION: &str = "orchestrator.OrganizationService/RegisterOrganization";
    pub const GET_ALL_ORGANIZATIONS: &str = "orchestrator.OrganizationService/GetAllOrganizations";
    pub const REGISTER_DATA_MANAGER: &str = "orchestrator.DataManagerService/RegisterDataManager";
    pub const GET_DATA_MANAGER: &str = "orchestrator.DataManagerService/GetDataManager";
    pub const QUERY_DATA_MANAGERS: &str = "orchestrator.DataManagerService/QueryDataManagers";
    pub const UPDATE_DATA_MANAGER: &str = "orchestrator.DataManagerService/UpdateDataManager";
    pub const REGISTER_DATA_SAMPLES: &str = "orchestrator.DataSampleService/RegisterDataSamples";
    pub const UPDATE_DATA_SAMPLES: &str = "orchestrator.DataSampleService/UpdateDataSamples";
    pub const QUERY_DATA_SAMPLES: &str = "orchestrator.DataSampleService/QueryDataSamples";
    pub const GET_DATA_SAMPLE: &str = "orchestrator.DataSampleService/GetDataSample";
    pub const GET_DATASET: &str = "orchestrator.DatasetService/GetDataset";
    pub const REGISTER_FUNCTION: &str = "orchestrator.FunctionService/RegisterFunction";
    pub const GET_FUNCTION: &str = "orchestrator.FunctionService/GetFunction";
    pub const QUERY_FUNCTIONS: &str = "orchestrator.FunctionService/QueryFunctions";
    pub const UPDATE_FUNCTION: &str = "orchestrator.FunctionService/UpdateFunction";
    pub const APPLY_FUNCTION_ACTION: &str = "orchestrator.FunctionService/ApplyFunctionAction";
    pub const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";
    pub const REGISTER_PLAN: &str = "orchestrator.ComputePlanService/RegisterPlan";
    pub const REGISTER_TASKS: &str = "orchestrator.ComputeTaskService/RegisterTasks";
    pub const QUERY_EVENTS: &str = "orchestrator.EventService/QueryEvents";
    pub const SUBSCRIBE_TO_EVENTS: &str = "orchestrator.EventService/SubscribeToEvents";
}

// ---------------------------------------------------------------------------------------------
// Deterministic values.

/// A valid (lowercase, version 4 layout) UUID key numbered `n`.
pub fn key(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A valid checksum (64 hex digits) numbered `n`.
pub fn checksum(n: u64) -> String {
    format!("{n:064x}")
}

/// A valid storage address, unique per (`kind`, `n`).
pub fn storage_address(kind: &str, n: u64) -> String {
    format!("http://backend.org-1:8000/api/{kind}/{n}/file/")
}

pub fn addressable(kind: &str, n: u64) -> Addressable {
    Addressable { checksum: checksum(n), storage_address: storage_address(kind, n) }
}

pub fn public_permissions() -> NewPermissions {
    NewPermissions { public: true, authorized_ids: Vec::new() }
}

pub fn private_permissions(ids: &[&str]) -> NewPermissions {
    NewPermissions { public: false, authorized_ids: strings(ids) }
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A valid NewDataManager numbered `n`: public permissions, distinct description and opener.
pub fn new_data_manager(n: u64) -> NewDataManager {
    NewDataManager {
        key: key(n),
        name: format!("data manager {n}"),
        new_permissions: Some(public_permissions()),
        description: Some(addressable("data_manager/description", n)),
        opener: Some(addressable("data_manager/opener", n)),
        r#type: "csv".to_owned(),
        logs_permission: Some(public_permissions()),
        metadata: BTreeMap::from([("source".to_owned(), "scenario".to_owned())]),
    }
}

/// A valid NewDataSample numbered `n`, linked to `data_managers`.
pub fn new_data_sample(n: u64, data_managers: &[&str]) -> NewDataSample {
    NewDataSample { key: key(n), data_manager_keys: strings(data_managers), test_only: false, checksum: checksum(n) }
}

pub fn input(kind: AssetKind, multiple: bool, optional: bool) -> FunctionInput {
    FunctionInput { kind: kind as i32, multiple, optional }
}

pub fn output(kind: AssetKind, multiple: bool) -> FunctionOutput {
    FunctionOutput { kind: kind as i32, multiple }
}

/// A valid NewFunction numbered `n`, of the train shape (docs/business-rules.md §8.4):
/// `{opener: DATA_MANAGER, datasamples: DATA_SAMPLE multiple, model: MODEL multiple optional}
/// → {model: MODEL}`.
pub fn new_function(n: u64) -> NewFunction {
    NewFunction {
        key: key(n),
        name: format!("function {n}"),
        description: Some(addressable("function/description", n)),
        archive: Some(addressable("function/archive", n)),
        new_permissions: Some(public_permissions()),
        metadata: BTreeMap::from([("framework".to_owned(), "scenario".to_owned())]),
        inputs: BTreeMap::from([
            ("opener".to_owned(), input(AssetKind::AssetDataManager, false, false)),
            ("datasamples".to_owned(), input(AssetKind::AssetDataSample, true, false)),
            ("model".to_owned(), input(AssetKind::AssetModel, true, true)),
        ]),
        outputs: BTreeMap::from([("model".to_owned(), output(AssetKind::AssetModel, false))]),
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions.

/// Asserts that `result` failed with `kind` and a message containing `fragment`; coded kinds must
/// also carry their `OE` prefix. Returns the error for further checks.
#[track_caller]
pub fn expect_err<T: Debug>(result: Result<T, LogicError>, kind: ErrorKind, fragment: &str) -> LogicError {
    let err = match result {
        Ok(value) => panic!("expected {kind:?} error containing {fragment:?}, got Ok({value:?})"),
        Err(err) => err,
    };
    assert_eq!(err.kind, kind, "error kind of {:?}", err.message);
    assert!(err.message.contains(fragment), "message {:?} should contain {fragment:?}", err.message);
    if let Some(code) = kind.code() {
        assert!(err.message.starts_with(&format!("{code}: ")), "message {:?} should start with {code}", err.message);
    }
    err
}

/// The events committed after the first `before` ones.
pub fn events_since(d: &dyn Driver, before: usize) -> Vec<Event> {
    d.events().into_iter().skip(before).collect()
}

/// Asserts that nothing was committed since `before` events.
#[track_caller]
pub fn assert_no_event_since(d: &dyn Driver, before: usize) {
    let new = events_since(d, before);
    assert!(new.is_empty(), "expected no new event, got {new:?}");
}

/// Checks the envelope of an event (kinds, key, channel, metadata) and returns its asset.
#[track_caller]
pub fn check_event(
    event: &Event,
    asset_kind: AssetKind,
    event_kind: EventKind,
    asset_key: &str,
    channel: &str,
    metadata: &[(&str, &str)],
) -> event::Asset {
    assert_eq!(event.asset_kind, asset_kind as i32, "asset kind of {event:?}");
    assert_eq!(event.event_kind, event_kind as i32, "event kind of {event:?}");
    assert_eq!(event.asset_key, asset_key, "asset key of {event:?}");
    assert_eq!(event.channel, channel, "channel of {event:?}");
    assert!(!event.id.is_empty(), "event id of {event:?}");
    assert!(event.timestamp.is_some(), "timestamp of {event:?}");
    let expected: BTreeMap<String, String> = metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    assert_eq!(event.metadata, expected, "metadata of {event:?}");
    event.asset.clone().expect("event asset is always set")
}

/// A sortable form of an optional timestamp.
pub fn time_key(ts: Option<&prost_types::Timestamp>) -> (i64, i32) {
    ts.map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}

// ---------------------------------------------------------------------------------------------
// Typed calls.

pub type Res<T> = Result<T, LogicError>;

pub fn register_organization(d: &mut dyn Driver, msp: &str, channel: &str, address: &str) -> Res<Organization> {
    call(d, msp, channel, method::REGISTER_ORGANIZATION, &RegisterOrganizationParam { address: address.to_owned() })
}

/// Every organization of the channel, sorted by id (the RPC's order is unspecified).
pub fn organization_ids(d: &mut dyn Driver, channel: &str) -> Vec<String> {
    let resp: GetAllOrganizationsResponse =
        call(d, ORG1, channel, method::GET_ALL_ORGANIZATIONS, &GetAllOrganizationsParam {})
            .expect("GetAllOrganizations");
    let mut ids: Vec<String> = resp.organizations.into_iter().map(|o| o.id).collect();
    ids.sort();
    ids
}

/// Registers ORG1 and ORG2 on `channel`.
pub fn setup_organizations(d: &mut dyn Driver, channel: &str) {
    for org in [ORG1, ORG2] {
        register_organization(d, org, channel, "").expect("register organization");
    }
}

pub fn register_data_manager(d: &mut dyn Driver, msp: &str, channel: &str, dm: &NewDataManager) -> Res<DataManager> {
    call(d, msp, channel, method::REGISTER_DATA_MANAGER, dm)
}

pub fn get_data_manager(d: &mut dyn Driver, msp: &str, channel: &str, key: &str) -> Res<DataManager> {
    call(d, msp, channel, method::GET_DATA_MANAGER, &GetDataManagerParam { key: key.to_owned() })
}

pub fn update_data_manager(d: &mut dyn Driver, msp: &str, channel: &str, key: &str, name: &str) -> Res<()> {
    let param = UpdateDataManagerParam { key: key.to_owned(), name: name.to_owned() };
    call::<_, UpdateDataManagerResponse>(d, msp, channel, method::UPDATE_DATA_MANAGER, &param).map(|_| ())
}

pub fn query_data_managers(
    d: &mut dyn Driver,
    channel: &str,
    page_token: &str,
    page_size: u32,
) -> Res<QueryDataManagersResponse> {
    let param = QueryDataManagersParam { page_token: page_token.to_owned(), page_size };
    call(d, ORG1, channel, method::QUERY_DATA_MANAGERS, &param)
}

pub fn register_data_samples(
    d: &mut dyn Driver,
    msp: &str,
    channel: &str,
    samples: Vec<NewDataSample>,
) -> Res<Vec<DataSample>> {
    call::<_, RegisterDataSamplesResponse>(
        d,
        msp,
        channel,
        method::REGISTER_DATA_SAMPLES,
        &RegisterDataSamplesParam { samples },
    )
    .map(|r| r.data_samples)
}

pub fn update_data_samples(
    d: &mut dyn Driver,
    msp: &str,
    channel: &str,
    keys: &[&str],
    data_managers: &[&str],
) -> Res<()> {
    let param = UpdateDataSamplesParam { keys: strings(keys), data_manager_keys: strings(data_managers) };
    call::<_, UpdateDataSamplesResponse>(d, msp, channel, method::UPDATE_DATA_SAMPLES, &param).map(|_| ())
}

pub fn get_data_sample(d: &mut dyn Driver, msp: &str, channel: &str, key: &str) -> Res<DataSample> {
    call(d, msp, channel, method::GET_DATA_SAMPLE, &GetDataSampleParam { key: key.to_owned() })
}

pub fn query_data_samples(
    d: &mut dyn Driver,
    channel: &str,
    page_token: &str,
    page_size: u32,
    keys: Option<&[&str]>,
) -> Res<QueryDataSamplesResponse> {
    let param = QueryDataSamplesParam {
        page_token: page_token.to_owned(),
        page_size,
        filter: keys.map(|k| DataSampleQueryFilter { keys: strings(k) }),
    };
    call(d, ORG1, channel, method::QUERY_DATA_SAMPLES, &param)
}

pub fn get_dataset(d: &mut dyn Driver, msp: &str, channel: &str, key: &str) -> Res<Dataset> {
    call(d, msp, channel, method::GET_DATASET, &GetDatasetParam { key: key.to_owned() })
}

pub fn register_function(d: &mut dyn Driver, msp: &str, channel: &str, function: &NewFunction) -> Res<Function> {
    call(d, msp, channel, method::REGISTER_FUNCTION, function)
}

pub fn get_function(d: &mut dyn Driver, msp: &str, channel: &str, key: &str) -> Res<Function> {
    call(d, msp, channel, method::GET_FUNCTION, &GetFunctionParam { key: key.to_owned() })
}

pub fn update_function(
    d: &mut dyn Driver,
    msp: &str,
    channel: &str,
    key: &str,
    name: &str,
    image: Option<Addressable>,
) -> Res<()> {
    let param = UpdateFunctionParam { key: key.to_owned(), name: name.to_owned(), image };
    call::<_, UpdateFunctionResponse>(d, msp, channel, method::UPDATE_FUNCTION, &param).map(|_| ())
}

pub fn apply_function_action(d: &mut dyn Driver, msp: &str, channel: &str, key: &str, action: i32) -> Res<()> {
    let param = ApplyFunctionActionParam { function_key: key.to_owned(), action };
    call::<_, ApplyFunctionActionResponse>(d, msp, channel, method::APPLY_FUNCTION_ACTION, &param).map(|_| ())
}

pub fn query_functions(
    d: &mut dyn Driver,
    channel: &str,
    page_token: &str,
    page_size: u32,
    compute_plan_key: Option<&str>,
) -> Res<QueryFunctionsResponse> {
    let param = QueryFunctionsParam {
        page_token: page_token.to_owned(),
        page_size,
        filter: compute_plan_key.map(|k| FunctionQueryFilter { compute_plan_key: k.to_owned() }),
    };
    call(d, ORG1, channel, method::QUERY_FUNCTIONS, &param)
}
