#!/usr/bin/env bash
# Measures real-time delivery on this machine, with examples/realtime_probe.rs:
#   1. commit-to-delivery latency over WebSocket, SSE and MQTT: one subscriber each, 1,000 PUTs/s;
#   2. fan-out: one PUT delivered to 10,000 WebSocket subscribers of one record, and the server's
#      memory per subscriber;
#   3. MQTT relay latency through tablecast (a plain topic, and a retained publish that is a
#      durable record write) and through Mosquitto (the reference broker) in the same run.
# The server (tablecast, then Mosquitto) is pinned to SERVER_CPU, the probe to CLIENT_CPU.
# Needs: taskset (util-linux), mosquitto (Debian package).   Usage: bash benches/realtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
WRITES=${WRITES:-10000} RATE=${RATE:-1000} SUBSCRIBERS=${SUBSCRIBERS:-10000}
PORT=${PORT:-9945} MQTT_PORT=${MQTT_PORT:-9946} MOSQUITTO_PORT=${MOSQUITTO_PORT:-9947}
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin tablecast --example realtime_probe
bin=target/release/tablecast
probe() { taskset -c "$CLIENT_CPU" target/release/examples/realtime_probe "$@"; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

RUST_LOG=warn taskset -c "$SERVER_CPU" "$bin" serve --data "$work/data" --max-connections 20000 --max-subscribers 20000 \
  --http "127.0.0.1:$PORT" --mqtt "127.0.0.1:$MQTT_PORT" > "$work/tc.out" &
pids+=("$!")
server=$!
until grep -q listening "$work/tc.out" 2>/dev/null; do sleep 0.01; done
base="http://127.0.0.1:$PORT"

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== 1. delivery latency: $WRITES PUTs at $RATE/s, one subscriber per transport"
probe latency "$base" "127.0.0.1:$MQTT_PORT" "$WRITES" "$RATE"
echo "== 2. fan-out: one PUT to $SUBSCRIBERS WebSocket subscribers"
probe fanout "$base" "$SUBSCRIBERS" "$server"
echo "== 3. MQTT relay, QoS 1 publish -> QoS 0 subscriber, $WRITES messages at $RATE/s"
echo "-- tablecast"
probe mqtt "127.0.0.1:$MQTT_PORT" bench/relay "$WRITES" "$RATE"
probe mqtt "127.0.0.1:$MQTT_PORT" Product/900001 "$WRITES" "$RATE" retain
kill "$server"
echo "-- mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MOSQUITTO_PORT" > "$work/mosquitto.conf"
taskset -c "$SERVER_CPU" mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=("$!")
sleep 0.5
probe mqtt "127.0.0.1:$MOSQUITTO_PORT" bench/relay "$WRITES" "$RATE"
probe mqtt "127.0.0.1:$MOSQUITTO_PORT" Product/900001 "$WRITES" "$RATE" retain
