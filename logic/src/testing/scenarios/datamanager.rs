//! Data managers (docs/business-rules.md §3, permissions §1.2).

use orchestrator_proto::{Addressable, AssetKind, EventKind, NewPermissions, Permission, event};

use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED, addressable, assert_no_event_since, check_event, events_since,
    expect_err, get_data_manager, key, new_data_manager, private_permissions, query_data_managers,
    register_data_manager, register_organization, setup_organizations, strings, update_data_manager,
};
use crate::error::ErrorKind;
use crate::testing::Driver;

pub fn data_managers(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);

    // --- Registration of a full asset ----------------------------------------------------
    let mut new = new_data_manager(1);
    new.new_permissions = Some(private_permissions(&[ORG2]));
    // A public list is not checked against registered organizations; the owner is appended anyway.
    new.logs_permission = Some(NewPermissions { public: true, authorized_ids: strings(&["SomeUnknownMSP"]) });
    let before = d.events().len();
    let dm = register_data_manager(d, ORG1, CHANNEL, &new).expect("register data manager");
    assert_eq!(dm.key, key(1));
    assert_eq!(dm.name, new.name);
    assert_eq!(dm.owner, ORG1);
    assert_eq!(dm.description, new.description);
    assert_eq!(dm.opener, new.opener);
    assert_eq!(dm.metadata, new.metadata);
    assert_eq!(dm.r#type, "", "type is accepted but never stored");
    assert!(dm.creation_date.is_some());
    let expected = Permission { public: false, authorized_ids: strings(&[ORG2, ORG1]) };
    let permissions = dm.permissions.clone().expect("permissions are set");
    assert_eq!(permissions.process, Some(expected.clone()), "owner appended to process");
    assert_eq!(permissions.download, Some(expected), "download = process");
    assert_eq!(
        dm.logs_permission,
        Some(Permission { public: true, authorized_ids: strings(&["SomeUnknownMSP", ORG1]) }),
        "owner appended to the logs permission, also when public"
    );
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "{events:?}");
    let asset =
        check_event(&events[0], AssetKind::AssetDataManager, EventKind::EventAssetCreated, &key(1), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::DataManager(dm.clone()), "event snapshot = stored asset");
    assert_eq!(events[0].timestamp, dm.creation_date);
    assert_eq!(get_data_manager(d, ORG2, CHANNEL, &key(1)).expect("get"), dm);

    // The owner already listed is not duplicated; order of the input is kept.
    let mut new = new_data_manager(2);
    new.new_permissions = Some(private_permissions(&[ORG1, ORG2]));
    new.logs_permission = Some(private_permissions(&[]));
    let dm2 = register_data_manager(d, ORG1, CHANNEL, &new).expect("register data manager 2");
    let listed = Permission { public: false, authorized_ids: strings(&[ORG1, ORG2]) };
    let permissions = dm2.permissions.clone().expect("permissions");
    assert_eq!((permissions.process, permissions.download), (Some(listed.clone()), Some(listed)));
    assert_eq!(dm2.logs_permission, Some(Permission { public: false, authorized_ids: strings(&[ORG1]) }));

    // --- Validation: OE0101 listing the failing fields, nothing stored ----------------------
    let before = d.events().len();
    let mut bad = new_data_manager(10);
    bad.key = "00000000-0000-4000-8000-00000000000A".to_owned();
    expect_err(
        register_data_manager(d, ORG1, CHANNEL, &bad),
        ErrorKind::InvalidAsset,
        "OE0101: datamanager is not valid: key: must be a valid UUID",
    );
    let mut bad = new_data_manager(10);
    bad.key = "not-a-uuid".to_owned();
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "key");
    let mut bad = new_data_manager(10);
    bad.key = String::new();
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "key: cannot be blank");

    let mut bad = new_data_manager(10);
    bad.name = String::new();
    bad.new_permissions = None;
    bad.logs_permission = None;
    let err = expect_err(
        register_data_manager(d, ORG1, CHANNEL, &bad),
        ErrorKind::InvalidAsset,
        "OE0101: datamanager is not valid: ",
    );
    for field in ["name: cannot be blank", "new_permissions: cannot be blank", "logs_permission: cannot be blank"] {
        assert!(err.message.contains(field), "{:?} should list {field:?}", err.message);
    }
    assert!(!err.message.contains("key"), "valid fields are not listed: {}", err.message);

    let mut bad = new_data_manager(10);
    bad.name = "n".repeat(101);
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "name");
    let mut ok_name = new_data_manager(11);
    ok_name.name = "n".repeat(100);

    let mut bad = new_data_manager(10);
    bad.description = Some(Addressable { checksum: "abc".to_owned(), ..addressable("dm/description", 10) });
    bad.opener = Some(Addressable { storage_address: "s3://bucket/key".to_owned(), ..addressable("dm/opener", 10) });
    let err = expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "description");
    assert!(err.message.contains("checksum"), "{}", err.message);
    assert!(err.message.contains("opener"), "{}", err.message);
    assert!(err.message.contains("storage_address"), "{}", err.message);

    let mut bad = new_data_manager(10);
    bad.description = Some(Addressable { checksum: "z".repeat(64), ..addressable("dm/description", 10) });
    let err = expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "description");
    assert!(err.message.contains("checksum"), "{}", err.message);

    let mut bad = new_data_manager(10);
    bad.opener = Some(Addressable { storage_address: "/relative/path".to_owned(), ..addressable("dm/opener", 10) });
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "opener");

    let mut bad = new_data_manager(10);
    bad.description = None;
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "description: cannot be blank");

    let mut bad = new_data_manager(10);
    bad.metadata.insert("k".repeat(101), "v".to_owned());
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::InvalidAsset, "metadata");

    assert_no_event_since(d, before);
    expect_err(get_data_manager(d, ORG1, CHANNEL, &key(10)), ErrorKind::NotFound, "not found");

    // Limits are inclusive: a 100-byte name and 100-byte metadata pass.
    ok_name.metadata.insert("k".repeat(100), "v".repeat(100));
    register_data_manager(d, ORG1, CHANNEL, &ok_name).expect("100-byte name and metadata are valid");

    // --- Existence, owner, permission inputs -----------------------------------------------
    let before = d.events().len();
    expect_err(
        register_data_manager(d, ORG1, CHANNEL, &new_data_manager(1)),
        ErrorKind::Conflict,
        &format!("OE0006: datamanager with key \"{}\" already exists", key(1)),
    );
    // Also from another organization.
    expect_err(register_data_manager(d, ORG2, CHANNEL, &new_data_manager(1)), ErrorKind::Conflict, "already exists");

    // The owner must be a registered organization of the channel.
    expect_err(
        register_data_manager(d, UNREGISTERED, CHANNEL, &new_data_manager(12)),
        ErrorKind::NotFound,
        &format!("organization with key \"{UNREGISTERED}\" not found"),
    );

    // A private list may only name registered organizations (BadRequest → FAILED_PRECONDITION).
    let mut bad = new_data_manager(13);
    bad.new_permissions = Some(private_permissions(&[ORG2, UNREGISTERED]));
    expect_err(
        register_data_manager(d, ORG1, CHANNEL, &bad),
        ErrorKind::BadRequest,
        "OE0003: invalid permission input values",
    );
    let mut bad = new_data_manager(13);
    bad.logs_permission = Some(private_permissions(&[UNREGISTERED]));
    expect_err(register_data_manager(d, ORG1, CHANNEL, &bad), ErrorKind::BadRequest, "invalid permission input values");
    assert_no_event_since(d, before);
    for n in [12, 13] {
        expect_err(get_data_manager(d, ORG1, CHANNEL, &key(n)), ErrorKind::NotFound, "not found");
    }

    // --- GetDataManager -------------------------------------------------------------------
    expect_err(
        get_data_manager(d, ORG1, CHANNEL, &key(99)),
        ErrorKind::NotFound,
        &format!("OE0002: datamanager with key \"{}\" not found", key(99)),
    );

    // --- UpdateDataManager ----------------------------------------------------------------
    let before = d.events().len();
    expect_err(
        update_data_manager(d, ORG2, CHANNEL, &key(1), "stolen"),
        ErrorKind::PermissionDenied,
        "OE0102: requester does not own the data manager",
    );
    expect_err(update_data_manager(d, ORG1, CHANNEL, &key(1), ""), ErrorKind::InvalidAsset, "name: cannot be blank");
    expect_err(update_data_manager(d, ORG1, CHANNEL, "bad-key", "x"), ErrorKind::InvalidAsset, "key");
    expect_err(
        update_data_manager(d, ORG1, CHANNEL, &key(98), "x"),
        ErrorKind::NotFound,
        &format!("OE0002: datamanager with key \"{}\" not found", key(98)),
    );
    assert_no_event_since(d, before);
    assert_eq!(get_data_manager(d, ORG1, CHANNEL, &key(1)).expect("get"), dm, "refused updates change nothing");

    let before = d.events().len();
    update_data_manager(d, ORG1, CHANNEL, &key(1), "renamed").expect("owner renames");
    let renamed = get_data_manager(d, ORG1, CHANNEL, &key(1)).expect("get");
    let mut expected = dm.clone();
    expected.name = "renamed".to_owned();
    assert_eq!(renamed, expected, "only the name changes");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "{events:?}");
    let asset =
        check_event(&events[0], AssetKind::AssetDataManager, EventKind::EventAssetUpdated, &key(1), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::DataManager(expected.clone()), "UPDATED carries the full updated asset");

    // The same values again: succeeds and emits another UPDATED event.
    let before = d.events().len();
    update_data_manager(d, ORG1, CHANNEL, &key(1), "renamed").expect("same name again");
    assert_eq!(events_since(d, before).len(), 1);
    assert_eq!(get_data_manager(d, ORG1, CHANNEL, &key(1)).expect("get"), expected);

    // --- Channel scoping ------------------------------------------------------------------
    expect_err(get_data_manager(d, ORG1, OTHER_CHANNEL, &key(1)), ErrorKind::NotFound, "not found");
    expect_err(update_data_manager(d, ORG1, OTHER_CHANNEL, &key(1), "x"), ErrorKind::NotFound, "not found");
    let other = query_data_managers(d, OTHER_CHANNEL, "", 0).expect("query other channel");
    assert!(other.data_managers.is_empty(), "{other:?}");
    // Nobody is registered on the other channel yet.
    expect_err(
        register_data_manager(d, ORG1, OTHER_CHANNEL, &new_data_manager(20)),
        ErrorKind::NotFound,
        "organization",
    );
    register_organization(d, ORG1, OTHER_CHANNEL, "").expect("register ORG1 on the other channel");
    let dm20 = register_data_manager(d, ORG1, OTHER_CHANNEL, &new_data_manager(20)).expect("register on other channel");
    // Permission inputs are checked against the channel's organizations: ORG2 is not on it.
    let mut bad = new_data_manager(21);
    bad.new_permissions = Some(private_permissions(&[ORG2]));
    expect_err(
        register_data_manager(d, ORG1, OTHER_CHANNEL, &bad),
        ErrorKind::BadRequest,
        "invalid permission input values",
    );

    expect_err(get_data_manager(d, ORG1, CHANNEL, &key(20)), ErrorKind::NotFound, "not found");
    assert_eq!(get_data_manager(d, ORG1, OTHER_CHANNEL, &key(20)).expect("get"), dm20);
    let other = query_data_managers(d, OTHER_CHANNEL, "", 0).expect("query other channel");
    assert_eq!(other.data_managers, vec![dm20]);
    let mine = query_data_managers(d, CHANNEL, "", 0).expect("query channel");
    let keys: Vec<&str> = mine.data_managers.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, vec![key(1), key(2), key(11)], "only this channel's managers, in creation order");
    assert_eq!(mine.next_page_token, "");
}
