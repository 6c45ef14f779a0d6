//! Datasets (docs/business-rules.md §5): a data manager and the keys of its samples, derived on
//! read.

use orchestrator_proto::{DataManager, Dataset, GetDatasetParam};

use crate::error::Result;
use crate::pagination::scan_all_keys;
use crate::tx::Tx;
use crate::{asset, datasample, keys};

pub fn get(tx: &mut Tx<'_>, req: GetDatasetParam) -> Result<Dataset> {
    let dm: DataManager = asset::load(tx, &req.key)?;
    // The by-manager index is ordered by sample creation time then key, as the reference.
    let data_sample_keys = scan_all_keys(tx, &datasample::by_manager_prefix(&dm.key))?
        .iter()
        .map(|k| keys::last_component(k).to_owned())
        .collect();
    Ok(Dataset { data_manager: Some(dm), data_sample_keys })
}
