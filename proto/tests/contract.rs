//! The compiled descriptor must match `docs/api-contract.md` (§1-§5) exactly: files, imports,
//! services, RPCs, messages (every field: name, number, type, label, oneof, declaration
//! order), reserved numbers and names, and enums (every value).

use std::collections::BTreeSet;

use orchestrator_proto::FILE_DESCRIPTOR_SET;
use orchestrator_proto::prost::Message as _;
use orchestrator_proto::prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

const PACKAGE: &str = "orchestrator";

fn fds() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// The 14 contract files (google/protobuf imports left out).
fn contract_files(set: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
    set.file.iter().filter(|f| !f.name().starts_with("google/protobuf/")).collect()
}

fn messages(set: &FileDescriptorSet) -> Vec<&DescriptorProto> {
    contract_files(set).into_iter().flat_map(|f| f.message_type.iter()).collect()
}

fn message<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a DescriptorProto {
    messages(set).into_iter().find(|m| m.name() == name).unwrap_or_else(|| panic!("message {name} missing"))
}

fn enumeration<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a EnumDescriptorProto {
    contract_files(set)
        .into_iter()
        .flat_map(|f| f.enum_type.iter())
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("enum {name} missing"))
}

/// `.orchestrator.Foo` → `Foo`, `.google.protobuf.Timestamp` → `Timestamp`.
fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

fn base_type(field: &FieldDescriptorProto) -> String {
    match field.r#type() {
        Type::String => "string".into(),
        Type::Bool => "bool".into(),
        Type::Uint32 => "uint32".into(),
        Type::Int32 => "int32".into(),
        Type::Float => "float".into(),
        Type::Enum => format!("enum {}", short(field.type_name())),
        Type::Message => short(field.type_name()).to_owned(),
        other => panic!("unexpected type {other:?} for {}", field.name()),
    }
}

