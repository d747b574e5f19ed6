//! Measures real-time delivery against a running server (benches/realtime.sh drives it).
//!
//! - `latency BASE MQTT [WRITES] [RATE]`: subscribes to `/Product/` over WebSocket and SSE and to
//!   `Product/#` over MQTT, then PUTs WRITES records at RATE per second and reports, per
//!   transport, the time from sending the PUT to delivery, beside the time to the PUT's own
//!   acknowledgement (the commit is durable then), and delivery minus acknowledgement.
//! - `fanout BASE SUBSCRIBERS PID`: opens SUBSCRIBERS WebSockets on one record, reads the
//!   server's RSS (process PID) before and after, then times a few PUTs, one at a time, each to
//!   its last delivery.
//! - `mqtt ADDR TOPIC [MESSAGES] [RATE] [retain]`: one MQTT client publishes to TOPIC at RATE per
//!   second (QoS 1), another subscribed to it receives; reports publish-to-delivery. Works
//!   against any broker, so Mosquitto can serve as the reference.
//!
//! Run with `cargo run --release --example realtime_probe -- latency http://127.0.0.1:9926 127.0.0.1:1883`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// PUTs the fan-out probe times, one after another.
const ROUNDS: u64 = 5;
/// Ids the latency probe writes (far from the example data).
const FIRST_ID: u64 = 900_000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    match arg(0, "").as_str() {
        "latency" => {
            latency(
                &arg(1, "http://127.0.0.1:9926"),
                &arg(2, "127.0.0.1:1883"),
                arg(3, "5000").parse()?,
                arg(4, "1000").parse()?,
            )
            .await
        }
        "fanout" => {
            fanout(
                &arg(1, "http://127.0.0.1:9926"),
                arg(2, "10000").parse()?,
                &arg(3, ""),
            )
            .await
        }
        "mqtt" => {
            mqtt_relay(
                &arg(1, "127.0.0.1:1883"),
                &arg(2, "bench/relay"),
                arg(3, "5000").parse()?,
                arg(4, "1000").parse()?,
                arg(5, "") == "retain",
            )
            .await
        }
        _ => Err("usage: realtime_probe latency|fanout|mqtt ...".into()),
    }
}

/// Receipt times of write `i`, sent by each transport's reader.
type Receipts = mpsc::UnboundedSender<(usize, Instant)>;

fn index_of(value: &Value) -> Option<usize> {
    value["price"]
        .as_u64()
        .and_then(|p| usize::try_from(p).ok())
}

