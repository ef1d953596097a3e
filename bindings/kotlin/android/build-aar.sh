#!/usr/bin/env bash
# Builds Tandem's Android library: bindings/kotlin/android/build/outputs/aar/tandem-android-release.aar.
#   1. Checks the prerequisites below and stops, listing every one that is missing, before it
#      builds anything.
#   2. Builds libtandem.so (the `ffi` feature, release profile) for arm64-v8a, armeabi-v7a and
#      x86_64 with cargo-ndk, linked with 16 KB page alignment (-Wl,-z,max-page-size=16384), into
#      <cargo target dir>/android/jniLibs/<abi>/ (CARGO_TARGET_DIR, default <repo>/target).
#   3. Checks with the NDK's llvm-readelf that every LOAD segment of each library is aligned to
#      16 KB (Align 0x4000) or more, and stops if one is not: a device running with 16 KB pages
#      cannot load a library whose segments are aligned to 4 KB, and Google Play requires 16 KB
#      support from apps that target Android 15 or newer.
#   4. Runs `assembleRelease` in this directory's Gradle build (./gradlew if there is one, else
#      gradle from PATH), checks that the AAR holds jni/<abi>/libtandem.so for the three ABIs, and
#      prints its path.
#
# NEEDS the Android SDK (ANDROID_HOME, ANDROID_SDK_ROOT or sdk.dir in local.properties) and NDK
# (ANDROID_NDK_HOME; r27 or newer recommended), cargo-ndk, the three rustup targets, Gradle 8.13+
# and a JDK 17+. Written on Linux for Linux or macOS hosts. NOT RUN: no machine of this project
# has the Android SDK or NDK, so the script has only been run up to its prerequisite check, which
# stops it there (and check_alignment alone, sourced, on x86-64 Linux libraries). See
# ../README.md, "Android".
#
#   bindings/kotlin/android/build-aar.sh
#   CARGO_TARGET_DIR=/elsewhere bindings/kotlin/android/build-aar.sh

abis=(arm64-v8a armeabi-v7a x86_64)
triples=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android)
page_flag="-C link-arg=-Wl,-z,max-page-size=16384"

fail() {
  echo "build-aar.sh: $*" >&2
  exit 1
}

# Prints "ok" if every LOAD segment of ELF file $2 is aligned to 16 KB or more, per readelf $1;
# otherwise prints what is wrong. Larger alignments pass (64 KB is 16 KB-compatible too).
check_alignment() {
  local readelf=$1 so=$2 aligns a bad=""
  aligns=$("$readelf" -l -W "$so" | awk '$1 == "LOAD" { print $NF }') || {
    echo "$readelf could not read the program headers"
    return
  }
  [ -n "$aligns" ] || { echo "no LOAD segments found"; return; }
  for a in $aligns; do
    if ! [[ $a =~ ^0x[0-9a-fA-F]+$ ]] || (( a < 16384 )); then
      bad="$bad $a"
    fi
  done
  if [ -n "$bad" ]; then
    echo "LOAD segments aligned to less than 16 KB (0x4000):$bad (all: ${aligns//$'\n'/ })"
  else
    echo ok
  fi
}

# Prints the entry names of zip file $1, one per line, with unzip or python3; fails if neither.
zip_entries() {
  if command -v unzip >/dev/null; then
    unzip -Z1 "$1"
  elif command -v python3 >/dev/null; then
    python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"
  else
    return 1
  fi
}

