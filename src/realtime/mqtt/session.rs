//! One MQTT connection: admitted by `connect.rs`, then packets both ways until either side
//! ends it.
//!
//! A session is clean (it ends with its connection) or persistent (`sessions.rs`): taken back
//! on reconnect, its subscriptions, unacknowledged deliveries and queued messages kept in the
//! store while the client is away. Deliveries go at QoS 0, 1 or 2; those in flight are bounded
//! by the client's Receive Maximum, and a client that does not acknowledge them stops reading
//! from its [`Subscription`], which then follows the lag policy. A PUBLISH is acknowledged only
//! once what it did is durable (`publish.rs`).

mod answering;
mod delivering;
mod keeping;
mod subscribing;
mod will;

use delivering::next_message;
use keeping::Keeping;
use will::{defer_will, publish_will};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttd::protocol::{
    ConnectReturnCode, Disconnect, DisconnectProperties, DisconnectReasonCode, Packet, PingResp,
    PubComp, PubCompReason, PubRecReason, QoS,
};
use std::time::Instant as StdInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::broker::{Message, Publisher};
use super::codec::{self, Codec, CodecError, Version};
use super::connect::{self};
use super::grants::Grants;
use super::outbox::{Delivery, Origin, Outbox};
use super::properties::Forwarded;
use super::publish::{self, Refusal, Relay};
use super::sessions::{Pending, Stored};
use super::sys::Stats;
use super::{Connection, Reader, Shared, Writer};
use crate::access::Identity;
use crate::bus::{self, RecvError};
use crate::error::{Chain, Error};
use crate::realtime::Subscription;

/// Publishes one connection may have in progress (applied or waiting for their
/// acknowledgement): successive record writes share group commits, messages kept for absent
/// clients share fsyncs, and all are still acknowledged in order.
const MAX_APPLYING: usize = 64;
/// QoS 1 and 2 publishes a client may have unanswered or awaiting release, at most (MQTT 5
/// Receive Maximum, given in the CONNACK).
pub const RECEIVE_MAXIMUM: usize = 1024;
/// The topic a client may subscribe to to be told when it fell behind (see the lag policy).
pub const RESYNC_TOPIC: &str = "$tablecast/resync";
/// Followed by its client id, the topic on which a client is told why a publish of its own was
/// refused: an MQTT 3.1.1 client, or a QoS 0 publish, has no acknowledgement to carry it.
pub const ERRORS_TOPIC: &str = "$tablecast/errors/";

/// A PUBLISH whose effect is known, waiting for its turn to be relayed and acknowledged.
struct Applied {
    topic: String,
    qos: QoS,
    pkid: u16,
    outcome: Result<Option<Relay>, Refusal>,
}

/// A PUBLISH relayed, waiting for its turn to be acknowledged.
struct Answer {
    topic: String,
    qos: QoS,
    pkid: u16,
    outcome: Result<(), Refusal>,
}

/// How the connection ended, which decides whether the will is published.
enum End {
    /// DISCONNECT from the client: no will (unless it asked for it).
    Clean { with_will: bool },
    /// Anything else: the network broke, keep-alive expired, a protocol error.
    Abrupt,
    /// The server is shutting down, or the client id connected again elsewhere.
    Server(DisconnectReasonCode),
}

