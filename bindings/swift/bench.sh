#!/usr/bin/env bash
# The Swift benchmark (not a test): builds the `tandem` cdylib and the benchmark in release mode,
# then runs Benchmarks/Sources/TandemBenchmark beside the system libsqlite3 and prints the figures
# side by side. Arguments go to the benchmark: `bench.sh --n 10000` for a quick run.
#
# Uses cargo's target directory: $CARGO_TARGET_DIR, or target/ in this repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target"
target=$(cd "$target" && pwd -P)
cargo build -q --release --features ffi --lib
export LD_LIBRARY_PATH="$target/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
case "$target/" in
  "$repo"/*) ;;
  *) export TANDEM_SWIFT_MOUNTS="$target${TANDEM_SWIFT_MOUNTS:+:$TANDEM_SWIFT_MOUNTS}" ;;
esac
with_swift=${TANDEM_WITH_SWIFT:-$repo/../shared/tools/with-swift}
[ -x "$with_swift" ] || with_swift=/work/shared/tools/with-swift
[ -x "$with_swift" ] || with_swift=env  # Swift installed on this machine
"$with_swift" swift build -c release --package-path bindings/swift/Benchmarks
"$with_swift" bindings/swift/Benchmarks/.build/release/TandemBenchmark "$@"
