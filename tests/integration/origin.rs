//! A real origin for cache tests: an HTTP server on port 0 that counts requests and does what
//! the test tells it to.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::common::eventually;

/// How the origin answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 with `{"id", "name", "version"}`, or 304 when `If-None-Match` names the current ETag.
    Serve,
    /// 500.
    Fail,
    /// Closes the connection without answering.
    Close,
    /// 404.
    Missing,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with JSON that lacks the required `name`.
    Invalid,
    /// 302 to another host, with a secret in the URL.
    Redirect,
}

struct Behaviour {
    mode: Mode,
    delay: Duration,
    cache_control: Option<String>,
    send_etag: bool,
}

struct Shared {
    requests: AtomicUsize,
    /// The version of every record; bumping it changes every body and ETag.
    version: AtomicU64,
    behaviour: Mutex<Behaviour>,
    /// Headers of every request received, in order.
    seen: Mutex<Vec<(String, HeaderMap)>>,
}

/// The running origin; stops when dropped.
pub struct Origin {
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Origin {
        let shared = Arc::new(Shared {
            requests: AtomicUsize::new(0),
            version: AtomicU64::new(1),
            behaviour: Mutex::new(Behaviour {
                mode: Mode::Serve,
                delay: Duration::ZERO,
                cache_control: None,
                send_etag: false,
            }),
            seen: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let router = Router::new()
            .route("/items/{id}", get(answer))
            .with_state(shared.clone());
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if accepting.behaviour.lock().unwrap().mode == Mode::Close {
                    accepting.requests.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    // One request per connection, so `Mode::Close` always meets a new one.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { base, shared, task }
    }

    /// The `origin` template of a cache schema pointing here.
    pub fn template(&self) -> String {
        format!("{}/items/{{id}}", self.base)
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.behaviour.lock().unwrap().mode = mode;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared.behaviour.lock().unwrap().delay = delay;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.shared.behaviour.lock().unwrap().cache_control = value.map(str::to_owned);
    }

    pub fn send_etags(&self) {
        self.shared.behaviour.lock().unwrap().send_etag = true;
    }

    /// Changes every record: the next 200 carries the new version.
    pub fn bump(&self) -> u64 {
        self.shared.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The paths and headers of every request received.
    pub fn seen(&self) -> Vec<(String, HeaderMap)> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits until the origin has received `n` requests.
    pub async fn wait_for_requests(&self, n: usize) {
        let failure = format!("the origin did not see {n} requests");
        eventually(&failure, async || self.requests() >= n).await;
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    request: HeaderMap,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    shared
        .seen
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), request.clone()));
    let (mode, delay, cache_control, send_etag) = {
        let b = shared.behaviour.lock().unwrap();
        (b.mode, b.delay, b.cache_control.clone(), b.send_etag)
    };
    tokio::time::sleep(delay).await;
    let version = shared.version.load(Ordering::SeqCst);
    let etag = format!("\"v{version}\"");
    let mut response = match mode {
        Mode::Serve => {
            let matches = request
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.to_str().is_ok_and(|v| v == etag));
            if send_etag && matches {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                let body = json!({ "id": id, "name": format!("item {id}"), "version": version });
                axum::Json(body).into_response()
            }
        }
        Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::Missing => (StatusCode::NOT_FOUND, "no such item").into_response(),
        Mode::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        Mode::Invalid => axum::Json(json!({ "id": id, "version": version })).into_response(),
        Mode::Redirect => (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                "http://elsewhere.example/items?token=s3cret",
            )],
        )
            .into_response(),
        Mode::Close => unreachable!("closed at accept"),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("session=secret"),
    );
    if send_etag {
        headers.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    }
    if let Some(value) = cache_control {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}
