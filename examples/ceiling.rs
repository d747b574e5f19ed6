//! The ceiling of this HTTP stack: a minimal axum server that answers every `GET /{table}/{id}`
//! with the same 200-byte JSON body from memory. Benchmarks run the same load against it and
//! against tablecast, and report tablecast as a ratio of it.
//!
//! Run with `cargo run --release --example ceiling -- 127.0.0.1:9927`.

use axum::Router;
use axum::http::header;
use axum::routing::get;

const BODY: &str = r#"{"id":12345,"name":"Product 12345","category":"category-45","price":123.45,"currency":"EUR","tags":["tag-5","tag-12"],"inStock":true,"createdAt":1795700000000,"updatedAt":1795700000000,"pad":"xxxxxx"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9927".to_owned());
    let app = Router::new().route(
        "/{table}/{id}",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("ceiling listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
