#!/usr/bin/env bash
# `make component`: builds the logic component the way every binary embeds it (through
# logic-component/build.rs, the one definition of its build flags), copies it to
# <target>/component-build/orchestrator_logic.wasm and prints `<sha256>  <path>` (sha256sum's
# format, so `sha256sum -c` can check a copy).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
# A prebuilt component would be copied, not built: this is the build.
unset ORCHESTRATOR_PREBUILT_COMPONENT
# Which clone builds (see the Makefile): the build script reruns when it changes.
export ORCHESTRATOR_SOURCE_DIR=$PWD

# The build script's OUT_DIR holds the embedded copy; cargo reports it even when the script is
# up to date, so what is printed is always what the binaries of this target directory embed.
messages=$("$cargo" build --package orchestrator-logic-component --message-format=json-render-diagnostics)
out_dir=$(printf '%s\n' "$messages" \
  | sed -n 's/^{"reason":"build-script-executed","package_id":"[^"]*logic-component[^"]*",.*"out_dir":"\([^"]*\)"}$/\1/p' \
  | tail -n 1)
if [ -z "$out_dir" ] || [ ! -f "$out_dir/orchestrator_logic.wasm" ]; then
  echo "build-component: cargo did not report the component's build script output" >&2
  exit 1
fi

mkdir -p "$target/component-build"
wasm="$target/component-build/orchestrator_logic.wasm"
cp "$out_dir/orchestrator_logic.wasm" "$wasm"
sha256=$(sha256sum "$wasm" | cut -d' ' -f1)
embedded=$(cat "$out_dir/sha256.txt")
if [ "$sha256" != "$embedded" ]; then
  echo "build-component: $wasm has sha256 $sha256, the embedded one says $embedded" >&2
  exit 1
fi
echo "$sha256  $wasm"
