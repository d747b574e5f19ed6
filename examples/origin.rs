//! A slow quotes API to put a cache table in front of: `GET /quotes/{symbol}` answers a quote
//! after a fixed delay (a symbol starting with `missing` answers 404); `GET /stats` tells how many
//! quote requests arrived. The example `Quote` table (schemas/Quote.json) points here.
//!
//! Run with `cargo run --release --example origin -- 127.0.0.1:9930 50ms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

#[derive(Clone)]
struct Origin {
    delay: Duration,
    requests: Arc<AtomicU64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9930".to_owned());
    let delay = args.next().map_or(Ok(Duration::from_millis(50)), |d| {
        tablecast::config::parse_duration(&d)
    })?;
    let origin = Origin {
        delay,
        requests: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/quotes/{symbol}", get(quote))
        .route("/stats", get(stats))
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "origin listening on http://{} (delay {} ms)",
        listener.local_addr()?,
        delay.as_millis()
    );
    axum::serve(listener, app).await?;
    Ok(())
}

async fn quote(State(origin): State<Origin>, Path(symbol): Path<String>) -> Response {
    origin.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(origin.delay).await;
    if symbol.starts_with("missing") {
        return (StatusCode::NOT_FOUND, "no such symbol").into_response();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let cents = symbol.bytes().map(u64::from).sum::<u64>() * 37 % 100_000;
    axum::Json(json!({
        "symbol": symbol,
        "price": cents as f64 / 100.0,
        "currency": "EUR",
        "exchange": "XPAR",
        "asOf": now,
        "note": "a quote served by the example origin, padded to a typical record size.....",
    }))
    .into_response()
}

async fn stats(State(origin): State<Origin>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "requests": origin.requests.load(Ordering::Relaxed) }))
}
