#!/usr/bin/env bash
# Runs the realm-core compatibility suite: builds tandem-server and the realm_peer example
# (the Tandem client of MixedClientTest), unpacks realm-core's
# librealmc.so from io.realm.kotlin:cinterop-jvm (so realm-kotlin's SoLoader never writes to
# $HOME), makes a throwaway test CA and server certificate, and runs the JUnit suite, which
# drives the real realm-core 14.12.0 client against real tandem-server processes.
#
# Cargo uses the repository's default target dir (or CARGO_TARGET_DIR if set). Needs cargo,
# a JDK 17+, Maven, openssl and unzip. Each test's files and realm-core log stay in
# tests/realm-compat/target/realm-work/<class>/<test>/ for debugging.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
start=$(date +%s)
cd "$repo"

target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target" ] || { echo "run.sh: cannot find cargo's target directory" >&2; exit 1; }
# One build serves every script and the test suite: the `test` profile (its output is
# target/debug) with all features, the same artifacts `cargo test --all-features` already built,
# so after the suite this compiles nothing (other feature sets or the dev profile would rebuild
# the crate and, for the dev profile, every dependency).
# realm_peer is the Tandem client of the mixed-client scenario (MixedClientTest).
cargo build -q --profile test --all-features --bins --example realm_peer
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$target/debug/tandem-server" "$target/debug/examples/realm_peer" "$work/"

cd "$here"
# Take librealmc.so out of the cinterop jar (Maven resolves it into the local repository).
mvn -q -B dependency:unpack -Dartifact=io.realm.kotlin:cinterop-jvm:2.3.0 \
    -DoutputDirectory="$work/unpacked" -Dmdep.unpack.includes=jni/linux/librealmc.so >/dev/null
mkdir -p "$work/native"
mv "$work/unpacked/jni/linux/librealmc.so" "$work/native/"

# A test CA and a server certificate for localhost signed by it (core's socket checks the host
# name; the clients trust only this CA, through realm_sync_config_set_ssl_trust_certificate_path
# and the java.net.http SSLContext).
tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/ca.key" \
    -out "$tls/ca.pem" -days 2 -subj "/CN=Tandem realm-compat test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/server.key" \
    -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -out "$tls/server.pem" -days 2 -extfile "$tls/ext" 2>/dev/null

rm -rf target/surefire-reports
status=0
mvn -q -B clean test \
    -Dtandem.server.bin="$work/tandem-server" -Dtandem.peer.bin="$work/realm_peer" -Drealm.native.dir="$work/native" \
    -Drealm.compat.ca="$tls/ca.pem" -Drealm.compat.cert="$tls/server.pem" -Drealm.compat.key="$tls/server.key" \
    "$@" || status=$?
tests=0
bad=0
skipped=0
for report in target/surefire-reports/TEST-*.xml; do
    [ -f "$report" ] || continue
    suite="$(grep -o '<testsuite [^>]*' "$report")"
    echo "$suite" | grep -o 'name="[^"]*"\|tests="[^"]*"\|failures="[^"]*"\|errors="[^"]*"\|skipped="[^"]*"\|time="[^"]*"' | tr '\n' ' '
    echo
    count() { echo "$suite" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
    tests=$((tests + $(count tests)))
    bad=$((bad + $(count failures) + $(count errors)))
    skipped=$((skipped + $(count skipped)))
done
[ "$tests" -gt 0 ] || { echo "run.sh: no test reports" >&2; status=1; }
if [ "$bad" -gt 0 ]; then
    # What a failure needs to be read from CI's output alone: the free disk space (a full disk
    # once failed every sync here) and the last lines of the server and realm-core logs of the
    # first failed tests.
    df -h "$here/target" | sed 's/^/realm-compat: disk: /'
    python3 - "$here/target" <<'PY' || true
import glob, os, sys, xml.etree.ElementTree as ET
target = sys.argv[1]
shown = 0
for report in sorted(glob.glob(os.path.join(target, "surefire-reports", "TEST-*.xml"))):
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        shown += 1
        if shown > 3:
            continue
        test_dir = os.path.join(target, "realm-work", case.get("classname").rsplit(".", 1)[-1], case.get("name").removesuffix("()"))
        for log in sorted(glob.glob(os.path.join(test_dir, "**", "server-*.log"), recursive=True)) + [os.path.join(test_dir, "realm-core.log")]:
            if not os.path.exists(log):
                continue
            with open(log, errors="replace") as f:
                tail = f.readlines()[-6:]
            print(f"realm-compat: tail of {os.path.relpath(log, target)}:")
            for line in tail:
                print("    " + line.rstrip()[:300])
PY
fi
echo "realm-compat: $((tests - bad - skipped)) passed, $bad failed, $skipped skipped"
echo "realm-compat: wall time $(( $(date +%s) - start )) s"
exit $status
