#!/usr/bin/env bash
# Cross-compiles Tandem's core for aarch64-unknown-linux-gnu (Debian's cross gcc) and runs its
# architecture-dependent suites (TESTS below) under qemu-user (Debian's qemu-aarch64, user mode,
# no binfmt), so that architecture faults (alignment, endianness assumptions, atomics, char signedness, C code in SQLite and ring)
# show up on the x86-64 CI machine (issue 14). This is Linux glibc on an emulated ARM64 CPU: no
# Android (bionic) or iOS device, no phone SDK.
#
# Run from .ci/run after the host suite; also by hand: `.ci/aarch64.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu

# What it needs, installed if missing: the cross C compiler and glibc for aarch64 (rusqlite
# compiles its bundled SQLite, ring its C and assembly), qemu-user (qemu-aarch64), and Rust's
# aarch64 standard library.
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so ] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  echo "aarch64: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# cargo runs every test binary through this; -L is where the aarch64 glibc and loader live.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

# Long randomized tests run a sample under emulation; the host suite runs them in full, and each
# test's default is unchanged when these are unset. The property tests (codec_properties,
# protocol) keep their full case counts: a few seconds under qemu.
export TANDEM_FUZZ_ROUNDS="${TANDEM_FUZZ_ROUNDS:-50}"          # ot_convergence: 500 on the host
export TANDEM_SNAPSHOT_ROUNDS="${TANDEM_SNAPSHOT_ROUNDS:-30}"  # snapshot: 300 on the host

# The test targets: the core (model, changeset codec, vectors, protocol, OT, the reference state,
# the SQLite store, the FFI facade) and the client syncing with an in-process server over
# loopback (TLS through ring).
# The suites whose code depends on the architecture: byte-level codecs and vectors, OT (its
# hashing and ordering; the exhaustive small cases and Realm's rules too), SQLite storage,
# queries, atomic applies, notifications and rollbacks (SQLite's C, threads), the protocol and
# one real sync over TLS (ring's C and assembly), and the FFI. `store_crash` is left out: it
# kills child processes it starts as native binaries, which qemu-user does not run. The other integration suites drive the same
# layers with other scenarios; they run on the host. Fewer test binaries is most of this stage's
# time: each is compiled and linked for aarch64 (the build took 786 s of the stage's 1,017 with
# all 31 suites, the tests 231 s under qemu).
TESTS=(
  --lib
  --test vectors --test protocol --test codec_properties --test realm_changesets
  --test ot_rules --test ot_convergence --test ot_exhaustive --test realm_rules --test snapshot
  --test store --test store_collections --test store_differential --test query_semantics
  --test apply_atomicity --test store_notify --test store_rollback
  --test server_file --test sync_store --test sync_net --test ffi
)

FEATURES=server,ffi
started=$SECONDS
cargo test --target "$TARGET" --features "$FEATURES" "${TESTS[@]}" --no-run
built=$SECONDS
echo "aarch64: build $((built - started)) s"
cargo test --target "$TARGET" --features "$FEATURES" "${TESTS[@]}" --no-fail-fast
echo "aarch64: build $((built - started)) s, tests under qemu $((SECONDS - built)) s"
