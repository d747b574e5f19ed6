//! MQTT 3.1.1 and 5 on their own port: rumqttd's packet codecs under our own sessions, which
//! subscribe to the same core as WebSocket and SSE. Topics `<Table>/<id>` are records; every
//! other topic, in any case, belongs to a plain broker.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the listener: one session per connection, closed in order at shutdown |
//! | `connect.rs` | CONNECT: read in time, refused with a CONNACK code, admitted, accepted |
//! | `session.rs` | the session loop: packets in, acknowledgements and deliveries out |
//! | `session/subscribing.rs` | a session's SUBSCRIBE and UNSUBSCRIBE |
//! | `session/answering.rs`, `session/delivering.rs` | a publish's relay and acknowledgement in turn; deliveries out |
//! | `session/keeping.rs`, `session/will.rs` | a persistent session restored and kept; last wills |
//! | `publish.rs` | where a PUBLISH becomes a record write, a delete or a relayed message; its reason codes |
//! | `sessions.rs`, `sessions/encoding.rs` | persistent sessions, kept in the store while their clients are away; their keys and encoding |
//! | `grants.rs` | the subscriptions a connection holds |
//! | `outbox.rs` | what a session sends, and its window of QoS 1 and 2 deliveries |
//! | `properties.rs` | the MQTT 5 properties a message carries to its subscribers |
//! | `sys.rs` | `$SYS/broker/...`: the broker's statistics |
//! | `broker.rs` | the plain broker: topics that are not tables, retained messages, client ids |
//! | `codec.rs` | MQTT framing, with rumqttd's codecs for both versions |
//! | `websocket.rs` | MQTT over WebSocket (the HTTP layer serves the upgrade at `/mqtt`) |
//! | `typo.rs` | a warning for plain topics that look like misspelt table names |

mod broker;
pub mod codec;
mod connect;
mod grants;
mod outbox;
mod properties;
mod publish;
mod session;
mod sessions;
mod sys;
mod typo;
mod websocket;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Realtime;
use crate::access::Access;
use crate::intake::Intake;
use broker::Broker;
pub use broker::RetainedLimits;
pub use sessions::SessionLimits;
pub use websocket::SUBPROTOCOL;

/// Connections that have not yet sent their CONNECT, at most; more are closed at once.
const MAX_CONNECTING: usize = 1024;

/// What every session shares.
struct Shared {
    realtime: Realtime,
    broker: Broker,
    /// Largest record payload accepted, as for HTTP bodies.
    max_body: usize,
    /// The memory and time packets being received may take, shared with HTTP bodies.
    intake: Intake,
    /// Places for connections that have not sent CONNECT yet.
    connecting: Arc<Semaphore>,
    /// Who may do what.
    access: Access,
    /// The longest keep-alive a client may have, in seconds (`u16::MAX`: any).
    max_keepalive: u16,
    /// Warns of plain topics that look like misspelt tables.
    typos: typo::TypoGuard,
    /// What `$SYS` reports.
    stats: Arc<sys::Stats>,
    /// How long shutdown waits for sessions to finish what they are applying.
    drain_timeout: Duration,
}

/// How MQTT is served.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Largest payload, as for HTTP bodies.
    pub max_body: usize,
    /// The memory and time packets being received may take, shared with HTTP bodies.
    pub intake: Intake,
    /// What the plain broker may retain.
    pub retained: RetainedLimits,
    /// What a persistent session may keep.
    pub sessions: SessionLimits,
    /// The longest keep-alive a client may have, in seconds (`u16::MAX`: any).
    pub max_keepalive: u16,
    /// How long shutdown waits for sessions to finish what they are applying.
    pub drain_timeout: Duration,
    /// Who may do what.
    pub access: Access,
}

/// A client's connection, plain or over TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Connection = Box<dyn Stream>;
type Reader = ReadHalf<Connection>;
type Writer = WriteHalf<Connection>;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The MQTT listeners: plain, and over TLS (either may be absent). Their clients share one
/// broker.
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

/// Accepts the next connection on `listener`, if there is one.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// How often away sessions are checked for expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// The MQTT server: its broker and sessions, served on its listeners and over WebSocket.
pub struct Mqtt {
    shared: Arc<Shared>,
    /// The number the next connection gets.
    numbers: AtomicU64,
}

