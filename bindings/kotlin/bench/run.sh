#!/usr/bin/env bash
# The Kotlin/JVM benchmark: Tandem's typed layer beside SQLite (sqlite-jdbc, WAL,
# synchronous=NORMAL) and realm-core 14.12.0 (io.realm.kotlin:cinterop-jvm 2.3.0 through
# RealmInterop). Builds the release libtandem.so (cargo's target dir, or CARGO_TARGET_DIR),
# installs dev.tandem:tandem:0.1.0 from ../pom.xml, unpacks librealmc.so from the cinterop jar
# into a temp dir (nothing written to $HOME by realm-kotlin's SoLoader), compiles the benchmark
# and runs it. Cargo, Maven and the JVM run under `nice -n 19` (the machine is shared).
#
#   bindings/kotlin/bench/run.sh                 # full size: 100,000 / 10,000 / 100,000, median of 3
#   bindings/kotlin/bench/run.sh --n 10000       # quick: 10,000 / 1,000 / 10,000
#   bindings/kotlin/bench/run.sh --n 10000 --repeat 1 --small 500 --dir /some/disk
#   bindings/kotlin/bench/run.sh --exclusive      # Tandem opens its files exclusiveToProcess
#
# Needs cargo, a JDK 17+, Maven. BENCH_JAVA_OPTS adds JVM options (default -Xmx2g).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cd "$repo"

target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target" ] || { echo "run.sh: cannot find cargo's target directory" >&2; exit 1; }
nice -n 19 cargo build --release --features ffi --lib
lib="$target/release"
[ -f "$lib/libtandem.so" ] || { echo "run.sh: no $lib/libtandem.so" >&2; exit 1; }

# The jar without the native library: libtandem.so comes from jna.library.path below (JNA
# searches it before any copy bundled in the jar; the benchmark prints the path it mapped).
nice -n 19 mvn -q -B -f bindings/kotlin/pom.xml install -DskipTests

cd "$here"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mvn -q -B dependency:unpack -Dartifact=io.realm.kotlin:cinterop-jvm:2.3.0 \
    -DoutputDirectory="$work/unpacked" -Dmdep.unpack.includes=jni/linux/librealmc.so >/dev/null
mkdir -p "$work/native"
mv "$work/unpacked/jni/linux/librealmc.so" "$work/native/"

nice -n 19 mvn -q -B package
mvn -q -B dependency:build-classpath -Dmdep.outputFile="$work/classpath" >/dev/null
# shellcheck disable=SC2086
nice -n 19 java ${BENCH_JAVA_OPTS:--Xmx2g} -Djna.library.path="$lib" -Djava.library.path="$work/native" \
    -cp "target/classes:$(cat "$work/classpath")" dev.tandem.bench.BenchKt "$@"
