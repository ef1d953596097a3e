#!/usr/bin/env bash
# Builds the `tandem` cdylib, the uniffi-bindgen and the tandem-server with cargo, checks that the
# committed Swift sources are what uniffi-bindgen generates from this library, then runs the
# XCTest suite (Swift from ../shared/tools/with-swift on Linux) against a real tandem-server.
#
# Uses cargo's target directory: $CARGO_TARGET_DIR, or target/ in this repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target"
target=$(cd "$target" && pwd -P)

# One build for the three (one feature set, so the library is compiled once).
# One build serves every script and the test suite: the `test` profile (its output is
# target/debug) with all features, the same artifacts `cargo test --all-features` already built,
# so after the suite this compiles nothing (other feature sets or the dev profile would rebuild
# the crate and, for the dev profile, every dependency).
cargo build -q --profile test --all-features --lib --bins
lib="$target/debug/libtandem.so"

generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
"$target/debug/uniffi-bindgen" generate --library "$lib" --language swift \
  --out-dir "$generated" --no-format >/dev/null
stale=0
check() { # check GENERATED COMMITTED
  if ! cmp -s "$generated/$1" "bindings/swift/$2"; then
    echo "test.sh: bindings/swift/$2 differs from what uniffi-bindgen generates ($1):" >&2
    diff -u "bindings/swift/$2" "$generated/$1" | head -40 >&2 || true
    stale=1
  fi
}
check Tandem.swift Sources/Tandem/Tandem.swift
check TandemFFI.h Sources/TandemFFI/include/TandemFFI.h
check TandemFFI.modulemap Sources/TandemFFI/include/module.modulemap
if [ "$stale" = 1 ]; then
  echo "test.sh: regenerate with bindings/swift/generate.sh and commit" >&2
  exit 1
fi

. bindings/swift/lib.sh
swift_env "$target/debug"
# with-swift hands only LD_LIBRARY_PATH into its Swift root: pass the suite's settings on.
# (`swift test` also builds the TandemExitCheck executable that ExitTests runs.)
settings=()
[ -n "${TANDEM_EXIT_RUNS:-}" ] && settings+=("TANDEM_EXIT_RUNS=$TANDEM_EXIT_RUNS")
"$with_swift" env ${settings[@]+"${settings[@]}"} swift test --package-path bindings/swift