main() {
  local here repo target jni
  here=$(cd "$(dirname "$0")" && pwd -P)
  repo=$(cd "$here/../../.." && pwd -P)
  cd "$repo"
  target=${CARGO_TARGET_DIR:-$repo/target}
  jni="$target/android/jniLibs"

  # --- 1. Prerequisites: all checked first, every missing one reported at once. ---
  local missing=() readelf="" candidate sysroot absent=() i sdk="" gradle=()
  if [ -z "${ANDROID_NDK_HOME:-}" ]; then
    missing+=("no Android NDK: ANDROID_NDK_HOME is not set. Install the NDK (r27 or newer; Android Studio's SDK Manager, or sdkmanager \"ndk;<version>\") and export ANDROID_NDK_HOME=<sdk>/ndk/<version>.")
  elif [ ! -d "$ANDROID_NDK_HOME" ]; then
    missing+=("no Android NDK: ANDROID_NDK_HOME=$ANDROID_NDK_HOME is not a directory.")
  else
    for candidate in "$ANDROID_NDK_HOME"/toolchains/llvm/prebuilt/*/bin/llvm-readelf; do
      if [ -x "$candidate" ]; then readelf=$candidate; break; fi
    done
    [ -n "$readelf" ] || missing+=("no llvm-readelf under $ANDROID_NDK_HOME/toolchains/llvm/prebuilt/*/bin/: is ANDROID_NDK_HOME the root of an NDK?")
  fi

  if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    missing+=("no Rust toolchain (cargo, rustc): install it with rustup.")
  else
    command -v cargo-ndk >/dev/null || missing+=("no cargo-ndk: cargo install cargo-ndk")
    # rustc from the repository root, so that a toolchain override there applies.
    sysroot=$(rustc --print sysroot 2>/dev/null || true)
    for i in "${!triples[@]}"; do
      [ -d "$sysroot/lib/rustlib/${triples[$i]}" ] || absent+=("${triples[$i]}")
    done
    [ ${#absent[@]} -eq 0 ] || missing+=("no Rust standard library for ${absent[*]}: rustup target add ${absent[*]}")
  fi

  sdk=${ANDROID_HOME:-${ANDROID_SDK_ROOT:-}}
  if [ -z "$sdk" ] && [ -f "$here/local.properties" ]; then
    sdk=$(sed -n 's/^sdk\.dir=//p' "$here/local.properties")
  fi
  if [ -z "$sdk" ]; then
    missing+=("no Android SDK: set ANDROID_HOME (or sdk.dir=<path> in $here/local.properties).")
  elif [ ! -d "$sdk" ]; then
    missing+=("no Android SDK: $sdk is not a directory.")
  fi

  if [ -x "$here/gradlew" ]; then
    gradle=("$here/gradlew")
  elif command -v gradle >/dev/null; then
    gradle=(gradle)
  else
    missing+=("no Gradle: neither $here/gradlew nor gradle on PATH (Gradle 8.13 or newer, on JDK 17+).")
  fi

  if [ ${#missing[@]} -gt 0 ]; then
    echo "build-aar.sh: cannot build the Android AAR here; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi

  # --- 2. libtandem.so per ABI, 16 KB aligned. ---
  echo "NDK: $ANDROID_NDK_HOME ($(sed -n 's/^Pkg\.Revision *= *//p' "$ANDROID_NDK_HOME/source.properties" 2>/dev/null || true))"
  # Start empty so that no library from an earlier build (or another ABI list) is packaged.
  rm -rf "$jni"
  mkdir -p "$jni"
  local targs=() abi
  for abi in "${abis[@]}"; do targs+=(-t "$abi"); done
  # RUSTFLAGS reaches only the Android targets (cargo-ndk passes --target, so build scripts and
  # proc macros built for the host do not get it). NDK r28+ links 64-bit libraries with 16 KB
  # alignment by default, and cargo-ndk 4 adds the flag for 64-bit targets with older NDKs; this
  # makes it so whatever the versions, for armeabi-v7a as well.
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$page_flag" \
    cargo ndk "${targs[@]}" -o "$jni" build --release --features ffi --lib

  # --- 3. The alignment, checked rather than assumed. ---
  local so result failed=0
  for abi in "${abis[@]}"; do
    so="$jni/$abi/libtandem.so"
    if [ ! -f "$so" ]; then
      echo "build-aar.sh: cargo-ndk did not produce $so" >&2
      failed=1
      continue
    fi
    result=$(check_alignment "$readelf" "$so")
    if [ "$result" = ok ]; then
      echo "16 KB aligned: $so"
    else
      echo "build-aar.sh: $so: $result" >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || fail "native libraries missing or not 16 KB aligned; not packaging them"

  # --- 4. The AAR. ---
  "${gradle[@]}" -p "$here" -Ptandem.jniLibsDir="$jni" assembleRelease
  local aar="$here/build/outputs/aar/tandem-android-release.aar" entries
  [ -f "$aar" ] || fail "Gradle finished but $aar is not there"
  if entries=$(zip_entries "$aar"); then
    for abi in "${abis[@]}"; do
      grep -qx "jni/$abi/libtandem.so" <<<"$entries" || fail "$aar has no jni/$abi/libtandem.so"
    done
  else
    echo "build-aar.sh: neither unzip nor python3 found; the AAR's contents were not checked" >&2
  fi
  echo "built $aar"
}

# Sourcing the file (to call check_alignment alone) runs nothing and sets no shell options.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  main "$@"
fi
