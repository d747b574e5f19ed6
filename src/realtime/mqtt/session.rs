//! One MQTT connection: CONNECT, then packets both ways until either side ends it.
//!
//! Sessions are clean: nothing is kept after the connection ends (a client asking for a
//! persistent session is told none was present). Deliveries are at QoS 0 or 1 (a QoS 2
//! subscription is granted QoS 1); QoS 1 deliveries in flight are bounded by the client's
//! Receive Maximum, and a client that does not acknowledge them stops reading from its
//! [`Subscription`], which then follows the lag policy. A PUBLISH is acknowledged only once what
//! it did is durable.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill,
    Packet, PingResp, PubAck, PubAckProperties, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecProperties, PubRecReason, QoS, RetainForwardRule, SubAck, SubAckProperties, Subscribe,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, Message};
use super::codec::{self, Codec, CodecError, Hello, Version};
use crate::error::Error;
use crate::events::{ChangeEvent, ChangeKind};
use crate::realtime::{Item, Realtime, Subscription, TopicFilter};

/// How long a new connection has to send its CONNECT packet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// QoS 1 deliveries awaiting acknowledgement, at most (lower if the client asks).
const MAX_IN_FLIGHT: u16 = 1024;
/// Publishes one connection may have in progress: successive record writes share group commits,
/// and are still acknowledged in order.
const MAX_APPLYING: usize = 64;
/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// The topic a client may subscribe to to be told when it fell behind (see the lag policy).
pub const RESYNC_TOPIC: &str = "$tablecast/resync";

/// What every session shares.
pub struct Shared {
    pub realtime: Realtime,
    pub broker: Broker,
    /// Largest record payload accepted, as for HTTP bodies.
    pub max_body: usize,
}

struct Grant {
    filter: TopicFilter,
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
}

/// Why a PUBLISH was not applied.
struct Refusal {
    reason: PubAckReason,
    detail: String,
}

impl Refusal {
    fn topic(detail: impl Into<String>) -> Refusal {
        Refusal {
            reason: PubAckReason::TopicNameInvalid,
            detail: detail.into(),
        }
    }

    fn payload(detail: impl Into<String>) -> Refusal {
        Refusal {
            reason: PubAckReason::PayloadFormatInvalid,
            detail: detail.into(),
        }
    }
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        let reason = match &error {
            Error::InvalidId { .. } => PubAckReason::TopicNameInvalid,
            Error::SchemaViolation { .. } | Error::KeyMismatch { .. } => {
                PubAckReason::PayloadFormatInvalid
            }
            _ => PubAckReason::UnspecifiedError,
        };
        let detail = match &error {
            Error::SchemaViolation { violations, .. } => format!(
                "{error}: {}",
                violations
                    .iter()
                    .map(|v| format!(
                        "{}: {}",
                        if v.pointer.is_empty() {
                            "/"
                        } else {
                            &v.pointer
                        },
                        v.message
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => error.to_string(),
        };
        Refusal { reason, detail }
    }
}

/// A message a PUBLISH asks to relay.
enum Relay {
    /// To a record's subscribers (non-retained, on a table topic).
    Record(ChangeEvent),
    /// Among MQTT clients (a plain topic).
    Broker(Message),
}

/// What applying a PUBLISH comes to: nothing more to do, a message to relay, or a refusal.
type Applying = Pin<Box<dyn Future<Output = Result<Option<Relay>, Refusal>> + Send>>;

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

/// Serves one connection until it ends.
pub async fn run(stream: TcpStream, shared: Arc<Shared>, number: u64) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut input = BytesMut::with_capacity(4096);
    let connect = tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_connect(&mut reader, &mut input, &shared),
    );
    let (codec, connect, will) = match connect.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(refusal)) => {
            if let Some((codec, code)) = refusal {
                refuse(&codec, writer, code).await;
            }
            return;
        }
        Err(_) => {
            tracing::debug!("an MQTT connection sent no CONNECT in time");
            return;
        }
    };
    let Some(_admitted) = shared.realtime.admit() else {
        tracing::warn!(
            limit = shared.realtime.max_subscribers(),
            "refusing an MQTT connection: the server serves its limit of subscribers"
        );
        let busy = match codec.version() {
            Version::V311 => ConnectReturnCode::ServiceUnavailable,
            Version::V5 => ConnectReturnCode::ServerBusy,
        };
        refuse(&codec, writer, busy).await;
        return;
    };
    let client_id = if connect.client_id.is_empty() {
        format!("tablecast-{number}")
    } else {
        connect.client_id.clone()
    };
    let taken_over = CancellationToken::new();
    shared
        .broker
        .connect(&client_id, number, taken_over.clone());
    let mut session = Session {
        // The client's Receive Maximum bounds our QoS 1 deliveries in flight.
        window: connect
            .receive_maximum
            .unwrap_or(MAX_IN_FLIGHT)
            .clamp(1, MAX_IN_FLIGHT),
        codec,
        writer,
        out: BytesMut::with_capacity(4096),
        grants: Vec::new(),
        subscription: shared.realtime.subscribe(),
        messages: shared.broker.listen(),
        queued: VecDeque::new(),
        in_flight: HashSet::new(),
        next_pkid: 0,
        awaiting_release: HashSet::new(),
        applying: FuturesOrdered::new(),
        keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
        shared: shared.clone(),
        number,
        client_id: client_id.clone(),
    };
    let properties = (session.codec.version() == Version::V5).then(|| ConnAckProperties {
        assigned_client_identifier: connect.client_id.is_empty().then(|| client_id.clone()),
        retain_available: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        max_packet_size: u32::try_from(max_packet(shared.max_body)).ok(),
        ..ConnAckProperties::default()
    });
    session.send(Packet::ConnAck(
        ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
        },
        properties,
    ));
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

