#!/usr/bin/env bash
# What identity and access cost, in one run: the same release build serves the example schemas
# open (no access file) and guarded (an access file), in alternating rounds, with the server on
# SERVER_CPU and examples/loadgen.rs on CLIENT_CPU.
#   get-hit   GET /Product/<id>: open, without credentials, against guarded with Basic (a
#             user's argon2id password) and with Bearer (HS256 and RS256 JWTs); a role with
#             `read: true`. Verified credentials are remembered, so this is the per-request cost.
#   query     a listing of 10 in one category: written by hand on the open server
#             (`category=c3&limit(10)`) against the same answer from a row rule on the indexed
#             attribute (`category=$user`, user `c3`) and `limit(10)`.
# Prints mean req/s per variant with its spread over the rounds, and the ratio to the open run.
# Usage: bash benches/access.sh     (ROUNDS, DURATION, CONNECTIONS, RECORDS adjustable)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64} RECORDS=${RECORDS:-10000}
PORT=${PORT:-9971}

cargo build --release --quiet --bin tablecast --example loadgen
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Keys and tokens, made with openssl: an HS256 secret and an RSA key pair.
secret=$(openssl rand -hex 32)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa-private.pem" 2>/dev/null
openssl pkey -in "$work/rsa-private.pem" -pubout -out "$work/rsa.pem"
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
exp=$(( $(date +%s) + 86400 ))
claims=$(printf '{"sub":"bench","roles":["reader"],"exp":%s}' "$exp" | b64url)
hs_header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
rs_header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
hs_signature=$(printf '%s' "$hs_header.$claims" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
rs_signature=$(printf '%s' "$rs_header.$claims" | openssl dgst -sha256 -sign "$work/rsa-private.pem" -binary | b64url)
hs256="$hs_header.$claims.$hs_signature"
rs256="$rs_header.$claims.$rs_signature"

password=$(printf 'bench-password' | target/release/tablecast passwd)
cat > "$work/access.json" <<EOF
{
  "users": {
    "bench": { "password": "$password", "roles": ["reader"] },
    "c3": { "password": "$password", "roles": ["category"] }
  },
  "tokens": { "hs256": "$secret", "publicKeys": ["rsa.pem"] },
  "roles": {
    "reader": { "tables": { "Product": { "read": true } } },
    "category": { "tables": { "Product": { "read": "category=\$user" } } },
    "admin": { "admin": true }
  }
}
EOF

mkdir "$work/schemas"
cp schemas/Product.json schemas/Category.json "$work/schemas/"
start() { # start OUTPUT_FILE COMMAND... ; returns once the server prints that it listens
  local out=$1; shift
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$@" > "$out" &
  pids+=("$!")
  until grep -q listening "$out" 2>/dev/null; do sleep 0.01; done
}
stop() {
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
}
load() { # load LABEL SCENARIO [loadgen options...]
  local label=$1 scenario=$2; shift 2
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --label "$label" --url "http://127.0.0.1:$PORT" \
    --scenario "$scenario" --records "$RECORDS" --connections "$CONNECTIONS" --duration "$DURATION" \
    --json "$work/results.jsonl" "$@"
}
serve() { # serve [tablecast serve options...] ; a fresh, seeded data directory
  rm -rf "$work/data"
  start "$work/server.out" target/release/tablecast serve --schemas "$work/schemas" --data "$work/data" \
    --http "127.0.0.1:$PORT" --mqtt off "$@"
}
seed() {
  taskset -c "$CLIENT_CPU" target/release/examples/loadgen --url "http://127.0.0.1:$PORT" --scenario seed \
    --records "$RECORDS" --connections 16 --duration 600s "$@" > /dev/null
}

echo "== $(nproc) CPUs; server on CPU $SERVER_CPU, load on CPU $CLIENT_CPU; $ROUNDS rounds of $DURATION, $CONNECTIONS connections"
for round in $(seq "$ROUNDS"); do
  serve
  seed
  load open get-hit > /dev/null
  load by-hand query --query 'category=c3&limit(10)' > /dev/null
  stop
  serve --access "$work/access.json"
  # The administrator's token seeds the guarded server.
  admin=$(printf '{"sub":"seeder","roles":["admin"],"exp":%s}' "$exp" | b64url)
  admin="$hs_header.$admin.$(printf '%s' "$hs_header.$admin" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)"
  seed --bearer "$admin"
  load basic get-hit --auth bench:bench-password > /dev/null
  load bearer-hs256 get-hit --bearer "$hs256" > /dev/null
  load bearer-rs256 get-hit --bearer "$rs256" > /dev/null
  load by-rule query --auth c3:bench-password --query 'limit(10)' > /dev/null
  stop
done

python3 - "$work/results.jsonl" <<'EOF'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["server"], []).append(r)
def row(label, baseline):
    rs = [r["rps"] for r in runs[label]]
    base = sum(r["rps"] for r in runs[baseline]) / len(runs[baseline])
    p99 = max(r["p99_ms"] for r in runs[label])
    errors = sum(r["errors"] for r in runs[label])
    mean = sum(rs) / len(rs)
    print(f"| {label} | {mean:,.0f} ({min(rs):,.0f}-{max(rs):,.0f}) | {p99:.2f} | {errors} | {mean / base:.2f} |")
print("\n| GET /Product/<id> | req/s (spread) | worst p99 ms | errors | / open |")
print("| --- | --- | --- | --- | --- |")
for label in ["open", "basic", "bearer-hs256", "bearer-rs256"]:
    row(label, "open")
print("\n| listing of 10 in one category | req/s (spread) | worst p99 ms | errors | / by hand |")
print("| --- | --- | --- | --- | --- |")
for label in ["by-hand", "by-rule"]:
    row(label, "by-hand")
EOF
