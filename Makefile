# wasm-orchestrator: one logic component, several hosts.
CARGO ?= cargo

.PHONY: build run test component bench lint fmt clean

## Build everything (the component is built and embedded by orchestrator-logic-component).
build:
	$(CARGO) build --release --workspace

## Run the standalone orchestrator on 0.0.0.0:9000 against the local PostgreSQL.
run:
	$(CARGO) run --release --bin orchestrator

## Every test: logic (native), the component through the runtime, the gRPC server on PostgreSQL.
test:
	$(CARGO) test --workspace

## The logic component alone (target/component-build/wasm32-unknown-unknown/component/).
component:
	$(CARGO) build -p orchestrator-logic --lib --target wasm32-unknown-unknown --profile component \
		--target-dir $${CARGO_TARGET_DIR:-target}/component-build

## Benchmarks (release); see BENCHMARKS.md.
bench:
	$(CARGO) bench --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
