//! Functions (docs/business-rules.md §6): registration, updates and the build state machine.

use std::collections::BTreeMap;

use orchestrator_proto::{
    Addressable, AssetKind, EventKind, Function, FunctionAction, FunctionStatus, NewFunction, Permission, event,
};

use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED, addressable, apply_function_action, assert_no_event_since,
    check_event, events_since, expect_err, get_function, input, key, new_function, output, private_permissions,
    query_functions, register_function, setup_organizations, strings, time_key, update_function,
};
use crate::error::ErrorKind;
use crate::testing::Driver;

/// Registering `function` fails validation, naming every fragment of `fields`.
#[track_caller]
fn expect_invalid(d: &mut dyn Driver, function: &NewFunction, fields: &[&str]) {
    let err = expect_err(
        register_function(d, ORG1, CHANNEL, function),
        ErrorKind::InvalidAsset,
        "OE0101: function is not valid: ",
    );
    for field in fields {
        assert!(err.message.contains(field), "{:?} should name {field:?}", err.message);
    }
}

fn with_inputs(n: u64, inputs: &[(&str, AssetKind, bool, bool)]) -> NewFunction {
    let mut f = new_function(n);
    f.inputs = inputs
        .iter()
        .map(|(id, kind, multiple, optional)| ((*id).to_owned(), input(*kind, *multiple, *optional)))
        .collect();
    f
}

fn with_outputs(n: u64, outputs: &[(&str, AssetKind, bool)]) -> NewFunction {
    let mut f = new_function(n);
    f.outputs = outputs.iter().map(|(id, kind, multiple)| ((*id).to_owned(), output(*kind, *multiple))).collect();
    f
}

