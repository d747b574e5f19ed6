//! `tablecast warm`: asks a running server to fetch ids into a cache table ahead of use, in
//! batches through `POST /_cache/T/warm`, with a progress bar.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// What to warm, and where.
#[derive(Clone, Debug, clap::Args)]
pub struct WarmArgs {
    /// The cache table.
    #[arg(long)]
    pub table: String,
    /// A file of ids, one per line.
    #[arg(long)]
    pub ids: PathBuf,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:9926")]
    pub url: String,
    /// Ids sent per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
}

/// Totals of a warm-up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Fetched from the origin.
    pub fetched: u64,
    /// Already fresh.
    pub fresh: u64,
    /// Unknown to the origin.
    pub not_found: u64,
    /// Failures, as `id: reason`.
    pub failed: Vec<String>,
}

/// Runs the warm-up; returns its totals, or why it could not run.
pub async fn run(args: &WarmArgs) -> Result<Totals, String> {
    let text = std::fs::read_to_string(&args.ids)
        .map_err(|e| format!("cannot read {}: {e}", args.ids.display()))?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let base: Uri = args
        .url
        .parse()
        .map_err(|e| format!("`{}` is not a URL: {e}", args.url))?;
    if base.scheme_str() != Some("http") {
        return Err(format!("`{}` must be an http:// URL", args.url));
    }
    let prefix = base.path().trim_end_matches('/').to_owned();
    let mut server = Connection::open(&base).await?;

    let (status, description) = server
        .call("GET", &format!("{prefix}/{}", args.table), None)
        .await?;
    if status != 200 {
        return Err(problem(&description));
    }
    if description["cache"].is_null() {
        return Err(format!("table `{}` is not a cache table", args.table));
    }
    let integer_keys = description["keyType"] == "integer";
    let ids = lines
        .iter()
        .map(|line| {
            if integer_keys {
                line.parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("`{line}` is not an integer id"))
            } else {
                Ok(Value::from(*line))
            }
        })
        .collect::<Result<Vec<Value>, String>>()?;

    let progress = ProgressBar::new(u64::try_from(ids.len()).unwrap_or(u64::MAX));
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ids  {per_sec}  eta {eta}  {msg}")
            .map_err(|e| e.to_string())?,
    );
    let mut totals = Totals::default();
    let path = format!("{prefix}/_cache/{}/warm", args.table);
    for batch in ids.chunks(args.batch.max(1)) {
        let (status, report) = server
            .call("POST", &path, Some(json!({ "ids": batch })))
            .await?;
        if status != 200 {
            progress.abandon();
            return Err(problem(&report));
        }
        let count = |name: &str| report[name].as_u64().unwrap_or(0);
        totals.fetched += count("fetched");
        totals.fresh += count("fresh");
        totals.not_found += count("notFound");
        for failure in report["failed"].as_array().into_iter().flatten() {
            totals.failed.push(format!(
                "{}: {}",
                failure["id"],
                failure["detail"].as_str().unwrap_or("")
            ));
        }
        progress.inc(u64::try_from(batch.len()).unwrap_or(u64::MAX));
        progress.set_message(format!(
            "fetched {}, fresh {}, not found {}, failed {}",
            totals.fetched,
            totals.fresh,
            totals.not_found,
            totals.failed.len()
        ));
    }
    progress.finish();
    Ok(totals)
}

/// One kept-alive HTTP/1 connection to the server.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(base: &Uri) -> Result<Connection, String> {
        let host = base
            .authority()
            .map(ToString::to_string)
            .ok_or("the URL has no host")?;
        let address = if base.port().is_some() {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("cannot talk HTTP to {address}: {e}"))?;
        tokio::spawn(connection);
        Ok(Connection { sender, host })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        // The connection takes the next request only once it has finished the previous one.
        self.sender
            .ready()
            .await
            .map_err(|e| format!("the connection to the server closed: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path} failed: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn problem(body: &Value) -> String {
    body["detail"]
        .as_str()
        .map_or_else(|| format!("the server answered {body}"), str::to_owned)
}
