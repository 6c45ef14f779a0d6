# wasm-orchestrator: one logic component, several hosts.
CARGO ?= cargo
# Which clone is building: the component's build script reruns when it changes (clones may
# share one CARGO_TARGET_DIR, see logic-component/build.rs).
export ORCHESTRATOR_SOURCE_DIR := $(CURDIR)

.PHONY: build run run-distributed test component reproducible bench fuzz lint fmt clean wasm-target

## The pinned toolchain's wasm32 target. rustup installs it with a missing toolchain, but not
## into a toolchain that is already there without it.
wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
		|| rustup target add wasm32-unknown-unknown

## Build everything (the component is built and embedded by orchestrator-logic-component).
build: wasm-target
	$(CARGO) build --release --workspace

## Run the standalone orchestrator on 0.0.0.0:9000 against the local PostgreSQL.
run: wasm-target
	$(CARGO) run --release --bin orchestrator

## Distributed mode: a local Fabric network (FABRIC_BIN_DIR) and the orchestrator as its facade
## on 0.0.0.0:9000; Ctrl-C stops both.
run-distributed: wasm-target
	scripts/run-distributed.sh

## Every test: logic (native), the component through the runtime (and the runtime's doc example),
## the embedding example (examples/embedded, run and checked), the gRPC server on PostgreSQL,
## and, when FABRIC_BIN_DIR names Fabric 2.5 binaries, both hosts on a real local Fabric network.
test: wasm-target
	@if [ -n "$$FABRIC_BIN_DIR" ]; then echo "Fabric tests on a real network: FABRIC_BIN_DIR=$$FABRIC_BIN_DIR"; \
	else echo "FABRIC_BIN_DIR is unset: the tests on a real Fabric network will say they skipped"; fi
	$(CARGO) test --workspace

## The logic component alone, built as the binaries embed it (logic-component/build.rs):
## target/component-build/orchestrator_logic.wasm; prints its sha256.
component: wasm-target
	@CARGO="$(CARGO)" scripts/build-component.sh

## The component is reproducible: two copies of the tree in two temporary directories, built
## with different target directories, HOME and CARGO_HOME, give the same bytes, which hold none
## of those paths (scripts/reproducible-component.sh; REPRO_SOURCE=head builds clones of HEAD).
reproducible: wasm-target
	scripts/reproducible-component.sh

## Benchmarks (release); see BENCHMARKS.md.
bench: wasm-target
	$(CARGO) bench --workspace

## Seeded mutation fuzzing of every method, natively and through the component (release):
## FUZZ_CASES (default 1,000,000) per side, FUZZ_SEED, FUZZ_TARGET=native|component; see BENCHMARKS.md.
fuzz: wasm-target
	$(CARGO) bench -p orchestrator-runtime --bench fuzz

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
