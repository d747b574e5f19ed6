//! tablecast inside another program: open the example tables, serve them on a free port, watch
//! the change events, write and read over HTTP, then shut down cleanly.
//!
//! Run with `cargo run --example embed`.

use std::time::Duration;

use tablecast::{App, Config, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = tempfile::TempDir::new()?;
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
    let app = App::open(Config::new(schemas, data.path()))?;

    // Every durable commit is announced in commit order.
    let mut events = app.events().subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!(
                "event: {} {}/{} version {:x}",
                event.kind.name(),
                event.table,
                event.id,
                event.version
            );
        }
    });

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    // HTTP only: MQTT needs a listener of its own (see `Listeners::bind`).
    let listeners = Listeners {
        http: listener,
        mqtt: None,
        mqtts: None,
    };
    let server = tokio::spawn(app.serve(listeners, async {
        let _ = stopped.await;
    }));
    println!("serving the example tables on {base}");

    let http = reqwest::Client::new();
    let put = http
        .put(format!("{base}/Category/lighting"))
        .json(&serde_json::json!({"name": "Lighting"}))
        .send()
        .await?;
    println!("PUT /Category/lighting -> {}", put.status());
    let created = http
        .post(format!("{base}/Product/"))
        .json(&serde_json::json!({"name": "Desk lamp", "price": 39.5, "category": "lighting"}))
        .send()
        .await?;
    let location = created.headers()["location"].to_str()?.to_owned();
    println!("POST /Product/ -> {} at {location}", created.status());
    let record = http
        .get(format!("{base}{location}"))
        .send()
        .await?
        .text()
        .await?;
    println!("GET {location} -> {record}");

    // Give the event printer a moment, then stop: in-flight requests finish, the store flushes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = stop.send(());
    server.await??;
    println!("stopped");
    Ok(())
}
