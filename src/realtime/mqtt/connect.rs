//! CONNECT: read it in time, refuse what cannot be served (with the CONNACK code the client's
//! protocol has for it), admit the client under the subscriber limit, and accept it.

use std::time::Duration;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, LastWill, LastWillProperties, Login, Packet,
    PublishProperties,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::codec::{self, Codec, Hello, Version};
use super::properties::Forwarded;
use super::{Reader, Shared, Writer};
use crate::access::{Credentials, Identity};
use crate::error::{Error, ErrorCode};

/// How long a new connection has to send its CONNECT packet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that connected and was admitted.
pub struct Client {
    /// The codec of the protocol version the client speaks.
    pub codec: Codec,
    /// The client's id, or the one assigned to it.
    pub id: String,
    /// Whether the server chose the id (the client sent none).
    pub assigned_id: bool,
    /// The keep-alive the client asked for (zero: none).
    pub keep_alive: Duration,
    /// Whether the client asked for a new session rather than the one it may have left.
    pub clean_start: bool,
    /// Seconds the session outlives the connection (0: it ends with it), within the server's
    /// limit.
    pub session_expiry: u32,
    /// Whether the server shortened the expiry the client asked for.
    pub expiry_shortened: bool,
    /// The keep-alive the server set instead of the client's (MQTT 5 Server Keep Alive).
    pub server_keep_alive: Option<u16>,
    /// The client's Receive Maximum (MQTT 5), if it gave one.
    pub receive_maximum: Option<u16>,
    /// The largest packet the client accepts (MQTT 5), if it said.
    pub max_packet: Option<u32>,
    /// The message to publish if the connection ends without a clean DISCONNECT.
    pub will: Option<Will>,
    /// The client's place among the subscribers, held while it is connected.
    pub admitted: OwnedSemaphorePermit,
    /// Who the client is.
    pub identity: Arc<Identity>,
}

/// What a CONNECT said that the session needs.
struct Connected {
    client_id: String,
    keep_alive: u16,
    clean_start: bool,
    /// MQTT 5's Session Expiry Interval; for 3.1.1, none with a clean session, else forever.
    session_expiry: u32,
    receive_maximum: Option<u16>,
    max_packet: Option<u32>,
    will: Option<Will>,
    login: Option<Login>,
}

/// A last will: the message, and its MQTT 5 properties.
pub struct Will {
    pub message: LastWill,
    pub properties: Option<LastWillProperties>,
}

impl Will {
    /// What of the will's properties travels with it, as for a PUBLISH.
    pub fn forwarded(&self) -> Option<Forwarded> {
        let p = self.properties.as_ref()?;
        Forwarded::of(Some(&PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            topic_alias: None,
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            subscription_identifiers: Vec::new(),
            content_type: p.content_type.clone(),
        }))
    }

    /// How long after the connection ends the will is published (MQTT 5 Will Delay Interval).
    pub fn delay(&self) -> Duration {
        let seconds = self.properties.as_ref().and_then(|p| p.delay_interval);
        Duration::from_secs(u64::from(seconds.unwrap_or(0)))
    }
}

/// Why a CONNECT is not accepted: with the codec and code to answer with, or `None` when the
/// connection is closed without an answer (not MQTT, or a malformed CONNECT).
type Refused = Option<(Codec, ConnectReturnCode)>;

