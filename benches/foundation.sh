#!/usr/bin/env bash
# Measures tablecast's foundation on this machine, all in one run so the ratios are fair:
#   GET by id (64 connections, 100k-record table), durable PUT (64 connections), idle RSS, RSS with
#   the table loaded, start-up time; and the same GET against a minimal axum handler answering a
#   constant 200-byte body (examples/ceiling.rs): the ceiling of this HTTP stack here.
# The servers are pinned to SERVER_CPU and wrk to CLIENT_CPU (taskset).
# Needs: wrk, python3, taskset (util-linux).   Usage: bash benches/foundation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64} RECORDS=${RECORDS:-100000}
PORT=${PORT:-9941} CEILING_PORT=${CEILING_PORT:-9942}
export RECORDS

cargo build --release --quiet --bin tablecast --example ceiling --example seed
bin=target/release/tablecast
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
wrk_run() { # wrk_run SCRIPT URL -> "req/s p50 p99"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$1" "$2" > "$work/wrk.out"
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {err=$4}
       END {printf "%s %s %s %s\n", rps, p50, p99, (err == "" ? 0 : err)}' "$work/wrk.out"
}
start() { # start OUTPUT_FILE COMMAND... ; sets $pid once the server prints that it listens
  local out=$1; shift
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$@" > "$out" &
  pid=$!
  pids+=("$pid")
  until grep -q listening "$out" 2>/dev/null; do sleep 0.01; done
}

echo "start-up (empty data directory), ms: $(python3 benches/startup.py "http://127.0.0.1:$PORT/_health" taskset -c "$SERVER_CPU" "$bin" serve --data "$work/startup" --http "127.0.0.1:$PORT")"
start "$work/tc.out" "$bin" serve --data "$work/data" --http "127.0.0.1:$PORT"
sleep 0.5
idle=$(rss_mib "$pid")
seeded=$(taskset -c "$CLIENT_CPU" target/release/examples/seed "http://127.0.0.1:$PORT" "$RECORDS" "$CONNECTIONS")
loaded=$(rss_mib "$pid")
read -r get_rps get_p50 get_p99 get_err < <(wrk_run benches/wrk/get.lua "http://127.0.0.1:$PORT")
after_get=$(rss_mib "$pid")
read -r put_rps put_p50 put_p99 put_err < <(wrk_run benches/wrk/put.lua "http://127.0.0.1:$PORT")
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "start-up ($RECORDS records), ms: $(python3 benches/startup.py "http://127.0.0.1:$PORT/_health" taskset -c "$SERVER_CPU" "$bin" serve --data "$work/data" --http "127.0.0.1:$PORT")"

start "$work/ceiling.out" target/release/examples/ceiling "127.0.0.1:$CEILING_PORT"
read -r ceil_rps ceil_p50 ceil_p99 ceil_err < <(wrk_run benches/wrk/get.lua "http://127.0.0.1:$CEILING_PORT")

echo "$seeded"
echo
echo "| measure | tablecast | ceiling (axum, constant body) | tablecast / ceiling |"
echo "| --- | --- | --- | --- |"
echo "| GET by id, req/s ($CONNECTIONS conns, $RECORDS records) | $get_rps | $ceil_rps | $(python3 -c "print(f'{$get_rps / $ceil_rps:.2f}')") |"
echo "| GET p50 / p99 | $get_p50 / $get_p99 | $ceil_p50 / $ceil_p99 | |"
echo "| durable PUT, req/s ($CONNECTIONS conns) | $put_rps | | |"
echo "| PUT p50 / p99 | $put_p50 / $put_p99 | | |"
echo "| non-2xx answers (GET, PUT, ceiling) | $get_err, $put_err, $ceil_err | | |"
echo "| RSS idle / $RECORDS records loaded / after GET load, MiB | $idle / $loaded / $after_get | | |"
