//! Data samples (docs/business-rules.md §4).

use orchestrator_proto::{AssetKind, DataSample, EventKind, event};

use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED, assert_no_event_since, check_event, checksum, events_since,
    expect_err, get_data_sample, key, new_data_manager, new_data_sample, query_data_samples, register_data_manager,
    register_data_samples, setup_organizations, strings, time_key, update_data_samples,
};
use crate::error::ErrorKind;
use crate::testing::Driver;

pub fn data_samples(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);
    let (dm1, dm2, dm3) = (key(1), key(2), key(3));
    register_data_manager(d, ORG1, CHANNEL, &new_data_manager(1)).expect("dm1");
    register_data_manager(d, ORG1, CHANNEL, &new_data_manager(2)).expect("dm2");
    register_data_manager(d, ORG2, CHANNEL, &new_data_manager(3)).expect("dm3 (owned by ORG2)");

    // --- Batch registration: request order, one CREATED event each ------------------------
    let mut flagged = new_data_sample(0x11, &[&dm1, &dm2]);
    flagged.test_only = true;
    let batch = vec![new_data_sample(0x13, &[&dm1]), flagged, new_data_sample(0x12, &[&dm2])];
    let before = d.events().len();
    let created = register_data_samples(d, ORG1, CHANNEL, batch.clone()).expect("register batch");
    let keys: Vec<&str> = created.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, vec![key(0x13), key(0x11), key(0x12)], "response in request order");
    for (sample, new) in created.iter().zip(&batch) {
        assert_eq!(sample.owner, ORG1);
        assert!(!sample.test_only, "test_only is never stored");
        assert_eq!(sample.checksum, new.checksum);
        assert_eq!(sample.data_manager_keys, new.data_manager_keys);
        assert!(sample.creation_date.is_some());
        assert_eq!(sample.creation_date, created[0].creation_date, "one transaction time per call");
    }
    let events = events_since(d, before);
    assert_eq!(events.len(), 3, "{events:?}");
    for (event, sample) in events.iter().zip(&created) {
        let asset =
            check_event(event, AssetKind::AssetDataSample, EventKind::EventAssetCreated, &sample.key, CHANNEL, &[]);
        assert_eq!(asset, event::Asset::DataSample(sample.clone()));
        assert_eq!(event.timestamp, sample.creation_date);
    }
    for sample in &created {
        assert_eq!(&get_data_sample(d, ORG2, CHANNEL, &sample.key).expect("get sample"), sample);
    }

    // A sample may be registered without any manager; it reads back with an empty list.
    let lone = register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(0x41, &[])]).expect("no manager");
    assert_eq!(lone.len(), 1);
    assert!(lone[0].data_manager_keys.is_empty());
    assert!(get_data_sample(d, ORG1, CHANNEL, &key(0x41)).expect("get").data_manager_keys.is_empty());

    // An empty batch succeeds with an empty answer and no event.
    let before = d.events().len();
    assert!(register_data_samples(d, ORG1, CHANNEL, Vec::new()).expect("empty batch").is_empty());
    assert_no_event_since(d, before);

    // --- All-or-nothing ------------------------------------------------------------------
    let before = d.events().len();
    let mut invalid = new_data_sample(0x22, &[&dm1]);
    invalid.checksum = "bad".to_owned();
    let batch = vec![new_data_sample(0x21, &[&dm1]), invalid, new_data_sample(0x23, &[&dm1])];
    let err = expect_err(
        register_data_samples(d, ORG1, CHANNEL, batch),
        ErrorKind::InvalidAsset,
        "OE0101: datasample is not valid: ",
    );
    assert!(err.message.contains("checksum"), "{}", err.message);
    let mut invalid = new_data_sample(0x22, &[&dm1]);
    invalid.key = "00000000-0000-4000-8000-0000000000FF".to_owned();
    let batch = vec![new_data_sample(0x21, &[&dm1]), invalid];
    expect_err(register_data_samples(d, ORG1, CHANNEL, batch), ErrorKind::InvalidAsset, "key");
    let mut invalid = new_data_sample(0x22, &[]);
    invalid.data_manager_keys = strings(&["not-a-uuid"]);
    let batch = vec![new_data_sample(0x21, &[&dm1]), invalid];
    expect_err(register_data_samples(d, ORG1, CHANNEL, batch), ErrorKind::InvalidAsset, "data_manager_keys");
    // A later conflict also rolls back the earlier samples of the batch.
    let batch = vec![new_data_sample(0x21, &[&dm1]), new_data_sample(0x11, &[&dm1])];
    expect_err(register_data_samples(d, ORG1, CHANNEL, batch), ErrorKind::Conflict, "already exists");
    assert_no_event_since(d, before);
    for n in [0x21, 0x22, 0x23] {
        expect_err(get_data_sample(d, ORG1, CHANNEL, &key(n)), ErrorKind::NotFound, "not found");
    }

    // --- Managers: must exist and be owned by the requester -------------------------------
    let before = d.events().len();
    expect_err(
        register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(0x24, &[&dm1, &dm3])]),
        ErrorKind::PermissionDenied,
        &format!("OE0102: requester does not own the datamanager \"{dm3}\""),
    );
    expect_err(
        register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(0x24, &[&key(0x99)])]),
        ErrorKind::NotFound,
        &format!("OE0002: datamanager with key \"{}\" not found", key(0x99)),
    );
    // The sample's owner must be a registered organization.
    expect_err(
        register_data_samples(d, UNREGISTERED, CHANNEL, vec![new_data_sample(0x24, &[])]),
        ErrorKind::NotFound,
        "organization",
    );

    // --- Existing keys ---------------------------------------------------------------------
    expect_err(
        register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(0x13, &[&dm1])]),
        ErrorKind::Conflict,
        &format!("OE0006: datasample with key \"{}\" already exists", key(0x13)),
    );
    // A key repeated inside one batch (the reference fails in its database; a proper conflict here).
    expect_err(
        register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(0x31, &[&dm1]), new_data_sample(0x31, &[&dm2])]),
        ErrorKind::Conflict,
        &format!("datasample with key \"{}\" already exists", key(0x31)),
    );
    assert_no_event_since(d, before);
    for n in [0x24, 0x31] {
        expect_err(get_data_sample(d, ORG1, CHANNEL, &key(n)), ErrorKind::NotFound, "not found");
    }
    expect_err(
        get_data_sample(d, ORG1, CHANNEL, &key(0x31)),
        ErrorKind::NotFound,
        &format!("OE0002: datasample with key \"{}\" not found", key(0x31)),
    );

    // --- UpdateDataSamples: append-only, no duplicates, one UPDATED event per key -----------
    let before = d.events().len();
    update_data_samples(d, ORG1, CHANNEL, &[&key(0x13), &key(0x11)], &[&dm2]).expect("link to dm2");
    let s13 = get_data_sample(d, ORG1, CHANNEL, &key(0x13)).expect("get");
    let s11 = get_data_sample(d, ORG1, CHANNEL, &key(0x11)).expect("get");
    assert_eq!(s13.data_manager_keys, vec![dm1.clone(), dm2.clone()], "appended");
    assert_eq!(s11.data_manager_keys, vec![dm1.clone(), dm2.clone()], "already linked: no duplicate");
    assert_eq!(s13.creation_date, created[0].creation_date, "creation_date unchanged");
    let events = events_since(d, before);
    assert_eq!(events.len(), 2, "{events:?}");
    for (event, sample) in events.iter().zip([&s13, &s11]) {
        let asset =
            check_event(event, AssetKind::AssetDataSample, EventKind::EventAssetUpdated, &sample.key, CHANNEL, &[]);
        assert_eq!(asset, event::Asset::DataSample(sample.clone()));
    }
    // Nothing new to link: still succeeds and still emits.
    let before = d.events().len();
    update_data_samples(d, ORG1, CHANNEL, &[&key(0x11)], &[&dm1, &dm2]).expect("no-op link");
    assert_eq!(events_since(d, before).len(), 1);
    assert_eq!(get_data_sample(d, ORG1, CHANNEL, &key(0x11)).expect("get"), s11);
    // A manager list in a new order appends only the missing ones, in request order.
    update_data_samples(d, ORG1, CHANNEL, &[&key(0x41)], &[&dm2, &dm1]).expect("link lone sample");
    assert_eq!(
        get_data_sample(d, ORG1, CHANNEL, &key(0x41)).expect("get").data_manager_keys,
        vec![dm2.clone(), dm1.clone()]
    );

    let before = d.events().len();
    let s12 = get_data_sample(d, ORG1, CHANNEL, &key(0x12)).expect("get");
    // The requester must own the sample...
    expect_err(
        update_data_samples(d, ORG2, CHANNEL, &[&key(0x12)], &[&dm3]),
        ErrorKind::PermissionDenied,
        "OE0102: requester does not own the datasample",
    );
    // ... and every target manager.
    expect_err(
        update_data_samples(d, ORG1, CHANNEL, &[&key(0x12)], &[&dm3]),
        ErrorKind::PermissionDenied,
        &format!("requester does not own the datamanager \"{dm3}\""),
    );
    expect_err(
        update_data_samples(d, ORG1, CHANNEL, &[&key(0x12)], &[&key(0x98)]),
        ErrorKind::NotFound,
        &format!("datamanager with key \"{}\" not found", key(0x98)),
    );
    // All-or-nothing: the first key would be updated, the second does not exist.
    expect_err(
        update_data_samples(d, ORG1, CHANNEL, &[&key(0x12), &key(0x97)], &[&dm1]),
        ErrorKind::NotFound,
        &format!("OE0002: datasample with key \"{}\" not found", key(0x97)),
    );
    expect_err(update_data_samples(d, ORG1, CHANNEL, &[], &[&dm1]), ErrorKind::InvalidAsset, "keys");
    expect_err(update_data_samples(d, ORG1, CHANNEL, &["nope"], &[&dm1]), ErrorKind::InvalidAsset, "keys");
    assert_no_event_since(d, before);
    assert_eq!(get_data_sample(d, ORG1, CHANNEL, &key(0x12)).expect("get"), s12, "refused updates change nothing");

    // --- QueryDataSamples ------------------------------------------------------------------
    let mut all: Vec<DataSample> = [0x13, 0x11, 0x12, 0x41]
        .into_iter()
        .map(|n| get_data_sample(d, ORG1, CHANNEL, &key(n)).expect("get"))
        .collect();
    all.sort_by(|a, b| {
        time_key(a.creation_date.as_ref()).cmp(&time_key(b.creation_date.as_ref())).then_with(|| a.key.cmp(&b.key))
    });
    let page = query_data_samples(d, CHANNEL, "", 0, None).expect("query all");
    assert_eq!(page.data_samples, all, "every sample, in (creation_date, key) order");
    assert_eq!(page.next_page_token, "");
    let page = query_data_samples(d, CHANNEL, "", 0, Some(&[])).expect("empty filter");
    assert_eq!(page.data_samples, all, "an empty key list does not filter");

    let filter = [key(0x12), key(0x96), key(0x11)];
    let filter: Vec<&str> = filter.iter().map(String::as_str).collect();
    let page = query_data_samples(d, CHANNEL, "", 0, Some(&filter)).expect("query by keys");
    let keys: Vec<&str> = page.data_samples.iter().map(|s| s.key.as_str()).collect();
    // Same batch, so same creation date: key order. Unknown keys are ignored.
    assert_eq!(keys, vec![key(0x11), key(0x12)]);
    assert_eq!(page.next_page_token, "");
    let unknown = [key(0x95)];
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    assert!(query_data_samples(d, CHANNEL, "", 0, Some(&unknown)).expect("unknown keys").data_samples.is_empty());

    // --- Channel scoping ---------------------------------------------------------------------
    assert!(query_data_samples(d, OTHER_CHANNEL, "", 0, None).expect("other channel").data_samples.is_empty());
    expect_err(get_data_sample(d, ORG1, OTHER_CHANNEL, &key(0x13)), ErrorKind::NotFound, "not found");
    expect_err(
        update_data_samples(d, ORG1, OTHER_CHANNEL, &[&key(0x13)], &[]),
        ErrorKind::NotFound,
        "datasample with key",
    );
    assert_eq!(checksum(0x13), get_data_sample(d, ORG1, CHANNEL, &key(0x13)).expect("get").checksum);
}
