#!/usr/bin/env bash
# Builds the cdylib and tandem-server, checks that the committed Kotlin bindings are what this
# crate's uniffi-bindgen generates, and runs the JUnit suite (JVM, JNA) against a real server.
#
# Cargo uses the repository's default target dir (or CARGO_TARGET_DIR if set). Needs cargo,
# a JDK 17+, Maven and openssl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target" ] || { echo "test.sh: cannot find cargo's target directory" >&2; exit 1; }

# One build serves every script and the test suite: the `test` profile (its output is
# target/debug) with all features, the same artifacts `cargo test --all-features` already built,
# so after the suite this compiles nothing (other feature sets or the dev profile would rebuild
# the crate and, for the dev profile, every dependency).
# The library and server are copied aside before anything else can rewrite target/debug.
cargo build -q --profile test --all-features --lib --bins
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib"
cp "$target/debug/libtandem.so" "$work/lib/"
cp "$target/debug/tandem-server" "$work/lib/"

# The committed bindings must be exactly what the generator makes from this library.
"$target/debug/uniffi-bindgen" generate --library "$work/lib/libtandem.so" --language kotlin \
    --out-dir "$work/gen" --no-format
if ! diff -r "$work/gen/dev/tandem/tandem.kt" "$here/src/main/kotlin/dev/tandem/tandem.kt" >"$work/diff"; then
    head -40 "$work/diff" >&2
    echo "test.sh: bindings/kotlin/src/main/kotlin/dev/tandem/tandem.kt is stale; regenerate it:" >&2
    echo "  $target/debug/uniffi-bindgen generate --library $target/debug/libtandem.so --language kotlin --out-dir bindings/kotlin/src/main/kotlin --no-format" >&2
    exit 1
fi

cd "$here"
mvn -q -B -Dstyle.color=never test -Dtandem.lib.dir="$work/lib" -Dtandem.server.bin="$work/lib/tandem-server"
for report in target/surefire-reports/TEST-*.xml; do
    grep -o '<testsuite [^>]*' "$report" | grep -o 'name="[^"]*"\|tests="[^"]*"\|failures="[^"]*"\|errors="[^"]*"' | tr '\n' ' '
    echo
done