/// Reads the CONNECT of a connection from `address` and admits the client; `None` if it is refused
/// (answered, where the protocol allows, with a CONNACK saying why) or sends no CONNECT in time.
pub async fn admit(
    reader: &mut Reader,
    writer: &mut Writer,
    input: &mut BytesMut,
    shared: &Shared,
    address: IpAddr,
) -> Option<Client> {
    let deadline = CONNECT_TIMEOUT.min(shared.intake.timeout());
    let read = tokio::time::timeout(deadline, read_connect(reader, input, shared));
    let (codec, connected) = match read.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(refused)) => {
            if let Some((codec, code)) = refused {
                refuse(&codec, writer, code).await;
            }
            return None;
        }
        Err(_) => {
            tracing::debug!("an MQTT connection sent no CONNECT in time");
            return None;
        }
    };
    let identity = match authenticate(shared, connected.login.clone(), address).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(client = connected.client_id, %address, "refusing an MQTT connection: {error}");
            refuse(&codec, writer, refusal(codec.version(), error.code())).await;
            return None;
        }
    };
    let admitted = match shared.realtime.admit() {
        Ok(admitted) => admitted,
        Err(error) => {
            tracing::warn!("refusing an MQTT connection: {error}");
            let busy = match codec.version() {
                Version::V311 => ConnectReturnCode::ServiceUnavailable,
                Version::V5 => ConnectReturnCode::ServerBusy,
            };
            refuse(&codec, writer, busy).await;
            return None;
        }
    };
    let (keep_alive, server_keep_alive) = match keep_alive(
        connected.keep_alive,
        shared.max_keepalive,
    ) {
        Ok(keep_alive) => keep_alive,
        Err(()) if codec.version() == Version::V311 => {
            // 3.1.1 has no way to tell a client its keep-alive: it is refused, as Mosquitto does.
            tracing::warn!(
                client = connected.client_id,
                "refusing an MQTT 3.1.1 connection whose keep-alive is over --mqtt-max-keepalive"
            );
            refuse(&codec, writer, ConnectReturnCode::ClientIdentifierNotValid).await;
            return None;
        }
        Err(()) => (shared.max_keepalive, Some(shared.max_keepalive)),
    };
    let assigned_id = connected.client_id.is_empty();
    let longest =
        u32::try_from(shared.broker.sessions().limits().max_expiry.as_secs()).unwrap_or(u32::MAX);
    let session_expiry = connected.session_expiry.min(longest);
    Some(Client {
        codec,
        // Unique across restarts too: an assigned id may name a persistent session.
        id: if assigned_id {
            format!("tablecast-{}", uuid::Uuid::now_v7().simple())
        } else {
            connected.client_id
        },
        assigned_id,
        keep_alive: Duration::from_secs(u64::from(keep_alive)),
        server_keep_alive,
        clean_start: connected.clean_start,
        session_expiry,
        expiry_shortened: session_expiry < connected.session_expiry,
        receive_maximum: connected.receive_maximum,
        max_packet: connected.max_packet,
        will: connected.will,
        admitted,
        identity,
    })
}

/// The keep-alive a client that asked for `asked` seconds gets, and whether the server says
/// so; `Err` if it asked for more than `max` (0, none, is more than any).
fn keep_alive(asked: u16, max: u16) -> Result<(u16, Option<u16>), ()> {
    let unlimited = max == u16::MAX;
    if unlimited || (asked != 0 && asked <= max) {
        Ok((asked, None))
    } else {
        Err(())
    }
}

/// Who the CONNECT's username and password prove: a user and its password, or a bearer token
/// as the password (with any username); anonymous without them. On a server with an access
/// file, an anonymous client that may do nothing is refused.
async fn authenticate(
    shared: &Shared,
    login: Option<Login>,
    address: IpAddr,
) -> Result<Arc<Identity>, Error> {
    let credentials = match login {
        None => Credentials::None,
        Some(Login { password, .. }) if looks_like_token(&password) => Credentials::Token(password),
        Some(Login { username, password }) => Credentials::Password {
            user: username,
            password,
        },
    };
    let access = &shared.access;
    let identity = access.authenticate(credentials, address).await?;
    if access.is_guarded() && !identity.authenticated && identity.roles().is_empty() {
        return Err(Error::Unauthenticated(
            "this server needs credentials: a username and password, or a token as the password"
                .to_owned(),
        ));
    }
    Ok(identity)
}

/// A JWT: three base64url parts, the first a JSON object (`eyJ`).
fn looks_like_token(password: &str) -> bool {
    password.starts_with("eyJ") && password.matches('.').count() == 2
}

/// The CONNACK code that refuses a client id held by another user.
pub fn not_yours(version: Version) -> ConnectReturnCode {
    refusal(version, ErrorCode::Forbidden)
}

