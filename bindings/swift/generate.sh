#!/usr/bin/env bash
# Regenerates the committed Swift bindings (Tandem.swift, TandemFFI.h, module.modulemap) from the
# library with the crate's own uniffi-bindgen. Run after changing src/ffi.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
cargo build -q --features ffi,bindgen,server --lib --bin tandem-server --bin uniffi-bindgen
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$target/debug/uniffi-bindgen" generate --library "$target/debug/libtandem.so" --language swift \
  --out-dir "$out" --no-format >/dev/null
cp "$out/Tandem.swift" bindings/swift/Sources/Tandem/Tandem.swift
cp "$out/TandemFFI.h" bindings/swift/Sources/TandemFFI/include/TandemFFI.h
cp "$out/TandemFFI.modulemap" bindings/swift/Sources/TandemFFI/include/module.modulemap
echo "regenerated bindings/swift/Sources from $target/debug/libtandem.so"