/// Serves one connection, from `address`, until it ends.
pub async fn run(
    stream: Connection,
    address: IpAddr,
    shared: Arc<Shared>,
    number: u64,
    connecting: OwnedSemaphorePermit,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input = BytesMut::with_capacity(4096);
    let admitted = connect::admit(&mut reader, &mut writer, &mut input, &shared, address).await;
    drop(connecting);
    let Some(client) = admitted else {
        return;
    };
    let taken_over = CancellationToken::new();
    let owner = client.identity.user.as_deref();
    let connecting = (number, client.clean_start, owner);
    let turn = shared
        .broker
        .connect(&client.id, connecting, taken_over.clone());
    let Some(_turn) = turn.await else {
        tracing::warn!(client = %client.id, "refusing an MQTT connection: another user's client is connected under its client id");
        connect::refuse(
            &client.codec,
            &mut writer,
            connect::not_yours(client.codec.version()),
        )
        .await;
        return;
    };
    let (resumed, messages) = match shared.broker.resume(&client.id, client.clean_start, owner) {
        Ok(resumed) => resumed,
        Err(error) => {
            shared.broker.disconnect(&client.id, number);
            if let Error::Forbidden(why) = &error {
                tracing::warn!(client = %client.id, "refusing an MQTT connection: {why}");
                connect::refuse(
                    &client.codec,
                    &mut writer,
                    connect::not_yours(client.codec.version()),
                )
                .await;
            } else {
                tracing::error!(client = %client.id, error = %Chain(&error), "could not read a persistent MQTT session");
            }
            return;
        }
    };
    if resumed.is_none() && client.session_expiry > 0 && !shared.broker.sessions().admit(&client.id)
    {
        shared.broker.disconnect(&client.id, number);
        let limit = shared.broker.sessions().limits().max_sessions;
        tracing::warn!(client = %client.id, "refusing an MQTT connection: {limit} persistent sessions are kept already (--mqtt-max-sessions)");
        let full = match client.codec.version() {
            Version::V311 => ConnectReturnCode::ServiceUnavailable,
            Version::V5 => ConnectReturnCode::QuotaExceeded,
        };
        connect::refuse(&client.codec, &mut writer, full).await;
        return;
    }
    let accepted = connect::accepted(&client, shared.max_body, resumed.is_some());
    let connect::Client {
        codec,
        id: client_id,
        keep_alive,
        receive_maximum,
        max_packet,
        will,
        admitted: _admitted,
        identity,
        session_expiry,
        ..
    } = client;
    let mut session = Session {
        codec,
        writer,
        outbox: Outbox::new(
            codec,
            (receive_maximum, max_packet),
            client_id.clone(),
            shared.stats.clone(),
        ),
        grants: Grants::default(),
        subscription: shared.realtime.subscribe(identity.clone()),
        messages: Some(messages),
        awaiting_release: HashSet::new(),
        receiving: HashSet::new(),
        applying: FuturesOrdered::new(),
        answering: FuturesOrdered::new(),
        keep_alive,
        shared: shared.clone(),
        number,
        publisher: Publisher {
            session: number,
            client: client_id.as_str().into(),
        },
        client_id: client_id.clone(),
        over_quota: false,
        identity,
        address,
        keeping: Keeping {
            expiry: session_expiry,
            next_seq: 1,
            table_through: shared.realtime.store().last_seq(),
            saved_through: 0,
            saved_at: StdInstant::now(),
        },
        aliases: HashMap::new(),
        answers_owed: 0,
        pending: Pending::default(),
    };
    session.outbox.send(accepted);
    session.restore(resumed);
    session.listen_if_subscribed();
    tracing::debug!(client = %client_id, version = ?session.codec.version(), "MQTT client connected");
    let end = session.serve(&mut reader, input, &taken_over).await;
    // Publishes read before the end are applied even though they can no longer be acknowledged:
    // a QoS 0 publish followed by a closed connection is a complete exchange.
    session.settle().await;
    let will = match end {
        End::Clean { with_will: false } => None,
        End::Clean { with_will: true } | End::Abrupt => will,
        End::Server(code) => {
            session.disconnect(code).await;
            None
        }
    };
    if let Some(will) = will {
        let ends = match session.persistent() {
            true => Duration::from_secs(u64::from(session.keeping.expiry)),
            false => Duration::ZERO,
        };
        let delay = will.delay().min(ends);
        let (publisher, identity) = (session.publisher.clone(), session.identity.clone());
        if delay.is_zero() {
            publish_will(shared.clone(), publisher, identity, will).await;
        } else {
            defer_will(shared.clone(), publisher, identity, will, delay);
        }
    }
    session.leave();
    shared.broker.disconnect(&client_id, number);
    tracing::debug!(client = %client_id, "MQTT client disconnected");
}

