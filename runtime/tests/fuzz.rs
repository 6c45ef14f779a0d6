//! A bounded run of the mutation fuzzer (`orchestrator_logic::testing::fuzz`) through the
//! compiled component: no trap, no INTERNAL outside malformed protobuf, bounded status
//! messages, and every answer the same as the native logic's on the same state. The full run
//! is `make fuzz`; `FUZZ_CASES`, `FUZZ_SEED` and `FUZZ_FROM` override this one.

#[path = "support/component_driver.rs"]
mod component_driver;

use component_driver::ComponentDriver;
use orchestrator_logic::METHODS;
use orchestrator_logic::testing::fuzz::{BURST, Config, Corpus, NativeTarget, run};

const CASES: u64 = 10_000;

#[test]
fn fuzz_component_bounded() {
    let mut component = ComponentDriver::new();
    // The fuzzer's seeds come from the logic's method table: the component must export the same.
    let native: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
    assert_eq!(component.method_names(), native);

    let corpus = Corpus::from_scenarios();
    let config = Config::from_env(CASES);
    let report = run("component", &corpus, config, &mut component, Some(&mut NativeTarget::default()));
    println!("{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.cases, config.cases - config.from + config.from % BURST);
    assert!(report.ok > 0, "{}", report.answers());
}
