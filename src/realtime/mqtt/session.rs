//! One MQTT connection: admitted by `connect.rs`, then packets both ways until either side
//! ends it.
//!
//! Sessions are clean: nothing is kept after the connection ends (a client asking for a
//! persistent session is told none was present). Deliveries are at QoS 0 or 1 (a QoS 2
//! subscription is granted QoS 1); QoS 1 deliveries in flight are bounded by the client's
//! Receive Maximum, and a client that does not acknowledge them stops reading from its
//! [`Subscription`], which then follows the lag policy. A PUBLISH is acknowledged only once what
//! it did is durable (`publish.rs`).

mod subscribing;

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttd::protocol::{
    Disconnect, DisconnectProperties, DisconnectReasonCode, LastWill, Packet, PingResp, PubComp,
    PubCompReason, PubRec, PubRecReason, QoS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::broker::{Message, Publisher};
use super::codec::{self, Codec, CodecError, Version};
use super::connect;
use super::grants::{Grants, lower};
use super::outbox::Outbox;
use super::publish::{self, Refusal, Relay};
use super::{Connection, Reader, Shared, Writer};
use crate::access::Identity;
use crate::bus::{self, RecvError};
use crate::events::ChangeKind;
use crate::realtime::{Item, Subscription};

/// Publishes one connection may have in progress: successive record writes share group commits,
/// and are still acknowledged in order.
const MAX_APPLYING: usize = 64;
/// The topic a client may subscribe to to be told when it fell behind (see the lag policy).
pub const RESYNC_TOPIC: &str = "$tablecast/resync";

/// A PUBLISH whose effect is known, waiting for its turn to be acknowledged.
struct Applied {
    topic: String,
    qos: QoS,
    pkid: u16,
    outcome: Result<Option<Relay>, Refusal>,
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
    let admitted = connect::admit(
        &mut reader,
        &mut writer,
        &mut input,
        &shared,
        (number, address),
    )
    .await;
    drop(connecting);
    let Some(client) = admitted else {
        return;
    };
    let taken_over = CancellationToken::new();
    shared
        .broker
        .connect(&client.id, number, taken_over.clone());
    let accepted = connect::accepted(&client, shared.max_body);
    let connect::Client {
        codec,
        id: client_id,
        keep_alive,
        receive_maximum,
        will,
        admitted: _admitted,
        identity,
        ..
    } = client;
    let mut session = Session {
        codec,
        writer,
        outbox: Outbox::new(codec, receive_maximum, client_id.clone()),
        grants: Grants::default(),
        subscription: shared.realtime.subscribe(identity.clone()),
        messages: shared.broker.listen(),
        awaiting_release: HashSet::new(),
        applying: FuturesOrdered::new(),
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
    };
    session.outbox.send(accepted);
    tracing::debug!(client = %client_id, version = ?session.codec.version(), "MQTT client connected");
    let end = session.serve(&mut reader, input, &taken_over).await;
    // Publishes read before the end are applied even though they can no longer be acknowledged:
    // a QoS 0 publish followed by a closed connection is a complete exchange.
    session.settle().await;
    shared.broker.disconnect(&client_id, number);
    let will = match end {
        End::Clean { with_will: false } => None,
        End::Clean { with_will: true } | End::Abrupt => will,
        End::Server(code) => {
            session.disconnect(code).await;
            None
        }
    };
    if let Some(will) = will {
        session.publish_will(will).await;
    }
    tracing::debug!(client = %client_id, "MQTT client disconnected");
}

struct Session {
    codec: Codec,
    writer: Writer,
    outbox: Outbox,
    grants: Grants,
    subscription: Subscription,
    messages: bus::Receiver<Message>,
    /// QoS 2 publishes received and answered with PUBREC, awaiting PUBREL.
    awaiting_release: HashSet<u16>,
    /// Publishes being applied, finished in the order they arrived.
    applying: FuturesOrdered<Pin<Box<dyn Future<Output = Applied> + Send>>>,
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
}

impl Session {
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
            while self.applying.len() < MAX_APPLYING {
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
            if self.outbox.release_queued() {
                continue;
            }
            let room = self.outbox.has_room();
            let reading = self.applying.len() < MAX_APPLYING;
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
                item = self.subscription.next(), if room => match item {
                    Some(item) => self.deliver_item(&item),
                    None => return End::Server(DisconnectReasonCode::ServerShuttingDown),
                },
                message = self.messages.recv(), if room => match message {
                    Ok(message) => self.deliver_message(&message),
                    Err(RecvError::Lagged(missed)) => tracing::warn!(
                        client = %self.client_id, missed,
                        "an MQTT client fell behind on plain-topic messages; they were dropped"
                    ),
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

    /// Finishes the publishes in progress.
    async fn settle(&mut self) {
        while let Some(applied) = self.applying.next().await {
            self.finish(applied);
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
                if let Err(error) = self.shared.access.limit(&self.identity, self.address) {
                    tracing::warn!(client = %self.client_id, "closing an MQTT connection: {error}");
                    self.disconnect(DisconnectReasonCode::MessageRateTooHigh)
                        .await;
                    return Some(End::Abrupt);
                }
                let (qos, pkid) = codec::qos_and_pkid(&publish);
                let topic = match publish::topic(&publish, properties.as_ref()) {
                    Ok(topic) => topic,
                    Err(code) => {
                        self.disconnect(code).await;
                        return Some(End::Abrupt);
                    }
                };
                let applying = if qos == QoS::ExactlyOnce && self.awaiting_release.contains(&pkid) {
                    // A resent QoS 2 publish we already applied: acknowledge it again.
                    Box::pin(std::future::ready(Ok(None)))
                } else {
                    let (payload, retain) = (publish.payload, publish.retain);
                    let from = (&self.publisher, self.identity.as_ref());
                    publish::accept(&self.shared, from, &topic, payload, qos, retain)
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
            Packet::PubAck(ack, _) => self.outbox.acknowledged(ack.pkid),
            Packet::PubRel(release, _) => {
                let known = self.awaiting_release.remove(&release.pkid);
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
            Packet::Subscribe(subscribe, _) => self.subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe, _) => self.unsubscribe(unsubscribe),
            Packet::PingReq(_) => self.outbox.send(Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect, _) => {
                return Some(End::Clean {
                    with_will: disconnect.reason_code
                        == DisconnectReasonCode::DisconnectWithWillMessage,
                });
            }
            // QoS 2 acknowledgements for deliveries we never send at QoS 2, and packets only a
            // server sends, or a second CONNECT: protocol errors.
            other => {
                tracing::debug!(client = %self.client_id, packet = ?other, "unexpected MQTT packet");
                self.disconnect(DisconnectReasonCode::ProtocolError).await;
                return Some(End::Abrupt);
            }
        }
        None
    }

    /// Completes a publish whose turn has come: relays it if it is a message, logs a refusal,
    /// and acknowledges it.
    fn finish(&mut self, applied: Applied) {
        let Applied {
            topic,
            qos,
            pkid,
            outcome,
        } = applied;
        let outcome = outcome.and_then(|relay| self.relay(relay));
        if let Err(refusal) = &outcome {
            refusal.log(&self.client_id, &topic);
            let v311 = self.codec.version() == Version::V311;
            if v311 && matches!(refusal, Refusal::RetainedFull(_)) {
                // Not acknowledged: 3.1.1 would say it succeeded.
                self.over_quota = true;
                return;
            }
        }
        if let Some(ack) = publish::acknowledgement(self.codec.version(), qos, pkid, &outcome) {
            if let Packet::PubRec(
                PubRec {
                    reason: PubRecReason::Success,
                    ..
                },
                _,
            ) = &ack
            {
                self.awaiting_release.insert(pkid);
            }
            self.outbox.send(ack);
        }
    }

    /// Relays what a publish asked to, if anything.
    fn relay(&self, relay: Option<Relay>) -> Result<(), Refusal> {
        relay.map_or(Ok(()), |relay| publish::relay(&self.shared, relay))
    }

    /// Sends a subscription item to the client.
    fn deliver_item(&mut self, item: &Item) {
        let (event, current) = match item {
            Item::Change(event) => (event.as_ref(), false),
            Item::Current(event) => (event, true),
            Item::Synced { .. } => return,
            Item::Resync => {
                // Only a client that subscribed to the resync topic hears of it; every client
                // gets the current values that follow, as retained messages.
                let qos = self.grants.best(|g| g.filter.matches(RESYNC_TOPIC));
                if let Some((qos, _)) = qos {
                    self.outbox
                        .deliver(RESYNC_TOPIC, br#"{"type":"resync"}"#, qos, false);
                }
                return;
            }
        };
        let Some((qos, retain_as_published)) = self
            .grants
            .best(|g| g.filter.matches_record(&event.table, &event.id))
        else {
            return;
        };
        let topic = format!("{}/{}", event.table, event.id);
        let payload = event.value.as_deref().unwrap_or_default();
        let retain = current || (retain_as_published && event.kind != ChangeKind::Message);
        self.outbox.deliver(&topic, payload, qos, retain);
    }

    fn deliver_message(&mut self, message: &Message) {
        let from_here = message.from.session == self.number;
        let granted = self
            .grants
            .best(|g| !(from_here && g.no_local) && g.filter.matches(&message.topic));
        if let Some((qos, retain_as_published)) = granted {
            let retain = retain_as_published && message.retain;
            self.outbox.deliver(
                &message.topic,
                &message.payload,
                lower(qos, message.qos),
                retain,
            );
        }
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
        tokio::select! {
            written = self.writer.write_all(&out) => written.map_err(|_| End::Abrupt),
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
        if let Some(out) = self.outbox.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.write_all(&out)).await;
        }
        let _ = self.writer.shutdown().await;
    }

    async fn publish_will(&mut self, will: LastWill) {
        let Ok(topic) = String::from_utf8(will.topic.to_vec()) else {
            return;
        };
        let applying = publish::accept(
            &self.shared,
            (&self.publisher, self.identity.as_ref()),
            &topic,
            will.message,
            will.qos,
            will.retain,
        );
        let outcome = applying.await.and_then(|relay| self.relay(relay));
        if let Err(refusal) = outcome {
            refusal.log(&self.client_id, &topic);
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