async fn latency(base: &str, mqtt: &str, writes: usize, rate: u64) -> Result<(), Error> {
    let http = reqwest::Client::new();
    let mut receipts = Vec::new();

    // WebSocket.
    let (ws_sender, ws_times) = mpsc::unbounded_channel();
    let url = format!("{}/Product/", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    loop {
        if let Some(Ok(Message::Text(text))) = ws.next().await {
            let frame: Value = serde_json::from_str(&text)?;
            if frame["type"] == "synced" {
                break;
            }
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(text) = frame
                && let Ok(frame) = serde_json::from_str::<Value>(&text)
                && let Some(i) = index_of(&frame["value"])
            {
                let _ = ws_sender.send((i, Instant::now()));
            }
        }
    });
    receipts.push(("WebSocket", ws_times));

    // Server-Sent Events.
    let (sse_sender, sse_times) = mpsc::unbounded_channel();
    let response = http
        .get(format!("{base}/Product/"))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    let (synced_sender, synced) = tokio::sync::oneshot::channel();
    tokio::spawn(read_sse(response, sse_sender, synced_sender));
    synced.await?;
    receipts.push(("SSE", sse_times));

    // MQTT.
    let (_client, mqtt_times) = mqtt_subscriber(mqtt, "probe-latency", "Product/#").await?;
    receipts.push(("MQTT", mqtt_times));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The writes, one every 1/RATE s, each on its own task so a slow one does not delay the next.
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writes);
    for i in 0..writes {
        let due = started + Duration::from_micros(1_000_000 * i as u64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let http = http.clone();
        let url = format!("{base}/Product/{}", FIRST_ID + (i as u64 % 1000));
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = http
                .put(url)
                .json(&json!({"name": "probe", "price": i}))
                .send()
                .await;
            let acked = Instant::now();
            match response {
                Ok(r) if r.status().is_success() => Some((sent, acked)),
                _ => None,
            }
        }));
    }
    let mut times = Vec::with_capacity(writes);
    for task in tasks {
        times.push(task.await?);
    }
    let failed = times.iter().filter(|t| t.is_none()).count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "{writes} PUTs at {rate}/s in {:.1} s, {failed} failed",
        started.elapsed().as_secs_f64()
    );
    let ack: Vec<Duration> = times.iter().flatten().map(|(s, a)| *a - *s).collect();
    println!("PUT acknowledged (durable)   {}", summary(ack));
    for (name, mut receipts) in receipts {
        let mut to_delivery = Vec::new();
        let mut after_ack = Vec::new();
        while let Ok((i, at)) = receipts.try_recv() {
            if let Some(Some((sent, acked))) = times.get(i) {
                to_delivery.push(at - *sent);
                after_ack.push(
                    at.duration_since(*acked).as_secs_f64() * 1e3
                        - acked.duration_since(at).as_secs_f64() * 1e3,
                );
            }
        }
        let delivered = to_delivery.len();
        after_ack.sort_by(f64::total_cmp);
        println!(
            "{name:<9} PUT sent -> delivered {}  delivered - acked: p50 {:+.3} ms, p99 {:+.3} ms  ({delivered}/{writes} delivered)",
            summary(to_delivery),
            quantile(&after_ack, 0.5),
            quantile(&after_ack, 0.99),
        );
    }
    Ok(())
}

async fn read_sse(
    response: reqwest::Response,
    times: Receipts,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            match data {
                None if block.starts_with("id: ") => {
                    synced.take().map(|s| s.send(()));
                }
                Some(data) => {
                    if let Ok(event) = serde_json::from_str::<Value>(data)
                        && event["type"] == "put"
                        && synced.is_none()
                        && let Some(i) = index_of(&event["value"])
                    {
                        let _ = times.send((i, Instant::now()));
                    }
                }
                None => {}
            }
        }
    }
}

async fn fanout(base: &str, subscribers: usize, pid: &str) -> Result<(), Error> {
    let id = FIRST_ID + 5000;
    let http = reqwest::Client::new();
    http.put(format!("{base}/Product/{id}"))
        .json(&json!({"name": "fan-out", "price": 0}))
        .send()
        .await?
        .error_for_status()?;
    let rss_before = rss_kib(pid);
    let url = format!("{}/Product/{id}", base.replacen("http", "ws", 1));
    let (ready_sender, mut ready) = mpsc::unbounded_channel();
    let (done_sender, mut done) = mpsc::unbounded_channel();
    let opening = Instant::now();
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    for _ in 0..subscribers {
        let url = url.clone();
        let ready = ready_sender.clone();
        let done = done_sender.clone();
        let connecting = connecting.clone();
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await;
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                let _ = ready.send(false);
                return;
            };
            // The current value, then `synced`.
            let mut frames = 0;
            while frames < 2 {
                if let Some(Ok(Message::Text(_))) = ws.next().await {
                    frames += 1;
                }
            }
            drop(permit);
            let _ = ready.send(true);
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(_) = frame {
                    let _ = done.send(Instant::now());
                }
            }
        });
    }
    let mut connected = 0;
    for _ in 0..subscribers {
        connected += usize::from(ready.recv().await.unwrap_or(false));
    }
    let opened_in = opening.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid);
    println!(
        "{connected}/{subscribers} WebSocket subscribers on one record (opened in {:.1} s)",
        opened_in.as_secs_f64()
    );
    for round in 1..=ROUNDS {
        let sent = Instant::now();
        http.put(format!("{base}/Product/{id}"))
            .json(&json!({"name": "fan-out", "price": round}))
            .send()
            .await?
            .error_for_status()?;
        let acked = sent.elapsed();
        let mut deliveries = Vec::with_capacity(connected);
        while deliveries.len() < connected {
            match tokio::time::timeout(Duration::from_secs(30), done.recv()).await {
                Ok(Some(at)) => deliveries.push(at - sent),
                _ => break,
            }
        }
        deliveries.sort();
        println!(
            "PUT {round}: acknowledged after {:.2} ms; delivered to {}: first {:.2} ms, median {:.2} ms, last {:.2} ms",
            ms(acked),
            deliveries.len(),
            deliveries.first().map_or(f64::NAN, |d| ms(*d)),
            deliveries
                .get(deliveries.len() / 2)
                .map_or(f64::NAN, |d| ms(*d)),
            deliveries.last().map_or(f64::NAN, |d| ms(*d)),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "server RSS {:.1} MiB before, {:.1} MiB with the subscribers: {:.1} KiB per subscriber",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after.saturating_sub(before)) as f64 / connected.max(1) as f64
        );
    }
    Ok(())
}

