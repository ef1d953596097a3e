#!/usr/bin/env bash
# Soak run of the deterministic simulation (tests/sim/, docs/testing.md): seeds START ..
# START+COUNT-1 in chunks of CHUNK seeds, JOBS chunks at a time (default: one per core). Prints
# each failing chunk's report (seed, shrunk plan, trace) and the throughput in seeds per minute.
#
#   .ci/sim-soak.sh [COUNT [START]]      e.g. .ci/sim-soak.sh 10000 1000
#   SIM_FLEXIBLE=1 .ci/sim-soak.sh ...    the same with flexible sync plans (Shape::flexible)
#   SIM_REALM=1 .ci/sim-soak.sh ...       with the realm-core-style observer (Shape::realm; with SIM_FLEXIBLE=1 too)
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-1000}
start=${2:-0}
chunk=${CHUNK:-100}
jobs=${JOBS:-$(nproc)}

cargo test --features sim --test sim --no-run
logs=$(mktemp -d)
began=$SECONDS
seq "$start" "$chunk" $((start + count - 1)) | xargs -P "$jobs" -I{} sh -c '
  n=$(( '"$start"' + '"$count"' - {} ))
  [ "$n" -gt '"$chunk"' ] && n='"$chunk"'
  if SIM_SEED_START={} SIM_SEEDS=$n cargo test -q --features sim --test sim -- \
       --exact seeds_converge_under_faults > '"$logs"'/{}.log 2>&1; then
    echo "seeds {}..$(( {} + n - 1 )): ok"
  else
    echo "seeds {}..$(( {} + n - 1 )): FAILED (report in '"$logs"'/{}.log)"
  fi' | tee "$logs/summary"
took=$((SECONDS - began))
failed=$(grep -c FAILED "$logs/summary" || true)
echo "sim-soak: $count seeds from $start in $took s with $jobs jobs" \
     "($(( count * 60 / (took > 0 ? took : 1) )) seeds/minute), $failed failing chunk(s)"
for f in $(grep FAILED "$logs/summary" | sed 's/.*report in \(.*\))/\1/'); do
  echo "=== $f"; grep -v '^   \|^stack\|^note' "$f" | head -150
done
[ "$failed" -eq 0 ]