pub fn functions(d: &mut dyn Driver) {
    use AssetKind::{AssetDataManager as DM, AssetDataSample as DS, AssetModel as MODEL, AssetPerformance as PERF};
    setup_organizations(d, CHANNEL);

    // --- Registration --------------------------------------------------------------------
    let new = new_function(1);
    let before = d.events().len();
    let f1 = register_function(d, ORG1, CHANNEL, &new).expect("register function");
    assert_eq!(f1.key, key(1));
    assert_eq!(f1.name, new.name);
    assert_eq!(f1.owner, ORG1);
    assert_eq!(f1.status, FunctionStatus::Waiting as i32, "new functions wait for their build");
    assert_eq!(f1.image, Some(Addressable::default()), "image present and empty");
    assert_eq!(f1.description, new.description);
    assert_eq!(f1.archive, new.archive);
    assert_eq!(f1.metadata, new.metadata);
    assert_eq!(f1.inputs, new.inputs);
    assert_eq!(f1.outputs, new.outputs);
    assert!(f1.creation_date.is_some());
    let everyone = Permission { public: true, authorized_ids: strings(&[ORG1]) };
    let permissions = f1.permissions.clone().expect("permissions");
    assert_eq!((permissions.process, permissions.download), (Some(everyone.clone()), Some(everyone)));
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "{events:?}");
    let asset = check_event(&events[0], AssetKind::AssetFunction, EventKind::EventAssetCreated, &key(1), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Function(f1.clone()));
    assert_eq!(events[0].timestamp, f1.creation_date);
    assert_eq!(get_function(d, ORG2, CHANNEL, &key(1)).expect("get"), f1);

    // Private permissions: the owner is appended, the same permission for process and download.
    let mut new = new_function(2);
    new.new_permissions = Some(private_permissions(&[ORG2]));
    let f2 = register_function(d, ORG2, CHANNEL, &new).expect("private function of ORG2");
    let only = Permission { public: false, authorized_ids: strings(&[ORG2]) };
    let permissions = f2.permissions.clone().expect("permissions");
    assert_eq!((permissions.process, permissions.download), (Some(only.clone()), Some(only)));
    assert_eq!(f2.owner, ORG2);

    // Other valid shapes: metric (PERFORMANCE output), aggregate (no data), no inputs/outputs at all.
    let metric = with_outputs(3, &[("performance", PERF, false)]);
    register_function(d, ORG1, CHANNEL, &metric).expect("metric shape");
    let aggregate = with_inputs(4, &[("model", MODEL, true, true)]);
    register_function(d, ORG1, CHANNEL, &aggregate).expect("aggregate shape");
    let mut empty = new_function(5);
    empty.inputs.clear();
    empty.outputs.clear();
    register_function(d, ORG1, CHANNEL, &empty).expect("empty inputs and outputs are allowed");

    // --- Existence, owner, permission inputs -----------------------------------------------
    let before = d.events().len();
    expect_err(
        register_function(d, ORG1, CHANNEL, &new_function(1)),
        ErrorKind::Conflict,
        &format!("OE0006: function with key \"{}\" already exists", key(1)),
    );
    expect_err(register_function(d, UNREGISTERED, CHANNEL, &new_function(6)), ErrorKind::NotFound, "organization");
    let mut bad = new_function(6);
    bad.new_permissions = Some(private_permissions(&[UNREGISTERED]));
    expect_err(
        register_function(d, ORG1, CHANNEL, &bad),
        ErrorKind::BadRequest,
        "OE0003: invalid permission input values",
    );
    expect_err(
        get_function(d, ORG1, CHANNEL, &key(6)),
        ErrorKind::NotFound,
        &format!("OE0002: function with key \"{}\" not found", key(6)),
    );
    assert_no_event_since(d, before);

    // --- Validation (docs/business-rules.md §6.1), nothing stored --------------------------------
    let before = d.events().len();
    let n = 100;
    // Plain fields, all listed at once.
    let mut bad = new_function(n);
    bad.key = "00000000-0000-4000-8000-0000000000AB".to_owned();
    bad.name = String::new();
    bad.archive = None;
    bad.new_permissions = None;
    bad.description = Some(Addressable { checksum: "12".to_owned(), ..addressable("function/description", n) });
    expect_invalid(d, &bad, &["key", "name", "archive", "new_permissions", "description", "checksum"]);
    let mut bad = new_function(n);
    bad.archive = Some(Addressable { storage_address: "s3://bucket/key".to_owned(), ..addressable("f/archive", n) });
    expect_invalid(d, &bad, &["archive", "storage_address"]);
    let mut bad = new_function(n);
    bad.name = "n".repeat(101);
    expect_invalid(d, &bad, &["name"]);
    let mut bad = new_function(n);
    bad.metadata.insert("key".to_owned(), "v".repeat(101));
    expect_invalid(d, &bad, &["metadata"]);

    // Data manager inputs: neither multiple nor optional, at most one, only with data samples.
    expect_invalid(
        d,
        &with_inputs(n, &[("opener", DM, true, false), ("datasamples", DS, true, false)]),
        &["inputs", "opener"],
    );
    expect_invalid(
        d,
        &with_inputs(n, &[("opener", DM, false, true), ("datasamples", DS, true, false)]),
        &["inputs", "opener"],
    );
    expect_invalid(
        d,
        &with_inputs(
            n,
            &[("opener", DM, false, false), ("opener2", DM, false, false), ("datasamples", DS, true, false)],
        ),
        &["inputs"],
    );
    expect_invalid(d, &with_inputs(n, &[("opener", DM, false, false), ("model", MODEL, false, false)]), &["inputs"]);
    expect_invalid(d, &with_inputs(n, &[("datasamples", DS, true, false)]), &["inputs"]);
    // Unknown input kinds (the zero value included: refused here rather than by a database).
    for kind in
        [AssetKind::AssetFunction, AssetKind::AssetPerformance, AssetKind::AssetComputePlan, AssetKind::AssetUnknown]
    {
        expect_invalid(d, &with_inputs(n, &[("weird", kind, false, false)]), &["inputs", "kind"]);
    }
    let mut bad = new_function(n);
    bad.inputs.insert("weird".to_owned(), orchestrator_proto::FunctionInput { kind: 999, ..Default::default() });
    expect_invalid(d, &bad, &["inputs", "kind"]);
    // Identifiers: 1..=100 bytes.
    let mut bad = new_function(n);
    bad.inputs.insert(String::new(), input(MODEL, false, true));
    expect_invalid(d, &bad, &["inputs"]);
    let mut bad = new_function(n);
    bad.inputs.insert("i".repeat(101), input(MODEL, false, true));
    expect_invalid(d, &bad, &["inputs"]);
    let mut bad = new_function(n);
    bad.outputs.insert("o".repeat(101), output(MODEL, false));
    expect_invalid(d, &bad, &["outputs"]);

    // Outputs: MODEL or PERFORMANCE; a PERFORMANCE output cannot be multiple.
    expect_invalid(d, &with_outputs(n, &[("performance", PERF, true)]), &["outputs", "performance"]);
    for kind in [DS, DM, AssetKind::AssetUnknown] {
        expect_invalid(d, &with_outputs(n, &[("weird", kind, false)]), &["outputs", "kind"]);
    }
    // Several failures in inputs and outputs are reported together.
    let mut bad = with_inputs(n, &[("opener", DM, true, true), ("datasamples", DS, true, false)]);
    bad.outputs.insert("performance".to_owned(), output(PERF, true));
    expect_invalid(d, &bad, &["inputs", "opener", "outputs", "performance"]);
    assert_no_event_since(d, before);
    expect_err(get_function(d, ORG1, CHANNEL, &key(n)), ErrorKind::NotFound, "not found");

    // A valid multiple MODEL output and a 100-byte identifier are fine.
    let mut ok = with_outputs(7, &[("models", MODEL, true)]);
    ok.inputs.insert("i".repeat(100), input(MODEL, false, true));
    register_function(d, ORG1, CHANNEL, &ok).expect("multiple model output, 100-byte identifier");

    // --- UpdateFunction (docs/business-rules.md §6.2) --------------------------------------------
    let before = d.events().len();
    let image = addressable("function/image", 1);
    expect_err(
        update_function(d, ORG1, CHANNEL, &key(1), "", Some(image.clone())),
        ErrorKind::InvalidAsset,
        "name: cannot be blank",
    );
    expect_err(
        update_function(d, ORG2, CHANNEL, &key(1), "stolen", Some(image.clone())),
        ErrorKind::PermissionDenied,
        "OE0102: ",
    );
    expect_err(
        update_function(d, ORG1, CHANNEL, &key(0x99), "x", None),
        ErrorKind::NotFound,
        &format!("OE0002: function with key \"{}\" not found", key(0x99)),
    );
    expect_err(update_function(d, ORG1, CHANNEL, "bad", "x", None), ErrorKind::InvalidAsset, "key");
    assert_no_event_since(d, before);
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(1)).expect("get"), f1, "refused updates change nothing");

    // Name only.
    let before = d.events().len();
    update_function(d, ORG1, CHANNEL, &key(1), "renamed", None).expect("rename");
    let mut expected = f1.clone();
    expected.name = "renamed".to_owned();
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(1)).expect("get"), expected);
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "{events:?}");
    let asset = check_event(&events[0], AssetKind::AssetFunction, EventKind::EventAssetUpdated, &key(1), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Function(expected.clone()));

    // An image without checksum does not replace the current one.
    let no_checksum = Addressable { checksum: String::new(), storage_address: image.storage_address.clone() };
    update_function(d, ORG1, CHANNEL, &key(1), "renamed", Some(no_checksum)).expect("image without checksum");
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(1)).expect("get"), expected);
    // An image with a checksum does.
    let before = d.events().len();
    update_function(d, ORG1, CHANNEL, &key(1), "with image", Some(image.clone())).expect("set image");
    expected.name = "with image".to_owned();
    expected.image = Some(image.clone());
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(1)).expect("get"), expected);
    let events = events_since(d, before);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].asset, Some(event::Asset::Function(expected.clone())));
    // Later updates without image keep it.
    update_function(d, ORG1, CHANNEL, &key(1), "renamed again", None).expect("rename keeps image");
    expected.name = "renamed again".to_owned();
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(1)).expect("get"), expected);
    assert_eq!(expected.status, FunctionStatus::Waiting as i32, "updates do not touch the status");

    // --- QueryFunctions ---------------------------------------------------------------------
    // More functions, keys out of creation order.
    for n in [0x50, 0x40, 0x60] {
        register_function(d, ORG2, CHANNEL, &new_function(n)).expect("register");
    }
    let mut all: Vec<Function> = [1, 2, 3, 4, 5, 7, 0x50, 0x40, 0x60]
        .into_iter()
        .map(|n| get_function(d, ORG1, CHANNEL, &key(n)).expect("get"))
        .collect();
    all.sort_by(|a, b| {
        time_key(a.creation_date.as_ref()).cmp(&time_key(b.creation_date.as_ref())).then_with(|| a.key.cmp(&b.key))
    });
    let page = query_functions(d, CHANNEL, "", 0, None).expect("query");
    assert_eq!(page.functions, all, "(creation_date, key) order");
    assert_eq!(page.next_page_token, "");
    let page = query_functions(d, CHANNEL, "", 0, Some("")).expect("empty plan filter");
    assert_eq!(page.functions, all, "an empty plan key does not filter");
    // Paged by 4.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = query_functions(d, CHANNEL, &token, 4, None).expect("page");
        assert!(page.functions.len() <= 4);
        walked.extend(page.functions);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(walked, all);
    // Filter on a plan no task uses.
    let page = query_functions(d, CHANNEL, "", 0, Some(&key(0xabc))).expect("unknown plan");
    assert!(page.functions.is_empty(), "{page:?}");
    assert_eq!(page.next_page_token, "");

    // --- Channel scoping ---------------------------------------------------------------------
    assert!(query_functions(d, OTHER_CHANNEL, "", 0, None).expect("other channel").functions.is_empty());
    expect_err(get_function(d, ORG1, OTHER_CHANNEL, &key(1)), ErrorKind::NotFound, "not found");
    expect_err(update_function(d, ORG1, OTHER_CHANNEL, &key(1), "x", None), ErrorKind::NotFound, "not found");
}

