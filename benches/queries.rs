//! Query engine benchmark: an indexed equality query returning 100 records, an indexed range
//! returning 1,000, and an unindexed filter that scans the whole table, each timed against the
//! full scan measured in the same run, plus resident memory around the scan as the table grows.
//!
//! `cargo bench --bench queries` (RECORDS=1000000 by default; the table is filled in four steps).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tablecast::query::executor::execute;
use tablecast::query::{bind, parse};
use tablecast::schema::TableSchema;
use tablecast::storage::{Key, Options, Store};
use tablecast::table::{Precondition, Table};

const SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "id", "indexes": ["category", "price"] },
  "properties": {
    "id": { "type": "integer" },
    "name": { "type": "string" },
    "category": { "type": "string" },
    "price": { "type": "number" },
    "tags": { "type": "array", "items": { "type": "string" } }
  }
}"#;
const STORE_CACHE: u64 = 64 << 20;

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Runs `query` `runs` times; returns the mean time and the records of one run.
fn time(table: &Table, query: &str, runs: u32) -> (Duration, usize) {
    let mut rows = 0;
    let started = Instant::now();
    for _ in 0..runs {
        let parsed =
            bind(parse(query).expect("parses"), &table.schema().document()).expect("binds");
        rows = 0;
        for listed in execute(table, parsed).expect("runs") {
            listed.expect("listed");
            rows += 1;
        }
    }
    (started.elapsed() / runs, rows)
}

fn main() {
    let total: u64 = std::env::var("RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let categories = (total / 100).max(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("Product.json");
    std::fs::write(&file, SCHEMA).expect("schema");
    let store = Arc::new(
        Store::open(
            &dir.path().join("data"),
            Options {
                cache_bytes: STORE_CACHE,
                ..Options::default()
            },
            Box::new(|_| {}),
        )
        .expect("store"),
    );
    let table =
        Arc::new(Table::open(TableSchema::load(&file).expect("schema"), store).expect("table"));

    println!("records: {total}, store cache {} MiB", STORE_CACHE >> 20);
    println!(
        "| records | fill, durable puts/s | scan filter, ms | RSS before / after the scan, MiB |"
    );
    println!("| --- | --- | --- | --- |");
    let mut loaded = 0;
    for step in 1..=4 {
        let target = total * step / 4;
        let started = Instant::now();
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..256 {
                let table = table.clone();
                let (from, to) = (loaded, target);
                tasks.spawn(async move {
                    let mut id = from + worker;
                    while id < to {
                        let record = json!({
                            "name": format!("Product {id}"),
                            "category": format!("c{}", id % categories),
                            "price": id,
                            "tags": [format!("t{}", id % 7)],
                        });
                        let key = Key::Int(i64::try_from(id).expect("small"));
                        table
                            .put(key, record, Precondition::default())
                            .await
                            .expect("put");
                        id += 256;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        });
        let rate = (target - loaded) as f64 / started.elapsed().as_secs_f64();
        loaded = target;
        let before = rss_mib("VmRSS");
        let (scan, _) = time(&table, "name=ct=no-such-name", 1);
        println!(
            "| {target} | {rate:.0} | {:.0} | {before:.0} / {:.0} |",
            scan.as_secs_f64() * 1000.0,
            rss_mib("VmRSS")
        );
    }

    let (scan, scan_rows) = time(&table, "name=ct=no-such-name", 3);
    let (equality, equality_rows) = time(&table, &format!("category=c{}", categories / 2), 200);
    let start = total / 2;
    let (range, range_rows) = time(&table, &format!("price=ge={start}&lt={}", start + 1000), 50);
    let (page, page_rows) = time(&table, "limit(1000)", 50);
    println!();
    println!("| query on {total} records | rows | time per query | full scan / this |");
    println!("| --- | --- | --- | --- |");
    for (name, duration, rows) in [
        ("indexed equality `category=c…`", equality, equality_rows),
        ("indexed range `price=ge=…&lt=…`", range, range_rows),
        ("first page in key order `limit(1000)`", page, page_rows),
        ("unindexed filter (full scan) `name=ct=…`", scan, scan_rows),
    ] {
        println!(
            "| {name} | {rows} | {:.3} ms | {:.0}x |",
            duration.as_secs_f64() * 1000.0,
            scan.as_secs_f64() / duration.as_secs_f64()
        );
    }
    println!();
    println!(
        "peak RSS (VmHWM) {:.0} MiB, RSS now {:.0} MiB",
        rss_mib("VmHWM"),
        rss_mib("VmRSS")
    );
}
