#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the tests that need one (tests/postgres.rs) and prints
# its URL. Idempotent: a cluster already running in the directory is reused.
#
#   TANDEM_TEST_POSTGRES=$(tests/postgres/start.sh)   # then cargo test --all-features
#
# Needs PostgreSQL's server binaries (Debian: apt-get install postgresql; .ci/run installs
# them). The cluster lives in $TANDEM_PG_DIR (default /tmp/tandem-postgres), listens on
# 127.0.0.1:$TANDEM_PG_PORT (default 55432) and trusts local connections: for tests only.
# Run as root, the cluster is owned by the `postgres` user (initdb refuses root).
set -euo pipefail
dir=${TANDEM_PG_DIR:-/tmp/tandem-postgres}
port=${TANDEM_PG_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "tests/postgres/start.sh: PostgreSQL's server binaries are not installed (apt-get install postgresql)" >&2
  exit 1
fi
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
url="postgres://tandem@127.0.0.1:$port/tandem"
if [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  echo "$url"
  exit 0
fi
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then
  chown postgres "$dir"
fi
if [ ! -f "$dir/data/PG_VERSION" ]; then
  as_owner "$bin/initdb" -D "$dir/data" -U tandem --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
fi
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U tandem tandem 2>/dev/null || true
echo "$url"
