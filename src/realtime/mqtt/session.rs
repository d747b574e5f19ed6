//! One MQTT connection: admitted by `connect.rs`, then packets both ways until either side
//! ends it.
//!
//! A session is clean (it ends with its connection) or persistent (`sessions.rs`): taken back
//! on reconnect, its subscriptions, unacknowledged deliveries and queued messages kept in the
//! store while the client is away. Deliveries go at QoS 0, 1 or 2; those in flight are bounded
//! by the client's Receive Maximum, and a client that does not acknowledge them stops reading
//! from its [`Subscription`], which then follows the lag policy. A PUBLISH is acknowledged only
//! once what it did is durable (`publish.rs`).

mod subscribing;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttd::protocol::{
    ConnectReturnCode, Disconnect, DisconnectProperties, DisconnectReasonCode, LastWill, Packet,
    PingResp, PubComp, PubCompReason, PubRec, PubRecReason, QoS,
};
use std::time::Instant as StdInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::broker::{Message, Publisher};
use super::codec::{self, Codec, CodecError, Version};
use super::connect::{self, Will};
use super::grants::{Grants, lower};
use super::outbox::{Delivery, Origin, Outbox};
use super::properties::Forwarded;
use super::publish::{self, Refusal, Relay};
use super::sessions::{Kept, KeptGrant, Pending, Resumed, Stored};
use super::sys::Stats;
use super::{Connection, Reader, Shared, Writer};
use crate::access::Identity;
use crate::bus::{self, RecvError, TryRecvError};
use crate::error::{Chain, Error};
use crate::events::ChangeKind;
use crate::realtime::{Item, Subscription};

/// Publishes one connection may have in progress (applied or waiting for their
/// acknowledgement): successive record writes share group commits, messages kept for absent
/// clients share fsyncs, and all are still acknowledged in order.
const MAX_APPLYING: usize = 64;
/// QoS 1 and 2 publishes a client may have unanswered or awaiting release, at most (MQTT 5
/// Receive Maximum, given in the CONNACK).
pub const RECEIVE_MAXIMUM: usize = 1024;
/// Deliveries encoded at most before the session writes them out: one write for many small
/// messages, and still a bounded wait for the packets to acknowledge.
const BATCH: usize = 256;
/// The topic a client may subscribe to to be told when it fell behind (see the lag policy).
pub const RESYNC_TOPIC: &str = "$tablecast/resync";
/// How often, at most, a persistent session's position in the change log is saved while its
/// client is connected (it is always saved when the client leaves).
const SAVE_POSITION_EVERY: Duration = Duration::from_secs(1);

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

/// What a session keeps of itself while its client is connected, if it is persistent.
struct Keeping {
    /// Seconds the session outlives the connection; 0: it ends with it, and nothing is kept.
    expiry: u32,
    /// The sequence number of the next plain-topic message kept.
    next_seq: u64,
    /// The change-log position through which table changes were sent (or were in the current
    /// values sent).
    table_through: u64,
    /// The position last saved, and when.
    saved_through: u64,
    saved_at: StdInstant,
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

    fn persistent(&self) -> bool {
        self.keeping.expiry > 0
    }

    /// Takes back what a persistent session kept: its subscriptions (table topics resume from
    /// the change-log position it had reached), the QoS 2 publishes awaiting release, and its
    /// messages: those sent before are sent again with DUP, the others queued.
    fn restore(&mut self, resumed: Option<Resumed>) {
        let resuming = resumed.is_some();
        if let Some(Resumed {
            kept,
            messages,
            next_seq,
        }) = resumed
        {
            let catalog = self.shared.realtime.catalog().clone();
            let v5 = self.codec.version() == Version::V5;
            for grant in kept.grants.iter().filter_map(KeptGrant::grant) {
                // What the client may subscribe to may have changed since (the access file).
                if let Err((_, why)) = self.permitted(grant.filter.clone(), v5) {
                    tracing::warn!(client = %self.client_id, filter = %grant.filter, "a persistent session's subscription is no longer allowed: {why}");
                    continue;
                }
                let filter = grant.filter.clone();
                let shared = grant.share.is_some();
                self.shared.broker.join(&grant, &self.client_id);
                self.grants.restore(grant);
                self.shared
                    .stats
                    .subscriptions
                    .fetch_add(1, Ordering::Relaxed);
                if !shared
                    && catalog
                        .resources()
                        .any(|r| filter.may_match_table(r.table().name()))
                    && let Err(error) = self.subscription.resume(filter, kept.table_since)
                {
                    tracing::error!(client = %self.client_id, error = %Chain(&error), "could not resume a subscription");
                }
            }
            self.awaiting_release.extend(kept.awaiting_release);
            for Stored {
                seq,
                delivery,
                pkid,
                released,
            } in messages
            {
                if pkid == 0 {
                    // At most --mqtt-max-queued of them, and still kept if not queued now.
                    self.outbox.queue(delivery, Origin::Kept(seq));
                } else if !self
                    .outbox
                    .resend(&delivery, Origin::Kept(seq), pkid, released)
                {
                    self.settled(Some(Origin::Kept(seq)), delivery.qos);
                }
            }
            self.keeping.next_seq = next_seq;
            self.keeping.table_through = kept.table_since;
            if kept.dropped > 0 {
                tracing::warn!(client = %self.client_id, dropped = kept.dropped, "an MQTT client's session dropped messages while it was away (--mqtt-max-queued)");
            }
        }
        if self.persistent() {
            self.save();
        } else if resuming
            && let Err(error) = self.shared.broker.sessions().discard(&self.client_id)
        {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not remove an MQTT session");
        }
    }

