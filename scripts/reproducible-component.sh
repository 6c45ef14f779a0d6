#!/usr/bin/env bash
# `make reproducible`: the logic component's bytes depend on its sources and toolchain only.
#
# Two copies of the tree, in two temporary directories of different depths, each built with
# `make component` from scratch with its own target directory; the second also with another
# HOME and another CARGO_HOME (a symlink to the real one: the same crates, seen under another
# path). Passes when both components have the same sha256 and neither holds any of the
# directories involved (clones, target directories, homes, CARGO_HOMEs, the temporary root),
# nor /work, /root or .cargo/registry.
#
# REPRO_SOURCE=worktree (default): the tracked and untracked, not ignored, files of the working
# tree, uncommitted changes included (what a clone holds once they are committed);
# REPRO_SOURCE=head: `git clone` of HEAD. REPRO_KEEP=1 keeps the temporary directory.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
source_mode=${REPRO_SOURCE:-worktree}
real_home=${HOME:-/root}
real_cargo_home=${CARGO_HOME:-$real_home/.cargo}
real_rustup_home=${RUSTUP_HOME:-$real_home/.rustup}
work=$(mktemp -d "${TMPDIR:-/tmp}/orchestrator-repro.XXXXXX")
cleanup() {
  if [ -n "${REPRO_KEEP:-}" ]; then echo "[repro] kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
log() { printf '[repro] %s\n' "$*"; }

# copy_tree DEST: the sources as a fresh clone would have them.
copy_tree() {
  local dest=$1
  mkdir -p "$dest"
  case "$source_mode" in
    head)
      git clone --quiet --no-hardlinks "$repo" "$dest"
      ;;
    worktree)
      # Files deleted in the working tree are still listed by --cached: skip them.
      (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
        | tar --null -T - -cf -) | tar -C "$dest" -xf -
      ;;
    *)
      echo "REPRO_SOURCE must be worktree or head, not $source_mode" >&2
      exit 2
      ;;
  esac
}

# build NAME SOURCE TARGET [VAR=VALUE...]: `make component` in SOURCE; prints the component's path.
build() {
  local name=$1 src=$2 target=$3
  shift 3
  log "build $name: $src, CARGO_TARGET_DIR=$target $*" >&2
  local started=$SECONDS line
  line=$(env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u ORCHESTRATOR_PREBUILT_COMPONENT \
    CARGO_TARGET_DIR="$target" RUSTUP_HOME="$real_rustup_home" "$@" \
    make --no-print-directory -C "$src" component | tail -n 1)
  log "build $name: $line ($((SECONDS - started)) s)" >&2
  printf '%s\n' "${line#*  }"
}

a_src=$work/a/orchestrator
a_target=$work/a/target
b_src=$work/b/elsewhere/deeper/clone
b_target=$work/b/other-target-dir
b_home=$work/b/home
b_cargo_home=$b_home/cargo-home-b
copy_tree "$a_src"
copy_tree "$b_src"
mkdir -p "$b_home"
ln -s "$real_cargo_home" "$b_cargo_home"

a_wasm=$(build a "$a_src" "$a_target")
b_wasm=$(build b "$b_src" "$b_target" HOME="$b_home" CARGO_HOME="$b_cargo_home")

failed=0
# The second build really saw its crates under the other CARGO_HOME (rustc's dep-info lists the
# paths it compiled), or the check below would prove less than it says.
if ! grep -rqsF --include='*.d' "$b_cargo_home/registry/" "$b_target/component-build"; then
  log "warning: build b did not compile its crates from $b_cargo_home"
fi

a_sha=$(sha256sum "$a_wasm" | cut -d' ' -f1)
b_sha=$(sha256sum "$b_wasm" | cut -d' ' -f1)
log "a: $a_sha ($(wc -c <"$a_wasm") bytes)"
log "b: $b_sha ($(wc -c <"$b_wasm") bytes)"
if [ "$a_sha" != "$b_sha" ]; then
  log "FAIL: the two components differ: $(cmp "$a_wasm" "$b_wasm" | head -n 1)"
  failed=1
fi

for wasm in "$a_wasm" "$b_wasm"; do
  for needle in "$work" "$a_src" "$b_src" "$a_target" "$b_target" "$b_home" "$b_cargo_home" \
    "$real_home" "$real_cargo_home" "$repo" /work /root .cargo/registry; do
    [ "${#needle}" -gt 1 ] || continue
    if grep -qaF -- "$needle" "$wasm"; then
      log "FAIL: $wasm holds the build path $needle, e.g. $(tr -c '[:print:]' '\n' <"$wasm" | grep -F -m 1 -- "$needle" | head -c 300)"
      failed=1
    fi
  done
done

if [ "$failed" -ne 0 ]; then
  REPRO_KEEP=1
  exit 1
fi
log "OK: the same component from both builds, sha256 $a_sha, no build path in it"
