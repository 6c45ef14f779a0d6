//! The logic's scenarios (`orchestrator_logic::testing::scenarios`), run through the compiled
//! component: the same assertions as the native run, on the bytes every host executes.

#[path = "support/component_driver.rs"]
mod component_driver;

use component_driver::ComponentDriver;

orchestrator_logic::scenario_tests!(ComponentDriver::new());
