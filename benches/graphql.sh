#!/usr/bin/env bash
# GraphQL against REST on this machine, in one run so the ratios are fair:
#   1. one product with its category by GraphQL (POST, result cache off, so it executes) against
#      the two REST GETs it replaces (/Product/<id> then /Category/<its category>);
#   2. the same query by GET answered from the result cache (every answer kept after a warm-up
#      pass) against one REST GET by id;
#   3. 100 categories with a relation each (their first 10 products): answers per second, and
#      the storage reads of one answer (its Server-Timing header).
# Each measurement runs ROUNDS times, alternating, so the spread shows. The server is pinned to
# SERVER_CPU, wrk to CLIENT_CPU. Needs: wrk, taskset.   Usage: bash benches/graphql.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64} RECORDS=${RECORDS:-10000}
ROUNDS=${ROUNDS:-3} PORT=${PORT:-9961}
export RECORDS

cargo build --release --quiet --bin tablecast --example seed
bin=${CARGO_TARGET_DIR:-target}/release/tablecast
seed=${CARGO_TARGET_DIR:-target}/release/examples/seed
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wrk_run() { # wrk_run SCRIPT -> "req/s p50 p99 non2xx"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$1" "$base" > "$work/wrk.out"
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {err=$4}
       END {printf "%s %s %s %s\n", rps, p50, p99, (err == "" ? 0 : err)}' "$work/wrk.out"
}
serve() { # serve EXTRA_FLAGS... ; (re)starts the server on the same data
  if [ "${#pids[@]}" -gt 0 ]; then kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; fi
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$bin" serve --schemas schemas --data "$work/data" \
    --http "127.0.0.1:$PORT" --mqtt off "$@" > "$work/tc.out" &
  pids+=("$!")
  until grep -q listening "$work/tc.out" 2>/dev/null; do sleep 0.01; done
}
ratio() { python3 -c "print(f'{$1:.2f}')"; }
check() { if [ "$1" != 0 ]; then echo "non-2xx answers: $1"; exit 1; fi; }

base="http://127.0.0.1:$PORT"
serve --graphql-result-cache 0
for c in $(seq 0 99); do
  curl -sf -XPUT "$base/Category/category-$c" -H 'content-type: application/json' \
    -d "{\"id\":\"category-$c\",\"name\":\"Category $c\"}" > /dev/null
done
taskset -c "$CLIENT_CPU" "$seed" "$base" "$RECORDS" "$CONNECTIONS" > /dev/null

echo "1. One product with its category: GraphQL (executed) against the two REST GETs it replaces"
echo
echo "| round | REST GET pairs/s | p50 / p99 (one GET) | GraphQL queries/s | p50 / p99 | GraphQL / REST pair |"
echo "| --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  read -r rest_rps rest_p50 rest_p99 rest_err < <(wrk_run benches/wrk/rest_pair.lua)
  read -r gql_rps gql_p50 gql_p99 gql_err < <(wrk_run benches/wrk/graphql_one.lua)
  check "$rest_err"; check "$gql_err"
  pairs=$(python3 -c "print(f'{$rest_rps / 2:.0f}')")
  echo "| $round | $pairs | $rest_p50 / $rest_p99 | $gql_rps | $gql_p50 / $gql_p99 | $(ratio "$gql_rps / ($rest_rps / 2)") |"
done
echo
echo "3. 100 categories with a relation each (10 products): GraphQL, executed"
echo
reads=$(curl -si "$base/graphql" -H 'content-type: application/json' \
  -d '{"query":"{ categoryList(first: 100) { nodes { name products(first: 10) { name price } } } }"}' |
  tr -d '\r' | awk -F'"' 'tolower($0) ~ /^server-timing/ {print $2}')
echo "storage reads of one answer: $reads"
echo
echo "| round | answers/s | p50 / p99 |"
echo "| --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  read -r list_rps list_p50 list_p99 list_err < <(wrk_run benches/wrk/graphql_list.lua)
  check "$list_err"
  echo "| $round | $list_rps | $list_p50 / $list_p99 |"
done
echo

serve
# Every answer computed once, then kept: the rounds below are answered from the result cache.
DURATION=5s wrk_run benches/wrk/graphql_get.lua > /dev/null
echo "2. The same query by GET from the result cache, against one REST GET by id"
echo
echo "| round | REST GET req/s | p50 / p99 | GraphQL GET (kept) req/s | p50 / p99 | GraphQL / REST |"
echo "| --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  read -r rest_rps rest_p50 rest_p99 rest_err < <(wrk_run benches/wrk/get.lua)
  read -r kept_rps kept_p50 kept_p99 kept_err < <(wrk_run benches/wrk/graphql_get.lua)
  check "$rest_err"; check "$kept_err"
  echo "| $round | $rest_rps | $rest_p50 / $rest_p99 | $kept_rps | $kept_p50 / $kept_p99 | $(ratio "$kept_rps / $rest_rps") |"
done
status=$(curl -si "$base/graphql?query=%7Bproduct(id%3A1)%7Bname%20price%20category%7Bname%7D%7D%7D" | tr -d '\r' | awk 'tolower($0) ~ /^cache-status/')
echo
echo "($status)"
