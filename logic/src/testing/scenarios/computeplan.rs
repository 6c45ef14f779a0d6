//! Compute plans (docs/business-rules.md §7): registration, queries, renaming, cancellation,
//! failure through a task, and IsPlanRunning.

use std::collections::BTreeMap;

use orchestrator_proto::{
    ApplyPlanActionParam, ApplyPlanActionResponse, AssetKind, ComputePlan, ComputePlanAction, ComputeTaskAction,
    EventKind, FunctionAction, GetComputePlanParam, IsPlanRunningParam, IsPlanRunningResponse, NewComputePlan,
    PlanQueryFilter, QueryPlansParam, QueryPlansResponse, UpdateComputePlanParam, UpdateComputePlanResponse, event,
};

use super::computetask::{
    DM1, DM2, PLAN, TRAIN, aggregate_task, apply_task_action, get_task, register_tasks, setup_world, train_task,
};
use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, Res, UNREGISTERED, apply_function_action, assert_no_event_since, check_event,
    events_since, expect_err, key, method, register_organization, setup_organizations, time_key,
};
use crate::error::ErrorKind;
use crate::testing::{Driver, call};

pub const GET_PLAN: &str = "orchestrator.ComputePlanService/GetPlan";
pub const APPLY_PLAN_ACTION: &str = "orchestrator.ComputePlanService/ApplyPlanAction";
pub const QUERY_PLANS: &str = "orchestrator.ComputePlanService/QueryPlans";
pub const UPDATE_PLAN: &str = "orchestrator.ComputePlanService/UpdatePlan";
pub const IS_PLAN_RUNNING: &str = "orchestrator.ComputePlanService/IsPlanRunning";

/// A valid NewComputePlan numbered `n`.
pub fn new_plan(n: u64) -> NewComputePlan {
    NewComputePlan {
        key: key(n),
        tag: format!("tag {n}"),
        name: format!("plan {n}"),
        metadata: BTreeMap::from([("purpose".to_owned(), "scenario".to_owned())]),
    }
}

pub fn register_plan(d: &mut dyn Driver, msp: &str, plan: &NewComputePlan) -> Res<ComputePlan> {
    call(d, msp, CHANNEL, method::REGISTER_PLAN, plan)
}

pub fn get_plan(d: &mut dyn Driver, msp: &str, key: &str) -> Res<ComputePlan> {
    call(d, msp, CHANNEL, GET_PLAN, &GetComputePlanParam { key: key.to_owned() })
}

pub fn update_plan(d: &mut dyn Driver, msp: &str, key: &str, name: &str) -> Res<()> {
    let param = UpdateComputePlanParam { key: key.to_owned(), name: name.to_owned() };
    call::<_, UpdateComputePlanResponse>(d, msp, CHANNEL, UPDATE_PLAN, &param).map(|_| ())
}

pub fn apply_plan_action(d: &mut dyn Driver, msp: &str, key: &str, action: i32) -> Res<()> {
    let param = ApplyPlanActionParam { key: key.to_owned(), action };
    call::<_, ApplyPlanActionResponse>(d, msp, CHANNEL, APPLY_PLAN_ACTION, &param).map(|_| ())
}

pub fn cancel_plan(d: &mut dyn Driver, msp: &str, key: &str) -> Res<()> {
    apply_plan_action(d, msp, key, ComputePlanAction::PlanActionCanceled as i32)
}

pub fn query_plans(
    d: &mut dyn Driver,
    owner: Option<&str>,
    page_token: &str,
    page_size: u32,
) -> Res<QueryPlansResponse> {
    let param = QueryPlansParam {
        page_token: page_token.to_owned(),
        page_size,
        filter: owner.map(|o| PlanQueryFilter { owner: o.to_owned() }),
    };
    call(d, ORG1, CHANNEL, QUERY_PLANS, &param)
}

pub fn is_plan_running(d: &mut dyn Driver, key: &str) -> Res<bool> {
    let param = IsPlanRunningParam { key: key.to_owned() };
    call::<_, IsPlanRunningResponse>(d, ORG2, CHANNEL, IS_PLAN_RUNNING, &param).map(|r| r.is_running)
}

