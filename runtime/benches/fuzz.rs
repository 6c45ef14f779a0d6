//! The mutation fuzzer (`orchestrator_logic::testing::fuzz`) at scale: `FUZZ_CASES` cases
//! (default 1,000,000) on the native logic, then as many through the compiled component, each
//! component answer also compared with the native logic's on the same state. Prints cases,
//! panics, traps, INTERNALs and cases/s for each; exits with status 1 on any failure.
//!
//! `make fuzz`, or `cargo bench -p orchestrator-runtime --bench fuzz`; `FUZZ_TARGET=native` or
//! `component` runs one side only; `FUZZ_SEED`, `FUZZ_FROM` as in the report's replay line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/component_driver.rs"]
mod component_driver;

use std::time::Instant;

use component_driver::ComponentDriver;
use orchestrator_logic::testing::fuzz::{Config, Corpus, NativeTarget, run};

const DEFAULT_CASES: u64 = 1_000_000;

fn main() {
    let config = Config::from_env(DEFAULT_CASES);
    let only = std::env::var("FUZZ_TARGET").unwrap_or_default();
    let started = Instant::now();
    let corpus = Corpus::from_scenarios();
    println!(
        "corpus: {} seeds, {} worlds, recorded in {:.1?}; seed {:#x}, cases {}..{}",
        corpus.seeds.len(),
        corpus.worlds.len(),
        started.elapsed(),
        config.seed,
        config.from,
        config.cases
    );
    let mut clean = true;
    if only.is_empty() || only == "native" {
        let report = run("native", &corpus, config, &mut NativeTarget::default(), None);
        println!("{report}");
        clean &= report.is_clean();
    }
    if only.is_empty() || only == "component" {
        let mut component = ComponentDriver::new();
        let report = run("component", &corpus, config, &mut component, Some(&mut NativeTarget::default()));
        println!("{report}");
        clean &= report.is_clean();
    }
    if !clean {
        std::process::exit(1);
    }
}
