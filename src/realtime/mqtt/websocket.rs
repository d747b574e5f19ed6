//! MQTT over WebSocket: binary frames carry the packets, which may span frames or share one;
//! the sessions are the same as on the MQTT port's. HTTP serves the upgrade (`/mqtt`,
//! subprotocol `mqtt`, as MQTT.js and browsers speak it).

use std::io;
use std::net::IpAddr;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};

use super::connect::max_packet;
use super::{Connection, MAX_CONNECTING, Mqtt};

/// The WebSocket subprotocol MQTT is spoken in.
pub const SUBPROTOCOL: &str = "mqtt";

/// A place for an MQTT connection over WebSocket, taken before the upgrade; what the HTTP
/// layer answers when there is none.
pub type Place = Result<OwnedSemaphorePermit, usize>;

impl Mqtt {
    /// A place for a WebSocket connection that is to speak MQTT, or the limit of connections
    /// that may wait for their CONNECT.
    pub fn websocket_place(&self) -> Place {
        self.connecting().ok_or(MAX_CONNECTING)
    }

    /// The largest WebSocket message a client may send: a packet of the largest size read.
    pub fn websocket_max_message(&self) -> usize {
        max_packet(self.shared.max_body)
    }

    /// Serves an MQTT client over `socket`, from `peer`, until it ends.
    pub async fn serve_websocket(
        &self,
        socket: WebSocket,
        peer: IpAddr,
        place: OwnedSemaphorePermit,
    ) {
        self.serve_connection(over(socket), peer, place).await;
    }
}

/// The WebSocket as a stream of bytes: binary frames in, each write out as one binary frame.
fn over(socket: WebSocket) -> Connection {
    let (sink, stream) = socket.split();
    let incoming = stream.filter_map(|message| async move {
        match message {
            Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
            // MQTT-6.0.0-1: a text frame closes the connection.
            Ok(Message::Text(_)) => Some(Err(io::Error::other("MQTT over WebSocket is binary"))),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_)) => None,
            Err(error) => Some(Err(io::Error::other(error))),
        }
    });
    let outgoing = sink
        .with(|bytes: Bytes| async move { Ok::<_, axum::Error>(Message::Binary(bytes)) })
        .sink_map_err(io::Error::other);
    let reader = StreamReader::new(Box::pin(incoming));
    let writer = SinkWriter::new(CopyToBytes::new(Box::pin(outgoing)));
    Box::new(tokio::io::join(reader, writer))
}
