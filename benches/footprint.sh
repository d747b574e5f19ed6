#!/usr/bin/env bash
# Memory and start-up of tablecast beside Harper, in one run (server on SERVER_CPU, loader on
# CLIENT_CPU):
#   start-up  process start -> first request answered (benches/startup.py), with an empty data
#             directory and again with RECORDS products stored;
#   RSS       at rest after start, after loading RECORDS products, and at rest after a restart
#             with them: VmRSS and its anonymous part (Harper's VmRSS includes the LMDB pages it
#             maps from its files).
# tablecast is loaded with durable PUTs (examples/loadgen.rs, 64 connections); Harper with its
# bulk `upsert` operation, 1,000 records per request (benches/harper_load.py), the same records.
# Usage: bash benches/footprint.sh      (RECORDS=1000000 by default; HARPER=0 skips Harper)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0} RECORDS=${RECORDS:-1000000}
PORT=${PORT:-9981} HARPER=${HARPER:-1} HARPER_DIR=${HARPER_DIR:-../shared/peers/harper}
HARPER_PORT=${HARPER_PORT:-9986} HARPER_AUTH=${HARPER_AUTH:-admin:password}

cargo build --release --quiet --bin tablecast --example loadgen
work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ "$HARPER" = 1 ] && bash "$HARPER_DIR/run-harper.sh" stop --data-dir "$work/harper" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
rss() { awk '/^VmRSS/ {t = $2} /^RssAnon/ {a = $2} END {printf "%.0f MiB (anonymous %.0f)", t / 1024, a / 1024}' "/proc/$1/status"; }
stop() { kill "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }
seconds() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.1f} s')" "$@"; }
declare -A tc harper

echo "== tablecast"
tc_start() { # prints "ms pid"
  RUST_LOG=warn python3 benches/startup.py --keep "http://127.0.0.1:$PORT/_health" \
    taskset -c "$SERVER_CPU" target/release/tablecast serve --schemas schemas --data "$work/tc" \
    --http "127.0.0.1:$PORT" --mqtt off
}
read -r ms server < <(tc_start)
tc[start_empty]="$ms ms"
sleep 2
tc[rss_idle]=$(rss "$server")
t0=$(date +%s%N)
taskset -c "$CLIENT_CPU" target/release/examples/loadgen --url "http://127.0.0.1:$PORT" --scenario seed \
  --records "$RECORDS" --connections 64 --duration 3600s
tc[load]="$(seconds "$t0" "$(date +%s%N)") (durable PUTs)"
sleep 2
tc[rss_loaded]=$(rss "$server")
stop "$server"
read -r ms server < <(tc_start)
tc[start_loaded]="$ms ms"
sleep 2
tc[rss_restarted]=$(rss "$server")
stop "$server"
# sled replays the log written since its last snapshot on the first start after the load only.
read -r ms server < <(tc_start)
tc[start_again]="$ms ms"
stop "$server"
server=

if [ "$HARPER" = 1 ]; then
  echo "== Harper (1 worker thread)"
  harper_start() { # prints "ms pid": start-up counts from the launcher (run-harper.sh) to the first answer
    python3 benches/startup.py --keep --auth "$HARPER_AUTH" "http://127.0.0.1:$HARPER_PORT/Product/?limit(1)" \
      bash "$HARPER_DIR/run-harper.sh" start --threads 1 --cpus "$SERVER_CPU" --data-dir "$work/harper" \
      --http-port "$HARPER_PORT" --ops-port $((HARPER_PORT - 1)) --mqtt-port $((HARPER_PORT + 1)) \
      --mqtts-port $((HARPER_PORT + 2)) --repl-port $((HARPER_PORT + 3)) --origin-port $((HARPER_PORT + 4))
  }
  harper_pid() { # the node process, once the launcher has written it
    until [ -s "$work/harper/run/harper.pid" ]; do sleep 0.05; done
    cat "$work/harper/run/harper.pid"
  }
  read -r ms _ < <(harper_start)
  harper[start_empty]="$ms ms"
  sleep 5 # the launcher returns once Harper answers; let it settle as tablecast did
  pid=$(harper_pid)
  harper[rss_idle]=$(rss "$pid")
  t0=$(date +%s%N)
  taskset -c "$CLIENT_CPU" python3 benches/harper_load.py "http://127.0.0.1:$((HARPER_PORT - 1))" "$HARPER_AUTH" "$RECORDS"
  harper[load]="$(seconds "$t0" "$(date +%s%N)") (bulk upsert)"
  sleep 2
  harper[rss_loaded]=$(rss "$pid")
  bash "$HARPER_DIR/run-harper.sh" stop --data-dir "$work/harper" >/dev/null
  read -r ms _ < <(harper_start)
  harper[start_loaded]="$ms ms"
  sleep 5
  harper[rss_restarted]=$(rss "$(harper_pid)")
  bash "$HARPER_DIR/run-harper.sh" stop --data-dir "$work/harper" >/dev/null
  read -r ms _ < <(harper_start)
  harper[start_again]="$ms ms"
fi

echo
echo "| measure ($RECORDS products) | tablecast | Harper |"
echo "| --- | --- | --- |"
for m in "start-up, empty:start_empty" "RSS at rest:rss_idle" "loading:load" "RSS after loading:rss_loaded" \
  "start-up with the records:start_loaded" "RSS at rest after the restart:rss_restarted" \
  "start-up once more:start_again"; do
  echo "| ${m%%:*} | ${tc[${m#*:}]} | ${harper[${m#*:}]:-not run} |"
done
