#!/usr/bin/env bash
# Measures cache tables on this machine, in one run so the ratios are fair:
#   cache-hit GET (/Quote/<id>, every entry fresh) against plain-table GET (/Product/<id>), the
#   same number of records, alternating rounds; then, with examples/cache_probe.rs, the latency a
#   miss adds to the origin's own and the origin requests caused by a stampede on one cold id.
# The server is pinned to SERVER_CPU; wrk and the example origin (20 ms per answer) to CLIENT_CPU.
# Needs: wrk, taskset (util-linux).   Usage: bash benches/cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64} RECORDS=${RECORDS:-10000}
ROUNDS=${ROUNDS:-2} PORT=${PORT:-9943} ORIGIN_PORT=${ORIGIN_PORT:-9944} ORIGIN_DELAY=${ORIGIN_DELAY:-20ms}
export RECORDS

cargo build --release --quiet --bin tablecast --example origin --example seed --example cache_probe
bin=target/release/tablecast
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wrk_run() { # wrk_run SCRIPT URL -> "req/s p50 p99 non2xx"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$1" "$2" > "$work/wrk.out"
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {err=$4}
       END {printf "%s %s %s %s\n", rps, p50, p99, (err == "" ? 0 : err)}' "$work/wrk.out"
}
start() { # start CPU OUTPUT_FILE COMMAND... ; returns once the process prints that it listens
  local cpu=$1 out=$2; shift 2
  RUST_LOG=warn taskset -c "$cpu" "$@" > "$out" &
  pids+=("$!")
  until grep -q listening "$out" 2>/dev/null; do sleep 0.01; done
}

# The example schemas, with entries fresh for the whole run and the origin on ORIGIN_PORT.
mkdir "$work/schemas"
cp schemas/*.json "$work/schemas/"
sed -i -e 's/"expiration": "60s"/"expiration": "1h"/' \
       -e "s#127.0.0.1:9930#127.0.0.1:$ORIGIN_PORT#" "$work/schemas/Quote.json"

start "$CLIENT_CPU" "$work/origin.out" target/release/examples/origin "127.0.0.1:$ORIGIN_PORT" "$ORIGIN_DELAY"
start "$SERVER_CPU" "$work/tc.out" "$bin" serve --schemas "$work/schemas" --data "$work/data" --http "127.0.0.1:$PORT"
base="http://127.0.0.1:$PORT"
taskset -c "$CLIENT_CPU" target/release/examples/seed "$base" "$RECORDS" "$CONNECTIONS" > /dev/null
seq -f 'S%.0f' 1 "$RECORDS" > "$work/ids"
"$bin" warm --table Quote --ids "$work/ids" --url "$base" --batch 500 2>&1 | tail -2

echo "| round | plain GET req/s | p50 / p99 | cache-hit GET req/s | p50 / p99 | hit / plain |"
echo "| --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  read -r plain_rps plain_p50 plain_p99 plain_err < <(wrk_run benches/wrk/get.lua "$base")
  read -r hit_rps hit_p50 hit_p99 hit_err < <(wrk_run benches/wrk/quote.lua "$base")
  if [ "$plain_err" != 0 ] || [ "$hit_err" != 0 ]; then echo "non-2xx answers: $plain_err, $hit_err"; exit 1; fi
  echo "| $round | $plain_rps | $plain_p50 / $plain_p99 | $hit_rps | $hit_p50 / $hit_p99 | $(python3 -c "print(f'{$hit_rps / $plain_rps:.2f}')") |"
done
echo
taskset -c "$CLIENT_CPU" target/release/examples/cache_probe "$base" "http://127.0.0.1:$ORIGIN_PORT" 200 1000
