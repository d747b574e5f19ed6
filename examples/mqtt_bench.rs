//! An MQTT broker benchmark, run by `benches/mqtt.sh` against tablecast and Mosquitto alike:
//!
//! ```text
//! mqtt_bench relay   HOST:PORT QOS PUBLISHERS MESSAGES [RATE]   plain-topic relay to one subscriber
//! mqtt_bench fanout  HOST:PORT SUBSCRIBERS                      one publish to many subscribers
//! mqtt_bench drain   HOST:PORT QUEUED                           a persistent session's queue on reconnect
//! ```
//!
//! `relay` without RATE publishes as fast as the publishers can (QoS 1: each keeps up to 100
//! unacknowledged) and reports messages per second at the subscriber; with RATE (messages per
//! second over all publishers) it reports the latency from publish to delivery. Each payload
//! carries its index and send time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |n: usize| args.get(n).map(String::as_str).unwrap_or("");
    let number = |n: usize| arg(n).parse::<usize>();
    let base = Instant::now();
    match arg(0) {
        "relay" => {
            let qos = rumqttc::qos(number(2)? as u8)?;
            let rate = args.get(5).map(|r| r.parse::<u64>()).transpose()?;
            relay(arg(1), qos, (number(3)?, number(4)?), rate, base).await
        }
        "fanout" => fanout(arg(1), number(2)?, base).await,
        "drain" => drain(arg(1), number(2)?).await,
        _ => Err("usage: mqtt_bench relay|fanout|drain HOST:PORT ...".into()),
    }
}

fn options(address: &str, id: &str) -> MqttOptions {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "1883"));
    let mut options = MqttOptions::new(id, host, port.parse().unwrap_or(1883));
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// `index | nanoseconds since `base``.
fn payload(index: usize, base: Instant) -> Vec<u8> {
    let mut payload = (index as u64).to_be_bytes().to_vec();
    payload.extend_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
    payload
}

fn read_payload(payload: &[u8], base: Instant) -> Option<(usize, Duration)> {
    let index = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?) as usize;
    let sent = Duration::from_nanos(u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?));
    Some((index, base.elapsed().saturating_sub(sent)))
}

/// Polls `eventloop` until it fails, handing each PUBLISH received to `received`.
fn pump(
    mut eventloop: EventLoop,
    received: Option<mpsc::UnboundedSender<Vec<u8>>>,
) -> mpsc::Receiver<()> {
    let (subscribed, acked) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some(received) = &received {
                        let _ = received.send(publish.payload.to_vec());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_) | Packet::ConnAck(_))) => {
                    let _ = subscribed.try_send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    acked
}