    /// What the session keeps of itself now.
    fn kept(&self) -> Kept {
        let in_flight = self.outbox.changes_in_flight().min();
        Kept {
            expiry: self.keeping.expiry,
            grants: self.grants.iter().map(KeptGrant::of).collect(),
            table_since: in_flight.map_or(self.keeping.table_through, |seq| seq - 1),
            awaiting_release: self.awaiting_release.iter().copied().collect(),
            left_at: None,
            dropped: 0,
            owner: self.identity.user.clone(),
        }
    }

    /// Saves the session's state, if it is persistent.
    fn save(&mut self) {
        if !self.persistent() {
            return;
        }
        let kept = self.kept();
        self.keeping.saved_through = kept.table_since;
        self.keeping.saved_at = StdInstant::now();
        if let Err(error) = self.shared.broker.sessions().save(&self.client_id, &kept) {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not save an MQTT session");
        }
    }

    /// Saves the session's position in the change log if it moved and was not saved lately: a
    /// server killed meanwhile replays no more than that from the log on reconnect.
    fn save_position(&mut self) {
        let moved = self.keeping.table_through != self.keeping.saved_through;
        if moved && self.keeping.saved_at.elapsed() >= SAVE_POSITION_EVERY {
            self.save();
        }
    }

    /// The client is gone: a persistent session is kept for its return, with the messages that
    /// reached it and it had not read; any other ends. Queued messages the store keeps stay
    /// there; the others (retained messages due on a subscribe) are not the session's to keep.
    fn leave(mut self) {
        self.write_pending(true);
        if self.persistent() {
            let sent: Vec<(u16, u64)> = self.outbox.kept_in_flight().collect();
            if let Err(error) = self
                .shared
                .broker
                .sessions()
                .mark_sent(&self.client_id, sent)
            {
                tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT session's deliveries in flight");
            }
        }
        let held = self.grants.iter().count() as u64;
        self.shared
            .stats
            .subscriptions
            .fetch_sub(held, Ordering::Relaxed);
        let sessions = self.shared.broker.sessions();
        let kept = if self.persistent() {
            self.kept()
        } else {
            self.shared.broker.quit(None, &self.client_id);
            if let Err(error) = sessions.discard(&self.client_id) {
                tracing::error!(client = %self.client_id, error = %Chain(&error), "could not remove an MQTT session");
            }
            return;
        };
        let parked = self.shared.broker.park(
            &self.client_id,
            kept,
            self.keeping.next_seq,
            (&self.grants, self.messages),
        );
        if let Err(error) = parked {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT session");
        }
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
        let kept = matches!(outcome, Ok(true)) && qos != QoS::AtMostOnce;
        let answer = Answer {
            topic,
            qos,
            pkid,
            outcome: outcome.map(drop),
        };
        if kept {
            // Kept for an absent client: acknowledged once on disk (the fsync is shared with
            // the publishes around it), still in its turn.
            let shared = self.shared.clone();
            self.answering.push_back(Box::pin(async move {
                let flushed = shared.broker.sessions().flush().await;
                Answer {
                    outcome: flushed.map_err(Refusal::Domain),
                    ..answer
                }
            }));
        } else if !self.answering.is_empty() {
            self.answering
                .push_back(Box::pin(std::future::ready(answer)));
        } else {
            self.answer(answer);
        }
    }