/// The CONNACK code of a refusal, in the client's protocol (3.1.1 has codes 1 to 5 only).
fn refusal(version: Version, code: ErrorCode) -> ConnectReturnCode {
    match (version, code) {
        (_, ErrorCode::Unauthenticated) => ConnectReturnCode::BadUserNamePassword,
        (Version::V311, ErrorCode::RateLimited) => ConnectReturnCode::ServiceUnavailable,
        (Version::V5, ErrorCode::RateLimited) => ConnectReturnCode::ConnectionRateExceeded,
        (_, ErrorCode::Forbidden) => ConnectReturnCode::NotAuthorized,
        (Version::V311, _) => ConnectReturnCode::ServiceUnavailable,
        (Version::V5, _) => ConnectReturnCode::UnspecifiedError,
    }
}

/// The CONNACK that accepts `client`, saying whether its session was present; an MQTT 5
/// client is told what the server supports.
pub fn accepted(client: &Client, max_body: usize, session_present: bool) -> Packet {
    let properties = (client.codec.version() == Version::V5).then(|| ConnAckProperties {
        session_expiry_interval: client.expiry_shortened.then_some(client.session_expiry),
        assigned_client_identifier: client.assigned_id.then(|| client.id.clone()),
        receive_max: u16::try_from(super::session::RECEIVE_MAXIMUM).ok(),
        topic_alias_max: Some(super::publish::TOPIC_ALIAS_MAX),
        server_keep_alive: client.server_keep_alive,
        retain_available: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(1),
        shared_subscription_available: Some(1),
        max_packet_size: u32::try_from(max_packet(max_body)).ok(),
        ..ConnAckProperties::default()
    });
    Packet::ConnAck(
        ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
        },
        properties,
    )
}

/// The largest packet read: a payload of the body limit, a topic of MQTT's longest, and headers.
pub fn max_packet(max_body: usize) -> usize {
    max_body + 65_536 + 16
}

/// Answers a CONNECT with a refusal; the connection then closes.
pub async fn refuse(codec: &Codec, writer: &mut Writer, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    let refused = Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    );
    if codec.write(refused, &mut out).is_ok() && writer.write_all(&out).await.is_ok() {
        let _ = writer.flush().await;
    }
}

/// Reads the CONNECT packet, and the codec of the protocol it speaks.
async fn read_connect(
    reader: &mut Reader,
    input: &mut BytesMut,
    shared: &Shared,
) -> Result<(Codec, Connected), Refused> {
    let max_packet = max_packet(shared.max_body);
    // What the CONNECT holds of the intake budget until it is read whole.
    let mut share = shared.intake.share();
    let mut read_more = async |input: &mut BytesMut| {
        if reader.read_buf(input).await.unwrap_or(0) == 0 {
            return Err(None);
        }
        share.hold(input.len()).map_err(|_| {
            tracing::warn!("closing an MQTT connection: packets being received hold --body-memory");
            None
        })
    };
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
        read_more(input).await?;
    };
    loop {
        match codec.read(input) {
            Ok(Some(Packet::Connect(connect, properties, will, will_properties, login))) => {
                let v311 = codec.version() == Version::V311;
                if v311 && connect.client_id.is_empty() && !connect.clean_session {
                    // MQTT 3.1.1: a persistent session needs a client id (MQTT 5 assigns one).
                    return Err(Some((codec, ConnectReturnCode::ClientIdentifierNotValid)));
                }
                if let Some(will) = &will
                    && std::str::from_utf8(&will.topic)
                        .map_or(true, |t| t.is_empty() || t.contains(['+', '#']))
                {
                    // A malformed CONNECT: the connection is closed without an answer.
                    return Err(None);
                }
                let session_expiry = match codec.version() {
                    Version::V311 if connect.clean_session => 0,
                    Version::V311 => u32::MAX,
                    Version::V5 => properties
                        .as_ref()
                        .and_then(|p| p.session_expiry_interval)
                        .unwrap_or(0),
                };
                let connected = Connected {
                    client_id: connect.client_id,
                    keep_alive: connect.keep_alive,
                    clean_start: connect.clean_session,
                    session_expiry,
                    receive_maximum: properties.as_ref().and_then(|p| p.receive_maximum),
                    max_packet: properties.as_ref().and_then(|p| p.max_packet_size),
                    will: will.map(|message| Will {
                        message,
                        properties: will_properties,
                    }),
                    login,
                };
                return Ok((codec, connected));
            }
            Ok(Some(_)) | Err(_) => return Err(None),
            Ok(None) => read_more(input).await?,
        }
    }
}