// =============================================================================================

const BUILDING: i32 = FunctionAction::Building as i32;
const CANCELED: i32 = FunctionAction::Canceled as i32;
const FAILED: i32 = FunctionAction::Failed as i32;
const READY: i32 = FunctionAction::Ready as i32;
const ACTIONS: [(i32, &str); 4] = [
    (BUILDING, "transitionBuilding"),
    (CANCELED, "transitionCanceled"),
    (FAILED, "transitionFailed"),
    (READY, "transitionReady"),
];

/// Applies an allowed action: the status changes and one FUNCTION/UPDATED event with the reason.
#[track_caller]
fn apply_ok(d: &mut dyn Driver, n: u64, action: i32, to: FunctionStatus) {
    let before_fn = get_function(d, ORG1, CHANNEL, &key(n)).expect("get");
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &key(n), action).expect("allowed transition");
    let after = get_function(d, ORG1, CHANNEL, &key(n)).expect("get");
    let mut expected = before_fn;
    expected.status = to as i32;
    assert_eq!(after, expected, "only the status changes");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "{events:?}");
    let asset = check_event(
        &events[0],
        AssetKind::AssetFunction,
        EventKind::EventAssetUpdated,
        &key(n),
        CHANNEL,
        &[("reason", "User action")],
    );
    assert_eq!(asset, event::Asset::Function(expected));
}

