"""Loads products 1..N into Harper's Product table through its operations API, 1,000 per request.

Usage: harper_load.py OPS_URL USER:PASS N
The records are those examples/loadgen.rs seeds (`seed` scenario), with Harper's string ids.
"""
import base64
import concurrent.futures
import json
import sys
import urllib.request

ops_url, auth, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
BATCH = 1000
authorization = "Basic " + base64.b64encode(auth.encode()).decode()


def product(n):
    return {
        "id": str(n),
        "name": f"Product {n}",
        "category": f"c{n % 10}",
        "price": n % 1000 + 0.5,
        "tags": ["bench", f"t{n % 7}"],
        "inStock": n % 2 == 0,
    }


def load(first):
    records = [product(n) for n in range(first, min(first + BATCH, total + 1))]
    body = json.dumps({"operation": "upsert", "database": "data", "table": "Product", "records": records})
    request = urllib.request.Request(
        ops_url,
        data=body.encode(),
        headers={"Content-Type": "application/json", "Authorization": authorization},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.load(response)
    if len(answer.get("upserted_hashes", [])) != len(records):
        sys.exit(f"Harper upserted {answer} for records from {first}")


with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(load, range(1, total + 1, BATCH)))
