#!/usr/bin/env bash
# tablecast side by side with Harper and with this machine's ceiling, in one run.
#
# Each server in turn is pinned to SERVER_CPU; the load generator (examples/loadgen.rs) runs on
# CLIENT_CPU with CONNECTIONS keep-alive connections for DURATION per scenario:
#   tablecast  release build, the example schemas, its cache table's origin (examples/origin.rs,
#              20 ms) on CLIENT_CPU; guarded by an access file, every request with Basic auth as
#              Harper's are (TC_AUTH=0 runs it open, without credentials);
#   ceiling    examples/ceiling.rs, a minimal axum server answering a constant body from memory;
#   Harper     ../shared/peers/harper/run-harper.sh, 1 worker thread, its tables Product and
#              CachedQuote, its origin (20 ms).
# Prints one Markdown table (absolute figures, tablecast/Harper and tablecast/ceiling ratios) and
# draws it as docs/bench/compare.png (matplotlib, installed with apt if missing).
# Usage: bash benches/compare.sh     (HARPER=0 skips Harper; SCENARIOS, DURATION, RECORDS adjustable)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64} RECORDS=${RECORDS:-10000}
SCENARIOS=${SCENARIOS:-get-hit get-hit-zipf put mixed query cache-hit cache-miss notify-ws notify-mqtt}
PORT=${PORT:-9951} MQTT_PORT=${MQTT_PORT:-9952} CEILING_PORT=${CEILING_PORT:-9953}
ORIGIN_PORT=${ORIGIN_PORT:-9954} HARPER_PORT=${HARPER_PORT:-9956} HARPER_MQTT_PORT=${HARPER_MQTT_PORT:-9957}
TC_AUTH=${TC_AUTH:-1} HARPER=${HARPER:-1} HARPER_DIR=${HARPER_DIR:-../shared/peers/harper} HARPER_AUTH=${HARPER_AUTH:-admin:password}
OUT=${OUT:-docs/bench}

cargo build --release --quiet --bin tablecast --example loadgen --example ceiling --example origin
work=$(mktemp -d)
results="$work/results.jsonl"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "$HARPER" = 1 ] && bash "$HARPER_DIR/run-harper.sh" stop --data-dir "$work/harper" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
start() { # start CPU OUTPUT_FILE COMMAND... ; returns once the process prints that it listens
  local cpu=$1 out=$2; shift 2
  RUST_LOG=warn taskset -c "$cpu" "$@" > "$out" &
  pids+=("$!")
  until grep -q listening "$out" 2>/dev/null; do sleep 0.01; done
}
load() { # load LABEL URL SCENARIO [loadgen options...]
  local label=$1 url=$2 scenario=$3; shift 3
  local args=(--scenario "$scenario")
  [ "$scenario" = get-hit-zipf ] && args=(--scenario get-hit --keys zipf)
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --label "$label" --url "$url" \
    --connections "$CONNECTIONS" --duration "$DURATION" --records "$RECORDS" --json "$results" \
    "${args[@]}" "$@" || echo "   ($label $scenario had errors)"
}
wants() { case " $SCENARIOS " in *" $1 "*) return 0;; *) return 1;; esac; }

echo "== $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); server on CPU $SERVER_CPU, load on CPU $CLIENT_CPU"

echo "== tablecast"
mkdir "$work/schemas"
cp schemas/*.json "$work/schemas/"
sed -i -e 's/"expiration": "60s"/"expiration": "1h"/' -e "s#127.0.0.1:9930#127.0.0.1:$ORIGIN_PORT#" "$work/schemas/Quote.json"
guard=() tc_auth=()
if [ "$TC_AUTH" = 1 ]; then
  # The same user and password Harper's admin has, an argon2id hash, and the admin role.
  hash=$(printf '%s' "${HARPER_AUTH#*:}" | target/release/tablecast passwd)
  printf '{ "users": { "%s": { "password": "%s", "roles": ["admin"] } },\n  "roles": { "admin": { "admin": true } } }\n' \
    "${HARPER_AUTH%%:*}" "$hash" > "$work/access.json"
  guard=(--access "$work/access.json") tc_auth=(--auth "$HARPER_AUTH")
fi
start "$CLIENT_CPU" "$work/origin.out" target/release/examples/origin "127.0.0.1:$ORIGIN_PORT" 20ms
start "$SERVER_CPU" "$work/tc.out" target/release/tablecast serve --schemas "$work/schemas" \
  --data "$work/tc-data" --http "127.0.0.1:$PORT" --mqtt "127.0.0.1:$MQTT_PORT" "${guard[@]}"
tc="http://127.0.0.1:$PORT"
load tablecast "$tc" seed --duration 300s --connections 16 "${tc_auth[@]}"
load tablecast "$tc" warm --duration 300s --cache-table Quote "${tc_auth[@]}"
for s in $SCENARIOS; do
  load tablecast "$tc" "$s" --cache-table Quote --mqtt "127.0.0.1:$MQTT_PORT" "${tc_auth[@]}"
done
kill "${pids[-1]}"

echo "== ceiling (examples/ceiling.rs)"
start "$SERVER_CPU" "$work/ceiling.out" target/release/examples/ceiling "127.0.0.1:$CEILING_PORT"
for s in get-hit get-hit-zipf cache-hit; do
  wants "$s" && load ceiling "http://127.0.0.1:$CEILING_PORT" "$s"
done
kill "${pids[-1]}"

if [ "$HARPER" = 1 ]; then
  echo "== Harper (1 worker thread)"
  eval "$(bash "$HARPER_DIR/run-harper.sh" start --threads 1 --cpus "$SERVER_CPU" --data-dir "$work/harper" \
    --http-port "$HARPER_PORT" --ops-port $((HARPER_PORT - 1)) --mqtt-port "$HARPER_MQTT_PORT" \
    --mqtts-port $((HARPER_MQTT_PORT + 10)) --repl-port $((HARPER_PORT + 10)) \
    --origin-port $((ORIGIN_PORT + 10)) | grep -E '^(HARPER_PID|ORIGIN_PID|BASE_URL)=')"
  echo "   Harper pid $HARPER_PID at $BASE_URL"
  load harper "$BASE_URL" seed --duration 300s --connections 16 --auth "$HARPER_AUTH"
  load harper "$BASE_URL" warm --duration 300s --cache-table CachedQuote --auth "$HARPER_AUTH"
  for s in $SCENARIOS; do
    load harper "$BASE_URL" "$s" --cache-table CachedQuote --auth "$HARPER_AUTH" --mqtt "127.0.0.1:$HARPER_MQTT_PORT"
  done
fi

mkdir -p "$OUT"
cp "$results" "$OUT/compare.jsonl"
# Debian's python3 with its matplotlib (a python3 earlier on PATH, e.g. pyenv's, may lack it).
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null ||
  { apt-get update -qq && apt-get install -y -qq python3-matplotlib >/dev/null; }
/usr/bin/python3 benches/compare_report.py "$results" "$OUT/compare.png"
