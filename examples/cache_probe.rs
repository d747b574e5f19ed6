//! Measures what a cache table adds on a miss, and what a stampede costs the origin. Needs a
//! tablecast server with the example `Quote` table and the example origin (examples/origin.rs).
//!
//! 1. Miss overhead: N sequential requests for ids never asked before, through tablecast
//!    (`/Quote/<id>`) and straight to the origin (`/quotes/<id>`); prints both latency
//!    distributions and the difference of medians.
//! 2. Stampede: C clients at once ask tablecast for one cold id; prints how many requests the
//!    origin received and when the last client was answered.
//!
//! Run with `cargo run --release --example cache_probe -- http://127.0.0.1:9926 http://127.0.0.1:9930 200 1000`.

use std::time::{Duration, Instant};

use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9926".to_owned());
    let origin = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9930".to_owned());
    let misses: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()?;
    let run = std::process::id();

    let mut through = Vec::new();
    let mut direct = Vec::new();
    for i in 0..misses {
        for (times, url) in [
            (&mut through, format!("{server}/Quote/miss{run}x{i}")),
            (&mut direct, format!("{origin}/quotes/direct{run}x{i}")),
        ] {
            let started = Instant::now();
            let response = http.get(&url).send().await?;
            let status = response.status();
            response.bytes().await?;
            times.push(started.elapsed());
            if !status.is_success() {
                return Err(format!("{url} answered {status}").into());
            }
        }
    }
    let (through, direct) = (summary(&mut through), summary(&mut direct));
    println!(
        "miss through tablecast: p50 {:.2} ms, p99 {:.2} ms",
        through.0, through.1
    );
    println!(
        "origin directly:        p50 {:.2} ms, p99 {:.2} ms",
        direct.0, direct.1
    );
    println!("miss overhead (p50):    {:.2} ms", through.0 - direct.0);

    let before = origin_requests(&http, &origin).await?;
    let cold = format!("{server}/Quote/cold{run}");
    let started = Instant::now();
    let answers = futures::future::join_all((0..clients).map(|_| {
        let (http, cold) = (http.clone(), cold.clone());
        async move {
            let response = http.get(&cold).send().await?;
            let ok = response.status().is_success();
            response.bytes().await?;
            Ok::<bool, reqwest::Error>(ok)
        }
    }))
    .await;
    let last = started.elapsed();
    let ok = answers.iter().filter(|a| matches!(a, Ok(true))).count();
    let after = origin_requests(&http, &origin).await?;
    println!(
        "stampede: {clients} clients on one cold id: {ok} answered 200, origin requests {}, last answer after {:.1} ms",
        after - before,
        last.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// (p50, p99) in ms.
fn summary(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

async fn origin_requests(
    http: &reqwest::Client,
    origin: &str,
) -> Result<u64, Box<dyn std::error::Error>> {
    let stats: Value = http
        .get(format!("{origin}/stats"))
        .send()
        .await?
        .json()
        .await?;
    Ok(stats["requests"].as_u64().unwrap_or(0))
}
