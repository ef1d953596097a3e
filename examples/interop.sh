#!/usr/bin/env bash
# The four todo apps interoperate through one tandem-server: Python adds a todo, Kotlin lists it,
# Swift completes it, Python lists it again (and Rust's examples/todo.rs, if a build of it is given
# as $TANDEM_TODO_RS, lists it last). Exits non-zero unless the final list is exactly that todo, done.
#
#   examples/interop.sh                      # prebuilt libtandem.so + tandem-server in /tmp/tandem-artifacts
#   TANDEM_ARTIFACTS=target/debug examples/interop.sh
#
# Needs: python3 with the `tandem` wheel, mvn + java 17, openssl, and Swift (../shared/tools/with-swift or /work/shared/tools/with-swift
# on this Debian machine, or `swift` on PATH). Runs no cargo.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
art=$(cd "${TANDEM_ARTIFACTS:-/tmp/tandem-artifacts}" && pwd -P)
server_bin="$art/tandem-server"
[ -x "$server_bin" ] && [ -f "$art/libtandem.so" ] || { echo "interop.sh: need $art/libtandem.so and $art/tandem-server" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Swift runs in with-swift's chroot: it sees the repository, the artifacts and $work at the same paths.
export LD_LIBRARY_PATH="$art${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TANDEM_SWIFT_MOUNTS="$art:$work${TANDEM_SWIFT_MOUNTS:+:$TANDEM_SWIFT_MOUNTS}"
# with-swift is in the workplace's shared tools, next to the repository, or at /work/shared when
# the repository is cloned elsewhere (as CI does); else a Swift on PATH.
with_swift=${TANDEM_WITH_SWIFT:-$repo/../shared/tools/with-swift}
[ -x "$with_swift" ] || with_swift=/work/shared/tools/with-swift
if [ ! -x "$with_swift" ] && command -v swift >/dev/null 2>&1; then with_swift=env; fi

echo "== building the Kotlin and Swift examples" >&2
mvn -q -B -Dstyle.color=never -f bindings/kotlin/pom.xml clean install -DskipTests >&2
(cd examples/kotlin && mvn -q -B -Dstyle.color=never compile >&2)
"$with_swift" swift build -q --package-path examples/swift/todo >&2

# TLS certificate, JWT secret and token, server on a free loopback port.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
  -out "$work/cert.pem" -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -addext basicConstraints=critical,CA:FALSE 2>/dev/null
openssl rand -hex 32 > "$work/secret"
token=$("$server_bin" --jwt-secret-file "$work/secret" --issue-token /todos)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server_bin" --listen "127.0.0.1:$port" --data-dir "$work/data" --tls-cert "$work/cert.pem" \
  --tls-key "$work/key.pem" --jwt-secret-file "$work/secret" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q listening "$work/server.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
grep -q listening "$work/server.log" || { echo "interop.sh: tandem-server did not start" >&2; exit 1; }

common=(--url "wss://localhost:$port/" --token "$token" --ca "$work/cert.pem")
python_todo() { python3 examples/python/todo.py --db "$work/python.sqlite" "${common[@]}" "$@"; }
kotlin_todo() {
  java -Djna.library.path="$art" -cp "examples/kotlin/target/classes:$(cat examples/kotlin/target/classpath.txt)" \
    dev.tandem.examples.TodoKt --db "$work/kotlin.sqlite" "${common[@]}" "$@"
}
swift_todo() { "$with_swift" "$repo/examples/swift/todo/.build/debug/TodoExample" --db "$work/swift.sqlite" "${common[@]}" "$@"; }

step() { printf '$ %s todo' "$1"; printf ' %q' "${@:2}"; echo; }

step python add "buy milk"
out=$(python_todo add "buy milk"); echo "$out"
id=$(sed -n 's/^\[ \] \([0-9]*\): buy milk$/\1/p' <<<"$out")
[ -n "$id" ] || { echo "interop.sh: FAIL: Python did not add the todo" >&2; exit 1; }

step kotlin list
out=$(kotlin_todo list); echo "$out"
[ "$out" = "[ ] $id: buy milk" ] || { echo "interop.sh: FAIL: Kotlin does not list the new todo" >&2; exit 1; }

step swift done "$id"
out=$(swift_todo done "$id"); echo "$out"
[ "$out" = "[x] $id: buy milk" ] || { echo "interop.sh: FAIL: Swift did not complete the todo" >&2; exit 1; }

step python list
out=$(python_todo list); echo "$out"
[ "$out" = "[x] $id: buy milk" ] || { echo "interop.sh: FAIL: Python does not see the todo done" >&2; exit 1; }

if [ -n "${TANDEM_TODO_RS:-}" ]; then
  step rust list
  out=$("$TANDEM_TODO_RS" --db "$work/rust.sqlite" "${common[@]}" list); echo "$out"
  [ "$out" = "[x] $id: buy milk" ] || { echo "interop.sh: FAIL: Rust does not see the todo done" >&2; exit 1; }
fi
echo "interop.sh: OK"