struct Session {
    codec: Codec,
    writer: Writer,
    outbox: Outbox,
    grants: Grants,
    subscription: Subscription,
    /// Plain-topic messages, listened to while the session holds a subscription.
    messages: Option<bus::Receiver<Message>>,
    /// QoS 2 publishes received and answered with PUBREC, awaiting PUBREL.
    awaiting_release: HashSet<u16>,
    /// QoS 2 publishes received and not yet answered: a resent copy is not applied again.
    receiving: HashSet<u16>,
    /// Publishes being applied, finished in the order they arrived.
    applying: FuturesOrdered<Pin<Box<dyn Future<Output = Applied> + Send>>>,
    /// Acknowledgements waiting for the messages they relayed to be on disk (kept for absent
    /// clients), and those behind them, in order.
    answering: FuturesOrdered<Pin<Box<dyn Future<Output = Answer> + Send>>>,
    keep_alive: Duration,
    shared: Arc<Shared>,
    number: u64,
    publisher: Publisher,
    client_id: String,
    /// An MQTT 3.1.1 client published more than the broker may retain for it: 3.1.1 has no
    /// negative acknowledgement, so the connection is closed.
    over_quota: bool,
    /// Who the client is.
    identity: Arc<Identity>,
    address: IpAddr,
    keeping: Keeping,
    /// The topic aliases the client set (MQTT 5).
    aliases: HashMap<u16, String>,
    /// QoS 1 and 2 publishes received and not yet answered.
    answers_owed: usize,
    /// Changes to kept QoS 1 messages not yet written.
    pending: Pending,
}

impl Session {
    /// Publishes being applied or waiting for their acknowledgement.
    fn in_progress(&self) -> usize {
        self.applying.len() + self.answering.len()
    }

