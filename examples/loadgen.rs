//! A load generator for tablecast (or any server with the same REST paths, such as Harper with
//! the tables of `../shared/peers/harper`): closed-loop HTTP/1.1 keep-alive connections, one
//! request at a time each, for a fixed duration; reports req/s, p50, p99, p99.9 and errors, and
//! appends one JSON line per run to `--json FILE`.
//!
//! Scenarios:
//! - `seed`: PUTs records 1..=RECORDS into `--table` (a product with a category, a price and tags).
//! - `get-hit`: GET by id, ids uniform or Zipf-distributed (`--keys zipf`) over 1..=RECORDS.
//! - `put`: durable PUTs of random ids.
//! - `mixed`: 90 % GET, 10 % PUT.
//! - `query`: indexed equality, `GET /T/?category=<one of ten>&limit(10)`.
//! - `cache-hit`: GET by id on `--cache-table` over ids already fetched (run `warm` first).
//! - `warm`: GETs ids 1..=RECORDS of `--cache-table` once, so they are stored.
//! - `cache-miss`: GET on `--cache-table` with ids never asked before.
//! - `notify-ws`, `notify-mqtt`: PUTs from every connection while one subscriber (WebSocket on
//!   `/T/`, or MQTT `T/#` on `--mqtt`) receives them; latency is PUT sent -> delivered.
//!
//! Exits 1 if any request failed or none succeeded, after reporting.
//!
//! Example: `cargo run --release --example loadgen -- --scenario get-hit --keys zipf --duration 10s`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Clone)]
#[command(args_override_self = true)] // a later `--duration` (say) overrides an earlier one
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:9926")]
    url: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Records the table holds (ids 1..=RECORDS).
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    #[arg(long, value_enum, default_value_t = Keys::Uniform)]
    keys: Keys,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to run, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = tablecast::config::parse_duration)]
    duration: Duration,
    /// The table of records.
    #[arg(long, default_value = "Product")]
    table: String,
    /// The cache table.
    #[arg(long, default_value = "Quote")]
    cache_table: String,
    /// `user:password` for HTTP Basic authentication.
    #[arg(long)]
    auth: Option<String>,
    /// A bearer token (a JWT) for HTTP Bearer authentication.
    #[arg(long, conflicts_with = "auth")]
    bearer: Option<String>,
    /// The `query` scenario's query string, the same for every request (by default a random
    /// `category=c<n>&limit(10)`).
    #[arg(long)]
    query: Option<String>,
    /// MQTT address for `notify-mqtt`.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// A name for this server in the JSON result (e.g. `tablecast`, `harper`, `ceiling`).
    #[arg(long, default_value = "server")]
    label: String,
    /// Appends the result as one JSON line to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    Seed,
    GetHit,
    Put,
    Mixed,
    Query,
    Warm,
    CacheHit,
    CacheMiss,
    NotifyWs,
    NotifyMqtt,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Keys {
    Uniform,
    Zipf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let result = match args.scenario {
        Scenario::Seed | Scenario::Warm => {
            let ids = Arc::new(AtomicU64::new(1));
            let limit = args.records;
            let scenario = args.scenario;
            run(&args, move |_| {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                (id <= limit).then(|| match scenario {
                    Scenario::Seed => put_request(id),
                    _ => Request::get(format!("/{{cache}}/{id}")),
                })
            })
            .await?
        }
        Scenario::NotifyWs | Scenario::NotifyMqtt => notify(&args).await?,
        scenario => {
            let keys = KeyChooser::new(args.keys, args.records);
            let run_id = std::process::id();
            let fixed_query = args.query.clone();
            let misses = Arc::new(AtomicU64::new(0));
            run(&args, move |rng| {
                let id = keys.choose(rng);
                Some(match scenario {
                    Scenario::GetHit => Request::get(format!("/{{table}}/{id}")),
                    Scenario::Put => put_request(id),
                    Scenario::Mixed if rng.below(10) == 0 => put_request(id),
                    Scenario::Mixed => Request::get(format!("/{{table}}/{id}")),
                    Scenario::Query => match &fixed_query {
                        Some(query) => Request::get(format!("/{{table}}/?{query}")),
                        None => Request::get(format!(
                            "/{{table}}/?category=c{}&limit(10)",
                            rng.below(10)
                        )),
                    },
                    Scenario::CacheHit => Request::get(format!("/{{cache}}/{id}")),
                    _ => {
                        let n = misses.fetch_add(1, Ordering::Relaxed);
                        Request::get(format!("/{{cache}}/miss{run_id}x{n}"))
                    }
                })
            })
            .await?
        }
    };
    report(&args, &result)
}

/// One request of a scenario; `{table}` and `{cache}` in the path name the tables.
struct Request {
    method: hyper::Method,
    path: String,
    body: Option<Bytes>,
}

impl Request {
    fn get(path: String) -> Request {
        Request {
            method: hyper::Method::GET,
            path,
            body: None,
        }
    }
}

