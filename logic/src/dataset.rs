//! Datasets (docs/business-rules.md §5): a data manager and the keys of its samples, derived on
//! read.

use orchestrator_proto::{DataManager, Dataset, GetDatasetParam};

use crate::call::Call;
use crate::error::Result;
use crate::pagination::scan_all_keys;
use crate::{asset, datasample, keys};

pub fn get(call: &mut Call<'_>, req: GetDatasetParam) -> Result<Dataset> {
    let dm: DataManager = asset::load(call, &req.key)?;
    // The by-manager index is ordered by sample creation time then key, as the reference.
    let data_sample_keys = scan_all_keys(call, &datasample::by_manager_prefix(&dm.key))?
        .iter()
        .map(|k| keys::last_component(k).to_owned())
        .collect();
    Ok(Dataset { data_manager: Some(dm), data_sample_keys })
}