/// Signature of one field: `name number type`, e.g. `metadata 17 map<string,string>`,
/// `inputs 17 repeated ComputeTaskInput`, `asset_key 2 string oneof=ref`.
fn signature(msg: &DescriptorProto, field: &FieldDescriptorProto) -> String {
    assert!(!field.proto3_optional(), "{}.{}: `optional` is not used by the contract", msg.name(), field.name());
    let mut ty = base_type(field);
    if field.label() == Label::Repeated {
        let entry = (field.r#type() == Type::Message)
            .then(|| {
                msg.nested_type
                    .iter()
                    .find(|n| n.name() == short(field.type_name()) && n.options.as_ref().is_some_and(|o| o.map_entry()))
            })
            .flatten();
        ty = match entry {
            Some(entry) => format!("map<{},{}>", base_type(&entry.field[0]), base_type(&entry.field[1])),
            None => format!("repeated {ty}"),
        };
    }
    let mut sig = format!("{} {} {ty}", field.name(), field.number());
    if let Some(index) = field.oneof_index {
        let index = usize::try_from(index).expect("oneof index");
        sig.push_str(&format!(" oneof={}", msg.oneof_decl[index].name()));
    }
    sig
}

// ---------------------------------------------------------------------------------------------
// The contract.

/// (file, imports in order, enums, messages, services) in declaration order.
type FileSpec =
    (&'static str, &'static [&'static str], &'static [&'static str], &'static [&'static str], &'static [&'static str]);
const FILES: &[FileSpec] = &[
    (
        "common.proto",
        &[],
        &["AssetKind", "SortOrder"],
        &["Addressable", "Permissions", "Permission", "NewPermissions"],
        &[],
    ),
    (
        "organization.proto",
        &["google/protobuf/timestamp.proto"],
        &[],
        &["Organization", "GetAllOrganizationsResponse", "RegisterOrganizationParam", "GetAllOrganizationsParam"],
        &["OrganizationService"],
    ),
    (
        "computeplan.proto",
        &["google/protobuf/timestamp.proto"],
        &["ComputePlanAction"],
        &[
            "ComputePlan",
            "NewComputePlan",
            "GetComputePlanParam",
            "ApplyPlanActionParam",
            "ApplyPlanActionResponse",
            "PlanQueryFilter",
            "QueryPlansParam",
            "QueryPlansResponse",
            "UpdateComputePlanParam",
            "UpdateComputePlanResponse",
            "IsPlanRunningParam",
            "IsPlanRunningResponse",
        ],
        &["ComputePlanService"],
    ),
    (
        "computetask.proto",
        &["google/protobuf/timestamp.proto", "model.proto", "datamanager.proto", "datasample.proto", "common.proto"],
        &["ComputeTaskStatus", "ComputeTaskAction"],
        &[
            "ParentTaskOutputRef",
            "ComputeTaskInput",
            "ComputeTaskOutput",
            "NewComputeTaskOutput",
            "ComputeTask",
            "NewComputeTask",
            "RegisterTasksParam",
            "RegisterTasksResponse",
            "TaskQueryFilter",
            "QueryTasksParam",
            "QueryTasksResponse",
            "GetTaskParam",
            "ComputeTaskOutputAsset",
            "ApplyTaskActionParam",
            "ApplyTaskActionResponse",
            "ComputeTaskInputAsset",
            "GetTaskInputAssetsParam",
            "GetTaskInputAssetsResponse",
            "DisableOutputParam",
            "DisableOutputResponse",
        ],
        &["ComputeTaskService"],
    ),
    (
        "datamanager.proto",
        &["google/protobuf/timestamp.proto", "common.proto"],
        &[],
        &[
            "DataManager",
            "NewDataManager",
            "GetDataManagerParam",
            "QueryDataManagersParam",
            "QueryDataManagersResponse",
            "UpdateDataManagerParam",
            "UpdateDataManagerResponse",
        ],
        &["DataManagerService"],
    ),
    (
        "datasample.proto",
        &["google/protobuf/timestamp.proto"],
        &[],
        &[
            "DataSample",
            "NewDataSample",
            "RegisterDataSamplesParam",
            "RegisterDataSamplesResponse",
            "UpdateDataSamplesParam",
            "UpdateDataSamplesResponse",
            "DataSampleQueryFilter",
            "QueryDataSamplesParam",
            "QueryDataSamplesResponse",
            "GetDataSampleParam",
        ],
        &["DataSampleService"],
    ),
    ("dataset.proto", &["datamanager.proto"], &[], &["Dataset", "GetDatasetParam"], &["DatasetService"]),
    (
        "event.proto",
        &[
            "function.proto",
            "common.proto",
            "computeplan.proto",
            "computetask.proto",
            "datamanager.proto",
            "datasample.proto",
            "failure_report.proto",
            "model.proto",
            "organization.proto",
            "performance.proto",
            "profiling.proto",
            "google/protobuf/timestamp.proto",
        ],
        &["EventKind"],
        &["Event", "QueryEventsParam", "EventQueryFilter", "QueryEventsResponse", "SubscribeToEventsParam"],
        &["EventService"],
    ),
    (
        "failure_report.proto",
        &["google/protobuf/timestamp.proto", "common.proto"],
        &["ErrorType", "FailedAssetKind"],
        &["FailureReport", "NewFailureReport", "GetFailureReportParam"],
        &["FailureReportService"],
    ),
    (
        "function.proto",
        &["google/protobuf/timestamp.proto", "common.proto"],
        &["FunctionAction", "FunctionStatus"],
        &[
            "FunctionInput",
            "FunctionOutput",
            "Function",
            "NewFunction",
            "GetFunctionParam",
            "QueryFunctionsResponse",
            "FunctionQueryFilter",
            "QueryFunctionsParam",
            "UpdateFunctionParam",
            "UpdateFunctionResponse",
            "ApplyFunctionActionParam",
            "ApplyFunctionActionResponse",
        ],
        &["FunctionService"],
    ),
    ("info.proto", &[], &[], &["QueryVersionParam", "QueryVersionResponse"], &["InfoService"]),
    (
        "model.proto",
        &["google/protobuf/timestamp.proto", "common.proto"],
        &[],
        &[
            "Model",
            "NewModel",
            "RegisterModelsParam",
            "RegisterModelsResponse",
            "GetComputeTaskModelsParam",
            "GetComputeTaskModelsResponse",
            "GetModelParam",
        ],
        &["ModelService"],
    ),
    (
        "performance.proto",
        &["google/protobuf/timestamp.proto"],
        &[],
        &[
            "NewPerformance",
            "Performance",
            "PerformanceQueryFilter",
            "QueryPerformancesParam",
            "QueryPerformancesResponse",
        ],
        &["PerformanceService"],
    ),
    ("profiling.proto", &["google/protobuf/empty.proto"], &[], &["ProfilingStep"], &["ProfilingService"]),
];

/// Every message with every field (declaration order): "name number type".
const MESSAGES: &[(&str, &[&str])] = &[
    // common.proto
    ("Addressable", &["checksum 1 string", "storage_address 2 string"]),
    ("Permissions", &["process 1 Permission", "download 2 Permission"]),
    ("Permission", &["public 1 bool", "authorized_ids 2 repeated string"]),
    ("NewPermissions", &["public 1 bool", "authorized_ids 2 repeated string"]),
    // organization.proto
    ("Organization", &["id 1 string", "creation_date 2 Timestamp", "address 3 string"]),
    ("GetAllOrganizationsResponse", &["organizations 1 repeated Organization"]),
    ("RegisterOrganizationParam", &["address 1 string"]),
    ("GetAllOrganizationsParam", &[]),
    // computeplan.proto
    (
        "ComputePlan",
        &[
            "key 1 string",
            "owner 2 string",
            "creation_date 7 Timestamp",
            "tag 16 string",
            "name 19 string",
            "metadata 17 map<string,string>",
            "cancelation_date 18 Timestamp",
            "failure_date 20 Timestamp",
        ],
    ),
    ("NewComputePlan", &["key 1 string", "tag 16 string", "name 19 string", "metadata 17 map<string,string>"]),
    ("GetComputePlanParam", &["key 1 string"]),
    ("ApplyPlanActionParam", &["key 1 string", "action 2 enum ComputePlanAction"]),
    ("ApplyPlanActionResponse", &[]),
    ("PlanQueryFilter", &["owner 1 string"]),
    ("QueryPlansParam", &["page_token 1 string", "page_size 2 uint32", "filter 3 PlanQueryFilter"]),
    ("QueryPlansResponse", &["plans 1 repeated ComputePlan", "next_page_token 2 string"]),
    ("UpdateComputePlanParam", &["key 1 string", "name 2 string"]),
    ("UpdateComputePlanResponse", &[]),
    ("IsPlanRunningParam", &["key 1 string"]),
    ("IsPlanRunningResponse", &["is_running 1 bool"]),
    // computetask.proto
    ("ParentTaskOutputRef", &["parent_task_key 1 string", "output_identifier 2 string"]),
    (
        "ComputeTaskInput",
        &["identifier 1 string", "asset_key 2 string oneof=ref", "parent_task_output 3 ParentTaskOutputRef oneof=ref"],
    ),
    ("ComputeTaskOutput", &["permissions 1 Permissions", "transient 2 bool"]),
    ("NewComputeTaskOutput", &["permissions 1 NewPermissions", "transient 2 bool"]),
    (
        "ComputeTask",
        &[
            "key 1 string",
            "owner 4 string",
            "compute_plan_key 5 string",
            "rank 7 int32",
            "status 8 enum ComputeTaskStatus",
            "worker 9 string",
            "creation_date 10 Timestamp",
            "logs_permission 11 Permission",
            "metadata 16 map<string,string>",
            "inputs 17 repeated ComputeTaskInput",
            "outputs 19 map<string,ComputeTaskOutput>",
            "function_key 20 string",
        ],
    ),
    (
        "NewComputeTask",
        &[
            "key 1 string",
            "function_key 3 string",
            "compute_plan_key 4 string",
            "worker 6 string",
            "metadata 16 map<string,string>",
            "inputs 17 repeated ComputeTaskInput",
            "outputs 19 map<string,NewComputeTaskOutput>",
        ],
    ),
    ("RegisterTasksParam", &["tasks 1 repeated NewComputeTask"]),
    ("RegisterTasksResponse", &["tasks 1 repeated ComputeTask"]),
    (
        "TaskQueryFilter",
        &["worker 1 string", "status 2 enum ComputeTaskStatus", "compute_plan_key 4 string", "function_key 5 string"],
    ),
    ("QueryTasksParam", &["page_token 1 string", "page_size 2 uint32", "filter 3 TaskQueryFilter"]),
    ("QueryTasksResponse", &["tasks 1 repeated ComputeTask", "next_page_token 2 string"]),
    ("GetTaskParam", &["key 1 string"]),
    (
        "ComputeTaskOutputAsset",
        &[
            "compute_task_key 1 string",
            "compute_task_output_identifier 2 string",
            "asset_kind 3 enum AssetKind",
            "asset_key 4 string",
        ],
    ),
    ("ApplyTaskActionParam", &["compute_task_key 1 string", "action 2 enum ComputeTaskAction", "log 3 string"]),
    ("ApplyTaskActionResponse", &[]),
    (
        "ComputeTaskInputAsset",
        &[
            "identifier 1 string",
            "model 2 Model oneof=asset",
            "data_manager 3 DataManager oneof=asset",
            "data_sample 4 DataSample oneof=asset",
        ],
    ),
    ("GetTaskInputAssetsParam", &["compute_task_key 1 string"]),
    ("GetTaskInputAssetsResponse", &["assets 1 repeated ComputeTaskInputAsset"]),
    ("DisableOutputParam", &["compute_task_key 1 string", "identifier 2 string"]),
    ("DisableOutputResponse", &[]),
    // datamanager.proto
    (
        "DataManager",
        &[
            "key 1 string",
            "name 2 string",
            "owner 3 string",
            "permissions 4 Permissions",
            "description 6 Addressable",
            "opener 7 Addressable",
            "type 8 string",
            "creation_date 9 Timestamp",
            "logs_permission 10 Permission",
            "metadata 16 map<string,string>",
        ],
    ),
    (
        "NewDataManager",
        &[
            "key 1 string",
            "name 2 string",
            "new_permissions 3 NewPermissions",
            "description 5 Addressable",
            "opener 6 Addressable",
            "type 7 string",
            "logs_permission 8 NewPermissions",
            "metadata 16 map<string,string>",
        ],
    ),
    ("GetDataManagerParam", &["key 1 string"]),
    ("QueryDataManagersParam", &["page_token 1 string", "page_size 2 uint32"]),
    ("QueryDataManagersResponse", &["data_managers 1 repeated DataManager", "next_page_token 2 string"]),
    ("UpdateDataManagerParam", &["key 1 string", "name 2 string"]),
    ("UpdateDataManagerResponse", &[]),
    // datasample.proto
    (
        "DataSample",
        &[
            "key 1 string",
            "data_manager_keys 2 repeated string",
            "owner 3 string",
            "test_only 4 bool",
            "checksum 5 string",
            "creation_date 6 Timestamp",
        ],
    ),
    (
        "NewDataSample",
        &["key 1 string", "data_manager_keys 2 repeated string", "test_only 3 bool", "checksum 4 string"],
    ),
    ("RegisterDataSamplesParam", &["samples 1 repeated NewDataSample"]),
    ("RegisterDataSamplesResponse", &["data_samples 1 repeated DataSample"]),
    ("UpdateDataSamplesParam", &["keys 1 repeated string", "data_manager_keys 2 repeated string"]),
    ("UpdateDataSamplesResponse", &[]),
    ("DataSampleQueryFilter", &["keys 1 repeated string"]),
    ("QueryDataSamplesParam", &["page_token 1 string", "page_size 2 uint32", "filter 3 DataSampleQueryFilter"]),
    ("QueryDataSamplesResponse", &["data_samples 1 repeated DataSample", "next_page_token 2 string"]),
    ("GetDataSampleParam", &["key 1 string"]),
    // dataset.proto
    ("Dataset", &["data_manager 1 DataManager", "data_sample_keys 4 repeated string"]),
    ("GetDatasetParam", &["key 1 string"]),
    // event.proto
    (
        "Event",
        &[
            "id 1 string",
            "asset_key 2 string",
            "asset_kind 3 enum AssetKind",
            "event_kind 4 enum EventKind",
            "channel 5 string",
            "timestamp 6 Timestamp",
            "function 7 Function oneof=asset",
            "compute_plan 8 ComputePlan oneof=asset",
            "compute_task 9 ComputeTask oneof=asset",
            "data_manager 10 DataManager oneof=asset",
            "data_sample 11 DataSample oneof=asset",
            "failure_report 12 FailureReport oneof=asset",
            "model 13 Model oneof=asset",
            "organization 14 Organization oneof=asset",
            "performance 15 Performance oneof=asset",
            "compute_task_output_asset 16 ComputeTaskOutputAsset oneof=asset",
            "profiling_step 17 ProfilingStep oneof=asset",
            "metadata 18 map<string,string>",
        ],
    ),
    (
        "QueryEventsParam",
        &["page_token 1 string", "page_size 2 uint32", "filter 3 EventQueryFilter", "sort 4 enum SortOrder"],
    ),
    (
        "EventQueryFilter",
        &[
            "asset_key 1 string",
            "asset_kind 2 enum AssetKind",
            "event_kind 3 enum EventKind",
            "metadata 4 map<string,string>",
            "start 5 Timestamp",
            "end 6 Timestamp",
        ],
    ),
    ("QueryEventsResponse", &["events 1 repeated Event", "next_page_token 2 string"]),
    ("SubscribeToEventsParam", &["start_event_id 1 string"]),
    // failure_report.proto
    (
        "FailureReport",
        &[
            "asset_key 1 string",
            "error_type 2 enum ErrorType",
            "logs_address 3 Addressable",
            "creation_date 4 Timestamp",
            "owner 5 string",
            "asset_type 6 enum FailedAssetKind",
        ],
    ),
    (
        "NewFailureReport",
        &[
            "asset_key 1 string",
            "error_type 2 enum ErrorType",
            "logs_address 3 Addressable",
            "asset_type 4 enum FailedAssetKind",
        ],
    ),
    ("GetFailureReportParam", &["asset_key 1 string"]),
    // function.proto
    ("FunctionInput", &["kind 1 enum AssetKind", "multiple 2 bool", "optional 3 bool"]),
    ("FunctionOutput", &["kind 1 enum AssetKind", "multiple 2 bool"]),
    (
        "Function",
        &[
            "key 1 string",
            "name 2 string",
            "description 4 Addressable",
            "archive 5 Addressable",
            "permissions 6 Permissions",
            "owner 7 string",
            "creation_date 8 Timestamp",
            "metadata 16 map<string,string>",
            "inputs 17 map<string,FunctionInput>",
            "outputs 18 map<string,FunctionOutput>",
            "status 19 enum FunctionStatus",
            "image 20 Addressable",
        ],
    ),
    (
        "NewFunction",
        &[
            "key 1 string",
            "name 2 string",
            "description 4 Addressable",
            "archive 5 Addressable",
            "new_permissions 6 NewPermissions",
            "metadata 17 map<string,string>",
            "inputs 18 map<string,FunctionInput>",
            "outputs 19 map<string,FunctionOutput>",
        ],
    ),
    ("GetFunctionParam", &["key 1 string"]),
    ("QueryFunctionsResponse", &["Functions 1 repeated Function", "next_page_token 2 string"]),
    ("FunctionQueryFilter", &["compute_plan_key 2 string"]),
    ("QueryFunctionsParam", &["page_token 1 string", "page_size 2 uint32", "filter 3 FunctionQueryFilter"]),
    ("UpdateFunctionParam", &["key 1 string", "name 2 string", "image 3 Addressable"]),
    ("UpdateFunctionResponse", &[]),
    ("ApplyFunctionActionParam", &["function_key 1 string", "action 2 enum FunctionAction"]),
    ("ApplyFunctionActionResponse", &[]),
    // info.proto
    ("QueryVersionParam", &[]),
    // `logic_sha256` is this implementation's extension (number 2 stays unused).
    ("QueryVersionResponse", &["orchestrator 1 string", "logic_sha256 3 string"]),
    // model.proto
    (
        "Model",
        &[
            "key 1 string",
            "compute_task_key 3 string",
            "address 4 Addressable",
            "permissions 5 Permissions",
            "owner 6 string",
            "creation_date 7 Timestamp",
        ],
    ),
    (
        "NewModel",
        &[
            "key 1 string",
            "compute_task_key 3 string",
            "compute_task_output_identifier 5 string",
            "address 4 Addressable",
        ],
    ),
    ("RegisterModelsParam", &["models 1 repeated NewModel"]),
    ("RegisterModelsResponse", &["models 1 repeated Model"]),
    ("GetComputeTaskModelsParam", &["compute_task_key 1 string"]),
    ("GetComputeTaskModelsResponse", &["models 1 repeated Model"]),
    ("GetModelParam", &["key 1 string"]),
    // performance.proto
    (
        "NewPerformance",
        &["compute_task_key 1 string", "compute_task_output_identifier 3 string", "performance_value 2 float"],
    ),
    (
        "Performance",
        &[
            "compute_task_key 1 string",
            "compute_task_output_identifier 6 string",
            "performance_value 2 float",
            "creation_date 3 Timestamp",
        ],
    ),
    ("PerformanceQueryFilter", &["compute_task_key 1 string", "compute_task_output_identifier 3 string"]),
    ("QueryPerformancesParam", &["page_token 1 string", "page_size 2 uint32", "filter 3 PerformanceQueryFilter"]),
    ("QueryPerformancesResponse", &["Performances 1 repeated Performance", "next_page_token 2 string"]),
    // profiling.proto
    ("ProfilingStep", &["duration 1 uint32", "asset_key 2 string", "step 3 string"]),
];

/// (message, reserved numbers as written, reserved names as written).
const RESERVED: &[(&str, &[i32], &[&str])] = &[
    (
        "ComputePlan",
        &[8, 9, 10, 11, 12, 3, 4, 5, 6],
        &[
            "waiting_count",
            "todo_count",
            "doing_count",
            "canceled_count",
            "failed_count",
            "done_count",
            "task_count",
            "status",
            "delete_intermediary_models",
        ],
    ),
    ("NewComputePlan", &[18], &["delete_intermediary_models"]),
    (
        "ComputeTask",
        &[2, 3, 6, 12, 13, 14, 15, 18],
        &["category", "function", "data", "test", "train", "composite", "aggregate", "parent_task_keys", "predict"],
    ),
    (
        "NewComputeTask",
        &[2, 5, 12, 13, 14, 15, 18],
        &["category", "parent_task_keys", "data", "test", "train", "composite", "aggregate", "predict"],
    ),
    ("TaskQueryFilter", &[3], &["category"]),
    ("Dataset", &[2, 3], &["train_data_sample_keys", "test_data_sample_keys"]),
    ("Function", &[3], &["category"]),
    ("NewFunction", &[3], &["category"]),
    ("Model", &[2], &["category"]),
    ("NewModel", &[2], &["category"]),
];

/// (service, [(rpc, request, response, server streaming)]) in declaration order.
type Rpc = (&'static str, &'static str, &'static str, bool);
const SERVICES: &[(&str, &[Rpc])] = &[
    (
        "OrganizationService",
        &[
            ("RegisterOrganization", "RegisterOrganizationParam", "Organization", false),
            ("GetAllOrganizations", "GetAllOrganizationsParam", "GetAllOrganizationsResponse", false),
        ],
    ),
    (
        "ComputePlanService",
        &[
            ("RegisterPlan", "NewComputePlan", "ComputePlan", false),
            ("GetPlan", "GetComputePlanParam", "ComputePlan", false),
            ("ApplyPlanAction", "ApplyPlanActionParam", "ApplyPlanActionResponse", false),
            ("QueryPlans", "QueryPlansParam", "QueryPlansResponse", false),
            ("UpdatePlan", "UpdateComputePlanParam", "UpdateComputePlanResponse", false),
            ("IsPlanRunning", "IsPlanRunningParam", "IsPlanRunningResponse", false),
        ],
    ),
    (
        "ComputeTaskService",
        &[
            ("RegisterTasks", "RegisterTasksParam", "RegisterTasksResponse", false),
            ("QueryTasks", "QueryTasksParam", "QueryTasksResponse", false),
            ("GetTask", "GetTaskParam", "ComputeTask", false),
            ("ApplyTaskAction", "ApplyTaskActionParam", "ApplyTaskActionResponse", false),
            ("GetTaskInputAssets", "GetTaskInputAssetsParam", "GetTaskInputAssetsResponse", false),
            ("DisableOutput", "DisableOutputParam", "DisableOutputResponse", false),
        ],
    ),
    (
        "DataManagerService",
        &[
            ("RegisterDataManager", "NewDataManager", "DataManager", false),
            ("GetDataManager", "GetDataManagerParam", "DataManager", false),
            ("QueryDataManagers", "QueryDataManagersParam", "QueryDataManagersResponse", false),
            ("UpdateDataManager", "UpdateDataManagerParam", "UpdateDataManagerResponse", false),
        ],
    ),
    (
        "DataSampleService",
        &[
            ("RegisterDataSamples", "RegisterDataSamplesParam", "RegisterDataSamplesResponse", false),
            ("UpdateDataSamples", "UpdateDataSamplesParam", "UpdateDataSamplesResponse", false),
            ("QueryDataSamples", "QueryDataSamplesParam", "QueryDataSamplesResponse", false),
            ("GetDataSample", "GetDataSampleParam", "DataSample", false),
        ],
    ),
    ("DatasetService", &[("GetDataset", "GetDatasetParam", "Dataset", false)]),
    (
        "EventService",
        &[
            ("QueryEvents", "QueryEventsParam", "QueryEventsResponse", false),
            ("SubscribeToEvents", "SubscribeToEventsParam", "Event", true),
        ],
    ),
    (
        "FailureReportService",
        &[
            ("RegisterFailureReport", "NewFailureReport", "FailureReport", false),
            ("GetFailureReport", "GetFailureReportParam", "FailureReport", false),
        ],
    ),
    (
        "FunctionService",
        &[
            ("RegisterFunction", "NewFunction", "Function", false),
            ("GetFunction", "GetFunctionParam", "Function", false),
            ("QueryFunctions", "QueryFunctionsParam", "QueryFunctionsResponse", false),
            ("UpdateFunction", "UpdateFunctionParam", "UpdateFunctionResponse", false),
            ("ApplyFunctionAction", "ApplyFunctionActionParam", "ApplyFunctionActionResponse", false),
        ],
    ),
    ("InfoService", &[("QueryVersion", "QueryVersionParam", "QueryVersionResponse", false)]),
    (
        "ModelService",
        &[
            ("RegisterModel", "NewModel", "Model", false),
            ("RegisterModels", "RegisterModelsParam", "RegisterModelsResponse", false),
            ("GetModel", "GetModelParam", "Model", false),
            ("GetComputeTaskOutputModels", "GetComputeTaskModelsParam", "GetComputeTaskModelsResponse", false),
        ],
    ),
    (
        "PerformanceService",
        &[
            ("RegisterPerformance", "NewPerformance", "Performance", false),
            ("QueryPerformances", "QueryPerformancesParam", "QueryPerformancesResponse", false),
        ],
    ),
    ("ProfilingService", &[("RegisterProfilingStep", "ProfilingStep", "google.protobuf.Empty", false)]),
];

/// (enum, [(value, number)]) in declaration order, and reserved numbers/names.
type EnumSpec = (&'static str, &'static [(&'static str, i32)]);
const ENUMS: &[EnumSpec] = &[
    (
        "AssetKind",
        &[
            ("ASSET_UNKNOWN", 0),
            ("ASSET_ORGANIZATION", 1),
            ("ASSET_DATA_SAMPLE", 3),
            ("ASSET_DATA_MANAGER", 4),
            ("ASSET_FUNCTION", 5),
            ("ASSET_COMPUTE_TASK", 6),
            ("ASSET_COMPUTE_PLAN", 7),
            ("ASSET_MODEL", 8),
            ("ASSET_PERFORMANCE", 9),
            ("ASSET_FAILURE_REPORT", 10),
            ("ASSET_COMPUTE_TASK_OUTPUT_ASSET", 11),
            ("ASSET_PROFILING_STEP", 12),
        ],
    ),
    ("SortOrder", &[("UNSPECIFIED", 0), ("ASCENDING", 1), ("DESCENDING", 2)]),
    ("ComputePlanAction", &[("PLAN_ACTION_UNKNOWN", 0), ("PLAN_ACTION_CANCELED", 1)]),
    (
        "ComputeTaskStatus",
        &[
            ("STATUS_UNKNOWN", 0),
            ("STATUS_WAITING_FOR_PARENT_TASKS", 1),
            ("STATUS_WAITING_FOR_EXECUTOR_SLOT", 2),
            ("STATUS_EXECUTING", 3),
            ("STATUS_DONE", 4),
            ("STATUS_CANCELED", 5),
            ("STATUS_FAILED", 6),
            ("STATUS_WAITING_FOR_BUILDER_SLOT", 7),
            ("STATUS_BUILDING", 8),
        ],
    ),
    (
        "ComputeTaskAction",
        &[
            ("TASK_ACTION_UNKNOWN", 0),
            ("TASK_ACTION_EXECUTING", 1),
            ("TASK_ACTION_CANCELED", 2),
            ("TASK_ACTION_FAILED", 3),
            ("TASK_ACTION_DONE", 4),
            ("TASK_ACTION_BUILD_STARTED", 5),
            ("TASK_ACTION_BUILD_FINISHED", 6),
        ],
    ),
    (
        "EventKind",
        &[("EVENT_UNKNOWN", 0), ("EVENT_ASSET_CREATED", 1), ("EVENT_ASSET_UPDATED", 2), ("EVENT_ASSET_DISABLED", 3)],
    ),
    (
        "ErrorType",
        &[
            ("ERROR_TYPE_UNSPECIFIED", 0),
            ("ERROR_TYPE_BUILD", 1),
            ("ERROR_TYPE_EXECUTION", 2),
            ("ERROR_TYPE_INTERNAL", 3),
        ],
    ),
    ("FailedAssetKind", &[("FAILED_ASSET_UNKNOWN", 0), ("FAILED_ASSET_COMPUTE_TASK", 1), ("FAILED_ASSET_FUNCTION", 2)]),
    (
        "FunctionAction",
        &[
            ("FUNCTION_ACTION_UNKNOWN", 0),
            ("FUNCTION_ACTION_BUILDING", 1),
            ("FUNCTION_ACTION_CANCELED", 2),
            ("FUNCTION_ACTION_FAILED", 3),
            ("FUNCTION_ACTION_READY", 4),
        ],
    ),
    (
        "FunctionStatus",
        &[
            ("FUNCTION_STATUS_UNKNOWN", 0),
            ("FUNCTION_STATUS_WAITING", 1),
            ("FUNCTION_STATUS_BUILDING", 2),
            ("FUNCTION_STATUS_READY", 3),
            ("FUNCTION_STATUS_CANCELED", 4),
            ("FUNCTION_STATUS_FAILED", 5),
        ],
    ),
];

// ---------------------------------------------------------------------------------------------

#[test]
fn totals() {
    let set = fds();
    let files = contract_files(&set);
    assert_eq!(files.len(), 14, "contract files");
    for file in &files {
        assert_eq!(file.package(), PACKAGE, "{}", file.name());
    }
    // Only well-known imports besides ours.
    for file in set.file.iter().filter(|f| f.package() != PACKAGE) {
        assert!(
            ["google/protobuf/timestamp.proto", "google/protobuf/empty.proto"].contains(&file.name()),
            "unexpected file {}",
            file.name()
        );
    }
    let services: usize = files.iter().map(|f| f.service.len()).sum();
    let methods: usize = files.iter().flat_map(|f| f.service.iter()).map(|s| s.method.len()).sum();
    let messages: usize = files.iter().map(|f| f.message_type.len()).sum();
    let enums: usize = files.iter().map(|f| f.enum_type.len()).sum();
    assert_eq!(services, 13, "services");
    assert_eq!(methods, 40, "RPCs");
    assert_eq!(messages, 94, "messages");
    assert_eq!(enums, 10, "enums");
    assert_eq!(MESSAGES.len(), 94);
    assert_eq!(SERVICES.len(), 13);
    assert_eq!(SERVICES.iter().map(|(_, rpcs)| rpcs.len()).sum::<usize>(), 40);
    assert_eq!(ENUMS.len(), 10);
}

#[test]
fn files_imports_and_declarations() {
    let set = fds();
    let files = contract_files(&set);
    let names: BTreeSet<&str> = files.iter().map(|f| f.name()).collect();
    let expected: BTreeSet<&str> = FILES.iter().map(|f| f.0).collect();
    assert_eq!(names, expected);
    for (name, imports, enums, messages, services) in FILES {
        let file = files.iter().find(|f| f.name() == *name).unwrap_or_else(|| panic!("file {name} missing"));
        assert_eq!(file.syntax(), "proto3", "{name}");
        assert_eq!(
            file.options.as_ref().map(|o| o.go_package()),
            Some("github.com/substra/orchestrator/lib/asset"),
            "{name}"
        );
        assert_eq!(&file.dependency, imports, "{name} imports");
        let got: Vec<&str> = file.enum_type.iter().map(|e| e.name()).collect();
        assert_eq!(&got, enums, "{name} enums");
        let got: Vec<&str> = file.message_type.iter().map(|m| m.name()).collect();
        assert_eq!(&got, messages, "{name} messages");
        let got: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
        assert_eq!(&got, services, "{name} services");
        // No nested declarations besides the synthetic map entries.
        for msg in &file.message_type {
            assert!(msg.enum_type.is_empty(), "{}: nested enum", msg.name());
            for nested in &msg.nested_type {
                assert!(
                    nested.options.as_ref().is_some_and(|o| o.map_entry()),
                    "{}: nested message {}",
                    msg.name(),
                    nested.name()
                );
            }
        }
    }
}

#[test]
fn every_message_field() {
    let set = fds();
    let declared: BTreeSet<&str> = messages(&set).iter().map(|m| m.name()).collect();
    let specified: BTreeSet<&str> = MESSAGES.iter().map(|m| m.0).collect();
    assert_eq!(declared, specified);
    for (name, fields) in MESSAGES {
        let msg = message(&set, name);
        let got: Vec<String> = msg.field.iter().map(|f| signature(msg, f)).collect();
        assert_eq!(&got, fields, "fields of {name}");
        // Well-known message types must be the google.protobuf ones.
        for field in &msg.field {
            if field.r#type() == Type::Message && short(field.type_name()) == "Timestamp" {
                assert_eq!(field.type_name(), ".google.protobuf.Timestamp");
            } else if matches!(field.r#type(), Type::Message | Type::Enum) && field.label() != Label::Repeated {
                assert!(field.type_name().starts_with(".orchestrator."), "{name}.{}", field.name());
            }
        }
    }
}

#[test]
fn tricky_numbers() {
    let set = fds();
    let number = |msg: &str, field: &str| {
        message(&set, msg)
            .field
            .iter()
            .find(|f| f.name() == field)
            .unwrap_or_else(|| panic!("{msg}.{field} missing"))
            .number()
    };
    assert_eq!(number("ComputePlan", "tag"), 16);
    assert_eq!(number("ComputePlan", "name"), 19);
    assert_eq!(number("ComputePlan", "metadata"), 17);
    assert_eq!(number("ComputePlan", "cancelation_date"), 18);
    assert_eq!(number("ComputePlan", "failure_date"), 20);
    assert_eq!(number("NewFunction", "metadata"), 17);
    assert_eq!(number("NewFunction", "inputs"), 18);
    assert_eq!(number("NewFunction", "outputs"), 19);
    assert_eq!(number("Function", "metadata"), 16);
    assert_eq!(number("Function", "inputs"), 17);
    assert_eq!(number("Function", "outputs"), 18);
    assert_eq!(number("Performance", "compute_task_output_identifier"), 6);
    assert_eq!(number("NewPerformance", "compute_task_output_identifier"), 3);
    assert_eq!(number("QueryVersionResponse", "orchestrator"), 1);
    assert_eq!(number("QueryVersionResponse", "logic_sha256"), 3);
    assert_eq!(number("Event", "metadata"), 18);
    assert_eq!(number("QueryFunctionsResponse", "Functions"), 1);
    assert_eq!(number("QueryPerformancesResponse", "Performances"), 1);
    let perf = message(&set, "Performance")
        .field
        .iter()
        .find(|f| f.name() == "performance_value")
        .map(FieldDescriptorProto::r#type);
    assert_eq!(perf, Some(Type::Float));

    // Oneofs: exactly three, no synthetic (proto3 optional) ones.
    let oneofs: Vec<(String, String)> = messages(&set)
        .iter()
        .flat_map(|m| m.oneof_decl.iter().map(|o| (m.name().to_owned(), o.name().to_owned())))
        .collect();
    assert_eq!(
        oneofs,
        [
            ("ComputeTaskInput".into(), "ref".into()),
            ("ComputeTaskInputAsset".into(), "asset".into()),
            ("Event".into(), "asset".into()),
        ]
    );
}

#[test]
fn reserved_numbers_and_names() {
    let set = fds();
    for (name, numbers, names) in RESERVED {
        let msg = message(&set, name);
        let got: Vec<(i32, i32)> = msg.reserved_range.iter().map(|r| (r.start(), r.end())).collect();
        // Each single reserved number n is the half-open range [n, n+1).
        let want: Vec<(i32, i32)> = numbers.iter().map(|&n| (n, n + 1)).collect();
        assert_eq!(got, want, "reserved numbers of {name}");
        assert_eq!(&msg.reserved_name, names, "reserved names of {name}");
        for field in &msg.field {
            assert!(!numbers.contains(&field.number()), "{name}.{} uses a reserved number", field.name());
        }
    }
    // No other message reserves anything.
    for msg in messages(&set) {
        if !RESERVED.iter().any(|r| r.0 == msg.name()) {
            assert!(
                msg.reserved_range.is_empty() && msg.reserved_name.is_empty(),
                "{} has unexpected reserved statements",
                msg.name()
            );
        }
    }
    let asset_kind = enumeration(&set, "AssetKind");
    let ranges: Vec<(i32, i32)> = asset_kind.reserved_range.iter().map(|r| (r.start(), r.end())).collect();
    // Enum reserved ranges are inclusive.
    assert_eq!(ranges, [(2, 2)]);
    assert_eq!(asset_kind.reserved_name, ["ASSET_METRIC"]);
}

#[test]
fn services_and_rpcs() {
    let set = fds();
    let files = contract_files(&set);
    let services: Vec<_> = files.iter().flat_map(|f| f.service.iter()).collect();
    let names: BTreeSet<&str> = services.iter().map(|s| s.name()).collect();
    let expected: BTreeSet<&str> = SERVICES.iter().map(|s| s.0).collect();
    assert_eq!(names, expected);
    let mut streaming = Vec::new();
    for (name, rpcs) in SERVICES {
        let service = services.iter().find(|s| s.name() == *name).unwrap_or_else(|| panic!("service {name} missing"));
        let got: Vec<(String, String, String, bool)> = service
            .method
            .iter()
            .map(|m| {
                assert!(!m.client_streaming(), "{name}.{}", m.name());
                if m.server_streaming() {
                    streaming.push(format!("{name}.{}", m.name()));
                }
                let output = m.output_type().trim_start_matches('.');
                let output = output.strip_prefix("orchestrator.").unwrap_or(output);
                (
                    m.name().to_owned(),
                    m.input_type().trim_start_matches(".orchestrator.").to_owned(),
                    output.to_owned(),
                    m.server_streaming(),
                )
            })
            .collect();
        let want: Vec<(String, String, String, bool)> =
            rpcs.iter().map(|(m, i, o, s)| ((*m).to_owned(), (*i).to_owned(), (*o).to_owned(), *s)).collect();
        assert_eq!(got, want, "RPCs of {name}");
        for method in &service.method {
            let deprecated = method.options.as_ref().is_some_and(|o| o.deprecated());
            assert_eq!(deprecated, method.name() == "RegisterModel", "deprecated option on {name}.{}", method.name());
        }
    }
    assert_eq!(streaming, ["EventService.SubscribeToEvents"]);
}

#[test]
fn every_enum_value() {
    let set = fds();
    let declared: BTreeSet<&str> =
        contract_files(&set).iter().flat_map(|f| f.enum_type.iter()).map(|e| e.name()).collect();
    let specified: BTreeSet<&str> = ENUMS.iter().map(|e| e.0).collect();
    assert_eq!(declared, specified);
    for (name, values) in ENUMS {
        let got: Vec<(&str, i32)> = enumeration(&set, name).value.iter().map(|v| (v.name(), v.number())).collect();
        assert_eq!(&got, values, "values of {name}");
    }
}

#[test]
fn generated_types() {
    use orchestrator_proto::{
        AssetKind, ComputeTaskInput, ComputeTaskStatus, DataManager, ErrorType, Event, Function, FunctionStatus,
        compute_task_input, event,
    };
    use std::collections::BTreeMap;

    // Maps are BTreeMaps.
    let mut metadata: BTreeMap<String, String> = BTreeMap::new();
    metadata.insert("b".into(), "2".into());
    metadata.insert("a".into(), "1".into());
    let dm = DataManager { key: "k".into(), r#type: String::new(), metadata: metadata.clone(), ..Default::default() };
    let function = Function { inputs: BTreeMap::new(), status: FunctionStatus::Ready as i32, ..Default::default() };
    let event = Event {
        asset_kind: AssetKind::AssetDataManager as i32,
        asset: Some(event::Asset::DataManager(dm)),
        metadata,
        ..Default::default()
    };
    // Encoding is deterministic and round-trips.
    let bytes = event.encode_to_vec();
    assert_eq!(bytes, event.clone().encode_to_vec());
    let decoded = Event::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, event);
    assert_eq!(function.status(), FunctionStatus::Ready);

    let input =
        ComputeTaskInput { identifier: "model".into(), r#ref: Some(compute_task_input::Ref::AssetKey("x".into())) };
    assert!(matches!(input.r#ref, Some(compute_task_input::Ref::AssetKey(_))));
    assert_eq!(ComputeTaskStatus::StatusDone as i32, 4);
    assert_eq!(ErrorType::Execution.as_str_name(), "ERROR_TYPE_EXECUTION");
    assert_eq!(AssetKind::from_str_name("ASSET_PROFILING_STEP"), Some(AssetKind::AssetProfilingStep));
}

#[cfg(feature = "client")]
#[test]
fn client_modules_exist() {
    fn named<T>() -> &'static str {
        std::any::type_name::<T>()
    }
    use orchestrator_proto::{
        compute_plan_service_client::ComputePlanServiceClient, compute_task_service_client::ComputeTaskServiceClient,
        data_manager_service_client::DataManagerServiceClient, data_sample_service_client::DataSampleServiceClient,
        dataset_service_client::DatasetServiceClient, event_service_client::EventServiceClient,
        failure_report_service_client::FailureReportServiceClient, function_service_client::FunctionServiceClient,
        info_service_client::InfoServiceClient, model_service_client::ModelServiceClient,
        organization_service_client::OrganizationServiceClient, performance_service_client::PerformanceServiceClient,
        profiling_service_client::ProfilingServiceClient,
    };
    let names = [
        named::<ComputePlanServiceClient<()>>(),
        named::<ComputeTaskServiceClient<()>>(),
        named::<DataManagerServiceClient<()>>(),
        named::<DataSampleServiceClient<()>>(),
        named::<DatasetServiceClient<()>>(),
        named::<EventServiceClient<()>>(),
        named::<FailureReportServiceClient<()>>(),
        named::<FunctionServiceClient<()>>(),
        named::<InfoServiceClient<()>>(),
        named::<ModelServiceClient<()>>(),
        named::<OrganizationServiceClient<()>>(),
        named::<PerformanceServiceClient<()>>(),
        named::<ProfilingServiceClient<()>>(),
    ];
    assert_eq!(names.len(), 13);
    assert!(names.iter().all(|n| n.starts_with("orchestrator_proto::")));
}