    async fn serve(
        &mut self,
        reader: &mut Reader,
        mut input: BytesMut,
        taken_over: &CancellationToken,
    ) -> End {
        let closing = self.shared.realtime.closing().clone();
        let mut deadline = self.deadline();
        // A packet that has begun to arrive: when, and what it holds of the intake budget.
        let mut partial_since: Option<Instant> = None;
        let mut share = self.shared.intake.share();
        loop {
            // Packets already read, as many as there is room to apply.
            while self.in_progress() < MAX_APPLYING {
                match self.codec.read(&mut input) {
                    Ok(Some(packet)) => {
                        if let Some(end) = self.handle(packet).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(client = %self.client_id, %error, "closing an MQTT connection");
                        let code = match error {
                            CodecError::TooLarge(_) => DisconnectReasonCode::PacketTooLarge,
                            CodecError::Malformed(_) => DisconnectReasonCode::MalformedPacket,
                        };
                        self.disconnect(code).await;
                        return End::Abrupt;
                    }
                }
            }
            if input.is_empty() {
                partial_since = None;
            } else {
                partial_since.get_or_insert_with(Instant::now);
            }
            if share.hold(input.len()).is_err() {
                tracing::warn!(client = %self.client_id, "closing an MQTT connection: packets being received hold --body-memory");
                self.disconnect(DisconnectReasonCode::ServerBusy).await;
                return End::Abrupt;
            }
            let partial_deadline = partial_since.map(|since| since + self.shared.intake.timeout());
            // Answers and deliveries go out before waiting for anything else.
            if let Err(end) = self.flush(&closing, taken_over).await {
                return end;
            }
            self.save_position();
            self.write_pending(false);
            if self.release_queued() {
                continue;
            }
            let room = self.outbox.has_room();
            let reading = self.in_progress() < MAX_APPLYING;
            tokio::select! {
                // Input first: packets that waited while a flush was blocked count for the
                // keep-alive before its deadline is looked at.
                biased;
                read = reader.read_buf(&mut input), if reading => match read {
                    Ok(0) | Err(_) => return End::Abrupt,
                    Ok(_) => deadline = self.deadline(),
                },
                Some(applied) = self.applying.next(), if !self.applying.is_empty() => {
                    self.finish(applied);
                    if self.over_quota {
                        self.disconnect(DisconnectReasonCode::QuotaExceeded).await;
                        return End::Abrupt;
                    }
                }
                Some(answer) = self.answering.next(), if !self.answering.is_empty() => {
                    self.answer(answer);
                    if self.over_quota {
                        self.disconnect(DisconnectReasonCode::QuotaExceeded).await;
                        return End::Abrupt;
                    }
                }
                item = self.subscription.next(), if room && self.subscription.is_active() => match item {
                    Some(item) => self.deliver_item(&item),
                    None => return End::Server(DisconnectReasonCode::ServerShuttingDown),
                },
                message = next_message(&mut self.messages), if room => match message {
                    Ok(message) => {
                        self.deliver_message(&message);
                        self.deliver_ready_messages();
                    }
                    Err(RecvError::Lagged(missed)) => self.missed(missed),
                    Err(RecvError::Closed) => return End::Server(DisconnectReasonCode::ServerShuttingDown),
                },
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    tracing::debug!(client = %self.client_id, "MQTT keep-alive expired");
                    self.disconnect(DisconnectReasonCode::KeepAliveTimeout).await;
                    return End::Abrupt;
                }
                () = sleep_until(partial_deadline.unwrap_or_else(far_future)), if partial_deadline.is_some() && reading => {
                    tracing::debug!(client = %self.client_id, "an MQTT packet did not arrive whole within --body-timeout");
                    self.disconnect(DisconnectReasonCode::ImplementationSpecificError).await;
                    return End::Abrupt;
                }
                () = closing.cancelled() => return End::Server(DisconnectReasonCode::ServerShuttingDown),
                () = taken_over.cancelled() => return End::Server(DisconnectReasonCode::SessionTakenOver),
            }
        }
    }

    /// Finishes the publishes in progress, and their acknowledgements.
    async fn settle(&mut self) {
        while let Some(applied) = self.applying.next().await {
            self.finish(applied);
        }
        while let Some(answer) = self.answering.next().await {
            self.answer(answer);
        }
    }

    /// When the connection expires without a packet: 1.5 times the keep-alive (none if 0).
    fn deadline(&self) -> Option<Instant> {
        (!self.keep_alive.is_zero()).then(|| Instant::now() + self.keep_alive.mul_f32(1.5))
    }

    /// Handles one packet from the client; `Some` ends the connection.
    async fn handle(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Publish(publish, properties) => {
                Stats::count(&self.shared.stats.received);
                if let Err(error) = self.shared.access.limit(&self.identity, self.address) {
                    tracing::warn!(client = %self.client_id, "closing an MQTT connection: {error}");
                    self.disconnect(DisconnectReasonCode::MessageRateTooHigh)
                        .await;
                    return Some(End::Abrupt);
                }
                let (qos, pkid) = codec::qos_and_pkid(&publish);
                let topic = match publish::topic(&publish, properties.as_ref(), &mut self.aliases) {
                    Ok(topic) => topic,
                    Err(code) => {
                        self.disconnect(code).await;
                        return Some(End::Abrupt);
                    }
                };
                let resent = qos == QoS::ExactlyOnce
                    && (self.awaiting_release.contains(&pkid) || self.receiving.contains(&pkid));
                if qos == QoS::ExactlyOnce && !resent {
                    self.receiving.insert(pkid);
                }
                if qos != QoS::AtMostOnce {
                    let in_progress = self.answers_owed + self.awaiting_release.len();
                    if !resent && in_progress >= RECEIVE_MAXIMUM {
                        // Past the Receive Maximum given in the CONNACK (a 3.1.1 client, which
                        // was told none, is held to it too: QoS 2 state is memory).
                        tracing::debug!(client = %self.client_id, "an MQTT client exceeded the Receive Maximum");
                        self.disconnect(DisconnectReasonCode::ReceiveMaximumExceeded)
                            .await;
                        return Some(End::Abrupt);
                    }
                    self.answers_owed += 1;
                }
                let applying = if resent {
                    // A resent QoS 2 publish we already applied: acknowledge it again.
                    Box::pin(std::future::ready(Ok(None)))
                } else {
                    let published = (publish.payload, qos, publish.retain);
                    let from = (&self.publisher, self.identity.as_ref());
                    let forwarded = Forwarded::of(properties.as_ref());
                    publish::accept(&self.shared, from, &topic, published, forwarded)
                };
                self.applying.push_back(Box::pin(async move {
                    Applied {
                        topic,
                        qos,
                        pkid,
                        outcome: applying.await,
                    }
                }));
            }
            Packet::PubAck(ack, _) => {
                let settled = self.outbox.acknowledged(ack.pkid);
                self.settled(settled, QoS::AtLeastOnce);
            }
            Packet::PubRec(received, _) => {
                let accepted = matches!(
                    received.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                );
                match self.outbox.received(received.pkid, accepted) {
                    Some((origin, true)) => self.settled(Some(origin), QoS::ExactlyOnce),
                    Some((Origin::Kept(seq), false)) if self.persistent() => {
                        // Only the PUBREL is owed now.
                        let released = Stored {
                            seq,
                            delivery: Delivery {
                                qos: QoS::ExactlyOnce,
                                ..Delivery::default()
                            },
                            pkid: received.pkid,
                            released: true,
                        };
                        self.keep(&released);
                    }
                    Some(_) | None => {}
                }
            }
            Packet::PubComp(completed, _) => {
                let settled = self.outbox.completed(completed.pkid);
                self.settled(settled, QoS::ExactlyOnce);
            }
            Packet::PubRel(release, _) => {
                let known = self.awaiting_release.remove(&release.pkid);
                if known {
                    self.save();
                }
                self.outbox.send(Packet::PubComp(
                    PubComp {
                        pkid: release.pkid,
                        reason: if known {
                            PubCompReason::Success
                        } else {
                            PubCompReason::PacketIdentifierNotFound
                        },
                    },
                    None,
                ));
            }
            Packet::Subscribe(subscribe, properties) => self.subscribe(subscribe, properties),
            Packet::Unsubscribe(unsubscribe, _) => self.unsubscribe(unsubscribe),
            Packet::PingReq(_) => self.outbox.send(Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect, properties) => {
                let expiry = properties.and_then(|p| p.session_expiry_interval);
                if let Some(expiry) = expiry
                    && self.keeping.expiry > 0
                {
                    // A session that was to end with the connection cannot be made to outlive
                    // it (MQTT-3.14.2-2); any other may change its expiry.
                    let longest = self.shared.broker.sessions().limits().max_expiry.as_secs();
                    self.keeping.expiry = expiry.min(u32::try_from(longest).unwrap_or(u32::MAX));
                }
                return Some(End::Clean {
                    with_will: disconnect.reason_code
                        == DisconnectReasonCode::DisconnectWithWillMessage,
                });
            }
            // Packets only a server sends, or a second CONNECT: protocol errors.
            other => {
                tracing::debug!(client = %self.client_id, packet = ?other, "unexpected MQTT packet");
                self.disconnect(DisconnectReasonCode::ProtocolError).await;
                return Some(End::Abrupt);
            }
        }
        None
    }

    /// Writes what is buffered. A client that stops reading blocks only its own session.
    async fn flush(
        &mut self,
        closing: &CancellationToken,
        taken_over: &CancellationToken,
    ) -> Result<(), End> {
        let Some(out) = self.outbox.take() else {
            return Ok(());
        };
        // Flushed too: TLS and WebSocket streams hold what they were given until then.
        let written = async {
            self.writer.write_all(&out).await?;
            self.writer.flush().await
        };
        tokio::select! {
            written = written => written.map_err(|_| End::Abrupt),
            () = closing.cancelled() => Err(End::Server(DisconnectReasonCode::ServerShuttingDown)),
            () = taken_over.cancelled() => Err(End::Server(DisconnectReasonCode::SessionTakenOver)),
        }
    }

    /// Tells an MQTT 5 client why the server closes the connection (3.1.1 has no such packet).
    async fn disconnect(&mut self, code: DisconnectReasonCode) {
        if self.codec.version() == Version::V5 {
            let disconnect = Disconnect { reason_code: code };
            // rumqttd encodes a DISCONNECT with a reason but no properties wrongly (a stray byte
            // its own reader refuses): a reason string keeps the packet well-formed.
            let properties = DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(format!("{code:?}")),
                user_properties: Vec::new(),
                server_reference: None,
            };
            self.outbox
                .send(Packet::Disconnect(disconnect, Some(properties)));
        }
        // Bounded: a dead peer must not hold the client id's turn for TCP's retransmission time.
        let out = self.outbox.take();
        let goodbye = async {
            if let Some(out) = out {
                self.writer.write_all(&out).await?;
                self.writer.flush().await?;
            }
            self.writer.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