impl Mqtt {
    /// The MQTT server for `realtime`'s tables, with the persistent sessions kept in its store.
    pub fn open(realtime: Realtime, settings: Settings) -> crate::error::Result<Arc<Mqtt>> {
        let keyspace = realtime.store().keyspace(sessions::KEYSPACE)?;
        let sessions = sessions::Sessions::open(keyspace, settings.sessions)?;
        let shared = Arc::new(Shared {
            realtime,
            broker: Broker::new(settings.retained, sessions),
            max_body: settings.max_body,
            intake: settings.intake,
            connecting: Arc::new(Semaphore::new(MAX_CONNECTING)),
            access: settings.access,
            max_keepalive: settings.max_keepalive,
            typos: typo::TypoGuard::default(),
            stats: Arc::default(),
            drain_timeout: settings.drain_timeout,
        });
        Ok(Arc::new(Mqtt {
            shared,
            numbers: AtomicU64::new(1),
        }))
    }

    /// A place for a connection that has not sent CONNECT yet, if there is one.
    fn connecting(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.shared.connecting.clone().try_acquire_owned();
        if permit.is_err() {
            tracing::warn!(
                "closing an MQTT connection: {MAX_CONNECTING} others have not sent CONNECT yet"
            );
        }
        permit.ok()
    }

    /// Serves one client's connection, from `peer`, until it ends.
    async fn serve_connection(
        &self,
        connection: Connection,
        peer: IpAddr,
        connecting: tokio::sync::OwnedSemaphorePermit,
    ) {
        let number = self.numbers.fetch_add(1, Ordering::Relaxed);
        session::run(connection, peer, self.shared.clone(), number, connecting).await;
    }

    /// Serves MQTT on `listeners` until the server starts shutting down, then closes every
    /// session (persistent ones are kept for their clients' return).
    pub async fn serve(self: Arc<Self>, listeners: Listeners) -> crate::error::Result<()> {
        let shared = &self.shared;
        let mut sessions = JoinSet::new();
        let closing = shared.realtime.closing().clone();
        let tls_listener = listeners.tls.as_ref().map(|(listener, _)| listener);
        let acceptor = listeners.tls.as_ref().map(|(_, acceptor)| acceptor.clone());
        let mut expiry_check = tokio::time::interval(EXPIRY_CHECK);
        // The statistics are there, retained, before the first client connects.
        let started = std::time::Instant::now();
        sys::publish(&shared.broker, &shared.stats, started);
        let next = tokio::time::Instant::now() + sys::SYS_INTERVAL;
        let mut sys_interval = tokio::time::interval_at(next, sys::SYS_INTERVAL);
        loop {
            let (accepted, over_tls) = tokio::select! {
                accepted = accept(listeners.plain.as_ref()) => (accepted, false),
                accepted = accept(tls_listener) => (accepted, true),
                _ = sys_interval.tick() => {
                    sys::publish(&shared.broker, &shared.stats, started);
                    continue;
                }
                _ = expiry_check.tick() => {
                    shared.broker.expire();
                    continue;
                }
                () = closing.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            while sessions.try_join_next().is_some() {}
            let Some(connecting) = self.connecting() else {
                continue;
            };
            let (mqtt, acceptor) = (self.clone(), acceptor.clone().filter(|_| over_tls));
            sessions.spawn(async move {
                let connection: Connection = match acceptor {
                    None => Box::new(stream),
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => Box::new(stream),
                            Ok(Err(error)) => {
                                tracing::debug!(%error, "an MQTT TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                };
                mqtt.serve_connection(connection, peer.ip(), connecting)
                    .await;
            });
        }
        drop(listeners);
        let drained = tokio::time::timeout(shared.drain_timeout, async {
            while sessions.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            sessions.shutdown().await;
        }
        shared.broker.sessions().flush().await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::realtime::TopicFilter;

    fn levels(choices: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(choices), 1..5)
    }

    proptest! {
        /// Our topic matching agrees with rumqttd's, whose codecs we use.
        #[test]
        fn filters_match_as_rumqttd_does(
            topic in levels(&["a", "b", "$s", ""]),
            filter in levels(&["a", "b", "+", "$s", ""]),
            rest in any::<bool>(),
        ) {
            let topic = topic.join("/");
            let mut filter = filter.join("/");
            if rest {
                filter.push_str("/#");
            }
            prop_assume!(rumqttd::protocol::valid_filter(&filter));
            // rumqttd matches no `$` topic at all; MQTT lets `$SYS/#` match `$SYS/x` (unit-tested
            // in `topic_filter.rs`).
            prop_assume!(!topic.starts_with('$'));
            let ours = TopicFilter::parse(&filter).expect("a valid filter parses");
            prop_assert_eq!(
                ours.matches(&topic),
                rumqttd::protocol::matches(&topic, &filter),
                "{} vs {}", filter, topic
            );
        }
    }
}
