//! Pagination (docs/api-contract.md §8) over QueryDataManagers, plus the key-list pages of
//! QueryDataSamples.

use orchestrator_proto::DataManager;

use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, expect_err, key, new_data_manager, new_data_sample, query_data_managers,
    query_data_samples, register_data_manager, register_data_samples, register_organization, setup_organizations,
    time_key,
};
use crate::error::ErrorKind;
use crate::testing::Driver;

const TOTAL: u64 = 120;

/// Walks every page of QueryDataManagers with `page_size`; checks each page's size and token.
#[track_caller]
fn walk(d: &mut dyn Driver, page_size: u32) -> Vec<DataManager> {
    let size = if page_size == 0 { 50 } else { page_size as usize };
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = query_data_managers(d, CHANNEL, &token, page_size).expect("page");
        pages += 1;
        assert!(pages <= TOTAL as usize + 1, "the walk must end");
        let count = page.data_managers.len();
        all.extend(page.data_managers);
        if page.next_page_token.is_empty() {
            assert!(count <= size, "last page of {count} for size {size}");
            break;
        }
        assert_eq!(count, size, "a page with a next token is full (size {page_size})");
        assert!(all.len() < TOTAL as usize, "a next token only when rows remain (size {page_size})");
        token = page.next_page_token;
    }
    all
}

fn keys(dms: &[DataManager]) -> Vec<&str> {
    dms.iter().map(|m| m.key.as_str()).collect()
}