/// Answers a CONNECT with a refusal; the connection then closes.
async fn refuse(codec: &Codec, mut writer: OwnedWriteHalf, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    let refused = Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    );
    if codec.write(refused, &mut out).is_ok() {
        let _ = writer.write_all(&out).await;
    }
}

/// What a CONNECT said that the session needs.
struct Connected {
    client_id: String,
    keep_alive: u16,
    receive_maximum: Option<u16>,
}

type ConnectRefusal = Option<(Codec, ConnectReturnCode)>;

/// Reads the CONNECT packet; on refusal, the codec and code to answer with (if any).
async fn read_connect(
    reader: &mut OwnedReadHalf,
    input: &mut BytesMut,
    shared: &Shared,
) -> Result<(Codec, Connected, Option<LastWill>), ConnectRefusal> {
    let max_packet = max_packet(shared.max_body);
    let codec = loop {
        match codec::hello(input) {
            Hello::Incomplete => {}
            Hello::Connect(version) => break Codec::new(version, max_packet),
            Hello::UnsupportedLevel(level) => {
                tracing::debug!(level, "refusing an MQTT protocol level other than 4 or 5");
                return Err(Some((
                    Codec::new(Version::V311, max_packet),
                    ConnectReturnCode::RefusedProtocolVersion,
                )));
            }
            Hello::NotMqtt => return Err(None),
        }
        if reader.read_buf(input).await.unwrap_or(0) == 0 {
            return Err(None);
        }
    };
    loop {
        match codec.read(input) {
            Ok(Some(Packet::Connect(connect, properties, will, _, _))) => {
                if connect.client_id.is_empty() && !connect.clean_session {
                    // MQTT 3.1.1: a persistent session needs a client id.
                    return Err(Some((codec, ConnectReturnCode::ClientIdentifierNotValid)));
                }
                if let Some(will) = &will
                    && std::str::from_utf8(&will.topic)
                        .map_or(true, |t| t.is_empty() || t.contains(['+', '#']))
                {
                    // A malformed CONNECT: the connection is closed without an answer.
                    return Err(None);
                }
                let connected = Connected {
                    client_id: connect.client_id,
                    keep_alive: connect.keep_alive,
                    receive_maximum: properties.and_then(|p| p.receive_maximum),
                };
                return Ok((codec, connected, will));
            }
            Ok(Some(_)) | Err(_) => return Err(None),
            Ok(None) => {
                if reader.read_buf(input).await.unwrap_or(0) == 0 {
                    return Err(None);
                }
            }
        }
    }
}