async fn relay(
    address: &str,
    qos: QoS,
    (publishers, messages): (usize, usize),
    rate: Option<u64>,
    base: Instant,
) -> Result<(), Error> {
    let (received_sender, mut received) = mpsc::unbounded_channel();
    let (subscriber, eventloop) = AsyncClient::new(options(address, "bench-sub"), 100);
    let mut acked = pump(eventloop, Some(received_sender));
    acked.recv().await; // CONNACK
    subscriber.subscribe("bench/#", qos).await?;
    acked.recv().await;
    let mut clients = Vec::new();
    for n in 0..publishers {
        let mut options = options(address, &format!("bench-pub-{n}"));
        options.set_inflight(100);
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let mut connected = pump(eventloop, None);
        connected.recv().await;
        clients.push(client);
    }
    let started = Instant::now();
    let per_publisher = messages / publishers;
    let mut tasks = Vec::new();
    for (n, client) in clients.into_iter().enumerate() {
        let interval =
            rate.map(|rate| Duration::from_nanos(1_000_000_000 * publishers as u64 / rate));
        tasks.push(tokio::spawn(async move {
            for i in 0..per_publisher {
                if let Some(interval) = interval {
                    tokio::time::sleep_until((started + interval * i as u32).into()).await;
                }
                let index = n * per_publisher + i;
                let topic = format!("bench/{n}");
                if client
                    .publish(topic, qos, false, payload(index, base))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    let expected = per_publisher * publishers;
    let mut latencies = Vec::with_capacity(expected);
    let mut last = started;
    while latencies.len() < expected {
        match tokio::time::timeout(Duration::from_secs(3), received.recv()).await {
            Ok(Some(payload)) => {
                if let Some((_, latency)) = read_payload(&payload, base) {
                    latencies.push(latency);
                    last = Instant::now();
                }
            }
            _ => break,
        }
    }
    for task in tasks {
        task.abort();
    }
    let seconds = last.duration_since(started).as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "relay qos {} publishers {publishers}: {}/{expected} delivered, {:.0} msg/s, p50 {:.3} ms, p99 {:.3} ms",
        qos as u8,
        latencies.len(),
        latencies.len() as f64 / seconds.max(1e-9),
        at(0.5),
        at(0.99),
    );
    Ok(())
}

async fn fanout(address: &str, subscribers: usize, base: Instant) -> Result<(), Error> {
    let (received_sender, mut received) = mpsc::unbounded_channel();
    let mut held = Vec::with_capacity(subscribers);
    let connecting = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut joins = Vec::new();
    for n in 0..subscribers {
        let (address, received_sender, gate) =
            (address.to_owned(), received_sender.clone(), gate.clone());
        joins.push(tokio::spawn(async move {
            let _place = gate.acquire().await;
            let (client, eventloop) = AsyncClient::new(options(&address, &format!("fan-{n}")), 10);
            let mut acked = pump(eventloop, Some(received_sender));
            acked.recv().await;
            client.subscribe("fan/one", QoS::AtMostOnce).await.ok();
            acked.recv().await;
            client
        }));
    }
    for join in joins {
        held.push(join.await?);
    }
    println!(
        "fanout: {subscribers} subscribers connected and subscribed in {:.2} s",
        connecting.elapsed().as_secs_f64()
    );
    let (publisher, eventloop) = AsyncClient::new(options(address, "fan-publisher"), 10);
    let mut connected = pump(eventloop, None);
    connected.recv().await;
    for round in 0..5 {
        let sent = Instant::now();
        publisher
            .publish("fan/one", QoS::AtMostOnce, false, payload(round, base))
            .await?;
        let mut delivered = 0;
        let mut median = Duration::ZERO;
        while delivered < subscribers {
            match tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
                Ok(Some(_)) => {
                    delivered += 1;
                    if delivered == subscribers / 2 {
                        median = sent.elapsed();
                    }
                }
                _ => break,
            }
        }
        println!(
            "fanout round {round}: {delivered}/{subscribers} delivered, last after {:.1} ms (median {:.1} ms)",
            sent.elapsed().as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
    Ok(())
}

async fn drain(address: &str, queued: usize) -> Result<(), Error> {
    let persistent = || {
        let mut options = options(address, "drain-device");
        options.set_clean_session(false);
        options
    };
    let (device, eventloop) = AsyncClient::new(persistent(), 10);
    let mut acked = pump(eventloop, None);
    acked.recv().await;
    device.subscribe("drain/#", QoS::AtLeastOnce).await?;
    acked.recv().await;
    device.disconnect().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut options = options(address, "drain-publisher");
    options.set_inflight(100);
    let (publisher, eventloop) = AsyncClient::new(options, 1000);
    let (done_sender, mut done) = mpsc::unbounded_channel();
    let (connack_sender, mut connack) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut eventloop = eventloop;
        let mut acks = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = connack_sender.try_send(());
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acks += 1;
                    let _ = done_sender.send(acks);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    connack.recv().await;
    let publishing = Instant::now();
    let base = Instant::now();
    for i in 0..queued {
        publisher
            .publish("drain/queue", QoS::AtLeastOnce, false, payload(i, base))
            .await?;
    }
    while let Some(acks) = done.recv().await {
        if acks == queued {
            break;
        }
    }
    println!(
        "drain: {queued} QoS 1 messages queued for the absent client in {:.2} s (publisher acknowledged)",
        publishing.elapsed().as_secs_f64()
    );
    let (received_sender, mut received) = mpsc::unbounded_channel();
    let reconnecting = Instant::now();
    let (_device, eventloop) = AsyncClient::new(persistent(), 10);
    let _acked = pump(eventloop, Some(received_sender));
    let mut count = 0;
    while count < queued {
        match tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
            Ok(Some(_)) => count += 1,
            _ => break,
        }
    }
    println!(
        "drain: {count}/{queued} delivered on reconnect in {:.1} ms",
        reconnecting.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
