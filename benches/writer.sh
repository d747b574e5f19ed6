#!/usr/bin/env bash
# Does one client's large writes stall everyone else's? Small durable PUTs (examples/loadgen.rs,
# scenario put, CONNECTIONS connections) run alone, then while an attacker sends RATE large
# PUTs a second, in turn: two ~900 KB Products with 990 distinct indexed tags each (within the
# default --max-index-entries) and one with 60,000 tags (refused with 422 since
# --max-index-entries). Prints the small PUTs' req/s and p99 in both runs and their ratios.
# Server on SERVER_CPU, load and attacker on CLIENT_CPU: the server's one core is shared by
# everything it does, so at a high RATE the attacker's share of the CPU is what is measured.
# Usage: bash benches/writer.sh      (BIN=path/to/tablecast measures another build)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-16} PORT=${PORT:-9961} RATE=${RATE:-5}
cargo build --release --quiet --bin tablecast --example loadgen
BIN=${BIN:-target/release/tablecast}
work=$(mktemp -d)
cleanup() { kill "${server:-}" "${attacker:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c "$SERVER_CPU" "$BIN" serve --schemas schemas --data "$work/data" \
  --http "127.0.0.1:$PORT" --mqtt off >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "localhost:$PORT/_health" >/dev/null && break; sleep 0.1; done

small() {
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --url "http://127.0.0.1:$PORT" \
    --scenario put --connections "$CONNECTIONS" --duration "$DURATION" --label "$1" \
    --json "$work/results.jsonl" >/dev/null
}

small alone
taskset -c "$CLIENT_CPU" python3 - "$PORT" "$RATE" >"$work/attacker.log" 2>&1 <<'EOF' &
import http.client, json, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
def body(n, tags, width):
    return json.dumps({"name": f"large {n}", "price": 1,
                       "tags": [f"{n}-{i}-" + "t" * width for i in range(tags)]})
large = [body(n, 990, 880) for n in (1, 2)]
flood = body(3, 60000, 1)
connection = http.client.HTTPConnection("127.0.0.1", port)
counts = {}
while True:
    for path, payload in (("/Product/900001", large[0]), ("/Product/900002", large[1]),
                          ("/Product/900003", flood)):
        connection.request("PUT", path, payload, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        counts[response.status] = counts.get(response.status, 0) + 1
        print(counts, flush=True)
        time.sleep(1 / rate)
EOF
attacker=$!
sleep 1
small attacked
kill "$attacker"; attacker=
echo "attacker's answers: $(tail -1 "$work/attacker.log")"
python3 - "$work/results.jsonl" <<'EOF'
import json, sys
runs = {r["server"]: r for r in map(json.loads, open(sys.argv[1]))}
alone, attacked = runs["alone"], runs["attacked"]
print("| small PUTs | req/s | p99 ms |")
print("| --- | ---: | ---: |")
for name, run in (("alone", alone), ("during large writes", attacked)):
    print(f"| {name} | {run['rps']:.0f} | {run['p99_ms']:.2f} |")
print(f"| ratio | {attacked['rps'] / alone['rps']:.2f} | {attacked['p99_ms'] / alone['p99_ms']:.2f} |")
EOF
