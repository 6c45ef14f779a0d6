//! Runs the example program and checks what it printed: every call committed what it emitted,
//! and both tasks reached DONE.

use std::process::Command;

#[test]
fn the_plan_runs_to_done() -> Result<(), Box<dyn std::error::Error>> {
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator-example-embedded")).output()?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();

    // One line per call, with the events it committed: `<msp> <method>: [<events>]`.
    let calls: Vec<(&str, Vec<&str>)> = lines
        .iter()
        .filter(|line| line.starts_with("MyOrg"))
        .filter_map(|line| line.split_once(": ["))
        .map(|(call, events)| (call, events.trim_end_matches(']').split(", ").filter(|e| !e.is_empty()).collect()))
        .collect();
    let emitted: usize = calls.iter().map(|(_, events)| events.len()).sum();
    assert_eq!(calls.len(), 20, "{stdout}");
    assert_eq!(emitted, 23, "{stdout}");
    assert_eq!(lines.last().copied(), Some("20 calls, 23 events committed, 40 state entries"), "{stdout}");

    // The train task's DONE also frees its child; reads emit nothing.
    let done_with_child = ("MyOrg1MSP ApplyTaskAction", vec!["COMPUTE_TASK/UPDATED", "COMPUTE_TASK/UPDATED"]);
    assert!(calls.contains(&done_with_child), "{stdout}");
    assert!(calls.iter().filter(|(call, _)| call.ends_with("GetTask")).all(|(_, events)| events.is_empty()));

    // Registered waiting, read back DONE.
    let statuses: Vec<&str> = lines.iter().filter_map(|line| line.split_once(" is ")).map(|(_, s)| s).collect();
    assert_eq!(
        statuses,
        ["STATUS_WAITING_FOR_EXECUTOR_SLOT", "STATUS_WAITING_FOR_PARENT_TASKS", "STATUS_DONE", "STATUS_DONE"],
        "{stdout}"
    );
    // QueryEvents over the host's own rows: the train task's events, in order.
    let task_events = lines.iter().find(|line| line.starts_with("events of task")).copied().unwrap_or_default();
    assert!(
        task_events.ends_with(
            "[COMPUTE_TASK/CREATED, COMPUTE_TASK/UPDATED, COMPUTE_TASK_OUTPUT_ASSET/CREATED, COMPUTE_TASK/UPDATED]"
        ),
        "{stdout}"
    );
    Ok(())
}
