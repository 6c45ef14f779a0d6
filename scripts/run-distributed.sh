#!/usr/bin/env bash
# Distributed mode on a local Fabric network: brings the network up (scripts/fabric-net.sh), then
# runs the orchestrator as MyOrg1MSP's facade on ORCHESTRATOR_GRPC_ADDR (default 0.0.0.0:9000),
# so the README's grpcurl examples work unchanged. Ctrl-C stops the orchestrator, then the
# network. The events go to a database of their own, recreated each run (a new network is a new
# ledger): ORCHESTRATOR_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/orchestrator_distributed.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${FABRIC_BIN_DIR:?set FABRIC_BIN_DIR to the bin/ of a Fabric 2.5 release (on these machines: ../shared/fabric/bin)}"
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p orchestrator-host-standalone --bin orchestrator -p orchestrator-host-fabric --bin chaincode

database=${ORCHESTRATOR_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orchestrator_distributed}
psql "${database%/*}/postgres" -qc "DROP DATABASE IF EXISTS \"${database##*/}\"" >/dev/null

dir=$(mktemp -d -t fabric-net.XXXXXX)
rmdir "$dir"
trap 'scripts/fabric-net.sh down "$dir"' EXIT
CHAINCODE_BIN="$target/release/chaincode" scripts/fabric-net.sh up "$dir"
eval "$(scripts/fabric-net.sh env "$dir")"

export ORCHESTRATOR_MODE=distributed ORCHESTRATOR_DATABASE_URL=$database
export ORCHESTRATOR_MSPID=${ORCHESTRATOR_MSPID:-MyOrg1MSP}
"$target/release/orchestrator" "$@" || true
