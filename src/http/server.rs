//! The connection loop: hyper's HTTP/1 under our limits, so one client cannot hurt the others.
//!
//! A connection that does not send a complete request head within the header timeout (also
//! while idle between keep-alive requests) is closed; past the connection limit, a new
//! connection is answered 503 and closed. Shutdown stops accepting, lets every connection finish
//! the request it is serving (for up to the drain timeout), and closes idle ones.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::auth::Peer;
use super::stall::StallLimit;
use super::unparsable::ProblemStream;
use super::{ApiError, PROBLEM_JSON};

/// Limits on connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for a complete request head, and longest idle time between requests.
    pub header_timeout: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight (a long listing to a slow client, say)
    /// before closing their connections.
    pub drain_timeout: Duration,
    /// How long a write may wait for the peer to read before the connection is closed.
    pub write_stall: Duration,
}

/// Serves `router` on `listener` (over TLS if `tls` is given) until `shutdown` completes, then
/// drains the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, typically: wait for connections to close.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            connections.spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let service = TowerToHyperService::new(WithPeer {
            router: router.clone(),
            peer: Peer(peer),
        });
        let (http, closed, tls) = (http.clone(), closed.clone(), tls.clone());
        connections.spawn(async move {
            match tls {
                None => serve_connection(&http, stream, service, limits, closed).await,
                Some(tls) => {
                    // The handshake is part of the request head's time.
                    let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            serve_connection(&http, stream, service, limits, closed).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "a TLS handshake failed"),
                        Err(_) => tracing::debug!("a TLS handshake did not finish in time"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "closing connections still busy after {:?}",
            limits.drain_timeout
        );
        connections.shutdown().await;
    }
}

/// Serves one connection until it ends, or until `closed` says the server is shutting down
/// (the request in progress is finished first).
async fn serve_connection<S>(
    http: &http1::Builder,
    stream: S,
    service: TowerToHyperService<WithPeer>,
    limits: Limits,
    mut closed: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ProblemStream::new(StallLimit::new(
        stream,
        limits.write_stall,
    )));
    let connection = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = closed.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// The router, with the client's address set on each request.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    peer: Peer,
}

impl tower_service::Service<axum::extract::Request<hyper::body::Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower_service::Service<axum::extract::Request>>::Future;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: axum::extract::Request<hyper::body::Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.router.call(request.map(axum::body::Body::new))
    }
}

/// Answers a connection over the limit with a 503 problem and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    // Written by hand: the connection is not handed to hyper.
    let (status, body) = ApiError::TooManyConnections(limit).problem();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
