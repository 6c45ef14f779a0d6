//! What every asset shares, written once: its record under `<asset>/<key>`, the NOT_FOUND and
//! ALREADY_EXISTS errors that name it, the owner check, and its events. The asset modules keep
//! their rules only.
//!
//! Two traits, because what events carry is not always what is stored: a compute task is
//! stored as its `TaskRecord` (the task plus its output assets) but events carry the
//! `ComputeTask`, and some events carry assets that are never stored (profiling steps, output
//! assets).

use std::borrow::Cow;
use std::collections::BTreeMap;

use orchestrator_proto::{
    AssetKind, ComputePlan, ComputeTask, ComputeTaskOutputAsset, DataManager, DataSample, EventKind, FailureReport,
    Function, Model, Organization, Performance, ProfilingStep, event,
};
use prost::Message;

use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::{computeplan, datamanager, datasample, failurereport, function, keys, model, organization, performance};

/// An asset as events carry it.
pub trait Asset {
    /// The event's `asset_kind`.
    const KIND: AssetKind;
    /// The key events name it by (and, for a stored asset, its record's key).
    fn key(&self) -> Cow<'_, str>;
    /// The `event::Asset` variant holding it.
    fn into_event(self) -> event::Asset;
}

/// An asset stored as itself, under `state_key(key)`.
pub trait Stored: Asset + Message + Default {
    /// How OE errors name it: `<NAME> with key "<key>" not found` (the reference's words, which
    /// differ from the state prefix for failure reports).
    const NAME: &'static str;
    fn state_key(key: &str) -> String;
}

/// A stored asset that the organization registering it owns.
pub trait Owned: Stored {
    fn owner(&self) -> &str;
}

/// The asset stored under `key`, or NOT_FOUND.
pub fn load<A: Stored>(call: &mut Call<'_>, key: &str) -> Result<A> {
    call.load(&A::state_key(key))?.ok_or_else(|| LogicError::not_found(A::NAME, key))
}

/// The asset stored under `key` (NOT_FOUND first), if the requester owns it (PERMISSION_DENIED
/// with `denial`: each call site has the reference's own words).
pub fn load_owned<A: Owned>(call: &mut Call<'_>, key: &str, denial: &str) -> Result<A> {
    let asset = load::<A>(call, key)?;
    require_owner(call, &asset, denial)?;
    Ok(asset)
}

/// PERMISSION_DENIED with `denial` unless the requester owns `asset`.
pub fn require_owner<A: Owned>(call: &Call<'_>, asset: &A, denial: &str) -> Result<()> {
    if asset.owner() == call.requester() { Ok(()) } else { Err(LogicError::permission_denied(denial)) }
}

/// ALREADY_EXISTS if an asset is stored under `key`.
pub fn require_new<A: Stored>(call: &mut Call<'_>, key: &str) -> Result<()> {
    if call.exists(&A::state_key(key))? { Err(LogicError::already_exists(A::NAME, key)) } else { Ok(()) }
}

/// Writes the asset's record.
pub fn store<A: Stored>(call: &mut Call<'_>, asset: &A) -> Result<()> {
    call.store(&A::state_key(&asset.key()), asset)
}

/// Emits `<KIND>/<event_kind>` carrying `asset`, keyed by its key.
pub fn emit<A: Asset>(call: &mut Call<'_>, event_kind: EventKind, asset: A, metadata: BTreeMap<String, String>) {
    let key = asset.key().into_owned();
    call.emit(A::KIND, event_kind, key, asset.into_event(), metadata);
}

/// Emits `<KIND>/CREATED` carrying `asset`.
pub fn emit_created<A: Asset>(call: &mut Call<'_>, asset: A) {
    emit(call, EventKind::EventAssetCreated, asset, BTreeMap::new());
}

/// A status change: `<KIND>/UPDATED` with the `reason` metadata key.
pub fn emit_status_change<A: Asset>(call: &mut Call<'_>, asset: A, reason: &str) {
    emit(call, EventKind::EventAssetUpdated, asset, BTreeMap::from([("reason".to_owned(), reason.to_owned())]));
}

/// Writes the changed asset's record, then emits `<KIND>/UPDATED` carrying it.
pub fn store_updated<A: Stored>(call: &mut Call<'_>, asset: A) -> Result<()> {
    store(call, &asset)?;
    emit(call, EventKind::EventAssetUpdated, asset, BTreeMap::new());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The assets.

/// `impl Asset`: type, kind, event variant, key field.
macro_rules! asset {
    ($ty:ty, $kind:ident, $variant:ident, $key:ident) => {
        impl Asset for $ty {
            const KIND: AssetKind = AssetKind::$kind;
            fn key(&self) -> Cow<'_, str> {
                Cow::Borrowed(&self.$key)
            }
            fn into_event(self) -> event::Asset {
                event::Asset::$variant(self)
            }
        }
    };
}

/// `impl Stored`: type, error name, state key.
macro_rules! stored {
    ($ty:ty, $name:expr, $state_key:path) => {
        impl Stored for $ty {
            const NAME: &'static str = $name;
            fn state_key(key: &str) -> String {
                $state_key(key)
            }
        }
    };
}

/// `impl Owned`: the `owner` field.
macro_rules! owned {
    ($($ty:ty),*) => {
        $(impl Owned for $ty {
            fn owner(&self) -> &str {
                &self.owner
            }
        })*
    };
}

asset!(Organization, AssetOrganization, Organization, id);
asset!(DataManager, AssetDataManager, DataManager, key);
asset!(DataSample, AssetDataSample, DataSample, key);
asset!(Function, AssetFunction, Function, key);
asset!(ComputePlan, AssetComputePlan, ComputePlan, key);
asset!(ComputeTask, AssetComputeTask, ComputeTask, key);
asset!(Model, AssetModel, Model, key);
asset!(FailureReport, AssetFailureReport, FailureReport, asset_key);
// Keyed by the task whose output received the asset.
asset!(ComputeTaskOutputAsset, AssetComputeTaskOutputAsset, ComputeTaskOutputAsset, compute_task_key);
// Keyed by the asset the step timed.
asset!(ProfilingStep, AssetProfilingStep, ProfilingStep, asset_key);

/// A performance has no key field: its key is the reference's composite `<task>|<identifier>`.
impl Asset for Performance {
    const KIND: AssetKind = AssetKind::AssetPerformance;
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(performance::key(&self.compute_task_key, &self.compute_task_output_identifier))
    }
    fn into_event(self) -> event::Asset {
        event::Asset::Performance(self)
    }
}

// A compute task is stored as its `TaskRecord`, not as itself: `computetask::load_record` and
// `store_record` are its own (ComputeTask is not `Stored`).
stored!(Organization, organization::ASSET, keys::organization);
stored!(DataManager, datamanager::ASSET, keys::datamanager);
stored!(DataSample, datasample::ASSET, keys::datasample);
stored!(Function, function::ASSET, keys::function);
stored!(ComputePlan, computeplan::ASSET, keys::computeplan);
stored!(Model, model::ASSET, keys::model);
stored!(Performance, performance::ASSET, keys::performance);
stored!(FailureReport, failurereport::ASSET, keys::failurereport);

// Those whose owner some call checks.
owned!(DataManager, DataSample, Function, ComputePlan);
