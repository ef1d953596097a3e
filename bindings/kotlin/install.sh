#!/usr/bin/env bash
# Installs dev.tandem:tandem:0.1.0 into the local Maven repository (~/.m2) with the native
# library inside the jar as the JNA resource linux-x86-64/libtandem.so, so that an app needs
# only the dependency (no -Djna.library.path). One command:
#
#   bindings/kotlin/install.sh                  # cargo build --release --features ffi, then mvn install
#   bindings/kotlin/install.sh --lib-dir DIR    # bundle DIR/libtandem.so instead (built with --features ffi)
#
# Then depend on it as examples/kotlin/pom.xml does. Checks that the installed jar holds the
# library and fails otherwise. Needs cargo (unless --lib-dir), a JDK 17+ and Maven.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

lib_dir=
case "${1:-}" in
    --lib-dir) lib_dir="$(cd "${2:?--lib-dir needs a directory}" && pwd)" ;;
    "") ;;
    *) echo "usage: install.sh [--lib-dir DIR]" >&2; exit 2 ;;
esac
if [ -z "$lib_dir" ]; then
    target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    [ -n "$target" ] || { echo "install.sh: cannot find cargo's target directory" >&2; exit 1; }
    cargo build --release --features ffi --lib
    lib_dir="$target/release"
fi
[ -f "$lib_dir/libtandem.so" ] || { echo "install.sh: no $lib_dir/libtandem.so" >&2; exit 1; }

# `clean`: a library copied by an earlier build would otherwise stay in target/classes.
mvn -q -B -Dstyle.color=never -f bindings/kotlin/pom.xml clean install -DskipTests -Dtandem.lib.dir="$lib_dir"

# The jar Maven just installed (a copy of it is in the local repository).
jar="$here/target/tandem-0.1.0.jar"
if ! jar tf "$jar" | grep -qx 'linux-x86-64/libtandem.so'; then
    echo "install.sh: $jar does not hold linux-x86-64/libtandem.so" >&2
    exit 1
fi
echo "installed dev.tandem:tandem:0.1.0 ($jar) with linux-x86-64/libtandem.so from $lib_dir"
