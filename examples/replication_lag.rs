//! Replication lag between two nodes: PUTs sent to node A at a fixed rate (open loop), each
//! timed from A's acknowledgement to the moment node B's Server-Sent Events stream delivers it.
//! Prints the writes acknowledged per second and the lag's p50, p99, p99.9 and maximum, and the
//! writes B never delivered (there should be none).
//!
//! Example: `cargo run --release --example replication_lag -- --writer http://127.0.0.1:9926
//! --reader http://127.0.0.1:9927 --rate 1000 --duration 10s`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Args {
    /// The node written to.
    #[arg(long)]
    writer: String,
    /// The node whose SSE stream is read.
    #[arg(long)]
    reader: String,
    /// PUTs per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value = "10s", value_parser = tablecast::config::parse_duration)]
    duration: Duration,
    /// Ids are 1..=RECORDS, in turn.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// A label for the printed line.
    #[arg(long, default_value = "replication")]
    label: String,
}

/// When each write was acknowledged on A, and when B delivered it, by the label written.
#[derive(Default)]
struct Times {
    acknowledged: HashMap<u64, Instant>,
    delivered: HashMap<u64, Instant>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let times = Arc::new(Mutex::new(Times::default()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let stream = client
        .get(format!("{}/Product/", args.reader))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    assert_eq!(stream.status(), 200, "B's event stream opens");
    let reader = tokio::spawn(read_events(stream, times.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut writes = Vec::new();
    let mut n: u64 = 0;
    while start.elapsed() < args.duration {
        n += 1;
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, times) = (client.clone(), times.clone());
        let url = format!("{}/Product/{}", args.writer, (n - 1) % args.records + 1);
        writes.push(tokio::spawn(async move {
            let body = json!({ "name": format!("w{n}"), "price": 1 });
            let response = client.put(url).json(&body).send().await;
            if response.is_ok_and(|r| r.status().is_success()) {
                let mut times = times.lock().unwrap();
                times.acknowledged.insert(n, Instant::now());
            }
        }));
    }
    for write in writes {
        write.await?;
    }
    let elapsed = start.elapsed();
    // B may be behind: wait until it has delivered every write, or delivers nothing more for 5 s.
    let mut delivered = 0;
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let times = times.lock().unwrap();
        if times.delivered.len() >= times.acknowledged.len() {
            break;
        }
        if times.delivered.len() > delivered {
            (delivered, quiet_since) = (times.delivered.len(), Instant::now());
        } else if quiet_since.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    reader.abort();

    let times = times.lock().unwrap();
    let mut lags: Vec<Duration> = times
        .acknowledged
        .iter()
        .filter_map(|(n, acknowledged)| {
            let delivered = times.delivered.get(n)?;
            Some(delivered.saturating_duration_since(*acknowledged))
        })
        .collect();
    lags.sort();
    let missing = times.acknowledged.len() - lags.len();
    let at = |q: f64| {
        let i = ((lags.len() as f64 * q) as usize).min(lags.len().saturating_sub(1));
        lags.get(i).map_or(0.0, |lag| lag.as_secs_f64() * 1000.0)
    };
    println!(
        "{:<12} rate {:>6}/s  acknowledged {:>7.0}/s  lag p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  undelivered {missing}",
        args.label,
        args.rate,
        times.acknowledged.len() as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(0.999),
        lags.last().map_or(0.0, |lag| lag.as_secs_f64() * 1000.0),
    );
    if missing > 0 || lags.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Notes when each event of B's stream arrives, by the `w<n>` label it carries.
async fn read_events(response: reqwest::Response, times: Arc<Mutex<Times>>) {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        let arrived = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for data in block.lines().filter_map(|line| line.strip_prefix("data: ")) {
                let Ok(event) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                let label = event["value"]["name"].as_str().unwrap_or_default();
                if let Some(n) = label.strip_prefix('w').and_then(|n| n.parse().ok()) {
                    times.lock().unwrap().delivered.insert(n, arrived);
                }
            }
        }
    }
}
