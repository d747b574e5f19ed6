#!/usr/bin/env bash
# tablecast at another revision (BASE) against the working tree, in one run: what a change costs.
#
# Both release builds serve the example schemas in turn, pinned to SERVER_CPU, for ROUNDS rounds
# that alternate base and head (so drift on a shared machine hits both); the working tree's
# examples/loadgen.rs drives each scenario from CLIENT_CPU, and its cache table's origin
# (examples/origin.rs, 20 ms) runs there too. Prints, per scenario, the mean req/s of each side
# with its spread (lowest-highest) and the ratio head/base. Then each side serves once more under
# valgrind's callgrind, which counts the instructions of every request: a figure that repeats from
# run to run where req/s on a shared machine moves by a few percent (INSTRUCTIONS=0 skips it).
# Usage: bash benches/ab.sh [BASE]     (BASE defaults to HEAD; SCENARIOS, ROUNDS, DURATION adjustable)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-HEAD}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64} RECORDS=${RECORDS:-10000}
SCENARIOS=${SCENARIOS:-get-hit put cache-hit query} INSTRUCTIONS=${INSTRUCTIONS:-1}
PORT=${PORT:-9961} ORIGIN_PORT=${ORIGIN_PORT:-9964}
# The base's build is kept between runs: a second run against the same BASE builds nothing.
BASE_TARGET=${BASE_TARGET:-/var/tmp/tablecast-ab-base}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  git worktree remove --force "$work/base" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

git worktree add --detach "$work/base" "$BASE" >/dev/null
(cd "$work/base" && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release --quiet --bin tablecast)
cargo build --release --quiet --bin tablecast --example loadgen --example origin
declare -A server=([base]=$BASE_TARGET/release/tablecast [head]=target/release/tablecast)

mkdir "$work/schemas"
cp schemas/*.json "$work/schemas/"
sed -i -e 's/"expiration": "60s"/"expiration": "1h"/' -e "s#127.0.0.1:9930#127.0.0.1:$ORIGIN_PORT#" "$work/schemas/Quote.json"
start() { # start CPU OUTPUT_FILE COMMAND... ; returns once the process prints that it listens
  local cpu=$1 out=$2; shift 2
  RUST_LOG=warn taskset -c "$cpu" "$@" > "$out" &
  pids+=("$!")
  until grep -q listening "$out" 2>/dev/null; do sleep 0.01; done
}
load() { # load LABEL SCENARIO [loadgen options...]
  local label=$1 scenario=$2; shift 2
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --label "$label" --url "http://127.0.0.1:$PORT" \
    --scenario "$scenario" --records "$RECORDS" --cache-table Quote "$@"
}
serve() { # serve SIDE [WRAPPER...] ; a fresh data directory
  local side=$1; shift
  rm -rf "$work/data"
  start "$SERVER_CPU" "$work/$side.out" "$@" "${server[$side]}" serve --schemas "$work/schemas" \
    --data "$work/data" --http "127.0.0.1:$PORT" --mqtt off
  load "$side" seed --connections 16 --duration 600s > /dev/null
  load "$side" warm --connections 16 --duration 600s > /dev/null
}
stop() {
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
}

echo "== $(nproc) CPUs; server on CPU $SERVER_CPU, load on CPU $CLIENT_CPU; base $(git rev-parse --short "$BASE"), head the working tree"
start "$CLIENT_CPU" "$work/origin.out" target/release/examples/origin "127.0.0.1:$ORIGIN_PORT" 20ms
for round in $(seq "$ROUNDS"); do
  for side in base head; do
    serve "$side"
    for scenario in $SCENARIOS; do
      load "$side" "$scenario" --connections "$CONNECTIONS" --duration "$DURATION" --json "$work/results.jsonl"
    done
    stop
  done
done
if [ "$INSTRUCTIONS" = 1 ]; then
  echo "== instructions per request, counted by callgrind (the server is about 50 times slower under it)"
  RECORDS=1000
  for side in base head; do
    serve "$side" valgrind --quiet --tool=callgrind --callgrind-out-file="$work/$side.cg.%p"
    # /usr/bin/valgrind starts the tool as a child: callgrind_control wants the tool's pid.
    valgrind=$(pgrep -f -- "--callgrind-out-file=$work/$side.cg" | tail -n 1)
    for scenario in $SCENARIOS; do
      load "$side" "$scenario" --connections 4 --duration 3s > /dev/null
      callgrind_control --zero "$valgrind" > /dev/null 2>&1
      load "$side" "$scenario" --connections 4 --duration "$DURATION" --json "$work/counted.jsonl" > /dev/null
      callgrind_control --dump="$scenario" "$valgrind" > /dev/null 2>&1
      until grep -qs "^desc: Trigger: dump $scenario\$" "$work/$side".cg.*; do sleep 0.2; done
      dump=$(grep -ls "^desc: Trigger: dump $scenario\$" "$work/$side".cg.*)
      echo "$side $scenario $(grep -m1 '^summary:' "$dump" | cut -d' ' -f2)" >> "$work/instructions"
    done
    stop
  done
fi

python3 - "$work" <<'EOF'
import json, os, sys
work = sys.argv[1]
runs = {}
for line in open(f"{work}/results.jsonl") if os.path.exists(f"{work}/results.jsonl") else []:
    r = json.loads(line)
    runs.setdefault(r["scenario"], {}).setdefault(r["server"], []).append(r["rps"])
if runs:
    print("\n| scenario | base req/s (spread) | head req/s (spread) | head / base |")
    print("| --- | --- | --- | --- |")
for scenario, sides in runs.items():
    mean = {side: sum(v) / len(v) for side, v in sides.items()}
    cell = lambda side: f"{mean[side]:,.0f} ({min(sides[side]):,.0f}-{max(sides[side]):,.0f})"
    print(f"| {scenario} | {cell('base')} | {cell('head')} | {mean['head'] / mean['base']:.2f} |")
if os.path.exists(f"{work}/instructions"):
    requests = {}
    for line in open(f"{work}/counted.jsonl"):
        r = json.loads(line)
        requests[(r["server"], r["scenario"])] = r["requests"]
    per = {}
    for line in open(f"{work}/instructions"):
        side, scenario, count = line.split()
        per.setdefault(scenario, {})[side] = int(count) / requests[(side, scenario)]
    print("\n| scenario | base instructions/request | head instructions/request | head / base |")
    print("| --- | --- | --- | --- |")
    for scenario, sides in per.items():
        print(f"| {scenario} | {sides['base']:,.0f} | {sides['head']:,.0f} | {sides['head'] / sides['base']:.3f} |")
EOF