struct Session {
    codec: Codec,
    writer: OwnedWriteHalf,
    out: BytesMut,
    grants: Vec<Grant>,
    subscription: Subscription,
    messages: tokio::sync::broadcast::Receiver<Arc<Message>>,
    /// Deliveries waiting for room in the QoS 1 window (retained plain-broker messages).
    queued: VecDeque<(String, Bytes, QoS)>,
    in_flight: HashSet<u16>,
    window: u16,
    next_pkid: u16,
    /// QoS 2 publishes received and answered with PUBREC, awaiting PUBREL.
    awaiting_release: HashSet<u16>,
    /// Publishes being applied, finished in the order they arrived.
    applying: FuturesOrdered<Pin<Box<dyn Future<Output = Applied> + Send>>>,
    keep_alive: Duration,
    shared: Arc<Shared>,
    number: u64,
    client_id: String,
}

/// The largest packet read: a payload of the body limit, a topic of MQTT's longest, and headers.
fn max_packet(max_body: usize) -> usize {
    max_body + 65_536 + 16
}

impl Session {
    async fn serve(
        &mut self,
        reader: &mut OwnedReadHalf,
        mut input: BytesMut,
        taken_over: &CancellationToken,
    ) -> End {
        let closing = self.shared.realtime.closing().clone();
        let mut deadline = self.deadline();
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
            // Answers and deliveries go out before waiting for anything else.
            if let Err(end) = self.flush(&closing, taken_over).await {
                return end;
            }
            let room = self.in_flight.len() < usize::from(self.window);
            if room && let Some((topic, payload, qos)) = self.queued.pop_front() {
                self.deliver(&topic, &payload, qos, true);
                continue;
            }
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
                let (qos, pkid) = codec::qos_and_pkid(&publish);
                if properties.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
                    // We advertise no topic aliases (Topic Alias Maximum 0).
                    self.disconnect(DisconnectReasonCode::TopicAliasInvalid)
                        .await;
                    return Some(End::Abrupt);
                }
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    self.disconnect(DisconnectReasonCode::TopicNameInvalid)
                        .await;
                    return Some(End::Abrupt);
                };
                if topic.is_empty() || topic.contains(['+', '#']) {
                    self.disconnect(DisconnectReasonCode::TopicNameInvalid)
                        .await;
                    return Some(End::Abrupt);
                }
                let topic = topic.to_owned();
                let applying = if qos == QoS::ExactlyOnce && self.awaiting_release.contains(&pkid) {
                    // A resent QoS 2 publish we already applied: acknowledge it again.
                    Box::pin(std::future::ready(Ok(None)))
                } else {
                    self.accept(&topic, publish.payload, qos, publish.retain)
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
                self.in_flight.remove(&ack.pkid);
            }
            Packet::PubRel(release, _) => {
                let known = self.awaiting_release.remove(&release.pkid);
                self.send(Packet::PubComp(
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
            Packet::PingReq(_) => self.send(Packet::PingResp(PingResp)),
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

    /// Checks a PUBLISH and starts what it asks: a record write or delete (the returned future
    /// completes once it is durable), or a message to relay (returned, to be relayed in turn).
    fn accept(&self, topic: &str, payload: Bytes, qos: QoS, retain: bool) -> Applying {
        let refuse = |refusal| -> Applying { Box::pin(std::future::ready(Err(refusal))) };
        let relay = |relay| -> Applying { Box::pin(std::future::ready(Ok(Some(relay)))) };
        if payload.len() > self.shared.max_body {
            return refuse(Refusal {
                reason: PubAckReason::QuotaExceeded,
                detail: format!(
                    "the payload of {} bytes is over the {}-byte limit",
                    payload.len(),
                    self.shared.max_body
                ),
            });
        }
        let catalog = self.shared.realtime.catalog().clone();
        let (first, id) = match topic.split_once('/') {
            Some((first, id)) => (first, Some(id)),
            None => (topic, None),
        };
        let Ok(resource) = catalog.resource(first) else {
            if reserved_for_tables(first) {
                return refuse(Refusal::topic(format!(
                    "there is no table named `{first}` (topics whose first level starts with an \
                     upper-case letter are reserved for tables)"
                )));
            }
            return relay(Relay::Broker(Message {
                topic: topic.to_owned(),
                payload,
                qos,
                retain,
                from: self.number,
            }));
        };
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return refuse(Refusal::topic(format!(
                "a topic of table `{first}` names a record: `{first}/<id>`"
            )));
        };
        let key = match resource.table().parse_id(id) {
            Ok(key) => key,
            Err(error) => return refuse(error.into()),
        };
        if !retain {
            return relay(Relay::Record(ChangeEvent {
                kind: ChangeKind::Message,
                table: resource.table().schema().name.clone(),
                id: key,
                version: 0,
                value: Some(payload),
                seq: None,
            }));
        }
        let record = if payload.is_empty() {
            None
        } else {
            match serde_json::from_slice(&payload) {
                Ok(record) => Some(record),
                Err(e) => return refuse(Refusal::payload(format!("the payload is not JSON: {e}"))),
            }
        };
        let table = first.to_owned();
        Box::pin(async move {
            let resource = catalog.resource(&table)?;
            match record {
                Some(record) => resource.put(key, record).await.map(drop)?,
                None => match resource.delete(key).await {
                    Ok(()) | Err(Error::RecordNotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                },
            }
            Ok(None)
        })
    }

    /// Relays a message, in its turn among the connection's publishes.
    fn relay(&self, relay: Relay) -> Result<(), Refusal> {
        match relay {
            Relay::Record(event) => {
                self.shared.realtime.events().publish(event);
                Ok(())
            }
            Relay::Broker(message) => {
                self.shared
                    .broker
                    .publish(message)
                    .map_err(|detail| Refusal {
                        reason: PubAckReason::QuotaExceeded,
                        detail,
                    })
            }
        }
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
        let outcome = outcome.and_then(|relay| relay.map_or(Ok(()), |r| self.relay(r)));
        if let Err(refusal) = &outcome {
            tracing::warn!(
                client = %self.client_id, topic, reason = ?refusal.reason,
                "refused an MQTT publish: {}", refusal.detail
            );
        }
        self.acknowledge(qos, pkid, outcome);
    }

    /// Answers a PUBLISH by its QoS; MQTT 3.1.1 has no way to say it was refused.
    fn acknowledge(&mut self, qos: QoS, pkid: u16, outcome: Result<(), Refusal>) {
        let (reason, detail) = match outcome {
            Ok(()) => (PubAckReason::Success, None),
            Err(refusal) => (refusal.reason, Some(refusal.detail)),
        };
        let v5 = self.codec.version() == Version::V5;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let properties = detail.filter(|_| v5).map(|detail| PubAckProperties {
                    reason_string: Some(detail),
                    user_properties: Vec::new(),
                });
                let reason = if v5 { reason } else { PubAckReason::Success };
                self.send(Packet::PubAck(PubAck { pkid, reason }, properties));
            }
            QoS::ExactlyOnce => {
                let properties = detail.filter(|_| v5).map(|detail| PubRecProperties {
                    reason_string: Some(detail),
                    user_properties: Vec::new(),
                });
                let reason = match reason {
                    _ if !v5 => PubRecReason::Success,
                    PubAckReason::Success => PubRecReason::Success,
                    PubAckReason::TopicNameInvalid => PubRecReason::TopicNameInvalid,
                    PubAckReason::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
                    PubAckReason::QuotaExceeded => PubRecReason::QuotaExceeded,
                    _ => PubRecReason::UnspecifiedError,
                };
                if reason == PubRecReason::Success {
                    self.awaiting_release.insert(pkid);
                }
                self.send(Packet::PubRec(PubRec { pkid, reason }, properties));
            }
        }
    }

    fn subscribe(&mut self, subscribe: Subscribe) {
        let v5 = self.codec.version() == Version::V5;
        let catalog = self.shared.realtime.catalog().clone();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut refusals = Vec::new();
        for request in subscribe.filters {
            let code = match self.grant(&request.path, &catalog) {
                Ok(filter) => {
                    let qos = lower(request.qos, QoS::AtLeastOnce);
                    let existed = self.grants.iter().any(|g| g.filter == filter);
                    let send_current = match request.retain_forward_rule {
                        RetainForwardRule::OnEverySubscribe => true,
                        RetainForwardRule::OnNewSubscribe => !existed,
                        RetainForwardRule::Never => false,
                    };
                    self.grants.retain(|g| g.filter != filter);
                    self.grants.push(Grant {
                        filter: filter.clone(),
                        qos,
                        no_local: v5 && request.nolocal,
                        retain_as_published: v5 && request.preserve_retain,
                    });
                    if catalog
                        .resources()
                        .any(|r| filter.may_match_table(r.table().name()))
                    {
                        if send_current {
                            self.subscription.watch(filter.clone());
                        } else {
                            self.subscription.watch_changes(filter.clone());
                        }
                    }
                    if send_current {
                        for (topic, payload) in self.shared.broker.retained(&filter) {
                            self.queued.push_back((topic, payload, qos));
                        }
                    }
                    SubscribeReasonCode::Success(qos)
                }
                Err((code, detail)) => {
                    tracing::warn!(client = %self.client_id, filter = request.path, "refused an MQTT subscription: {detail}");
                    refusals.push(format!("{}: {detail}", request.path));
                    if v5 {
                        code
                    } else {
                        SubscribeReasonCode::Failure
                    }
                }
            };
            codes.push(code);
        }
        let properties = (v5 && !refusals.is_empty()).then(|| SubAckProperties {
            reason_string: Some(refusals.join("; ")),
            user_properties: Vec::new(),
        });
        self.send(Packet::SubAck(
            SubAck {
                pkid: subscribe.pkid,
                return_codes: codes,
            },
            properties,
        ));
    }

    /// Checks a subscription's filter.
    fn grant(
        &self,
        path: &str,
        catalog: &crate::catalog::Catalog,
    ) -> Result<TopicFilter, (SubscribeReasonCode, String)> {
        if path.starts_with("$share/") {
            return Err((
                SubscribeReasonCode::SharedSubscriptionsNotSupported,
                "shared subscriptions are not supported".to_owned(),
            ));
        }
        let filter = TopicFilter::parse(path)
            .map_err(|reason| (SubscribeReasonCode::TopicFilterInvalid, reason))?;
        if let Some(first) = filter.first()
            && reserved_for_tables(first)
            && catalog.resource(first).is_err()
        {
            return Err((
                SubscribeReasonCode::TopicFilterInvalid,
                format!(
                    "there is no table named `{first}` (topics whose first level starts with an \
                     upper-case letter are reserved for tables)"
                ),
            ));
        }
        let is_new = !self.grants.iter().any(|g| g.filter == filter);
        if is_new && self.grants.len() >= MAX_SUBSCRIPTIONS {
            return Err((
                SubscribeReasonCode::QuotaExceeded,
                format!("a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions"),
            ));
        }
        Ok(filter)
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let reasons = unsubscribe
            .filters
            .iter()
            .map(|path| {
                let Ok(filter) = TopicFilter::parse(path) else {
                    return UnsubAckReason::TopicFilterInvalid;
                };
                let before = self.grants.len();
                self.grants.retain(|g| g.filter != filter);
                self.subscription.unwatch(&filter);
                if self.grants.len() < before {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        self.send(Packet::UnsubAck(
            UnsubAck {
                pkid: unsubscribe.pkid,
                reasons,
            },
            None,
        ));
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
                let qos = self.granted(|g| g.filter.matches(RESYNC_TOPIC));
                if let Some((qos, _)) = qos {
                    self.deliver(RESYNC_TOPIC, br#"{"type":"resync"}"#, qos, false);
                }
                return;
            }
        };
        let Some((qos, retain_as_published)) =
            self.granted(|g| g.filter.matches_record(&event.table, &event.id))
        else {
            return;
        };
        let topic = format!("{}/{}", event.table, event.id);
        let payload = event.value.as_deref().unwrap_or_default();
        let retain = current || (retain_as_published && event.kind != ChangeKind::Message);
        self.deliver(&topic, payload, qos, retain);
    }

    fn deliver_message(&mut self, message: &Message) {
        let from_here = message.from == self.number;
        let granted =
            self.granted(|g| !(from_here && g.no_local) && g.filter.matches(&message.topic));
        if let Some((qos, retain_as_published)) = granted {
            let retain = retain_as_published && message.retain;
            self.deliver(
                &message.topic,
                &message.payload,
                lower(qos, message.qos),
                retain,
            );
        }
    }

    /// The highest QoS granted by the subscriptions that pass `matches`, and whether any of
    /// them keeps the retain flag as published. Overlapping subscriptions get one delivery.
    fn granted(&self, matches: impl Fn(&Grant) -> bool) -> Option<(QoS, bool)> {
        self.grants
            .iter()
            .filter(|g| matches(g))
            .fold(None, |best, g| match best {
                None => Some((g.qos, g.retain_as_published)),
                Some((qos, rap)) => Some((higher(qos, g.qos), rap || g.retain_as_published)),
            })
    }

    fn deliver(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => self.allocate_pkid(),
        };
        self.send(Packet::Publish(
            codec::publish(topic, payload, qos, pkid, retain),
            None,
        ));
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains(&self.next_pkid) {
                self.in_flight.insert(self.next_pkid);
                return self.next_pkid;
            }
        }
    }

    fn send(&mut self, packet: Packet) {
        if let Err(error) = self.codec.write(packet, &mut self.out) {
            tracing::error!(client = %self.client_id, %error, "could not encode an MQTT packet");
        }
    }

    /// Writes what is buffered. A client that stops reading blocks only its own session.
    async fn flush(
        &mut self,
        closing: &CancellationToken,
        taken_over: &CancellationToken,
    ) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split().freeze();
        tokio::select! {
            written = self.writer.write_all(&out) => written.map_err(|_| End::Abrupt),
            () = closing.cancelled() => Err(End::Server(DisconnectReasonCode::ServerShuttingDown)),
            () = taken_over.cancelled() => Err(End::Server(DisconnectReasonCode::SessionTakenOver)),
        }
    }

    /// Tells an MQTT 5 client why the server closes the connection (3.1.1 has no such packet).
    async fn disconnect(&mut self, code: DisconnectReasonCode) {
        if self.codec.version() == Version::V5 {
            self.send(Packet::Disconnect(Disconnect { reason_code: code }, None));
        }
        if !self.out.is_empty() {
            let out = self.out.split().freeze();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.write_all(&out)).await;
        }
        let _ = self.writer.shutdown().await;
    }

    async fn publish_will(&mut self, will: LastWill) {
        let Ok(topic) = String::from_utf8(will.topic.to_vec()) else {
            return;
        };
        let applying = self.accept(&topic, will.message, will.qos, will.retain);
        let outcome = applying
            .await
            .and_then(|relay| relay.map_or(Ok(()), |r| self.relay(r)));
        if let Err(refusal) = outcome {
            tracing::warn!(client = %self.client_id, topic, "the will was refused: {}", refusal.detail);
        }
    }
}

/// Topics whose first level starts with an upper-case letter belong to tables (table names
/// conventionally do), so a typo in a table name is refused rather than silently becoming a
/// plain topic.
pub fn reserved_for_tables(first_level: &str) -> bool {
    first_level.starts_with(|c: char| c.is_ascii_uppercase())
}

fn lower(a: QoS, b: QoS) -> QoS {
    if a < b { a } else { b }
}

fn higher(a: QoS, b: QoS) -> QoS {
    if a < b { b } else { a }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