/// Every plan of the filter, walking pages of `page_size`; checks page sizes and tokens.
#[track_caller]
fn walk_plans(d: &mut dyn Driver, owner: Option<&str>, page_size: u32) -> Vec<ComputePlan> {
    let size = if page_size == 0 { 50 } else { page_size as usize };
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = query_plans(d, owner, &token, page_size).expect("QueryPlans");
        let count = page.plans.len();
        all.extend(page.plans);
        if page.next_page_token.is_empty() {
            assert!(count <= size);
            return all;
        }
        assert_eq!(count, size, "a page with a next token is full");
        token = page.next_page_token;
        assert!(all.len() < 1_000, "the walk must end");
    }
}

#[track_caller]
fn expect_invalid_plan(d: &mut dyn Driver, plan: &NewComputePlan, message: &str) {
    expect_err(
        register_plan(d, ORG1, plan),
        ErrorKind::InvalidAsset,
        &format!("OE0101: computeplan is not valid: {message}"),
    );
}

pub fn compute_plans(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);

    // --- Registration ----------------------------------------------------------------------
    let new = new_plan(1);
    let before = d.events().len();
    let plan = register_plan(d, ORG1, &new).expect("register plan");
    assert_eq!(plan.key, key(1));
    assert_eq!(plan.owner, ORG1);
    assert_eq!((plan.name.as_str(), plan.tag.as_str()), ("plan 1", "tag 1"));
    assert_eq!(plan.metadata, new.metadata);
    assert!(plan.creation_date.is_some());
    assert_eq!((plan.cancelation_date, plan.failure_date), (None, None));
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "{events:?}");
    let asset =
        check_event(&events[0], AssetKind::AssetComputePlan, EventKind::EventAssetCreated, &key(1), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::ComputePlan(plan.clone()));
    assert_eq!(events[0].timestamp, plan.creation_date);
    assert_eq!(get_plan(d, ORG2, &key(1)).expect("anyone reads"), plan);
    // An empty tag is fine; the name is mandatory.
    let mut untagged = new_plan(2);
    untagged.tag.clear();
    untagged.metadata.clear();
    register_plan(d, ORG2, &untagged).expect("plan without tag nor metadata");

    // --- Refusals, nothing stored ----------------------------------------------------------
    let before = d.events().len();
    expect_err(
        register_plan(d, ORG1, &new_plan(1)),
        ErrorKind::Conflict,
        &format!("OE0006: computeplan with key \"{}\" already exists", key(1)),
    );
    expect_err(
        register_plan(d, UNREGISTERED, &new_plan(3)),
        ErrorKind::NotFound,
        &format!("OE0002: organization with key \"{UNREGISTERED}\" not found"),
    );
    let mut bad = new_plan(3);
    bad.key.clear();
    bad.name.clear();
    bad.tag = "t".repeat(101);
    expect_invalid_plan(
        d,
        &bad,
        "key: cannot be blank; name: cannot be blank; tag: the length must be no more than 100.",
    );
    let mut bad = new_plan(3);
    bad.key = key(0xabc).to_uppercase();
    bad.name = "n".repeat(101);
    expect_invalid_plan(d, &bad, "key: must be a valid UUID; name: the length must be between 1 and 100.");
    let mut bad = new_plan(3);
    bad.metadata.insert("k".repeat(101), "v".to_owned());
    expect_invalid_plan(d, &bad, "metadata: OE0101: metadata key");
    let mut fine = new_plan(3);
    fine.tag = "t".repeat(100);
    fine.name = "n".repeat(100);
    expect_err(
        get_plan(d, ORG1, &key(3)),
        ErrorKind::NotFound,
        &format!("OE0002: computeplan with key \"{}\" not found", key(3)),
    );
    assert_no_event_since(d, before);
    register_plan(d, ORG1, &fine).expect("100-byte name and tag");

    // Channels are separate.
    register_organization(d, ORG1, OTHER_CHANNEL, "").expect("ORG1 on the other channel");
    let other: Res<ComputePlan> = call(d, ORG1, OTHER_CHANNEL, GET_PLAN, &GetComputePlanParam { key: key(1) });
    expect_err(other, ErrorKind::NotFound, "computeplan");

    // --- QueryPlans: creation order, owner filter, pages -----------------------------------
    for i in 0..12u64 {
        let n = 100 + (i * 7) % 12;
        let owner = if i % 3 == 0 { ORG2 } else { ORG1 };
        register_plan(d, owner, &new_plan(n)).expect("register");
    }
    let all = walk_plans(d, None, 1_000);
    assert_eq!(all.len(), 15);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| {
        time_key(a.creation_date.as_ref()).cmp(&time_key(b.creation_date.as_ref())).then_with(|| a.key.cmp(&b.key))
    });
    assert_eq!(all, sorted, "creation order, then key");
    for size in [1, 4, 0] {
        assert_eq!(walk_plans(d, None, size), all, "page size {size}");
    }
    let of_org2: Vec<ComputePlan> = all.iter().filter(|p| p.owner == ORG2).cloned().collect();
    assert_eq!(of_org2.len(), 5);
    for size in [1, 2, 0] {
        assert_eq!(walk_plans(d, Some(ORG2), size), of_org2, "owner filter, size {size}");
    }
    assert_eq!(walk_plans(d, Some(""), 0), all, "an empty owner is no filter");
    assert!(walk_plans(d, Some(UNREGISTERED), 0).is_empty());
    // Decimal offsets are accepted; garbage tokens are refused (UNKNOWN).
    let page = query_plans(d, Some(ORG1), "3", 2).expect("offset token");
    let of_org1: Vec<ComputePlan> = all.iter().filter(|p| p.owner == ORG1).cloned().collect();
    assert_eq!(page.plans, of_org1[3..5].to_vec());
    expect_err(query_plans(d, None, "x", 2), ErrorKind::Unknown, "");

    // --- UpdatePlan ------------------------------------------------------------------------
    let before = d.events().len();
    update_plan(d, ORG1, &key(1), "renamed").expect("owner renames");
    let renamed = get_plan(d, ORG1, &key(1)).expect("get");
    assert_eq!(renamed.name, "renamed");
    assert_eq!(ComputePlan { name: plan.name.clone(), ..renamed.clone() }, plan, "only the name changed");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1);
    let asset =
        check_event(&events[0], AssetKind::AssetComputePlan, EventKind::EventAssetUpdated, &key(1), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::ComputePlan(renamed.clone()));
    // The same name again still emits an event.
    update_plan(d, ORG1, &key(1), "renamed").expect("same name");
    assert_eq!(events_since(d, before).len(), 2);

    let before = d.events().len();
    expect_err(
        update_plan(d, ORG2, &key(1), "stolen"),
        ErrorKind::PermissionDenied,
        "OE0102: requester does not own the compute plan",
    );
    expect_err(
        update_plan(d, ORG1, &key(999), "ghost"),
        ErrorKind::NotFound,
        &format!("OE0002: computeplan with key \"{}\" not found", key(999)),
    );
    expect_err(
        update_plan(d, ORG1, &key(1), ""),
        ErrorKind::InvalidAsset,
        "OE0101: computeplan is not valid: name: cannot be blank.",
    );
    expect_err(
        update_plan(d, ORG1, "nope", "x"),
        ErrorKind::InvalidAsset,
        "OE0101: computeplan is not valid: key: must be a valid UUID.",
    );
    assert_no_event_since(d, before);
    assert_eq!(get_plan(d, ORG1, &key(1)).expect("get"), renamed);
}

