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
. bindings/swift/lib.sh
swift_env "$target/release"
"$with_swift" swift build -c release --package-path bindings/swift/Benchmarks
"$with_swift" bindings/swift/Benchmarks/.build/release/TandemBenchmark "$@"
