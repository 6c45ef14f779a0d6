//! A bounded run of the mutation fuzzer (`orchestrator_logic::testing::fuzz`) on the native
//! logic: no panic, no INTERNAL outside malformed protobuf, bounded status messages. The full
//! run (1,000,000 cases, also through the component) is `make fuzz`. `FUZZ_CASES`, `FUZZ_SEED`
//! and `FUZZ_FROM` override the run.

use orchestrator_logic::METHODS;
use orchestrator_logic::testing::fuzz::{BURST, Config, Corpus, NativeTarget, run};

const CASES: u64 = 50_000;

#[test]
fn fuzz_native_bounded() {
    let corpus = Corpus::from_scenarios();
    let called = corpus.methods_called();
    // QueryEvents is the host's (no handler here): only its empty seed is the logic's concern.
    let uncalled: Vec<&str> = METHODS.iter().map(|m| m.name).filter(|m| !called.contains(m)).collect();
    assert!(uncalled.iter().all(|m| *m == "orchestrator.EventService/QueryEvents"), "no scenario seeds {uncalled:?}");

    let config = Config::from_env(CASES);
    let report = run("native", &corpus, config, &mut NativeTarget::default(), None);
    println!("{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.cases, config.cases - config.from + config.from % BURST);
    assert_eq!(report.methods.len(), METHODS.len(), "every method gets cases");
    // The mutants must reach the logic past decoding, and succeed now and then.
    let malformed = report.errors.get("MalformedRequest").copied().unwrap_or(0);
    assert!(malformed < report.cases / 2, "{}", report.answers());
    assert!(report.ok > report.cases / 20, "{}", report.answers());
}
