#!/usr/bin/env bash
# Builds TandemFFI.xcframework for iOS apps: a device slice (aarch64-apple-ios) and a simulator
# slice (aarch64-apple-ios-sim + x86_64-apple-ios merged with lipo), each the static library
# libtandem.a with the uniffi header and module map. ios/Package.swift uses it as a binaryTarget.
#
# NEEDS macOS WITH XCODE (xcodebuild, lipo, the iOS SDKs). It was written on Linux and has not
# been run; see README.md.
#
#   bindings/swift/build-xcframework.sh            # release build into bindings/swift/ios/
#   PROFILE=debug bindings/swift/build-xcframework.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$repo"
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-$repo/target}
out="$repo/bindings/swift/ios"
[ "$(uname)" = Darwin ] || { echo "build-xcframework.sh needs macOS with Xcode" >&2; exit 1; }
command -v xcodebuild >/dev/null || { echo "xcodebuild not found: install Xcode" >&2; exit 1; }

flag=()
[ "$profile" = release ] && flag=(--release)
export IPHONEOS_DEPLOYMENT_TARGET=${IPHONEOS_DEPLOYMENT_TARGET:-15.0}
for triple in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios; do
  rustup target add "$triple" >/dev/null
  cargo build "${flag[@]}" --features ffi --lib --target "$triple"
done

# The Swift sources are the committed ones (test.sh checks they match the library); the header
# and module map go into each slice's Headers.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/headers" "$work/sim"
cp bindings/swift/Sources/TandemFFI/include/TandemFFI.h "$work/headers/"
cp bindings/swift/Sources/TandemFFI/include/module.modulemap "$work/headers/module.modulemap"
lipo -create \
  "$target/aarch64-apple-ios-sim/$profile/libtandem.a" \
  "$target/x86_64-apple-ios/$profile/libtandem.a" \
  -output "$work/sim/libtandem.a"

rm -rf "$out/TandemFFI.xcframework"
xcodebuild -create-xcframework \
  -library "$target/aarch64-apple-ios/$profile/libtandem.a" -headers "$work/headers" \
  -library "$work/sim/libtandem.a" -headers "$work/headers" \
  -output "$out/TandemFFI.xcframework"
mkdir -p "$out/Sources/Tandem"
cp bindings/swift/Sources/Tandem/*.swift "$out/Sources/Tandem/"
echo "built $out/TandemFFI.xcframework; use $out/Package.swift"