pub fn pagination(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);
    register_organization(d, ORG1, OTHER_CHANNEL, "").expect("ORG1 on the other channel");

    // 120 data managers, keys scattered with respect to creation order (37 is prime with 120),
    // interleaved with calls that change nothing in this channel: refused registrations, other
    // channel's registrations, reads.
    let mut registered = Vec::new();
    for i in 0..TOTAL {
        let n = (i * 37) % TOTAL + 1;
        let owner = if i % 3 == 0 { ORG2 } else { ORG1 };
        let dm = register_data_manager(d, owner, CHANNEL, &new_data_manager(n)).expect("register");
        registered.push(dm);
        match i % 10 {
            3 => {
                register_data_manager(d, ORG1, CHANNEL, &new_data_manager(n)).expect_err("duplicate");
            }
            5 => {
                register_data_manager(d, ORG1, OTHER_CHANNEL, &new_data_manager(1_000 + i)).expect("other channel");
            }
            7 => {
                query_data_managers(d, CHANNEL, "", 1).expect("read");
            }
            _ => {}
        }
    }
    // Samples (another asset kind) must not leak into data manager pages.
    register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(5_000, &[&key(2)]), new_data_sample(5_001, &[])])
        .expect("samples");

    let mut expected = registered.clone();
    expected.sort_by(|a, b| {
        time_key(a.creation_date.as_ref()).cmp(&time_key(b.creation_date.as_ref())).then_with(|| a.key.cmp(&b.key))
    });

    // Walks: every asset exactly once, in (creation_date, key) order.
    for page_size in [50, 0, 7, 1, 13, 119] {
        let walked = walk(d, page_size);
        assert_eq!(walked.len(), TOTAL as usize, "size {page_size}");
        assert_eq!(keys(&walked), keys(&expected), "size {page_size}");
        assert_eq!(walked, expected, "size {page_size}: full assets");
    }
    // Page counts and last-page sizes.
    let first = query_data_managers(d, CHANNEL, "", 50).expect("first page");
    assert_eq!(first.data_managers.len(), 50);
    assert_ne!(first.next_page_token, "");
    let default = query_data_managers(d, CHANNEL, "", 0).expect("default size");
    assert_eq!(default.data_managers, first.data_managers, "page_size 0 means 50");
    let second = query_data_managers(d, CHANNEL, &first.next_page_token, 50).expect("second page");
    assert_eq!(second.data_managers.len(), 50);
    let third = query_data_managers(d, CHANNEL, &second.next_page_token, 50).expect("third page");
    assert_eq!(third.data_managers.len(), 20);
    assert_eq!(third.next_page_token, "", "last page");

    // A full last page with nothing after it has no next token.
    for page_size in [40, 60, 120] {
        let walked = walk(d, page_size);
        assert_eq!(walked, expected, "size {page_size}");
    }
    let third = {
        let p1 = query_data_managers(d, CHANNEL, "", 40).expect("p1");
        let p2 = query_data_managers(d, CHANNEL, &p1.next_page_token, 40).expect("p2");
        query_data_managers(d, CHANNEL, &p2.next_page_token, 40).expect("p3")
    };
    assert_eq!(third.data_managers.len(), 40);
    assert_eq!(third.next_page_token, "", "full last page, nothing after");
    let one = query_data_managers(d, CHANNEL, "", 120).expect("one page");
    assert_eq!((one.data_managers.len(), one.next_page_token.as_str()), (120, ""));
    let big = query_data_managers(d, CHANNEL, "", 1_000).expect("larger than the set");
    assert_eq!((big.data_managers, big.next_page_token.as_str()), (expected.clone(), ""));

    // Decimal offset tokens.
    let page = query_data_managers(d, CHANNEL, "0", 10).expect("offset 0");
    assert_eq!(page.data_managers, expected[..10].to_vec());
    assert_ne!(page.next_page_token, "");
    let page = query_data_managers(d, CHANNEL, "10", 10).expect("offset 10");
    assert_eq!(page.data_managers, expected[10..20].to_vec());
    let next = query_data_managers(d, CHANNEL, &page.next_page_token, 10).expect("after offset 10");
    assert_eq!(next.data_managers, expected[20..30].to_vec());
    let page = query_data_managers(d, CHANNEL, "115", 10).expect("offset 115");
    assert_eq!((page.data_managers, page.next_page_token.as_str()), (expected[115..].to_vec(), ""));
    let page = query_data_managers(d, CHANNEL, "110", 10).expect("offset 110");
    assert_eq!((page.data_managers, page.next_page_token.as_str()), (expected[110..].to_vec(), ""));
    for offset in ["120", "500"] {
        let page = query_data_managers(d, CHANNEL, offset, 10).expect("offset past the end");
        assert!(page.data_managers.is_empty(), "offset {offset}");
        assert_eq!(page.next_page_token, "");
    }

    // Invalid tokens: a plain error (UNKNOWN).
    for token in ["x", "-1", "1.5", " 3"] {
        let err = expect_err(query_data_managers(d, CHANNEL, token, 10), ErrorKind::Unknown, "");
        assert!(!err.message.is_empty());
    }

    // The other channel pages its own managers only.
    let other = query_data_managers(d, OTHER_CHANNEL, "", 0).expect("other channel");
    assert_eq!(other.data_managers.len(), 12);
    assert_eq!(other.next_page_token, "");

    // QueryDataSamples with a key filter pages the same way.
    let sample_keys: Vec<String> = (0..12).map(|i| key(6_000 + (i * 5) % 12)).collect();
    register_data_samples(
        d,
        ORG1,
        CHANNEL,
        sample_keys[..6]
            .iter()
            .map(|k| {
                let mut s = new_data_sample(0, &[]);
                s.key = k.clone();
                s
            })
            .collect(),
    )
    .expect("first samples");
    register_data_samples(
        d,
        ORG1,
        CHANNEL,
        sample_keys[6..]
            .iter()
            .map(|k| {
                let mut s = new_data_sample(0, &[]);
                s.key = k.clone();
                s
            })
            .collect(),
    )
    .expect("second samples");
    let mut filter: Vec<&str> = sample_keys.iter().map(String::as_str).collect();
    let whole = query_data_samples(d, CHANNEL, "", 0, Some(&filter)).expect("filtered, one page");
    assert_eq!(whole.data_samples.len(), 12);
    assert_eq!(whole.next_page_token, "");
    filter.push("00000000-0000-4000-8000-ffffffffffff");
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = query_data_samples(d, CHANNEL, &token, 5, Some(&filter)).expect("filtered page");
        walked.extend(page.data_samples);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(walked, whole.data_samples);
    let page = query_data_samples(d, CHANNEL, "", 6, Some(&filter)).expect("6");
    let page = query_data_samples(d, CHANNEL, &page.next_page_token, 6, Some(&filter)).expect("second 6");
    assert_eq!((page.data_samples.len(), page.next_page_token.as_str()), (6, ""), "full last page");
    expect_err(query_data_samples(d, CHANNEL, "x", 5, Some(&filter)), ErrorKind::Unknown, "");
    expect_err(query_data_samples(d, CHANNEL, "-1", 5, None), ErrorKind::Unknown, "");
}
