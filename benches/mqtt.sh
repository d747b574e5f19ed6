#!/usr/bin/env bash
# tablecast's MQTT broker side by side with Mosquitto 2 (Debian), one after the other in one run,
# with examples/mqtt_bench.rs (rumqttc clients) on CLIENT_CPU and the broker on SERVER_CPU:
#   1. plain-topic relay to one subscriber: messages/s (publishers as fast as they can) and
#      publish-to-delivery p50/p99 at a fixed rate; QoS 0 and 1; 1 and 100 publishers;
#   2. fan-out: one publish to 10,000 subscribers, time to the last delivery;
#   3. a persistent session's 10,000 queued QoS 1 messages, drained on reconnect.
# Needs: taskset (util-linux), mosquitto (Debian package).   Usage: bash benches/mqtt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
MESSAGES=${MESSAGES:-100000} RATE=${RATE:-2000} SUBSCRIBERS=${SUBSCRIBERS:-10000} QUEUED=${QUEUED:-10000}
PORT=${PORT:-9955} MQTT_PORT=${MQTT_PORT:-9956} MOSQUITTO_PORT=${MOSQUITTO_PORT:-9957}
BROKERS=${BROKERS:-"tablecast mosquitto"}
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin tablecast --example mqtt_bench
bench() { taskset -c "$CLIENT_CPU" target/release/examples/mqtt_bench "$@"; }
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start() {
  case "$1" in
    tablecast)
      rm -rf "$work/data"
      RUST_LOG=warn taskset -c "$SERVER_CPU" target/release/tablecast serve --data "$work/data" \
        --http "127.0.0.1:$PORT" --mqtt "127.0.0.1:$MQTT_PORT" --max-subscribers 20000 \
        --max-connections 20000 --mqtt-max-queued "$QUEUED" > "$work/out" 2>"$work/err" &
      pid=$!
      until grep -q listening "$work/out" 2>/dev/null; do sleep 0.01; done
      address="127.0.0.1:$MQTT_PORT" ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages %s\nmax_connections -1\n' \
        "$MOSQUITTO_PORT" "$QUEUED" > "$work/mosquitto.conf"
      taskset -c "$SERVER_CPU" mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
      pid=$!
      sleep 0.5
      address="127.0.0.1:$MOSQUITTO_PORT" ;;
  esac
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')"
for broker in $BROKERS; do
  echo "-- $broker"
  start "$broker"
  for qos in 0 1; do
    for publishers in 1 100; do
      bench relay "$address" "$qos" "$publishers" "$MESSAGES"
      bench relay "$address" "$qos" "$publishers" $((RATE * 5)) "$RATE"
    done
  done
  bench drain "$address" "$QUEUED"
  bench fanout "$address" "$SUBSCRIBERS"
  stop
done