pub fn plan_actions(d: &mut dyn Driver) {
    setup_world(d);
    let plan = get_plan(d, ORG1, &key(PLAN)).expect("the world's plan");

    // --- Refusals: existence, owner, action, in that order ---------------------------------
    let before = d.events().len();
    expect_err(
        cancel_plan(d, ORG1, &key(999)),
        ErrorKind::NotFound,
        &format!("OE0002: computeplan with key \"{}\" not found", key(999)),
    );
    for action in [ComputePlanAction::PlanActionCanceled as i32, 0, 99] {
        expect_err(
            apply_plan_action(d, ORG2, &plan.key, action),
            ErrorKind::PermissionDenied,
            "OE0102: only plan owner can act on it",
        );
    }
    for action in [ComputePlanAction::PlanActionUnknown as i32, 99, -1] {
        expect_err(
            apply_plan_action(d, ORG1, &plan.key, action),
            ErrorKind::Unimplemented,
            "OE0010: plan action unimplemented",
        );
    }
    assert_no_event_since(d, before);

    // --- Cancellation ----------------------------------------------------------------------
    register_tasks(d, ORG1, &[train_task(101, DM1, &[20], &[])]).expect("a task");
    let before = d.events().len();
    cancel_plan(d, ORG1, &plan.key).expect("owner cancels");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "tasks are not touched: {events:?}");
    let canceled = get_plan(d, ORG2, &plan.key).expect("get");
    assert_eq!(canceled.cancelation_date, events[0].timestamp);
    assert_eq!(canceled.failure_date, None);
    assert_eq!(ComputePlan { cancelation_date: None, ..canceled.clone() }, plan);
    let asset =
        check_event(&events[0], AssetKind::AssetComputePlan, EventKind::EventAssetUpdated, &plan.key, CHANNEL, &[]);
    assert_eq!(asset, event::Asset::ComputePlan(canceled.clone()));
    assert_eq!(
        get_task(d, &key(101)).expect("task").status,
        orchestrator_proto::ComputeTaskStatus::StatusWaitingForBuilderSlot as i32
    );

    // Terminated: a second cancel is OE0109 (UNKNOWN for clients); renaming is still allowed,
    // and so are new tasks and task actions.
    let before = d.events().len();
    let err = expect_err(
        cancel_plan(d, ORG1, &plan.key),
        ErrorKind::TerminatedComputePlan,
        &format!("OE0109: compute plan {} is already terminated", plan.key),
    );
    assert_eq!(err.message, format!("OE0109: compute plan {} is already terminated", plan.key));
    assert_no_event_since(d, before);
    update_plan(d, ORG1, &plan.key, "still renamable").expect("rename a canceled plan");
    register_tasks(d, ORG1, &[train_task(102, DM2, &[22], &[])]).expect("tasks on a canceled plan");
    apply_task_action(d, ORG1, &key(101), ComputeTaskAction::TaskActionFailed, "")
        .expect("task actions on a canceled plan");
    let after = get_plan(d, ORG1, &plan.key).expect("get");
    assert_eq!(after.failure_date, None, "a terminated plan is never re-terminated");
    assert_eq!(after.cancelation_date, canceled.cancelation_date);

    // --- Failure through a task: failure_date, no plan event -------------------------------
    let second = register_plan(d, ORG1, &new_plan(41)).expect("second plan");
    let mut t = aggregate_task(110, ORG1, &[]);
    t.compute_plan_key = second.key.clone();
    let mut u = aggregate_task(111, ORG2, &[]);
    u.compute_plan_key = second.key.clone();
    register_tasks(d, ORG1, &[t, u]).expect("tasks of the second plan");
    let before = d.events().len();
    apply_task_action(d, ORG2, &key(111), ComputeTaskAction::TaskActionFailed, "boom")
        .expect("the worker fails its task");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "only the task event: {events:?}");
    check_event(
        &events[0],
        AssetKind::AssetComputeTask,
        EventKind::EventAssetUpdated,
        &key(111),
        CHANNEL,
        &[("reason", "boom")],
    );
    let failed = get_plan(d, ORG1, &second.key).expect("get");
    assert_eq!(failed.failure_date, events[0].timestamp);
    assert_eq!(failed.cancelation_date, None);
    // A second failure leaves the date alone; the failed plan cannot be canceled.
    apply_task_action(d, ORG1, &key(110), ComputeTaskAction::TaskActionFailed, "").expect("owner fails the other task");
    assert_eq!(get_plan(d, ORG1, &second.key).expect("get").failure_date, failed.failure_date);
    expect_err(cancel_plan(d, ORG1, &second.key), ErrorKind::TerminatedComputePlan, "already terminated");
}

