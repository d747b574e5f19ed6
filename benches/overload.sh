#!/usr/bin/env bash
# Overload: far more than the server can serve, for DURATION (60 s), with large and small
# bodies mixed; then the same light load as before it. Server (release build, example
# schemas, --max-connections 512, --body-memory 64MiB) on SERVER_CPU, load on CLIENT_CPU:
#   - 1,024 closed-loop connections of mixed GET/PUT (examples/loadgen.rs): twice the
#     connection limit, so about half are refused with 503 as they connect;
#   - 64 connections PUTting 1 MiB bodies (the --max-body limit, so some are 413) as fast as
#     they can, and 200 connections that each send half a 1 MiB body and stall;
# then prints peak RSS (VmHWM), every status answered, and the light load's req/s before and
# after (their ratio should be about 1: the server serves normally once the load ends). A
# BrokenPipeError is a body the server refused (413, 503) and closed on before it was all sent;
# the 1 MiB Products break the schema's maxLength, so those that are read whole are 422.
# Usage: bash benches/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0} DURATION=${DURATION:-60} PORT=${PORT:-9971}
cargo build --release --quiet --bin tablecast --example loadgen
work=$(mktemp -d)
cleanup() { kill "${server:-}" "${attackers:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" target/release/tablecast serve --schemas schemas --data "$work/data" \
  --http "127.0.0.1:$PORT" --mqtt off --max-connections 512 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "localhost:$PORT/_health" >/dev/null && break; sleep 0.1; done
load() { # label connections seconds
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --url "http://127.0.0.1:$PORT" \
    --scenario mixed --records 10000 --connections "$2" --duration "$3s" --label "$1" \
    --json "$work/results.jsonl" >/dev/null 2>&1 || true
}
taskset -c "$CLIENT_CPU" target/release/examples/loadgen --url "http://127.0.0.1:$PORT" \
  --scenario seed --records 10000 --connections 16 >/dev/null
load before 16 10

taskset -c "$CLIENT_CPU" python3 - "$PORT" "$DURATION" >"$work/attackers.json" 2>"$work/attackers.log" <<'PY' &
import json, socket, sys, threading, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + duration
counts, lock = {}, threading.Lock()
def count(key):
    with lock:
        counts[key] = counts.get(key, 0) + 1
def status(sock):
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return "closed"
        data += chunk
    return data.split(b" ")[1].decode()
def large(n):
    body = json.dumps({"name": "x" * (1024 * 1024 - 40 + n % 80), "price": 1}).encode()
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"PUT /Product/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (900000 + n, len(body)) + body)
                count(status(sock))
        except OSError as error:
            count(type(error).__name__)
def stalled(n):
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(b"PUT /Product/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1048576\r\n\r\n" % (800000 + n) + b" " * 524288)
                count("stalled:" + status(sock))
        except OSError as error:
            count("stalled:" + type(error).__name__)
threads = [threading.Thread(target=large, args=(n,)) for n in range(64)]
threads += [threading.Thread(target=stalled, args=(n,)) for n in range(200)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
PY
attackers=$!
load overload 1024 "$DURATION"
wait "$attackers"; attackers=
peak=$(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$server/status")
sleep 2
health=$(curl -s -o /dev/null -w '%{http_code}' "localhost:$PORT/_health")
load after 16 10
python3 - "$work/results.jsonl" "$work/attackers.json" "$peak" "$health" <<'PY'
import json, sys
runs = {r["server"]: r for r in map(json.loads, open(sys.argv[1]))}
attackers = json.load(open(sys.argv[2]))
before, overload, after = runs["before"], runs["overload"], runs["after"]
print(f"peak RSS {sys.argv[3]}; /_health after: {sys.argv[4]}")
print(f"overload, 1,024 connections: {overload['rps']:.0f} req/s served, refused by status {overload['refused']}, other errors {overload['errors'] - sum(overload['refused'].values())}")
print(f"large and stalled bodies, by answer: {attackers}")
print(f"light load (16 connections) before {before['rps']:.0f} req/s, after {after['rps']:.0f} req/s: ratio {after['rps'] / before['rps']:.2f}")
PY
