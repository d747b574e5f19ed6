//! Fills the example `Product` table over HTTP, for benchmarks: records `1..=COUNT`, each about
//! 200 bytes once stored, written by CONCURRENCY clients with durable PUTs.
//!
//! Run with `cargo run --release --example seed -- http://127.0.0.1:9926 100000 64`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9926".to_owned());
    let count: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let concurrency: u64 = args.next().map_or(Ok(64), |a| a.parse())?;

    let next = Arc::new(AtomicU64::new(1));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, http, base) = (next.clone(), http.clone(), base.clone());
            tokio::spawn(async move {
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id > count {
                        return Ok::<(), reqwest::Error>(());
                    }
                    let record = json!({
                        "name": format!("Product {id}"),
                        "category": format!("category-{}", id % 100),
                        "price": (id % 10_000) as f64 / 100.0,
                        "currency": "EUR",
                        "tags": [format!("colour-{}", id % 7), format!("size-{}", id % 13)],
                        "inStock": id % 3 != 0,
                    });
                    let response = http
                        .put(format!("{base}/Product/{id}"))
                        .json(&record)
                        .send()
                        .await?;
                    if response.status() != 204 {
                        panic!(
                            "PUT /Product/{id}: {} {}",
                            response.status(),
                            response.text().await?
                        );
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "seeded {count} records in {seconds:.1} s ({:.0} durable PUT/s)",
        count as f64 / seconds
    );
    Ok(())
}
