//! Organizations (docs/business-rules.md §2).

use orchestrator_proto::{AssetKind, EventKind, event};

use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED, assert_no_event_since, check_event, events_since, expect_err,
    organization_ids, register_organization,
};
use crate::error::ErrorKind;
use crate::testing::Driver;

pub fn organizations(d: &mut dyn Driver) {
    // Nothing registered yet.
    assert!(organization_ids(d, CHANNEL).is_empty());

    // Register: id = requester, creation_date = transaction time, one CREATED event.
    let before = d.events().len();
    let org = register_organization(d, ORG1, CHANNEL, "http://org-1.example:8000").expect("register ORG1");
    assert_eq!(org.id, ORG1);
    assert_eq!(org.address, "http://org-1.example:8000");
    assert!(org.creation_date.is_some(), "creation_date is set");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "one event: {events:?}");
    let asset = check_event(&events[0], AssetKind::AssetOrganization, EventKind::EventAssetCreated, ORG1, CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Organization(org.clone()));
    assert_eq!(events[0].timestamp, org.creation_date, "event timestamp = creation_date = call time");
    assert_eq!(organization_ids(d, CHANNEL), vec![ORG1.to_owned()]);

    // Registering again (even with another address) conflicts and emits nothing.
    let before = d.events().len();
    expect_err(
        register_organization(d, ORG1, CHANNEL, ""),
        ErrorKind::Conflict,
        "OE0006: organization with key \"MyOrg1MSP\" already exists",
    );
    expect_err(register_organization(d, ORG1, CHANNEL, "http://elsewhere:9000"), ErrorKind::Conflict, "already exists");
    assert_no_event_since(d, before);
    assert_eq!(organization_ids(d, CHANNEL), vec![ORG1.to_owned()]);

    // An empty address is allowed.
    let org2 = register_organization(d, ORG2, CHANNEL, "").expect("register ORG2 without address");
    assert_eq!(org2.id, ORG2);
    assert_eq!(org2.address, "");
    assert_eq!(organization_ids(d, CHANNEL), vec![ORG1.to_owned(), ORG2.to_owned()]);

    // Channels are independent: ORG1 is not registered on the other channel until it says so.
    assert!(organization_ids(d, OTHER_CHANNEL).is_empty());
    let before = d.events().len();
    let other = register_organization(d, ORG1, OTHER_CHANNEL, "https://org-1.other.example")
        .expect("the same organization registers once per channel");
    assert_eq!(other.id, ORG1);
    assert_eq!(other.address, "https://org-1.other.example");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1);
    let asset =
        check_event(&events[0], AssetKind::AssetOrganization, EventKind::EventAssetCreated, ORG1, OTHER_CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Organization(other));
    assert_eq!(organization_ids(d, OTHER_CHANNEL), vec![ORG1.to_owned()]);
    assert_eq!(organization_ids(d, CHANNEL), vec![ORG1.to_owned(), ORG2.to_owned()]);
    // ... and the first channel's record is untouched.
    expect_err(register_organization(d, ORG1, OTHER_CHANNEL, ""), ErrorKind::Conflict, "already exists");

    // Address validation: a request URL with a scheme. The reference answers UNKNOWN; this
    // implementation answers INVALID_ARGUMENT naming the field (documented deviation,
    // docs/business-rules.md §15).
    let before = d.events().len();
    for bad in ["/relative/path", "org-2.example", "not a url", "8000:host"] {
        let err = expect_err(register_organization(d, ORG2, OTHER_CHANNEL, bad), ErrorKind::InvalidAsset, "address");
        assert!(err.message.starts_with("OE0101: organization is not valid: "), "{}", err.message);
    }
    assert_no_event_since(d, before);
    assert_eq!(organization_ids(d, OTHER_CHANNEL), vec![ORG1.to_owned()], "a refused registration stores nothing");

    let org = register_organization(d, ORG2, OTHER_CHANNEL, "https://org-2.example:8443/api").expect("valid address");
    assert_eq!(org.address, "https://org-2.example:8443/api");
    assert_eq!(organization_ids(d, OTHER_CHANNEL), vec![ORG1.to_owned(), ORG2.to_owned()]);

    // Go's url.ParseRequestURI (the reference) reads `host:8000` as scheme `host` with an opaque
    // part, so it is accepted, as the reference does (docs/business-rules.md §0.3).
    let org = register_organization(d, UNREGISTERED, CHANNEL, "host:8000").expect("accepted as the reference does");
    assert_eq!(org.address, "host:8000");
}