async fn mqtt_relay(
    address: &str,
    topic: &str,
    messages: usize,
    rate: u64,
    retain: bool,
) -> Result<(), Error> {
    let (_subscriber, mut received) = mqtt_subscriber(address, "probe-sub", topic).await?;
    // Drain retained messages delivered on subscribing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while received.try_recv().is_ok() {}

    let (publisher, mut pub_loop) = mqtt_client(address, "probe-pub");
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let started = Instant::now();
    let mut sent = Vec::with_capacity(messages);
    for i in 0..messages {
        let due = started + Duration::from_micros(1_000_000 * i as u64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let payload = json!({"name": "probe", "price": i}).to_string();
        sent.push(Instant::now());
        publisher
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    while let Ok((i, at)) = received.try_recv() {
        if let Some(sent) = sent.get(i) {
            latencies.push(at - *sent);
        }
    }
    println!(
        "{topic}{}: {}/{messages} delivered, publish -> delivered {}",
        if retain { " (retained)" } else { "" },
        latencies.len(),
        summary(latencies)
    );
    Ok(())
}

/// An MQTT client subscribed to `filter` at QoS 0, once its SUBACK has come back, and the receipt
/// times of the non-retained publishes it receives (by the index in their payload).
async fn mqtt_subscriber(
    address: &str,
    id: &str,
    filter: &str,
) -> Result<
    (
        rumqttc::AsyncClient,
        mpsc::UnboundedReceiver<(usize, Instant)>,
    ),
    Error,
> {
    let (client, mut eventloop) = mqtt_client(address, id);
    client.subscribe(filter, rumqttc::QoS::AtMostOnce).await?;
    let (receipts, received) = mpsc::unbounded_channel();
    let (subscribed_sender, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_sender);
        while let Ok(event) = eventloop.poll().await {
            match event {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    subscribed.take().map(|s| s.send(()));
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) if !p.retain => {
                    if let Some(i) = serde_json::from_slice::<Value>(&p.payload)
                        .ok()
                        .as_ref()
                        .and_then(index_of)
                    {
                        let _ = receipts.send((i, Instant::now()));
                    }
                }
                _ => {}
            }
        }
    });
    subscribed.await?;
    Ok((client, received))
}

fn mqtt_client(address: &str, id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "1883"));
    let mut options = rumqttc::MqttOptions::new(
        format!("{id}-{}", std::process::id()),
        host,
        port.parse().unwrap_or(1883),
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    rumqttc::AsyncClient::new(options, 10_000)
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let millis: Vec<f64> = times.iter().map(|d| ms(*d)).collect();
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        quantile(&millis, 0.5),
        quantile(&millis, 0.99),
        millis.last().copied().unwrap_or(f64::NAN)
    )
}