pub fn plan_running(d: &mut dyn Driver) {
    use ComputeTaskAction as A;
    setup_world(d);
    expect_err(
        is_plan_running(d, &key(999)),
        ErrorKind::NotFound,
        &format!("OE0002: computeplan with key \"{}\" not found", key(999)),
    );
    let plan = key(PLAN);
    assert!(!is_plan_running(d, &plan).expect("no task"));

    // Waiting for a builder slot, building, waiting for the executor, executing: running.
    register_tasks(d, ORG1, &[train_task(101, DM1, &[20], &[])]).expect("task");
    assert!(is_plan_running(d, &plan).expect("WFBS"));
    apply_function_action(d, ORG1, CHANNEL, &key(TRAIN), FunctionAction::Building as i32).expect("build");
    assert!(is_plan_running(d, &plan).expect("BUILDING"));
    apply_function_action(d, ORG1, CHANNEL, &key(TRAIN), FunctionAction::Ready as i32).expect("built");
    assert!(is_plan_running(d, &plan).expect("WFES"));
    apply_task_action(d, ORG1, &key(101), A::TaskActionExecuting, "").expect("execute");
    assert!(is_plan_running(d, &plan).expect("EXECUTING"));
    apply_task_action(d, ORG1, &key(101), A::TaskActionDone, "").expect("done");
    assert!(!is_plan_running(d, &plan).expect("every task DONE"));
    // A child waiting for its parents makes it run again.
    register_tasks(d, ORG1, &[train_task(102, DM2, &[22], &[101])]).expect("child");
    assert!(is_plan_running(d, &plan).expect("WFES child"));
    register_tasks(d, ORG1, &[train_task(103, DM2, &[22], &[102])]).expect("grandchild");
    assert!(is_plan_running(d, &plan).expect("WFPT grandchild"));

    // One canceled task stops the plan even with others waiting.
    apply_task_action(d, ORG1, &key(103), A::TaskActionCanceled, "").expect("cancel");
    assert_eq!(
        get_task(d, &key(102)).expect("get").status,
        orchestrator_proto::ComputeTaskStatus::StatusWaitingForExecutorSlot as i32
    );
    assert!(!is_plan_running(d, &plan).expect("a canceled task"));

    // A failed task: the plan fails too.
    let second = register_plan(d, ORG1, &new_plan(41)).expect("plan");
    let mut t = train_task(110, DM1, &[20], &[]);
    t.compute_plan_key = second.key.clone();
    let mut u = train_task(111, DM2, &[22], &[]);
    u.compute_plan_key = second.key.clone();
    register_tasks(d, ORG1, &[t, u]).expect("tasks");
    assert!(is_plan_running(d, &second.key).expect("waiting"));
    apply_task_action(d, ORG2, &key(111), A::TaskActionExecuting, "").expect("execute");
    apply_task_action(d, ORG2, &key(111), A::TaskActionFailed, "").expect("fail");
    assert!(get_plan(d, ORG1, &second.key).expect("plan").failure_date.is_some());
    assert!(!is_plan_running(d, &second.key).expect("failed"));

    // A canceled plan is not running whatever its tasks.
    let third = register_plan(d, ORG1, &new_plan(42)).expect("plan");
    let mut t = train_task(120, DM1, &[20], &[]);
    t.compute_plan_key = third.key.clone();
    register_tasks(d, ORG1, &[t]).expect("task");
    assert!(is_plan_running(d, &third.key).expect("waiting"));
    cancel_plan(d, ORG1, &third.key).expect("cancel");
    assert!(!is_plan_running(d, &third.key).expect("canceled plan"));

    // Tasks born CANCELED (their function was canceled) do not run.
    let fourth = register_plan(d, ORG2, &new_plan(43)).expect("plan");
    let mut t = train_task(130, DM2, &[22], &[103]);
    t.compute_plan_key = fourth.key.clone();
    register_tasks(d, ORG2, &[t]).expect("child of a canceled task");
    assert_eq!(
        get_task(d, &key(130)).expect("get").status,
        orchestrator_proto::ComputeTaskStatus::StatusCanceled as i32
    );
    assert!(!is_plan_running(d, &fourth.key).expect("only a canceled task"));
    assert_eq!(get_plan(d, ORG1, &fourth.key).expect("plan").failure_date, None);
    // Reads only.
    let before = d.events().len();
    for k in [&plan, &second.key, &third.key, &fourth.key] {
        is_plan_running(d, k).expect("read");
    }
    assert_no_event_since(d, before);
}