fn put_request(id: u64) -> Request {
    // No `id` in the body: the URL names the record (Harper's ids are strings, ours integers).
    let body = json!({
        "name": format!("Product {id}"),
        "category": format!("c{}", id % 10),
        "price": (id % 1000) as f64 + 0.5,
        "tags": ["bench", format!("t{}", id % 7)],
        "inStock": id.is_multiple_of(2),
    });
    Request {
        method: hyper::Method::PUT,
        path: format!("/{{table}}/{id}"),
        body: Some(Bytes::from(body.to_string())),
    }
}

/// What a run measured.
struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    /// Answers other than 2xx, by status.
    refused: std::collections::BTreeMap<u16, u64>,
    elapsed: Duration,
}

/// Runs `next` on every connection until the duration ends (or `next` returns `None`).
async fn run<F>(args: &Args, next: F) -> Result<Outcome, Error>
where
    F: Fn(&mut Rng) -> Option<Request> + Send + Sync + 'static,
{
    let next = Arc::new(next);
    let address = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let auth = match (&args.auth, &args.bearer) {
        (Some(basic), _) => Some(format!("Basic {}", base64(basic.as_bytes()))),
        (None, Some(token)) => Some(format!("Bearer {token}")),
        (None, None) => None,
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let (next, address, auth) = (next.clone(), address.clone(), auth.clone());
        let (table, cache) = (args.table.clone(), args.cache_table.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(connection as u64 + 1);
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut refused = std::collections::BTreeMap::<u16, u64>::new();
            let mut sender = None;
            while Instant::now() < deadline {
                let Some(request) = next(&mut rng) else { break };
                if sender.is_none() {
                    sender = connect(&address).await.ok();
                    if sender.is_none() {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
                let path = request
                    .path
                    .replace("{table}", &table)
                    .replace("{cache}", &cache);
                let mut builder = hyper::Request::builder()
                    .method(request.method)
                    .uri(path)
                    .header("host", &address)
                    .header("content-type", "application/json");
                if let Some(auth) = &auth {
                    builder = builder.header("authorization", auth);
                }
                let body = Full::new(request.body.unwrap_or_default());
                let http = sender.as_mut().expect("connected");
                let sent = Instant::now();
                let answered = async {
                    http.ready().await?;
                    let response = http.send_request(builder.body(body)?).await?;
                    let status = response.status();
                    response.into_body().collect().await?;
                    Ok::<hyper::StatusCode, Error>(status)
                }
                .await;
                match answered {
                    Ok(status) if status.is_success() => latencies.push(sent.elapsed()),
                    Ok(status) => {
                        errors += 1;
                        *refused.entry(status.as_u16()).or_default() += 1;
                    }
                    Err(_) => {
                        errors += 1;
                        sender = None;
                    }
                }
            }
            (latencies, errors, refused)
        }));
    }
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
        refused: Default::default(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, errors, refused) = task.await?;
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
        for (status, n) in refused {
            *outcome.refused.entry(status).or_default() += n;
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

async fn connect(address: &str) -> Result<http1::SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// PUTs from every connection while one subscriber receives them.
///
/// Works with tablecast and with Harper: the subscriber authenticates with `--auth` if given,
/// lets the current values pass (until tablecast's `synced` frame, or half a second of
/// silence), and finds each write's mark in the message's record, whichever envelope it has.
async fn notify(args: &Args) -> Result<Outcome, Error> {
    let (receipts, mut received) = mpsc::unbounded_channel::<(u64, Instant)>();
    let quiet = Duration::from_millis(500);
    let _subscriber = match args.scenario {
        Scenario::NotifyWs => {
            use tokio_tungstenite::tungstenite::Message;
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let url = format!("{}/{}/", args.url.replacen("http", "ws", 1), args.table);
            let mut request = url.into_client_request()?;
            if let Some(auth) = &args.auth {
                let basic = format!("Basic {}", base64(auth.as_bytes()));
                request
                    .headers_mut()
                    .insert("authorization", basic.parse()?);
            }
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
            while let Ok(Some(frame)) = tokio::time::timeout(quiet, ws.next()).await {
                if let Message::Text(text) = frame?
                    && serde_json::from_str::<Value>(&text)?["type"] == "synced"
                {
                    break;
                }
            }
            tokio::spawn(async move {
                while let Some(Ok(frame)) = ws.next().await {
                    if let Message::Text(text) = frame
                        && let Some(mark) = mark_in(text.as_bytes())
                    {
                        let _ = receipts.send((mark, Instant::now()));
                    }
                }
            })
        }
        _ => {
            let (host, port) = args.mqtt.rsplit_once(':').ok_or("--mqtt HOST:PORT")?;
            let mut options = rumqttc::MqttOptions::new(
                format!("loadgen-{}", std::process::id()),
                host,
                port.parse()?,
            );
            options.set_max_packet_size(1 << 20, 1 << 20);
            if let Some((user, password)) = args.auth.as_ref().and_then(|a| a.split_once(':')) {
                options.set_credentials(user, password);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10_000);
            client
                .subscribe(format!("{}/#", args.table), rumqttc::QoS::AtMostOnce)
                .await?;
            let (subscribed, ready) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let _client = client;
                let mut subscribed = Some(subscribed);
                while let Ok(event) = eventloop.poll().await {
                    match event {
                        rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                            subscribed.take().map(|s| s.send(()));
                        }
                        rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) if !p.retain => {
                            if let Some(mark) = mark_in(&p.payload) {
                                let _ = receipts.send((mark, Instant::now()));
                            }
                        }
                        _ => {}
                    }
                }
            });
            ready.await?;
            // Let the retained current values pass.
            tokio::time::sleep(quiet).await;
            task
        }
    };
    // Each write is marked (its price) with a number whose send time is remembered.
    let marks = Arc::new(AtomicU64::new(1_000_000));
    let sent_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let records = args.records;
    let (marks_in, sent_in) = (marks.clone(), sent_at.clone());
    let outcome = run(args, move |rng| {
        let mark = marks_in.fetch_add(1, Ordering::Relaxed);
        let id = rng.below(records) + 1;
        sent_in.lock().expect("lock").insert(mark, Instant::now());
        let body = json!({"name": "notify", "price": mark});
        Some(Request {
            method: hyper::Method::PUT,
            path: format!("/{{table}}/{id}"),
            body: Some(Bytes::from(body.to_string())),
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = sent_at.lock().expect("lock");
    let mut latencies = Vec::new();
    while let Ok((mark, at)) = received.try_recv() {
        if let Some(sent) = sent_at.get(&mark) {
            latencies.push(at.duration_since(*sent));
        }
    }
    let written = outcome.latencies.len() as u64;
    Ok(Outcome {
        errors: outcome.errors + written.saturating_sub(latencies.len() as u64),
        latencies,
        refused: outcome.refused,
        elapsed: outcome.elapsed,
    })
}

/// The mark (the record's `price`) a notification carries: the record itself (MQTT), or an
/// envelope with the record under `value` (tablecast's and Harper's WebSocket messages).
fn mark_in(message: &[u8]) -> Option<u64> {
    let message = serde_json::from_slice::<Value>(message).ok()?;
    let record = message.get("value").unwrap_or(&message);
    record["price"].as_f64().map(|price| price as u64)
}

fn report(args: &Args, outcome: &Outcome) -> Result<(), Error> {
    let mut micros: Vec<u64> = outcome
        .latencies
        .iter()
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .collect();
    micros.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if micros.is_empty() {
            return f64::NAN;
        }
        micros[((micros.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
    };
    let seconds = outcome.elapsed.as_secs_f64();
    let rps = micros.len() as f64 / seconds;
    let scenario = match (args.scenario, args.keys) {
        (Scenario::GetHit, Keys::Zipf) => "get-hit-zipf".to_owned(),
        (scenario, _) => format!("{scenario:?}")
            .chars()
            .flat_map(|c| {
                let lower = c.to_ascii_lowercase();
                if c.is_uppercase() {
                    vec!['-', lower]
                } else {
                    vec![c]
                }
            })
            .collect::<String>()
            .trim_start_matches('-')
            .to_owned(),
    };
    let result = json!({
        "server": args.label,
        "scenario": scenario,
        "connections": args.connections,
        "requests": micros.len(),
        "seconds": seconds,
        "rps": rps,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "p999_ms": quantile(0.999),
        "errors": outcome.errors,
        "refused": outcome.refused,
    });
    println!(
        "{:<10} {:<14} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  errors {}",
        args.label,
        scenario,
        rps,
        quantile(0.5),
        quantile(0.99),
        quantile(0.999),
        outcome.errors
    );
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{result}")?;
    }
    if outcome.errors > 0 || micros.is_empty() {
        return Err(format!(
            "{} errors, {} requests answered",
            outcome.errors,
            micros.len()
        )
        .into());
    }
    Ok(())
}

/// Key choice: uniform, or Zipf with exponent 1 (rank 1 the most popular).
enum KeyChooser {
    Uniform(u64),
    Zipf(Vec<f64>),
}

impl KeyChooser {
    fn new(keys: Keys, records: u64) -> Arc<KeyChooser> {
        Arc::new(match keys {
            Keys::Uniform => KeyChooser::Uniform(records.max(1)),
            Keys::Zipf => {
                let mut total = 0.0;
                let mut cdf: Vec<f64> = (1..=records.max(1))
                    .map(|rank| {
                        total += 1.0 / rank as f64;
                        total
                    })
                    .collect();
                cdf.iter_mut().for_each(|c| *c /= total);
                KeyChooser::Zipf(cdf)
            }
        })
    }

    fn choose(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform(records) => rng.below(*records) + 1,
            KeyChooser::Zipf(cdf) => {
                let u = rng.unit();
                cdf.partition_point(|&c| c < u) as u64 + 1
            }
        }
    }
}

/// xorshift64*: fast, and good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
