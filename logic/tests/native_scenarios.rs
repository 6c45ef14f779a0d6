//! The API scenarios run natively, over the in-memory host.

orchestrator_logic::scenario_tests!(orchestrator_logic::testing::Harness::new());