/// Every action not allowed from the function's current status is refused with UNKNOWN.
#[track_caller]
fn refuse_all_but(d: &mut dyn Driver, n: u64, allowed: &[i32]) {
    let current = get_function(d, ORG1, CHANNEL, &key(n)).expect("get");
    let status = FunctionStatus::try_from(current.status).expect("known status").as_str_name();
    let before = d.events().len();
    for (action, transition) in ACTIONS {
        if allowed.contains(&action) {
            continue;
        }
        expect_err(
            apply_function_action(d, ORG1, CHANNEL, &key(n), action),
            ErrorKind::Unknown,
            &format!("event {transition} inappropriate in current state {status}"),
        );
    }
    assert_no_event_since(d, before);
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(n)).expect("get"), current, "refusals change nothing");
}

pub fn function_actions(d: &mut dyn Driver) {
    use FunctionStatus as S;
    setup_organizations(d, CHANNEL);
    for n in 1..=6 {
        register_function(d, ORG1, CHANNEL, &new_function(n)).expect("register");
    }

    // WAITING → BUILDING → READY (no image needed for READY).
    refuse_all_but(d, 1, &[BUILDING, CANCELED]);
    apply_ok(d, 1, BUILDING, S::Building);
    refuse_all_but(d, 1, &[CANCELED, READY, FAILED]);
    apply_ok(d, 1, READY, S::Ready);
    refuse_all_but(d, 1, &[]);

    // WAITING → CANCELED.
    apply_ok(d, 2, CANCELED, S::Canceled);
    refuse_all_but(d, 2, &[]);

    // WAITING → BUILDING → CANCELED.
    apply_ok(d, 3, BUILDING, S::Building);
    apply_ok(d, 3, CANCELED, S::Canceled);
    refuse_all_but(d, 3, &[]);

    // WAITING → BUILDING → FAILED.
    apply_ok(d, 4, BUILDING, S::Building);
    apply_ok(d, 4, FAILED, S::Failed);
    refuse_all_but(d, 4, &[]);

    // The exact texts of two refusals (docs/business-rules.md §0.4).
    expect_err(
        apply_function_action(d, ORG1, CHANNEL, &key(5), FAILED),
        ErrorKind::Unknown,
        "event transitionFailed inappropriate in current state FUNCTION_STATUS_WAITING",
    );
    let err = expect_err(
        apply_function_action(d, ORG1, CHANNEL, &key(1), READY),
        ErrorKind::Unknown,
        "event transitionReady inappropriate in current state FUNCTION_STATUS_READY",
    );
    assert!(!err.message.starts_with("OE"), "a plain error carries no code: {}", err.message);

    // Unsupported actions: BadRequest, checked before the function is even looked up.
    let before = d.events().len();
    for action in [FunctionAction::Unknown as i32, 99, -1] {
        expect_err(
            apply_function_action(d, ORG1, CHANNEL, &key(5), action),
            ErrorKind::BadRequest,
            "OE0003: unsupported action",
        );
        expect_err(
            apply_function_action(d, ORG1, CHANNEL, &key(0x99), action),
            ErrorKind::BadRequest,
            "unsupported action",
        );
        expect_err(
            apply_function_action(d, ORG2, CHANNEL, &key(5), action),
            ErrorKind::BadRequest,
            "unsupported action",
        );
    }
    // Missing function, then ownership.
    expect_err(
        apply_function_action(d, ORG1, CHANNEL, &key(0x99), BUILDING),
        ErrorKind::NotFound,
        &format!("OE0002: function with key \"{}\" not found", key(0x99)),
    );
    expect_err(apply_function_action(d, ORG1, OTHER_CHANNEL, &key(5), BUILDING), ErrorKind::NotFound, "not found");
    expect_err(
        apply_function_action(d, ORG2, CHANNEL, &key(5), BUILDING),
        ErrorKind::PermissionDenied,
        "OE0102: only function owner can update it",
    );
    // Ownership is checked before the transition.
    expect_err(
        apply_function_action(d, ORG2, CHANNEL, &key(1), READY),
        ErrorKind::PermissionDenied,
        "only function owner can update it",
    );
    assert_no_event_since(d, before);
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(5)).expect("get").status, S::Waiting as i32);

    // UpdateFunction on a READY function: the image cannot stay empty.
    let before = d.events().len();
    expect_err(
        update_function(d, ORG1, CHANNEL, &key(1), "ready", None),
        ErrorKind::InvalidAsset,
        "OE0101: Image checksum should not be empty when function status is ready",
    );
    let empty_checksum = Addressable { checksum: String::new(), storage_address: "http://backend/image".to_owned() };
    expect_err(
        update_function(d, ORG1, CHANNEL, &key(1), "ready", Some(empty_checksum)),
        ErrorKind::InvalidAsset,
        "Image checksum should not be empty when function status is ready",
    );
    assert_no_event_since(d, before);
    let image = addressable("function/image", 1);
    update_function(d, ORG1, CHANNEL, &key(1), "ready", Some(image.clone())).expect("READY function gets its image");
    let f1 = get_function(d, ORG1, CHANNEL, &key(1)).expect("get");
    assert_eq!((f1.name.as_str(), f1.image.as_ref(), f1.status), ("ready", Some(&image), S::Ready as i32));
    update_function(d, ORG1, CHANNEL, &key(1), "ready again", None).expect("the image is kept");
    assert_eq!(get_function(d, ORG1, CHANNEL, &key(1)).expect("get").image, Some(image));
    // Other statuses accept an empty image.
    for n in [2, 4, 6] {
        update_function(d, ORG1, CHANNEL, &key(n), "no image", None).expect("not READY: empty image is fine");
    }

    // Every transition is recorded as one event with the same metadata.
    let updates: Vec<_> = d
        .events()
        .into_iter()
        .filter(|e| e.event_kind == EventKind::EventAssetUpdated as i32 && !e.metadata.is_empty())
        .collect();
    assert_eq!(updates.len(), 7, "7 transitions applied");
    let reason = BTreeMap::from([("reason".to_owned(), "User action".to_owned())]);
    assert!(updates.iter().all(|e| e.metadata == reason));
}
