#!/usr/bin/env bash
# A curl walk-through of tablecast's REST interface over the example schemas (schemas/).
# Start a server first:   cargo run --release -- serve
# Then run:               bash examples/walkthrough.sh [BASE_URL]
# Each step prints the request and the answer, and stops the script if the status is not the expected one.
# It passes on any data directory, any number of times, and removes the products it created
# (it writes only products under ids above the highest ever used, and two categories).
set -euo pipefail
BASE=${1:-${BASE:-http://127.0.0.1:9926}}

step() { # step EXPECTED_STATUS[|OTHER] DESCRIPTION CURL_ARGS...
  local expected=$1 description=$2; shift 2
  printf '\n## %s\n$ curl %s\n' "$description" "$*"
  local out status
  out=$(curl -sS -i -g "$@")
  last=$out
  printf '%s\n' "$out"
  status=$(printf '%s' "$out" | head -n1 | awk '{print $2}')
  if ! [[ "$status" =~ ^($expected)$ ]]; then
    echo "!! expected HTTP $expected, got $status" >&2
    exit 1
  fi
}

step 200 "Is it up?" "$BASE/_health"
step 200 "Describe a table: its schema, key and record count" "$BASE/Category"
step 204 "Create a category (PUT is create-or-replace; --json sets Content-Type)" \
  -X PUT "$BASE/Category/lighting" --json '{"name": "Lighting"}'
step 204 "Another one" -X PUT "$BASE/Category/furniture" --json '{"name": "Furniture"}'
step 200 "Read it back: ETag and Last-Modified come with it" "$BASE/Category/lighting"

etag=$(curl -sS -o /dev/null -D - "$BASE/Category/lighting" | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
step 304 "Conditional GET: unchanged since that ETag" -H "If-None-Match: $etag" "$BASE/Category/lighting"
step 200 "Update only if nobody changed it meanwhile (If-Match), and get the result back" \
  -X PUT "$BASE/Category/lighting" -H "If-Match: $etag" -H 'Prefer: return=representation' \
  --json '{"name": "Lamps & lighting"}'
step 412 "The same ETag again: someone (we) changed it, so the write is refused" \
  -X PUT "$BASE/Category/lighting" -H "If-Match: $etag" --json '{"name": "Lost update"}'

step 201 "Create a product with a generated id (one above the highest integer key ever used)" \
  -X POST "$BASE/Product/" --json '{"name": "Desk lamp", "price": 39.5, "category": "lighting", "tags": ["desk", "led"]}'
posted=$(printf '%s' "$last" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
# The posted id is the highest ever used, so the ids after it are this tour's own: the first
# stays absent (the mistakes below use it), the others hold the products it adds.
next=${posted##*/}
absent=$((next + 1)) oak=$((next + 2)) floor=$((next + 3)) strip=$((next + 4))
step 204 "Or choose the id yourself" \
  -X PUT "$BASE/Product/$oak" --json '{"name": "Oak table", "price": 420, "category": "furniture"}'
step 200 "Patch it (JSON merge patch, RFC 7396): change the price, drop the category" \
  -X PATCH "$BASE/Product/$oak" -H 'Content-Type: application/merge-patch+json' -H 'Prefer: return=representation' \
  -d '{"price": 399, "category": null}'
step 200 "List the table in key order, streamed" "$BASE/Product/"
step 200 "Page through it: limit(start,end)" "$BASE/Product/?limit(0,1)"

step 204 "A few more products to query" -X PUT "$BASE/Product/$floor" --json '{"name": "Floor lamp", "price": 120, "category": "lighting", "tags": ["floor"]}'
step 204 "And another" -X PUT "$BASE/Product/$strip" --json '{"name": "LED strip", "price": 19.99, "category": "lighting", "tags": ["led"]}'
step 200 "Query: a category, a price range (range chaining), sorted, two properties" \
  "$BASE/Product/?category=lighting&price=gt=10&lt=100&sort(-price)&select(id,name,price)"
step 200 "Or-groups and starts-with" "$BASE/Product/?[tags=led|name==Oak*]&select(name)"
step 200 "The same answer as CSV, with an exact count" -H 'Accept: text/csv' -H 'Prefer: count=exact' \
  "$BASE/Product/?category=lighting&select(id,name,price)"
step 200 "A page of one, with a link to the next (cursor paging)" "$BASE/Product/?limit(1)"
step 400 "A query with a mistake: where, what, and what was expected" "$BASE/Product/?price=gt=10&(name=x"

step 422 "A record the schema forbids: every violation with its JSON pointer" \
  -X PUT "$BASE/Product/$absent" --json '{"name": "", "price": -1, "dimensions": {"w": "wide"}}'
step 400 "Malformed JSON: line and column" -X PUT "$BASE/Product/$absent" --json '{"name": "x",}'
step 400 "A body whose key disagrees with the URL" -X PUT "$BASE/Product/$absent" --json "{\"id\": $next, \"name\": \"x\", \"price\": 1}"
step 400 "An id that is not an integer" "$BASE/Product/abc"
step 415 "Not JSON (curl -d sends a form content type)" -X PUT "$BASE/Product/$absent" -d '{"name": "x", "price": 1}'
step 405 "A method the resource does not have (see Allow)" -X POST "$BASE/Product/$oak" --json '{}'
step 404 "Nothing was written by any of those" "$BASE/Product/$absent"

printf '\n## Subscribe to a record as Server-Sent Events: its current value first, then each change\n'
printf '$ curl -N --max-time 1 -H "Accept: text/event-stream" %s\n' "$BASE/Product/$oak"
events=$(curl -s -N --max-time 1 -H 'Accept: text/event-stream' "$BASE/Product/$oak" || true)
printf '%s\n' "$events"
grep -q '"name":"Oak table"' <<<"$events" || { echo "!! no current value in the event stream" >&2; exit 1; }
step 404 "Subscriptions to unknown tables are refused before streaming" \
  -H 'Accept: text/event-stream' "$BASE/Nope/"

step 204 "Delete" -X DELETE "$BASE/Product/$oak"
step 404 "Gone" "$BASE/Product/$oak"
for path in "/Product/$floor" "/Product/$strip" "$posted"; do
  curl -sS -o /dev/null -X DELETE "$BASE$path"
done
echo; echo "walk-through complete"
