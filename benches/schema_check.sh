#!/usr/bin/env bash
# What checking stored records against a changed schema costs a start, against a start whose
# schema did not change (the baseline, measured in the same run), and what `tablecast check`
# takes over the same records.
#
# Seeds RECORDS products with the load generator, then times (median of ROUNDS) from exec to
# the "listening" line: with the schema unchanged (no record read), and right after the schema
# file gained an optional property (every record validated once; the next start skips again).
# Usage: bash benches/schema_check.sh      (RECORDS, ROUNDS, PORT adjustable)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-100000} ROUNDS=${ROUNDS:-5} PORT=${PORT:-9971}
cargo build --release --quiet --bin tablecast --example loadgen
bin=target/release/tablecast

work=$(mktemp -d)
cleanup() {
  [ -s "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cp -r schemas "$work/schemas"

serve() { # serve: starts the server, returns once it listens; prints the ms it took
  local started out=$work/out server
  started=$(date +%s%N)
  "$bin" serve --schemas "$work/schemas" --data "$work/data" --http 127.0.0.1:$PORT --mqtt off \
    >"$out" 2>"$work/err" &
  server=$!
  echo "$server" >"$work/pid"
  until grep -q listening "$out" 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
    sleep 0.002
  done
  echo $((($(date +%s%N) - started) / 1000000))
}
stop() { # stop: SIGTERM, and waits until it has exited (it is not this shell's child)
  local server
  server=$(cat "$work/pid")
  kill -TERM "$server"
  while kill -0 "$server" 2>/dev/null; do sleep 0.01; done
  : >"$work/pid"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: "$(serve)"  # in a subshell, as below: the server is then no child of this shell
target/release/examples/loadgen --url "http://127.0.0.1:$PORT" --scenario seed \
  --records "$RECORDS" --connections 16 --duration 600s >/dev/null
stop

unchanged=() changed=()
for round in $(seq "$ROUNDS"); do
  unchanged+=("$(serve)"); stop
  # A new optional property each round: a changed document, which every record meets.
  python3 - "$work/schemas/Product.json" "$round" <<'EOF'
import json, sys
path, round = sys.argv[1], sys.argv[2]
schema = json.load(open(path))
schema["properties"][f"note{round}"] = {"type": "string"}
json.dump(schema, open(path, "w"), indent=2)
EOF
  changed+=("$(serve)"); stop
done
check_started=$(date +%s%N)
"$bin" check --schemas "$work/schemas" --data "$work/data" >/dev/null
check_ms=$((($(date +%s%N) - check_started) / 1000000))

u=$(printf '%s\n' "${unchanged[@]}" | median)
c=$(printf '%s\n' "${changed[@]}" | median)
echo "records: $RECORDS (Product), rounds: $ROUNDS"
echo "start, schema unchanged:  median ${u} ms  (${unchanged[*]})"
echo "start, schema changed:    median ${c} ms  (${changed[*]})"
awk -v u="$u" -v c="$c" -v n="$RECORDS" 'BEGIN {
  printf "changed / unchanged: %.1fx; the check adds %d ms, %.2f us per record\n", c / u, c - u, (c - u) * 1000 / n }'
echo "tablecast check --data over the same records: ${check_ms} ms"