    /// Acknowledges a publish whose turn has come, or logs its refusal.
    fn answer(&mut self, answer: Answer) {
        let Answer {
            topic,
            qos,
            pkid,
            outcome,
        } = answer;
        if qos != QoS::AtMostOnce {
            self.answers_owed -= 1;
        }
        if qos == QoS::ExactlyOnce {
            self.receiving.remove(&pkid);
        }
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
                self.save();
            }
            self.outbox.send(ack);
        }
    }

    /// Relays what a publish asked to, if anything; true if it was kept for an absent client.
    fn relay(&self, relay: Option<Relay>) -> Result<bool, Refusal> {
        relay.map_or(Ok(false), |relay| publish::relay(&self.shared, relay))
    }

    /// The QoS a table's record goes at by a grant of `granted`. A persistent session gets them
    /// at QoS 1 at most: a reconnect replays changes from the change log, which is at least
    /// once, not exactly once.
    pub(super) fn table_qos(&self, granted: QoS) -> QoS {
        match self.persistent() {
            true => lower(granted, QoS::AtLeastOnce),
            false => granted,
        }
    }

    /// Sends a subscription item to the client.
    fn deliver_item(&mut self, item: &Item) {
        let (event, current) = match item {
            Item::Change(event) => (event.as_ref(), false),
            Item::Current(event) => (event, true),
            Item::Synced { seq, .. } => {
                self.keeping.table_through = self.keeping.table_through.max(*seq);
                return;
            }
            Item::Resync => {
                // Only a client that subscribed to the resync topic hears of it; every client
                // gets the current values that follow, as retained messages.
                let granted = self
                    .grants
                    .best(|g| g.takes(RESYNC_TOPIC, &[], &self.client_id));
                if let Some(granted) = granted {
                    let delivery = Delivery {
                        topic: RESYNC_TOPIC.to_owned(),
                        payload: bytes::Bytes::from_static(br#"{"type":"resync"}"#),
                        qos: self.table_qos(granted.qos),
                        subscription_ids: granted.subscription_ids,
                        ..Delivery::default()
                    };
                    self.outbox.deliver(&delivery, Origin::Passing);
                }
                return;
            }
        };
        let change = event.seq.filter(|_| !current);
        if let Some(seq) = change {
            self.keeping.table_through = self.keeping.table_through.max(seq);
        }
        let Some(granted) = self
            .grants
            .best(|g| g.takes_record(&event.table, &event.id))
        else {
            return;
        };
        let retain = granted.retain_as_published && event.kind != ChangeKind::Message;
        let delivery = Delivery {
            topic: format!("{}/{}", event.table, event.id),
            payload: event.value.clone().unwrap_or_default(),
            qos: self.table_qos(granted.qos),
            retain: current || retain,
            properties: None,
            subscription_ids: granted.subscription_ids,
        };
        self.outbox
            .deliver(&delivery, change.map_or(Origin::Passing, Origin::Change));
    }

    fn deliver_message(&mut self, message: &Message) {
        let from_here = message.from.session == self.number;
        let Some(delivery) = message.delivery(&self.grants, &self.client_id, from_here) else {
            return;
        };
        if self.persistent() && delivery.qos != QoS::AtMostOnce {
            let seq = self.keeping.next_seq;
            self.keeping.next_seq += 1;
            self.send_kept(delivery, seq, true);
        } else {
            self.outbox.deliver(&delivery, Origin::Passing);
        }
    }

    /// Sends a message the session's store keeps (`fresh`: is to keep), noting the packet id it
    /// goes with; one that is not sent (expired, too large for the client) is forgotten.
    fn send_kept(&mut self, delivery: Delivery, seq: u64, fresh: bool) {
        let qos = delivery.qos;
        match self.outbox.deliver(&delivery, Origin::Kept(seq)) {
            Some(pkid) => {
                let stored = Stored {
                    seq,
                    delivery,
                    pkid,
                    released: false,
                };
                match (qos, fresh) {
                    (QoS::ExactlyOnce, _) => self.keep(&stored),
                    (_, true) => self.pending.keep(stored),
                    // Already in the store: its packet id is noted if it is still in flight
                    // when the client leaves.
                    (_, false) => {}
                }
            }
            None => self.settled(Some(Origin::Kept(seq)), qos),
        }
    }

    /// Writes the pending changes to kept messages, if they are due (or `now`).
    fn write_pending(&mut self, now: bool) {
        if self.pending.is_empty() || !(now || self.pending.is_due()) {
            return;
        }
        let sessions = self.shared.broker.sessions();
        if let Err(error) = sessions.write(&self.client_id, &mut self.pending) {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT session's messages");
        }
    }

    /// Delivers the plain-topic messages that have already arrived, a batch at most, while the
    /// window has room.
    fn deliver_ready_messages(&mut self) {
        for _ in 1..BATCH {
            if !self.outbox.has_room() {
                return;
            }
            let Some(messages) = &mut self.messages else {
                return;
            };
            match messages.try_recv() {
                Ok(message) => self.deliver_message(&message),
                Err(TryRecvError::Lagged(missed)) => self.missed(missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn missed(&self, missed: u64) {
        tracing::warn!(
            client = %self.client_id, missed,
            "an MQTT client fell behind on plain-topic messages; they were dropped"
        );
    }

    /// Sends queued deliveries while the window has room, a batch at most; false if there was
    /// nothing to do.
    fn release_queued(&mut self) -> bool {
        let mut released = false;
        for _ in 0..BATCH {
            let Some((delivery, origin)) = self.outbox.next_queued() else {
                break;
            };
            match origin {
                Origin::Kept(seq) => self.send_kept(delivery, seq, false),
                Origin::Change(_) | Origin::Passing => {
                    self.outbox.deliver(&delivery, origin);
                }
            }
            released = true;
        }
        released
    }

    /// Listens to plain-topic messages while the session holds a subscription, and only then: a
    /// session that only publishes is not woken by every message.
    pub(super) fn listen_if_subscribed(&mut self) {
        match (self.grants.len(), &self.messages) {
            (0, Some(_)) => self.messages = None,
            (1.., None) => self.messages = Some(self.shared.broker.listen()),
            _ => {}
        }
    }

    /// Keeps a message in the session's store.
    fn keep(&self, stored: &Stored) {
        if let Err(error) = self.shared.broker.sessions().store(&self.client_id, stored) {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT message");
        }
    }

    /// A delivery at `qos` was acknowledged: one the store kept is forgotten (a QoS 2 one at
    /// once: it must not come again).
    fn settled(&mut self, origin: Option<Origin>, qos: QoS) {
        let Some(Origin::Kept(seq)) = origin.filter(|_| self.persistent()) else {
            return;
        };
        if qos != QoS::ExactlyOnce {
            self.pending.forget(seq);
            return;
        }
        if let Err(error) = self
            .shared
            .broker
            .sessions()
            .delivered(&self.client_id, seq)
        {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not forget a delivered MQTT message");
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

/// The next plain-topic message, if the session listens.
async fn next_message(
    messages: &mut Option<bus::Receiver<Message>>,
) -> Result<Arc<Message>, RecvError> {
    match messages {
        Some(messages) => messages.recv().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Publishes the will of a connection that ended, as `publisher`, who is `identity`.
async fn publish_will(
    shared: Arc<Shared>,
    publisher: Publisher,
    identity: Arc<Identity>,
    will: Will,
) {
    let forwarded = will.forwarded();
    let LastWill {
        topic,
        message,
        qos,
        retain,
    } = will.message;
    let Ok(topic) = String::from_utf8(topic.to_vec()) else {
        return;
    };
    let from = (&publisher, identity.as_ref());
    let applying = publish::accept(&shared, from, &topic, (message, qos, retain), forwarded);
    let outcome = applying
        .await
        .and_then(|relay| relay.map_or(Ok(false), |relay| publish::relay(&shared, relay)));
    if let Err(refusal) = outcome {
        refusal.log(&publisher.client, &topic);
    }
}

/// Publishes a will after its Will Delay Interval, or when the session ends if that comes
/// first; a client that connects again before then takes its session back and the will is not
/// published (unless it starts a clean session, which ends the old one: the will goes at once).
fn defer_will(
    shared: Arc<Shared>,
    publisher: Publisher,
    identity: Arc<Identity>,
    will: Will,
    delay: Duration,
) {
    let returned = shared.broker.defer_will(&publisher.client);
    tokio::spawn(async move {
        let publish = tokio::select! {
            () = tokio::time::sleep(delay) => true,
            clean = returned => clean.unwrap_or(false),
        };
        if publish {
            publish_will(shared, publisher, identity, will).await;
        }
    });
}
