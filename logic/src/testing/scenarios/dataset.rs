//! Datasets (docs/business-rules.md §5): a data manager and its sample keys, derived on read.

use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, expect_err, get_data_manager, get_data_sample, get_dataset, key,
    new_data_manager, new_data_sample, register_data_manager, register_data_samples, setup_organizations, time_key,
    update_data_samples,
};
use crate::error::ErrorKind;
use crate::testing::Driver;

/// `keys` sorted as a dataset lists them: sample creation date, then key.
fn dataset_order(d: &mut dyn Driver, keys: &[String]) -> Vec<String> {
    let mut samples: Vec<_> = keys.iter().map(|k| get_data_sample(d, ORG1, CHANNEL, k).expect("get sample")).collect();
    samples.sort_by(|a, b| {
        time_key(a.creation_date.as_ref()).cmp(&time_key(b.creation_date.as_ref())).then_with(|| a.key.cmp(&b.key))
    });
    samples.into_iter().map(|s| s.key).collect()
}

pub fn datasets(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);
    let (dm1, dm2, dm3) = (key(1), key(2), key(3));
    for n in 1..=3 {
        register_data_manager(d, ORG1, CHANNEL, &new_data_manager(n)).expect("register data manager");
    }

    // A manager without samples: an empty dataset.
    let dataset = get_dataset(d, ORG2, CHANNEL, &dm3).expect("empty dataset");
    assert_eq!(dataset.data_manager, Some(get_data_manager(d, ORG1, CHANNEL, &dm3).expect("get dm3")));
    assert!(dataset.data_sample_keys.is_empty());

    // One batch (one creation date) with keys out of order, then a later batch.
    register_data_samples(
        d,
        ORG1,
        CHANNEL,
        vec![new_data_sample(0x30, &[&dm1]), new_data_sample(0x10, &[&dm1]), new_data_sample(0x20, &[&dm1])],
    )
    .expect("first batch");
    register_data_samples(d, ORG1, CHANNEL, vec![new_data_sample(0x05, &[&dm1]), new_data_sample(0x06, &[&dm2])])
        .expect("second batch");

    let dataset = get_dataset(d, ORG1, CHANNEL, &dm1).expect("dataset 1");
    assert_eq!(dataset.data_manager, Some(get_data_manager(d, ORG1, CHANNEL, &dm1).expect("get dm1")));
    let expected = dataset_order(d, &[key(0x30), key(0x10), key(0x20), key(0x05)]);
    assert_eq!(dataset.data_sample_keys, expected, "creation date, then key");
    // Inside the first batch the creation date is shared: key order.
    let first_batch: Vec<&String> = dataset.data_sample_keys.iter().filter(|k| **k != key(0x05)).collect();
    assert_eq!(first_batch, vec![&key(0x10), &key(0x20), &key(0x30)]);

    assert_eq!(get_dataset(d, ORG1, CHANNEL, &dm2).expect("dataset 2").data_sample_keys, vec![key(0x06)]);

    // Samples linked later appear, at their creation position, not at the linking time.
    update_data_samples(d, ORG1, CHANNEL, &[&key(0x20), &key(0x06)], &[&dm2, &dm3]).expect("link");
    let dataset = get_dataset(d, ORG1, CHANNEL, &dm2).expect("dataset 2 after update");
    assert_eq!(dataset.data_sample_keys, dataset_order(d, &[key(0x06), key(0x20)]));
    let dataset = get_dataset(d, ORG1, CHANNEL, &dm3).expect("dataset 3 after update");
    assert_eq!(dataset.data_sample_keys, dataset_order(d, &[key(0x06), key(0x20)]));
    // Linking again adds nothing twice.
    update_data_samples(d, ORG1, CHANNEL, &[&key(0x20)], &[&dm2]).expect("link again");
    let dataset = get_dataset(d, ORG1, CHANNEL, &dm2).expect("dataset 2 after second update");
    assert_eq!(dataset.data_sample_keys, dataset_order(d, &[key(0x06), key(0x20)]));
    // The first dataset is unchanged.
    assert_eq!(get_dataset(d, ORG1, CHANNEL, &dm1).expect("dataset 1").data_sample_keys, expected);

    // Unknown manager, and another channel.
    expect_err(
        get_dataset(d, ORG1, CHANNEL, &key(0x99)),
        ErrorKind::NotFound,
        &format!("OE0002: datamanager with key \"{}\" not found", key(0x99)),
    );
    expect_err(get_dataset(d, ORG1, OTHER_CHANNEL, &dm1), ErrorKind::NotFound, "not found");
}
